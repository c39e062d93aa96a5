//! `strato-harness`: the command line of the netns harness. It only parses
//! arguments into calls of the `netns_harness` library and prints results;
//! all behaviour lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ipnetwork::Ipv4Network;
use netns_harness::{FailTarget, MacAddr, Region, Topology, VmSpec};

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
    /// Create, delete and list VMs.
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
    /// Create a VM namespace attached to a host by a veth pair.
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
        /// Address of the VM's eth0 with prefix length, e.g. 10.0.0.5/24.
        #[arg(long = "ip")]
        ip: Option<Ipv4Network>,
        /// Default gateway.
        #[arg(long = "gw")]
        gw: Option<std::net::Ipv4Addr>,
        /// MTU (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Delete a VM.
    Delete { name: String },
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
                } => {
                    let vm = region.vm_create(&VmSpec {
                        name,
                        host,
                        port,
                        mac,
                        addr: ip,
                        gateway: gw,
                        mtu,
                    })?;
                    println!(
                        "vm {} on {}: port {}, netns {}, mac {}, addr {}",
                        vm.name,
                        vm.host,
                        vm.port,
                        vm.netns,
                        vm.mac,
                        vm.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
                VmCmd::Delete { name } => {
                    region.vm_delete(&name)?;
                    println!("vm {name} deleted");
                }
                VmCmd::List { json } => {
                    let vms = region.vms();
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&vms).context("VMs to JSON")?
                        );
                    } else {
                        println!(
                            "{:<16} {:<10} {:<16} {:<18} ADDR",
                            "VM", "HOST", "PORT", "MAC"
                        );
                        for v in vms {
                            println!(
                                "{:<16} {:<10} {:<16} {:<18} {}",
                                v.name,
                                v.host,
                                v.port,
                                v.mac.to_string(),
                                v.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
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
