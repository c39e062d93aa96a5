//! `strato-harness`: the command line of the netns harness. It only parses
//! arguments into calls of the `netns_harness` library and prints results;
//! all behaviour lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ipnetwork::Ipv4Network;
use netns_harness::{DhcpMode, FailTarget, Lease, MacAddr, Region, Topology, Vm, VmSpec};

/// Simulates a multi-AZ Strato region on this machine with network namespaces.
#[derive(Parser, Debug)]
#[command(name = "strato-harness", version, about, long_about = None)]
struct Cli {
    /// Run prefix: every namespace of the run is `<prefix>-<node>`
    /// (`[a-z][a-z0-9]{0,7}`).
    #[arg(long, global = true, env = "STRATO_PREFIX", default_value = "strato")]
    prefix: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the region of FILE (default: examples/region.toml, or the
    /// compiled-in copy of it if there is no such file here).
    Up { file: Option<PathBuf> },
    /// Remove everything of the prefix (processes, namespaces, pin dirs, state).
    Down,
    /// Show namespaces, links, addresses, VMs and injected failures.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node's namespace; its exit code is passed through.
    Exec {
        /// Logical node (az1-c1, az1-fab, spine, internet, inet-client1,
        /// onprem-gw, onprem-h1) or VM name.
        node: String,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Create, delete and list VMs; show their DHCP leases.
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// Inject a failure: host, link or AZ.
    Fail {
        kind: FailKind,
        /// Host (az1-c1), link (az1-spine, az1-c1, az1-gw1-ext, inet-client1,
        /// onprem-wan, vm-NAME) or AZ (az1).
        name: String,
    },
    /// Undo every injected failure.
    Heal,
    /// List the run's hosts: NAME NAMESPACE ROLE UNDERLAY_IP UPLINK, one per line.
    Hosts,
    /// Start a process as part of the run (e.g. the controller, an agent):
    /// `down` kills it. Logs go to /run/strato/<prefix>/logs/NAME.log.
    Spawn {
        /// Process name in the run (pidfile and log file name).
        name: String,
        /// Enter this node's network namespace (only that namespace) first.
        #[arg(long)]
        node: Option<String>,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum VmCmd {
    /// Create a VM namespace attached to a host by a veth pair. Without
    /// --ip the VM gets its address by DHCP (busybox udhcpc in the VM,
    /// retrying every second; see `vm lease`).
    Create {
        name: String,
        /// Host logical name, e.g. az1-c1.
        #[arg(long)]
        host: String,
        /// Host-side veth ("tap") name, at most 15 characters.
        #[arg(long)]
        port: String,
        /// MAC of the VM's eth0 (random if omitted).
        #[arg(long)]
        mac: Option<MacAddr>,
        /// Static address of the VM's eth0 with prefix length, e.g.
        /// 10.0.0.5/24 (no DHCP then).
        #[arg(long = "ip")]
        ip: Option<Ipv4Network>,
        /// Default gateway (with --ip).
        #[arg(long = "gw", requires = "ip")]
        gw: Option<std::net::Ipv4Addr>,
        /// Get the address by DHCP (the default without --ip).
        #[arg(long, conflicts_with_all = ["ip", "gw"])]
        dhcp: bool,
        /// MTU (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Delete a VM (and its DHCP client).
    Delete { name: String },
    /// Print a DHCP VM's current lease; exit status 1 if it has none.
    Lease {
        name: String,
        /// Wait up to SECS seconds for a lease.
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List VMs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FailKind {
    Host,
    Link,
    Az,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strato-harness: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    netns_harness::validate_prefix(&cli.prefix)?;
    let prefix = cli.prefix.as_str();
    match cli.cmd {
        Cmd::Up { file } => {
            let default = Path::new("examples/region.toml");
            let topology = match file {
                Some(f) => Topology::load(&f)?,
                None if default.exists() => Topology::load(default)?,
                None => Topology::default_region(),
            };
            let region = Region::up(&topology, prefix)?;
            println!(
                "region {} is up as prefix {prefix} ({} namespaces, {} links) from {}",
                topology.name(),
                region.plan().nodes.len(),
                region.plan().links.len(),
                topology.origin()
            );
            println!("{:<10} {:<8} {:<20} UNDERLAY", "HOST", "ROLE", "NAMESPACE");
            for h in region.hosts() {
                println!(
                    "{:<10} {:<8} {:<20} {}",
                    h.name, h.role, h.netns, h.underlay_ip
                );
            }
            println!("state: {}", region.state_dir().display());
        }
        Cmd::Hosts => {
            for h in Region::attach(prefix)?.hosts() {
                println!(
                    "{} {} {} {} {}",
                    h.name, h.netns, h.role, h.underlay_ip, h.uplink
                );
            }
        }
        Cmd::Spawn { name, node, argv } => {
            let region = Region::attach(prefix)?;
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            let child = region.spawn(&name, node.as_deref(), cmd)?;
            println!(
                "{name}: pid {} (log {})",
                child.id(),
                region
                    .state_dir()
                    .join("logs")
                    .join(format!("{name}.log"))
                    .display()
            );
        }
        Cmd::Down => {
            let report = Region::down(prefix)?;
            println!("{report}");
        }
        Cmd::Status { json } => {
            let status = Region::attach(prefix)?.status()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).context("status to JSON")?
                );
            } else {
                print!("{status}");
            }
        }
        Cmd::Exec { node, argv } => {
            let region = Region::attach(prefix)?;
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let status = region
                .command(&node, &argv)?
                .status()
                .with_context(|| format!("cannot run `{}` in {node}", argv.join(" ")))?;
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1);
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Cmd::Vm { cmd } => {
            let region = Region::attach(prefix)?;
            match cmd {
                VmCmd::Create {
                    name,
                    host,
                    port,
                    mac,
                    ip,
                    gw,
                    mtu,
                    dhcp,
                } => {
                    let vm = region.vm_create(&VmSpec {
                        name,
                        host,
                        port,
                        mac,
                        addr: ip,
                        gateway: gw,
                        mtu,
                        dhcp: if dhcp { DhcpMode::On } else { DhcpMode::Auto },
                    })?;
                    println!(
                        "vm {} on {}: port {}, netns {}, mac {}, addr {}",
                        vm.name,
                        vm.host,
                        vm.port,
                        vm.netns,
                        vm.mac,
                        vm.addr_label(None)
                    );
                    if vm.dhcp {
                        println!(
                            "dhcp: udhcpc log {}, lease {}",
                            region.vm_dhcp_log(&vm.name).display(),
                            region.vm_lease_path(&vm.name).display()
                        );
                    }
                }
                VmCmd::Lease { name, wait, json } => {
                    let lease = match wait {
                        Some(secs) => {
                            let timeout =
                                Duration::try_from_secs_f64(secs).ok().with_context(|| {
                                    format!("--wait {secs}: not a duration in seconds")
                                })?;
                            Some(region.vm_wait_lease(&name, timeout)?)
                        }
                        None => region.vm_lease(&name)?,
                    };
                    let Some(lease) = lease else {
                        let vm = region.vms().into_iter().find(|v| v.name == name);
                        if vm.is_some_and(|v| !v.dhcp) {
                            anyhow::bail!("VM {name:?} has a static address, not DHCP");
                        }
                        anyhow::bail!(
                            "VM {name:?} has no DHCP lease yet (udhcpc log {})",
                            region.vm_dhcp_log(&name).display()
                        );
                    };
                    print_lease(&lease, json)?;
                }
                VmCmd::Delete { name } => {
                    region.vm_delete(&name)?;
                    println!("vm {name} deleted");
                }
                VmCmd::List { json } => {
                    let vms = region.vms();
                    let leases: Vec<Option<Lease>> = vms
                        .iter()
                        .map(|v| match region.vm_lease(&v.name) {
                            Ok(l) => l,
                            Err(e) => {
                                eprintln!("strato-harness: warning: {e}");
                                None
                            }
                        })
                        .collect();
                    if json {
                        println!("{}", vms_json(&vms, &leases)?);
                    } else {
                        println!(
                            "{:<16} {:<10} {:<16} {:<18} ADDR",
                            "VM", "HOST", "PORT", "MAC"
                        );
                        for (v, lease) in vms.iter().zip(&leases) {
                            println!(
                                "{:<16} {:<10} {:<16} {:<18} {}",
                                v.name,
                                v.host,
                                v.port,
                                v.mac.to_string(),
                                v.addr_label(lease.as_ref())
                            );
                        }
                    }
                }
            }
        }
        Cmd::Fail { kind, name } => {
            let region = Region::attach(prefix)?;
            let target = match kind {
                FailKind::Host => FailTarget::Host(name),
                FailKind::Link => FailTarget::Link(name),
                FailKind::Az => FailTarget::Az(name),
            };
            region.fail(&target)?;
            println!("failed {target}");
        }
        Cmd::Heal => {
            Region::attach(prefix)?.heal()?;
            println!("healed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_lease(lease: &Lease, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(lease).context("lease to JSON")?
        );
    } else {
        print!("{lease}");
    }
    Ok(())
}

/// `vm list --json`: the VMs as recorded, each with its current `lease`
/// (null for static VMs and DHCP VMs without one).
fn vms_json(vms: &[Vm], leases: &[Option<Lease>]) -> anyhow::Result<String> {
    let list: Vec<serde_json::Value> = vms
        .iter()
        .zip(leases)
        .map(|(v, l)| {
            let mut j = serde_json::to_value(v)?;
            j["lease"] = serde_json::to_value(l)?;
            Ok(j)
        })
        .collect::<Result<_, serde_json::Error>>()
        .context("VMs to JSON")?;
    serde_json::to_string_pretty(&list).context("VMs to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("strato-harness").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn vm_create_addressing() {
        let base = ["vm", "create", "v1", "--host", "az1-c1", "--port", "tapv1"];
        let create = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args)
        };
        let dhcp_of = |cli: Cli| match cli.cmd {
            Cmd::Vm {
                cmd: VmCmd::Create { dhcp, ip, .. },
            } => (dhcp, ip),
            other => panic!("{other:?}"),
        };
        assert_eq!(dhcp_of(create(&[]).expect("bare")), (false, None));
        assert_eq!(dhcp_of(create(&["--dhcp"]).expect("--dhcp")), (true, None));
        let (dhcp, ip) =
            dhcp_of(create(&["--ip", "10.0.0.5/24", "--gw", "10.0.0.1"]).expect("static"));
        assert!(!dhcp && ip.is_some());
        for bad in [
            &["--dhcp", "--ip", "10.0.0.5/24"][..],
            &["--ip", "10.0.0.5/24", "--dhcp"],
            &["--dhcp", "--gw", "10.0.0.1"],
        ] {
            let e = create(bad).expect_err("conflict").to_string();
            assert!(
                e.contains("--dhcp") && e.contains("cannot be used with"),
                "{bad:?}: {e}"
            );
        }
        let e = create(&["--gw", "10.0.0.1"])
            .expect_err("--gw alone")
            .to_string();
        assert!(e.contains("--ip"), "{e}");
    }

    #[test]
    fn vm_lease_arguments() {
        match parse(&["vm", "lease", "v1", "--wait", "2.5", "--json"])
            .expect("lease")
            .cmd
        {
            Cmd::Vm {
                cmd: VmCmd::Lease { name, wait, json },
            } => assert_eq!((name.as_str(), wait, json), ("v1", Some(2.5), true)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["vm", "lease", "v1", "--wait", "soon"]).is_err());
    }

    #[test]
    fn vm_list_json_has_leases() {
        let vm: Vm = serde_json::from_str(
            r#"{"name":"a","host":"az1-c1","port":"tapa","netns":"p-vm-a","mac":"fa:16:3e:00:00:01",
                "addr":null,"gateway":null,"mtu":1500,"dhcp":true}"#,
        )
        .expect("vm");
        let lease = Lease::parse("ip=10.0.0.7\nmask=24\nrouter=10.0.0.1\n").expect("lease");
        let text = vms_json(&[vm.clone(), vm], &[Some(lease), None]).expect("json");
        let j: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(j[0]["dhcp"], true);
        assert_eq!(j[0]["lease"]["ip"], "10.0.0.7/24");
        assert_eq!(j[0]["lease"]["router"], "10.0.0.1");
        assert!(j[1]["lease"].is_null());
    }
}
