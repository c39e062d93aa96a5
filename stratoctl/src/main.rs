//! stratoctl: the operator's inspection CLI. Human tables by default,
//! `--json` for scripts; clear errors when the controller is unreachable.
//!
//! It reaches the controller through the contract (`strato_proto`: the
//! client, the hosts' reports and configuration) and, for the commands run
//! on a host (`trace`, `counters`), reads that host's pinned maps through
//! `strato_dataplane`, read-only. It never links the controller or the
//! agent.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use strato_dataplane as dataplane;
use strato_dataplane::Counters;
use strato_proto::{
    client::{self, Endpoint},
    config::{Entry, SecurityGroupEntry, Update},
    lb::AccessLine,
    naming::{parse_mac, tap_name, ACCESS_LOG, METRICS},
    report::{HostStatus, IfCounters},
    telemetry,
};

#[derive(Parser, Debug)]
#[command(
    name = "stratoctl",
    version,
    about = "Inspect a Strato region: hosts, interfaces, counters, drop reasons"
)]
struct Args {
    /// Controller endpoint: its agents' socket unix:/path (root on the
    /// controller host; the default), or http://HOST:PORT (internal reads
    /// there need an administrator's token).
    #[arg(
        long,
        global = true,
        env = "STRATO_CONTROLLER",
        default_value = "unix:/run/strato/controller.sock"
    )]
    controller: Endpoint,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Hosts known to the controller, whether their agent is up, and totals.
    Hosts,
    /// Network resources per project: networks (VNI, subnets), routers, ports
    /// (addresses, host, status).
    Resources {
        /// Only this project (name or id).
        #[arg(long)]
        project: Option<String>,
    },
    /// One host: its interfaces, their programs and counters, drop reasons.
    Host { name: String },
    /// Runs a synthetic packet through a host's live program (BPF_PROG_TEST_RUN
    /// against the live maps; the run is counted like a real packet) and
    /// prints the verdict, the path, the rewrites and any drop reason. Run on
    /// the host, as root.
    Trace {
        /// Host name (its pin directory under --pin-root); default: the
        /// host the port is bound to, asked of the controller.
        #[arg(long)]
        host: Option<String>,
        /// The port (its tap is `tap` + the first 11 characters of its id).
        #[arg(long, conflicts_with = "iface")]
        port: Option<String>,
        /// Or an interface by name (e.g. the uplink `eth0`).
        #[arg(long)]
        iface: Option<String>,
        /// Network namespace of the host (the harness's hosts; default: the host name if such a namespace exists).
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, default_value = dataplane::PIN_ROOT)]
        pin_root: PathBuf,
        /// Destination address.
        #[arg(long)]
        to: std::net::Ipv4Addr,
        /// Source address (default: the port's address from the ports table).
        #[arg(long)]
        from: Option<std::net::Ipv4Addr>,
        #[arg(long, default_value = "tcp")]
        proto: TraceProto,
        #[arg(long, default_value_t = 80)]
        dport: u16,
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// Source MAC (default: the port's MAC from the ports table).
        #[arg(long)]
        src_mac: Option<String>,
        /// Destination MAC (default: as the VM would address it: the
        /// destination's MAC on the port's subnet, else the gateway's).
        #[arg(long)]
        dst_mac: Option<String>,
    },
    /// Counters read straight from a host's pinned maps (run on that host).
    Counters {
        /// The host's pin directory, e.g. /sys/fs/bpf/strato/<host>.
        #[arg(long)]
        pin_dir: PathBuf,
    },
    /// A host's load balancer access log: one line per connection start
    /// and end (client, VIP, member, bytes each way, duration).
    LbLog {
        /// The agent's state directory (its --state-dir).
        #[arg(long)]
        state_dir: PathBuf,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Only lines of this listener id.
        #[arg(long)]
        listener: Option<String>,
    },
    /// A host's load balancer metrics (Prometheus text format).
    LbMetrics {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// The access log of a host's L7 instances: one line per request
    /// (client, listener, pool, member, method, host, path, status, bytes,
    /// times, TLS), oldest first.
    L7Log {
        /// The agent's state directory (its --state-dir).
        #[arg(long)]
        state_dir: PathBuf,
        /// Only this instance (amphora id).
        #[arg(long)]
        instance: Option<String>,
        /// Only lines of this listener id.
        #[arg(long)]
        listener: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// The metrics of a host's L7 instances (Prometheus text, read from
    /// each instance's control socket).
    L7Metrics {
        #[arg(long)]
        state_dir: PathBuf,
        /// Only this instance (amphora id).
        #[arg(long)]
        instance: Option<String>,
    },
}

/// The instance directories under an agent's state directory (`l7/<id>`),
/// by id; only `only` if given.
fn l7_instances(
    state_dir: &std::path::Path,
    only: Option<&str>,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let root = state_dir.join("l7");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if only.is_none_or(|o| o == id) && e.path().is_dir() {
            out.push((id, e.path()));
        }
    }
    out.sort();
    if let (Some(o), true) = (only, out.is_empty()) {
        anyhow::bail!("no L7 instance {o} under {}", root.display());
    }
    Ok(out)
}

/// `GET <path>` on an instance's control socket; the body.
fn l7_get(dir: &std::path::Path, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let sock = dir.join(strato_proto::l7::CONTROL_SOCKET);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).with_context(|| {
        format!(
            "connecting to {} (is the instance running?)",
            sock.display()
        )
    })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: l7\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{}: not an HTTP answer", sock.display()))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("{}: {}", sock.display(), head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TraceProto {
    Tcp,
    Udp,
    Icmp,
}

fn mac(s: &str) -> anyhow::Result<[u8; 6]> {
    parse_mac(s).ok_or_else(|| anyhow::anyhow!("{s:?} is not a MAC address"))
}

fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Which headers the program changed (by byte offset, untagged IPv4).
fn rewrites(a: &[u8], b: &[u8]) -> Vec<String> {
    if a.len() != b.len() {
        return vec![format!("length {} -> {} bytes", a.len(), b.len())];
    }
    let fields: [(&str, std::ops::Range<usize>); 7] = [
        ("eth dst", 0..6),
        ("eth src", 6..12),
        ("ethertype", 12..14),
        ("ipv4 ttl", 22..23),
        ("ipv4 checksum", 24..26),
        ("ipv4 src", 26..30),
        ("ipv4 dst", 30..34),
    ];
    let mut out: Vec<String> = fields
        .iter()
        .filter(|(_, r)| r.end <= a.len() && a[r.clone()] != b[r.clone()])
        .map(|(n, _)| n.to_string())
        .collect();
    if a.len() > 34 && a[34..] != b[34..] {
        out.push("transport header/payload".into());
    }
    out
}

/// The path a traced frame took, read from what came out.
fn describe(
    input: &[u8],
    out: &[u8],
    action: u32,
    drops: &[&str],
    target: Option<dataplane_common::Endpoint>,
    on_link: bool,
    which: dataplane::Attach,
) -> String {
    let routed = !on_link;
    let ttl = |f: &[u8], off: usize| f.get(off + 8).copied();
    match action {
        1 => format!("drop ({})", drops.join(", ")),
        2 if which == dataplane::Attach::Port => {
            "to the host stack (DHCP, the agent's slow path)".into()
        }
        2 => "to the host stack (not VXLAN for this host)".into(),
        4 if out.len() == input.len() + dataplane_common::VXLAN_OVERHEAD as usize
            && out.len() >= 50 =>
        {
            let vni = u32::from_be_bytes([0, out[46], out[47], out[48]]);
            let under = std::net::Ipv4Addr::new(out[30], out[31], out[32], out[33]);
            let inner = &out[50..];
            format!(
                "{} -> VXLAN encapsulation: vni {vni} to host {under} (outer {} -> {}, udp {} -> 4789), out of the uplink",
                if routed && ttl(inner, 14) != ttl(input, 14) { "routed in the VPC (ttl-1, MACs rewritten)" } else { "switched in the network" },
                fmt_mac(&out[6..12]),
                fmt_mac(&out[0..6]),
                u16::from_be_bytes([out[34], out[35]]),
            )
        }
        4 if !drops.is_empty() => format!(
            "answered with an ICMP error from the gateway ({})",
            drops.join(", ")
        ),
        4 if out.len() >= 34 && out[30..34] == input[26..30] => {
            "answered by the dataplane (gateway)".into()
        }
        4 => {
            let port = target
                .filter(|t| t.kind == dataplane_common::EP_LOCAL)
                .map(|t| {
                    let name = nix::net::if_::if_indextoname(t.ifindex)
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!("{name} (ifindex {})", t.ifindex)
                })
                .unwrap_or_else(|| "a port".into());
            format!(
                "{} -> redirect to local {port}",
                if routed {
                    "routed in the VPC (ttl-1, MACs rewritten)"
                } else {
                    "switched in the network"
                }
            )
        }
        _ => "other".into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn trace(
    config: Option<&Update>,
    json: bool,
    host: &str,
    port: Option<&str>,
    iface: Option<&str>,
    netns: Option<&str>,
    pin_root: &std::path::Path,
    to: std::net::Ipv4Addr,
    from: Option<std::net::Ipv4Addr>,
    proto: TraceProto,
    (sport, dport): (u16, u16),
    src_mac: Option<&str>,
    dst_mac: Option<&str>,
) -> anyhow::Result<()> {
    use dataplane::Attach;
    let pin_dir = pin_root.join(host);
    if !pin_dir.join(dataplane_common::maps::PORTS).exists() {
        anyhow::bail!(
            "no pinned dataplane for host {host} under {} (is its agent running here?)",
            pin_dir.display()
        );
    }
    let ns = netns.map(str::to_owned).or_else(|| {
        std::path::Path::new("/run/netns")
            .join(host)
            .exists()
            .then(|| host.to_owned())
    });
    if let Some(ns) = &ns {
        let f = std::fs::File::open(std::path::Path::new("/run/netns").join(ns))
            .with_context(|| format!("opening network namespace {ns}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    let (name, which) = match (port, iface) {
        (Some(p), _) => (tap_name(p), Attach::Port),
        (None, Some(i)) => (
            i.to_owned(),
            if i.starts_with("tap") {
                Attach::Port
            } else {
                Attach::Uplink
            },
        ),
        (None, None) => anyhow::bail!("name a --port or an --iface"),
    };
    let ifindex = nix::net::if_::if_nametoindex(name.as_str())
        .with_context(|| format!("no interface {name} on host {host}"))?;
    let entry = dataplane::read_pinned_ports(&pin_dir)?
        .get(&ifindex)
        .copied();
    let src_mac = match src_mac {
        Some(m) => mac(m)?,
        None => entry.map(|e| e.mac).unwrap_or([0x02, 0, 0, 0, 0, 0x02]),
    };
    let from = from
        .or_else(|| entry.map(|e| std::net::Ipv4Addr::from(e.ipv4)))
        .unwrap_or(std::net::Ipv4Addr::new(10, 0, 0, 2));
    let on_link = entry.is_some_and(|e| {
        let net = ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(e.ipv4), e.prefix_len);
        net.is_ok_and(|n| n.contains(to))
    });
    let target = match entry {
        Some(e) => dataplane::read_pinned_endpoint(&pin_dir, e.domain, to)?,
        None => None,
    };
    let dst_mac = match (dst_mac, entry, target) {
        (Some(m), _, _) => mac(m)?,
        (None, Some(_), Some(t)) if on_link => t.mac,
        (None, Some(e), _) if e.gw_mac != [0; 6] => e.gw_mac,
        _ => [0xfa, 0x16, 0x3e, 0, 0, 1],
    };
    let b =
        etherparse::PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(from.octets(), to.octets(), 64);
    let mut frame = Vec::new();
    match proto {
        TraceProto::Tcp => b.tcp(sport, dport, 1, 65535).syn().write(&mut frame, &[]),
        TraceProto::Udp => b.udp(sport, dport).write(&mut frame, &[0; 18]),
        TraceProto::Icmp => b.icmpv4_echo_request(1, 1).write(&mut frame, &[0; 18]),
    }
    .context("building the packet")?;
    let t = dataplane::trace(&pin_dir, which, ifindex, &frame)?;
    let verdict = match t.action {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    };
    let rw = rewrites(&frame, &t.output);
    let drops: Vec<&str> = t.drops.iter().map(|d| d.label()).collect();
    let ports = dataplane::read_pinned_ports(&pin_dir)?;
    let mut zones: Vec<(String, dataplane_common::PortInfo, u32)> = Vec::new();
    if let Some(e) = entry {
        zones.push((name.clone(), e, dataplane_common::DIR_EGRESS));
    }
    let mut remote_note = None;
    if let Some(ep) = target {
        if ep.kind == dataplane_common::EP_LOCAL {
            if let Some(p) = ports.get(&ep.ifindex) {
                let tap = nix::net::if_::if_indextoname(ep.ifindex)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("ifindex {}", ep.ifindex));
                zones.push((tap, *p, dataplane_common::DIR_INGRESS));
            }
        } else if ep.kind == dataplane_common::EP_REMOTE {
            remote_note = Some(format!(
                "the destination's ingress rules are checked on its host ({}) at decapsulation",
                std::net::Ipv4Addr::from(ep.underlay)
            ));
        }
    }
    let (proto_n, sp, dp, policy_port) = match proto {
        TraceProto::Tcp => (6u8, sport, dport, dport),
        TraceProto::Udp => (17, sport, dport, dport),
        TraceProto::Icmp => (1, 1, 1, 0x0800),
    };
    let mut security = Vec::new();
    for (tap, info, dir) in &zones {
        security.push(security_zone(
            config,
            &pin_dir,
            tap,
            info,
            *dir,
            (from, to, proto_n, sp, dp, policy_port),
        )?);
    }
    let path = describe(&frame, &t.output, t.action, &drops, target, on_link, which);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "host": host, "interface": name, "ifindex": ifindex, "program": which.program(),
                "packet": {"src_mac": fmt_mac(&src_mac), "dst_mac": fmt_mac(&dst_mac), "from": from.to_string(), "to": to.to_string(),
                           "proto": format!("{proto:?}").to_lowercase(), "sport": sport, "dport": dport, "bytes": frame.len()},
                "port_known": entry.is_some(), "vni": entry.map(|e| e.vni),
                "verdict": verdict, "path": path, "rewrites": rw, "drop_reasons": drops, "duration_ns": t.duration_ns,
                "security": security, "security_note": remote_note,
            }))?
        );
        return Ok(());
    }
    println!(
        "trace on host {host}: {name} (ifindex {ifindex}), program {}",
        which.program()
    );
    match entry {
        Some(e) => println!(
            "port entry: vni {} mac {} ip {}/{} flags {:#x}",
            e.vni,
            fmt_mac(&e.mac),
            std::net::Ipv4Addr::from(e.ipv4),
            e.prefix_len,
            e.flags
        ),
        None => println!("port entry: none (not a configured port on this host)"),
    }
    println!(
        "in:       {} -> {} {:?} {sport} -> {dport}, {} bytes, {} -> {}",
        from,
        to,
        proto,
        frame.len(),
        fmt_mac(&src_mac),
        fmt_mac(&dst_mac)
    );
    println!("path:     {path}");
    println!("verdict:  {verdict}");
    println!(
        "rewrites: {}",
        if rw.is_empty() {
            "none".to_owned()
        } else {
            rw.join(", ")
        }
    );
    println!(
        "drop:     {}",
        if drops.is_empty() {
            "-".to_owned()
        } else {
            drops.join(", ")
        }
    );
    for z in &security {
        println!(
            "security: {} of {}: {}",
            z["direction"].as_str().unwrap_or(""),
            z["port"].as_str().unwrap_or(""),
            z["decision"].as_str().unwrap_or("")
        );
    }
    if let Some(n) = remote_note {
        println!("security: {n}");
    }
    Ok(())
}

/// What one port's security groups make of the traced packet: its policy,
/// the flow's connection entry (the port's side of it), and the rule that allows
/// a first packet (named from the host's configuration). Read only.
fn security_zone(
    config: Option<&Update>,
    pin_dir: &std::path::Path,
    tap: &str,
    info: &dataplane_common::PortInfo,
    dir: u32,
    (from, to, proto, sport, dport, policy_port): (
        std::net::Ipv4Addr,
        std::net::Ipv4Addr,
        u8,
        u16,
        u16,
        u16,
    ),
) -> anyhow::Result<serde_json::Value> {
    let direction = if dir == dataplane_common::DIR_EGRESS {
        "egress"
    } else {
        "ingress"
    };
    if info.policy == 0 {
        return Ok(
            serde_json::json!({"port": tap, "direction": direction, "policy": 0,
            "decision": "not filtered (port security off)"}),
        );
    }
    // One entry per connection and host, in the ports' routing domain; each
    // side records the policy its port admitted the flow under.
    let (key, from_a) = dataplane_common::CtKey::of_flow(
        info.domain,
        from.octets(),
        to.octets(),
        sport,
        dport,
        proto,
    );
    let side = usize::from((dir == dataplane_common::DIR_EGRESS) != from_a);
    let ct = dataplane::read_pinned_ct(pin_dir, &key)?.map(|e| {
        serde_json::json!({
            "state": dataplane_common::ct_state_label(e.state),
            "packet_is": if e.initiator() == usize::from(!from_a) { "original direction" } else { "reply" },
            "admitted_by": if e.initiator() == side { "egress rule" } else { "ingress rule" },
            "policy": e.policy[side],
            "rule": e.rule[side],
        })
    });
    let remote = if dir == dataplane_common::DIR_EGRESS {
        to
    } else {
        from
    };
    let rule =
        dataplane::read_pinned_policy(pin_dir, info.policy, dir, remote, proto, policy_port)?;
    // Name the rule as the agent numbered it: the port's groups flattened
    // from the same configuration.
    let named = rule.and_then(|n| {
        let cfg = config?;
        let entries: std::collections::BTreeMap<String, Entry> =
            cfg.upserts.iter().map(|e| (e.key(), e.clone())).collect();
        let port = entries.values().find_map(|e| match e {
            Entry::Port(p) if p.tap == tap => Some(p),
            _ => None,
        })?;
        let groups: Vec<&SecurityGroupEntry> = port
            .security_groups
            .iter()
            .filter_map(|g| match entries.get(&format!("sg/{g}")) {
                Some(Entry::SecurityGroup(sg)) => Some(sg),
                _ => None,
            })
            .collect();
        let mut members: std::collections::HashMap<&str, Vec<String>> = Default::default();
        for e in entries.values() {
            if let Entry::SgMember(m) = e {
                members
                    .entry(m.group_id.as_str())
                    .or_default()
                    .extend(m.ips.iter().cloned());
            }
        }
        let prefixes = members
            .iter()
            .map(|(g, ips)| (*g, dataplane::security_groups::member_prefixes(ips)))
            .collect();
        let flat = dataplane::security_groups::flatten(&groups, &prefixes);
        flat.rules.get(n as usize - 1).cloned()
    });
    let stateless = info.flags & dataplane_common::PORT_F_STATELESS != 0;
    let decision = match (&ct, rule, &named) {
        (Some(c), _, _) if !stateless && c["policy"] == info.policy => format!(
            "tracked connection ({}, {}): passes without rules",
            c["state"].as_str().unwrap_or(""),
            c["packet_is"].as_str().unwrap_or("")
        ),
        (_, Some(_), Some(r)) => format!("allowed by rule {} of group {}", r.id, r.group),
        (_, Some(n), None) => format!("allowed by rule number {n} of policy {}", info.policy),
        (_, None, _) => format!("no {direction} rule allows it (policy_denied_{direction})"),
    };
    Ok(serde_json::json!({
        "port": tap, "direction": direction, "policy": info.policy, "stateless": stateless,
        "conntrack": ct, "rule": named.map(|r| serde_json::json!({"id": r.id, "group": r.group})),
        "decision": decision,
    }))
}

fn main() {
    telemetry::init("stratoctl");
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("stratoctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match args.cmd {
        Cmd::Hosts => {
            let v: serde_json::Value =
                rt.block_on(client::get_json(&args.controller, "/internal/v1/hosts"))?;
            let hosts: Vec<HostStatus> =
                serde_json::from_value(v["hosts"].clone()).context("decoding hosts")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<5} {:>9} {:>6} {:>12} {:>14} {:>10}",
                "HOST", "STATE", "SEEN", "IFACES", "RX PACKETS", "RX BYTES", "DROPPED"
            );
            for h in hosts {
                let (mut p, mut b, mut d) = (0, 0, 0);
                for i in &h.report.interfaces {
                    p += i.counters.rx_packets;
                    b += i.counters.rx_bytes;
                    d += i.counters.dropped;
                }
                println!(
                    "{:<24} {:<5} {:>8.1}s {:>6} {:>12} {:>14} {:>10}",
                    h.host,
                    h.state,
                    h.last_seen_ms_ago as f64 / 1000.0,
                    h.report.interfaces.len(),
                    p,
                    b,
                    d
                );
            }
        }
        Cmd::Resources { project } => {
            let v: serde_json::Value =
                rt.block_on(client::get_json(&args.controller, "/internal/v1/resources"))?;
            let projects: Vec<&serde_json::Value> = v["projects"]
                .as_array()
                .context("decoding resources")?
                .iter()
                .filter(|p| {
                    project
                        .as_deref()
                        .is_none_or(|want| p["name"] == want || p["id"] == want)
                })
                .collect();
            if let Some(want) = &project {
                if projects.is_empty() {
                    anyhow::bail!("no project named or with id {want:?}");
                }
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&projects)?);
                return Ok(());
            }
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
            for p in projects {
                println!(
                    "project {} ({})  revision {}",
                    s(&p["name"]),
                    s(&p["id"]),
                    v["revision"]
                );
                for n in p["networks"].as_array().into_iter().flatten() {
                    let subnets: Vec<String> = n["subnets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| s(&x["cidr"]))
                        .collect();
                    println!(
                        "  network {:<20} {}  vni {:<8} mtu {}  subnets {}",
                        s(&n["name"]),
                        s(&n["id"]),
                        n["vni"],
                        n["mtu"],
                        subnets.join(" ")
                    );
                }
                for r in p["routers"].as_array().into_iter().flatten() {
                    println!(
                        "  router  {:<20} {}  interfaces {}  routes {}",
                        s(&r["name"]),
                        s(&r["id"]),
                        r["interfaces"],
                        r["routes"]
                    );
                }
                for l in p["load_balancers"].as_array().into_iter().flatten() {
                    println!(
                        "  lb      {:<20} {}  vip {}{}  {} / {}",
                        s(&l["name"]),
                        s(&l["id"]),
                        s(&l["vip"]),
                        l["floating_ip"]
                            .as_str()
                            .map(|f| format!(" (floating {f})"))
                            .unwrap_or_default(),
                        s(&l["provisioning_status"]),
                        s(&l["operating_status"])
                    );
                    for x in l["listeners"].as_array().into_iter().flatten() {
                        let members: Vec<String> = x["members"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|m| {
                                format!(
                                    "{}:{} w{} {}",
                                    s(&m["address"]),
                                    m["port"],
                                    m["weight"],
                                    s(&m["status"])
                                )
                            })
                            .collect();
                        println!(
                            "          listener {} {}  -> {}",
                            s(&x["protocol"]),
                            x["port"],
                            if members.is_empty() {
                                "-".to_owned()
                            } else {
                                members.join(", ")
                            }
                        );
                    }
                }
                for x in p["ports"].as_array().into_iter().flatten() {
                    let ips: Vec<String> =
                        x["ips"].as_array().into_iter().flatten().map(&s).collect();
                    let host = s(&x["host"]);
                    println!(
                        "  port    {:<20} {}  {:<15} {}  host {:<16} {}",
                        s(&x["name"]),
                        s(&x["id"]),
                        ips.join(","),
                        s(&x["mac"]),
                        if host.is_empty() {
                            "-".to_owned()
                        } else {
                            host
                        },
                        s(&x["status"])
                    );
                }
            }
        }
        Cmd::Host { name } => {
            let path = format!("/internal/v1/hosts/{name}");
            let v: serde_json::Value = rt.block_on(client::get_json(&args.controller, &path))?;
            let h: HostStatus =
                serde_json::from_value(v["host"].clone()).context("decoding host")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&h)?);
                return Ok(());
            }
            println!(
                "host {}  state {}  seen {:.1}s ago  agent pid {}  underlay {}  realised revision {}",
                h.host,
                h.state,
                h.last_seen_ms_ago as f64 / 1000.0,
                h.report.pid,
                h.report.underlay_ip.as_deref().unwrap_or("-"),
                h.report.realised_revision,
            );
            let maps: Vec<String> = h
                .report
                .maps
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("pins {}  map entries: {}", h.report.pin_dir, maps.join(" "));
            if let Some(c) = &h.report.conntrack {
                println!(
                    "conntrack: {}/{} entries  inserts {} (refused {})  evicted~{}  expired {}  revoked {}  hits {}  rule lookups {}  related {}  rechecked {}",
                    c.entries, c.capacity, c.inserts, c.insert_failures, c.evictions, c.expired,
                    c.revoked, c.hits, c.policy_lookups, c.related, c.rechecked
                );
            }
            if !h.report.ports.is_empty() {
                println!(
                    "\n{:<38} {:<16} {:>7} {:<8} ERROR",
                    "PORT", "TAP", "IFINDEX", "STATE"
                );
                for p in &h.report.ports {
                    println!(
                        "{:<38} {:<16} {:>7} {:<8} {}",
                        p.id,
                        p.tap,
                        p.ifindex
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "-".into()),
                        format!("{:?}", p.state).to_lowercase(),
                        p.error.as_deref().unwrap_or("")
                    );
                }
                println!();
            }
            println!(
                "{:<16} {:<7} {:>7} {:>10} {:>12} {:>8} {:>8} {:>6} {:>6} {:>8}  STATUS",
                "INTERFACE",
                "ROLE",
                "IFINDEX",
                "RX PKTS",
                "RX BYTES",
                "IPV4",
                "IPV6",
                "ARP",
                "OTHER",
                "DROPPED"
            );
            for i in &h.report.interfaces {
                let c = i.counters;
                println!(
                    "{:<16} {:<7} {:>7} {:>10} {:>12} {:>8} {:>8} {:>6} {:>6} {:>8}  {}",
                    i.name,
                    format!("{:?}", i.role).to_lowercase(),
                    i.ifindex,
                    c.rx_packets,
                    c.rx_bytes,
                    c.ipv4,
                    c.ipv6,
                    c.arp,
                    c.other,
                    c.dropped,
                    i.error.as_deref().unwrap_or("attached")
                );
            }
            if !h.report.drops.is_empty() {
                println!(
                    "\n{:<16} {:<28} {:>10} {:>12}",
                    "INTERFACE", "DROP REASON", "PACKETS", "BYTES"
                );
                for d in &h.report.drops {
                    println!(
                        "{:<16} {:<28} {:>10} {:>12}",
                        d.interface, d.reason, d.packets, d.bytes
                    );
                }
            }
        }
        Cmd::Trace {
            host,
            port,
            iface,
            netns,
            pin_root,
            to,
            from,
            proto,
            dport,
            sport,
            src_mac,
            dst_mac,
        } => {
            let host = match (host, &port) {
                (Some(h), _) => h,
                (None, Some(p)) => {
                    let v: serde_json::Value = rt
                        .block_on(client::get_json(&args.controller, "/internal/v1/resources"))
                        .context(
                            "asking the controller where the port is bound (or give --host)",
                        )?;
                    let found = v["projects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|pr| pr["ports"].as_array().into_iter().flatten())
                        .find(|x| x["id"].as_str().is_some_and(|id| id == p))
                        .with_context(|| format!("no port {p}"))?;
                    match found["host"].as_str() {
                        Some(h) if !h.is_empty() => h.to_owned(),
                        _ => anyhow::bail!("port {p} is not bound to a host"),
                    }
                }
                (None, None) => anyhow::bail!("name a --port (or an --iface with --host)"),
            };
            // The host's configuration names the rules (best effort: the
            // verdicts come from the maps either way).
            let config: Option<Update> = rt
                .block_on(client::get_json(
                    &args.controller,
                    &format!("/internal/v1/hosts/{host}/config"),
                ))
                .ok()
                .and_then(|v| serde_json::from_value(v).ok());
            trace(
                config.as_ref(),
                args.json,
                &host,
                port.as_deref(),
                iface.as_deref(),
                netns.as_deref(),
                &pin_root,
                to,
                from,
                proto,
                (sport, dport),
                src_mac.as_deref(),
                dst_mac.as_deref(),
            )?;
        }
        Cmd::LbLog {
            state_dir,
            tail,
            listener,
        } => {
            let path = state_dir.join(ACCESS_LOG);
            let text = std::fs::read_to_string(&path)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(String::new()),
                    _ => Err(e),
                })
                .with_context(|| format!("reading {}", path.display()))?;
            let lines: Vec<AccessLine> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|l: &AccessLine| listener.as_deref().is_none_or(|x| l.listener == x))
                .collect();
            let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&lines[skip..])?);
                return Ok(());
            }
            println!(
                "{:<20} {:<5} {:<4} {:<21} {:<21} {:<21} {:>10} {:>10} {:>9}",
                "TIME", "EVENT", "PROT", "CLIENT", "VIP", "BACKEND", "BYTES IN", "BYTES OUT", "MS"
            );
            for l in &lines[skip..] {
                println!(
                    "{:<20} {:<5} {:<4} {:<21} {:<21} {:<21} {:>10} {:>10} {:>9}",
                    l.time,
                    l.event,
                    l.protocol,
                    l.client,
                    l.vip,
                    l.backend,
                    l.bytes_in,
                    l.bytes_out,
                    l.duration_ms
                );
            }
        }
        Cmd::L7Log {
            state_dir,
            instance,
            listener,
            tail,
        } => {
            let mut lines: Vec<strato_proto::l7::L7AccessLine> = Vec::new();
            for (_, dir) in l7_instances(&state_dir, instance.as_deref())? {
                let path = dir.join(strato_proto::l7::ACCESS_LOG);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                lines.extend(
                    text.lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .filter(|l: &strato_proto::l7::L7AccessLine| {
                            listener.as_deref().is_none_or(|x| l.listener == x)
                        }),
                );
            }
            lines.sort_by(|a, b| a.time.cmp(&b.time));
            let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&lines[skip..])?);
                return Ok(());
            }
            println!(
                "{:<24} {:<21} {:<6} {:<20} {:<24} {:>4} {:>9} {:>9} {:>8} {:<8}",
                "TIME",
                "CLIENT",
                "METHOD",
                "HOST",
                "PATH",
                "CODE",
                "BYTES IN",
                "BYTES OUT",
                "MS",
                "MEMBER"
            );
            for l in &lines[skip..] {
                println!(
                    "{:<24} {:<21} {:<6} {:<20} {:<24} {:>4} {:>9} {:>9} {:>8.1} {:<8}",
                    l.time,
                    l.client,
                    l.method,
                    l.host,
                    l.path,
                    l.status,
                    l.bytes_in,
                    l.bytes_out,
                    l.response_ms,
                    l.member.get(..8).unwrap_or(&l.member)
                );
            }
        }
        Cmd::L7Metrics {
            state_dir,
            instance,
        } => {
            let all = l7_instances(&state_dir, instance.as_deref())?;
            if all.is_empty() {
                anyhow::bail!("no L7 instance under {}", state_dir.join("l7").display());
            }
            for (id, dir) in all {
                println!("# instance {id}");
                print!("{}", l7_get(&dir, "/metrics")?);
            }
        }
        Cmd::LbMetrics { state_dir } => {
            let path = state_dir.join(METRICS);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (no load balancer on this host yet?)",
                    path.display()
                )
            })?;
            print!("{text}");
        }
        Cmd::Counters { pin_dir } => {
            let c = Counters::read_pinned(&pin_dir)
                .with_context(|| format!("reading pinned counters under {}", pin_dir.display()))?;
            if args.json {
                let ifs: Vec<_> = c
                    .interfaces
                    .iter()
                    .map(|(i, s)| serde_json::json!({"ifindex": i, "counters": IfCounters::from(*s)}))
                    .collect();
                let drops: Vec<_> = c
                    .drops
                    .iter()
                    .map(|((i, r), s)| serde_json::json!({"ifindex": i, "reason": r.label(), "packets": s.packets, "bytes": s.bytes}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"interfaces": ifs, "drops": drops})
                    )?
                );
                return Ok(());
            }
            println!(
                "{:>7} {:>10} {:>12} {:>8} {:>8} {:>6} {:>6} {:>8}",
                "IFINDEX", "RX PKTS", "RX BYTES", "IPV4", "IPV6", "ARP", "OTHER", "DROPPED"
            );
            for (i, s) in &c.interfaces {
                println!(
                    "{:>7} {:>10} {:>12} {:>8} {:>8} {:>6} {:>6} {:>8}",
                    i, s.rx_packets, s.rx_bytes, s.ipv4, s.ipv6, s.arp, s.other, s.dropped
                );
            }
            for ((i, r), s) in &c.drops {
                println!(
                    "drop ifindex {i} {}: {} packets, {} bytes",
                    r.label(),
                    s.packets,
                    s.bytes
                );
            }
        }
    }
    Ok(())
}
