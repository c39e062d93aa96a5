//! stratoctl: the operator's inspection CLI. Human tables by default,
//! `--json` for scripts; clear errors when the controller is unreachable.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use strato::{
    client::{self, Endpoint},
    dataplane::Counters,
    report::HostStatus,
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
    /// Counters read straight from a host's pinned maps (run on that host).
    Counters {
        /// The host's pin directory, e.g. /sys/fs/bpf/strato/<host>.
        #[arg(long)]
        pin_dir: PathBuf,
    },
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
        Cmd::Counters { pin_dir } => {
            let c = Counters::read_pinned(&pin_dir)
                .with_context(|| format!("reading pinned counters under {}", pin_dir.display()))?;
            if args.json {
                let ifs: Vec<_> = c
                    .interfaces
                    .iter()
                    .map(|(i, s)| serde_json::json!({"ifindex": i, "counters": strato::report::IfCounters::from(*s)}))
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
