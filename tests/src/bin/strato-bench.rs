//! strato-bench: the benchmarks behind `make bench`. Everything in one run,
//! side by side, reported as ratios (the machine is shared and noisy):
//!
//! 1. ns/packet of each dataplane path through BPF_PROG_TEST_RUN, against
//!    the do-nothing floor program;
//! 2. VM-to-VM on one harness host through the Linux alternatives Strato's
//!    VPC path will be compared with: routed namespaces, and routed +
//!    nftables conntrack filter. 64-byte UDP packets/s (trafgen) and
//!    single-stream TCP Gbit/s (iperf3).
//!
//! Prints a Markdown report and, with `--write FILE`, replaces the block
//! between `<!-- bench:begin -->` and `<!-- bench:end -->` in FILE.

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use netns_harness::{Region, Topology, VmSpec};
use strato::dataplane::Attach;
use strato_tests::{packets, progtest::ProgramTester};

struct Args {
    seconds: u64,
    repeat: u32,
    rounds: usize,
    write: Option<String>,
    skip_netns: bool,
    skip_cp: bool,
    /// Only the security group program rows (while tuning them).
    only_policy: bool,
    /// Only the elastic IP / SNAT program rows.
    only_nat: bool,
    /// Only internet to VM through an elastic IP (namespaces).
    only_eip_netns: bool,
    /// Only the load balancer program rows.
    only_lb: bool,
    /// Only connections/s through load balancers (namespaces).
    only_lb_netns: bool,
    cp_ports: usize,
    cp_sample: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 5,
        repeat: 1_000_000,
        rounds: 5,
        write: None,
        skip_netns: false,
        skip_cp: false,
        only_policy: false,
        only_nat: false,
        only_eip_netns: false,
        only_lb: false,
        only_lb_netns: false,
        cp_ports: 10_000,
        cp_sample: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                a.seconds = val("--seconds")?
                    .parse()
                    .context("--seconds: a whole number")?
            }
            "--repeat" => {
                a.repeat = val("--repeat")?
                    .parse()
                    .context("--repeat: a whole number")?
            }
            "--rounds" => {
                a.rounds = val("--rounds")?
                    .parse()
                    .context("--rounds: a whole number")?
            }
            "--write" => a.write = Some(val("--write")?),
            "--skip-netns" => a.skip_netns = true,
            "--skip-control-plane" => a.skip_cp = true,
            "--only-policy" => a.only_policy = true,
            "--only-nat" => a.only_nat = true,
            "--only-eip-netns" => a.only_eip_netns = true,
            "--only-lb" => a.only_lb = true,
            "--only-lb-netns" => a.only_lb_netns = true,
            "--cp-ports" => {
                a.cp_ports = val("--cp-ports")?
                    .parse()
                    .context("--cp-ports: a whole number")?
            }
            "--cp-sample" => {
                a.cp_sample = val("--cp-sample")?
                    .parse()
                    .context("--cp-sample: a whole number")?
            }
            "-h" | "--help" => {
                println!("usage: strato-bench [--seconds N] [--repeat N] [--rounds N] [--skip-netns] [--skip-control-plane] [--only-policy] [--only-nat] [--only-eip-netns] [--only-lb] [--only-lb-netns] [--cp-ports N] [--cp-sample N] [--write docs/benchmarks.md]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if a.seconds == 0 || a.seconds > 600 || a.repeat == 0 || a.rounds == 0 {
        bail!("--seconds must be 1..=600, --repeat and --rounds at least 1");
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    eprintln!(
        "bench: program paths through BPF_PROG_TEST_RUN ({} rounds x {} packets)",
        args.rounds, args.repeat
    );
    let mut t = ProgramTester::new();
    let mut truncated = packets::ipv4_udp(&[0; 18]);
    truncated[16..18].copy_from_slice(&1500u16.to_be_bytes());
    packets::fix_ipv4_checksum(&mut truncated);
    let rows: Vec<(&str, Attach, Vec<u8>)> = vec![
        (
            "floor: XDP_PASS only (reference)",
            Attach::Floor,
            packets::ipv4_udp(&[0; 18]),
        ),
        (
            "uplink: IPv4/UDP 64 B, parse + count, pass",
            Attach::Uplink,
            packets::ipv4_udp(&[0; 18]),
        ),
        (
            "uplink: IPv4/TCP 74 B",
            Attach::Uplink,
            packets::ipv4_tcp(&[0; 20]),
        ),
        (
            "uplink: 802.1Q IPv4/UDP",
            Attach::Uplink,
            packets::vlan_ipv4_udp(7, &[0; 18]),
        ),
        (
            "uplink: IPv6/TCP",
            Attach::Uplink,
            packets::ipv6_tcp(&[0; 20]),
        ),
        (
            "uplink: IPv6 + 2 ext headers/UDP",
            Attach::Uplink,
            packets::ipv6_with_ext(
                &[(0, packets::ext_header(0)), (60, packets::ext_header(0))],
                &[0; 10],
            ),
        ),
        ("uplink: ARP", Attach::Uplink, packets::arp_request()),
        (
            "uplink: malformed IPv4, drop + reason",
            Attach::Uplink,
            truncated,
        ),
        (
            "port: IPv4/UDP 64 B",
            Attach::Port,
            packets::ipv4_udp(&[0; 18]),
        ),
    ];
    let mut results = Vec::new();
    for (name, attach, frame) in &rows {
        // Warm the per-CPU entries so the insert path is not measured.
        t.time(*attach, frame, 1000);
        let ns: Vec<f64> = (0..args.rounds)
            .map(|_| t.time(*attach, frame, args.repeat).as_nanos() as f64)
            .collect();
        results.push((name, median(ns)));
    }
    let floor = results[0].1.max(1.0);
    writeln!(out, "### Dataplane programs, ns/packet (BPF_PROG_TEST_RUN, median of {} rounds of {} packets)\n", args.rounds, args.repeat)?;
    writeln!(out, "| path | ns/packet | x floor |")?;
    writeln!(out, "| --- | ---: | ---: |")?;
    for (name, ns) in &results {
        writeln!(out, "| {name} | {ns:.0} | {:.2} |", ns / floor)?;
    }
    writeln!(out)?;
    Ok(())
}

/// A UDP frame with 18 bytes of payload (64 bytes on the wire).
fn udp_frame(smac: [u8; 6], dmac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .udp(4000, 9)
        .write(&mut f, &[0; 18])
        .expect("frame");
    f
}

/// The VPC paths through BPF_PROG_TEST_RUN (the port pipeline's XDP build,
/// the logic the TC program runs too), with 10 and 100,000 remote ports in
/// the maps: the cost must not grow with them.
fn vpc_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    use strato_tests::progtest::{Net, Port, Router, World, UPLINK, UPLINK_MAC};
    const MAC: fn(u8, u8) -> [u8; 6] = |a, b| [0xfa, 0x16, 0x3e, 0, a, b];
    let (gw_a, gw_b) = (MAC(0xa0, 1), MAC(0xb0, 1));
    let (a1, a2, b1, b3) = (
        (MAC(1, 5), [10, 1, 0, 5]),
        (MAC(1, 6), [10, 1, 0, 6]),
        (MAC(2, 5), [10, 1, 1, 5]),
        (MAC(2, 7), [10, 1, 1, 7]),
    );
    let world = |n: u32| {
        let mut w = World::new()
            .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
            .net(Net::new("b", 101).subnet("sb", "10.1.1.0/24", "10.1.1.1"))
            .net(Net::new("c", 102).subnet("sc", "10.64.0.0/12", "10.64.0.1"))
            .router(
                Router::new("r1")
                    .interface("sa", gw_a)
                    .interface("sb", gw_b)
                    .interface("sc", MAC(0xc0, 1)),
            )
            // Port security off: the pipeline alone (security groups have
            // their own rows).
            .port(Port::local("a1", "a", "tp1", a1.0, a1.1).no_security())
            .port(Port::local("a2", "a", "tp2", a2.0, a2.1).no_security())
            .port(Port::local("b1", "b", "tp3", b1.0, b1.1).no_security())
            .port(Port::remote("b3", "b", [198, 18, 2, 3], b3.0, b3.1));
        // Filler: remote ports on 100 other hosts.
        for i in 0..n {
            let ip = [10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8 | 1];
            let mac = [0xfa, 0x16, 0x3f, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            w = w.port(Port::remote(
                &format!("f{i}"),
                "c",
                [198, 18, 3, (i % 100) as u8],
                mac,
                ip,
            ));
        }
        w
    };
    let mut t = ProgramTester::in_test_net();
    let (tp1, up) = (t.ifindex("tp1"), t.ifindex(UPLINK));
    let vxlan = {
        let inner = udp_frame(gw_b, b1.0, b3.1, b1.1);
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0x5e, 2, 2, 3], UPLINK_MAC)
            .ipv4([198, 18, 2, 3], [198, 18, 1, 1], 64)
            .udp(50000, 4789)
            .write(
                &mut f,
                &[&[0x08, 0, 0, 0, 0, 0, 101, 0][..], &inner].concat(),
            )
            .expect("frame");
        f
    };
    // Every row runs through the harness, which puts the frame back before
    // each run (these paths rewrite it: a repeated test reuses one buffer);
    // its own cost is the "restore" row, taken off the others.
    let rows: Vec<(&str, Attach, u32, Vec<u8>)> = vec![
        (
            "port: switched to a local port",
            Attach::BenchPort,
            tp1,
            udp_frame(a1.0, a2.0, a1.1, a2.1),
        ),
        (
            "port: routed to a local port",
            Attach::BenchPort,
            tp1,
            udp_frame(a1.0, gw_a, a1.1, b1.1),
        ),
        (
            "port: routed + VXLAN encapsulation",
            Attach::BenchPort,
            tp1,
            udp_frame(a1.0, gw_a, a1.1, b3.1),
        ),
        (
            "uplink: VXLAN decapsulation to a local port",
            Attach::BenchUplink,
            up,
            vxlan,
        ),
        (
            "port: ARP reply for the gateway",
            Attach::BenchPort,
            tp1,
            packets::arp_request_from(a1.0, a1.1, [10, 1, 0, 1]),
        ),
    ];
    let sizes = [10u32, 100_000];
    let mut results: Vec<Vec<f64>> = vec![vec![]; rows.len()];
    let (mut floor, mut restore) = (vec![], vec![]);
    let timed = |t: &mut ProgramTester, attach: Attach, ingress: u32, frame: &[u8]| {
        t.bench_frame(frame);
        t.time_on(attach, ingress, frame, 1000);
        median(
            (0..args.rounds)
                .map(|_| t.time_on(attach, ingress, frame, args.repeat).as_nanos() as f64)
                .collect(),
        )
    };
    for n in sizes {
        eprintln!("bench: VPC program paths with {n} remote ports in the maps");
        t.install(&world(n));
        let f = udp_frame(a1.0, a2.0, a1.1, a2.1);
        floor.push(timed(&mut t, Attach::Floor, 0, &f));
        let r = timed(&mut t, Attach::BenchRestore, 0, &f);
        restore.push(r);
        for (i, (name, attach, ingress, frame)) in rows.iter().enumerate() {
            let before = t.outcomes();
            let ns = timed(&mut t, *attach, *ingress, frame);
            let after = t.outcomes();
            // Every run took the path the row names: forwarded or answered,
            // nothing dropped.
            let runs = (args.rounds as u64 * args.repeat as u64) + 1000;
            anyhow::ensure!(
                after.0 - before.0 == runs && after.1 == before.1,
                "{name}: {} of {runs} runs forwarded or answered, {} dropped",
                after.0 - before.0,
                after.1 - before.1
            );
            results[i].push(ns - r);
        }
    }
    t.install(&World::new());
    writeln!(out, "### VPC paths, ns/packet (BPF_PROG_TEST_RUN, median of {} rounds of {} packets), as the maps grow
", args.rounds, args.repeat)?;
    writeln!(out, "The port pipeline's XDP build (the TC program agents attach runs the same code), 64-byte UDP frames, port security off (security groups: next table). Every run gets the original frame back from a harness program first (a repeated test reuses one buffer, and these paths rewrite it); the harness's own cost, {:.0} ns (XDP_PASS alone: {:.0} ns), is taken off. The bench checks that every run was forwarded or answered.\n", restore[0], floor[0])?;
    writeln!(out, "| path | 10 ports | 100,000 ports | 100k / 10 |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for ((name, ..), r) in rows.iter().zip(&results) {
        writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {:.2} |",
            r[0],
            r[1],
            r[1] / r[0].max(1.0),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// Elastic IP and SNAT paths (see `strato_tests::benchnat`).
fn nat_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let mut t = ProgramTester::in_test_net();
    strato_tests::benchnat::run(
        &mut t,
        &strato_tests::benchnat::Options {
            rounds: args.rounds,
            repeat: args.repeat,
        },
        out,
    )
}

/// The L4 load balancer (see `strato_tests::benchlb`).
fn lb_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let mut t = ProgramTester::in_test_net();
    strato_tests::benchlb::run(
        &mut t,
        &strato_tests::benchlb::Options {
            rounds: args.rounds,
            repeat: args.repeat,
        },
        out,
    )
}

/// Security groups through BPF_PROG_TEST_RUN: a first packet (connection
/// table miss and two policy lookups, one per port) with 10 to 100,000 rules
/// on the receiver's group, and established packets (two table hits).
/// Every row runs c1 -> w1 on one network (switched), so the difference to
/// the "no group" row is the security group's cost.
fn policy_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    use strato_tests::progtest::{Net, Port, SecurityGroupEntry, SgRuleEntry, World};
    const MAC: fn(u8, u8) -> [u8; 6] = |a, b| [0xfa, 0x16, 0x3e, 0, a, b];
    let (w1, c1) = ((MAC(1, 5), [10, 1, 0, 5]), (MAC(1, 6), [10, 1, 0, 6]));
    let rule =
        |id: String, dir: &str, proto: Option<u8>, port: Option<u32>, prefix: Option<String>| {
            SgRuleEntry::ipv4(&id, dir, proto, (port, port), prefix.as_deref(), None)
        };
    // The receiver's group: TCP 443 and UDP 53 from the sender's subnet,
    // plus fillers: each a /32 elsewhere with its own TCP port.
    let web = |n: u32| {
        let mut rules = vec![
            rule(
                "https".into(),
                "ingress",
                Some(6),
                Some(443),
                Some("10.1.0.0/24".into()),
            ),
            rule(
                "dns".into(),
                "ingress",
                Some(17),
                Some(53),
                Some("10.1.0.0/24".into()),
            ),
            rule("out".into(), "egress", None, None, None),
        ];
        for i in 0..n.saturating_sub(3) {
            let ip = std::net::Ipv4Addr::from(0x0a80_0000 + i * 7);
            rules.push(rule(
                format!("f{i}"),
                "ingress",
                Some(6),
                Some(1024 + i % 60_000),
                Some(format!("{ip}/32")),
            ));
        }
        SecurityGroupEntry {
            id: "web".into(),
            stateful: true,
            rules,
        }
    };
    let client = SecurityGroupEntry {
        id: "client".into(),
        stateful: true,
        rules: vec![rule("c-out".into(), "egress", None, None, None)],
    };
    let world = |n: u32, groups: bool| {
        let w = World::new().net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"));
        if groups {
            w.group(web(n))
                .group(client.clone())
                .port(Port::local("w1", "a", "tp1", w1.0, w1.1).groups(&["web"]))
                .port(Port::local("c1", "a", "tp2", c1.0, c1.1).groups(&["client"]))
        } else {
            w.port(Port::local("w1", "a", "tp1", w1.0, w1.1).no_security())
                .port(Port::local("c1", "a", "tp2", c1.0, c1.1).no_security())
        }
    };
    let tcp = |flags: u8, seq: u32, ack: u32| {
        let mut b = etherparse::PacketBuilder::ethernet2(c1.0, w1.0)
            .ipv4(c1.1, w1.1, 64)
            .tcp(40000, 443, seq, 65535);
        if flags & 0x02 != 0 {
            b = b.syn();
        }
        if flags & 0x10 != 0 {
            b = b.ack(ack);
        }
        if flags & 0x04 != 0 {
            b = b.rst();
        }
        let mut f = Vec::new();
        b.write(&mut f, &[]).expect("frame");
        f
    };
    let syn_ack = {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(w1.0, c1.0)
            .ipv4(w1.1, c1.1, 64)
            .tcp(443, 40000, 5000, 65535)
            .syn()
            .ack(1001)
            .write(&mut f, &[])
            .expect("frame");
        f
    };
    let udp = {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(c1.0, w1.0)
            .ipv4(c1.1, w1.1, 64)
            .udp(4000, 53)
            .write(&mut f, &[0; 18])
            .expect("frame");
        f
    };
    let mut t = ProgramTester::in_test_net();
    let (tp1, tp2) = (t.ifindex("tp1"), t.ifindex("tp2"));
    let time = |t: &mut ProgramTester, ingress: u32, frame: &[u8]| {
        // A whole round first: the first rows otherwise ran on a cold CPU.
        t.time_on(Attach::Port, ingress, frame, args.repeat);
        median(
            (0..args.rounds)
                .map(|_| {
                    t.time_on(Attach::Port, ingress, frame, args.repeat)
                        .as_nanos() as f64
                })
                .collect(),
        )
    };
    eprintln!("bench: security groups, no group (reference)");
    t.install(&world(0, false));
    let none = time(&mut t, tp2, &udp);
    let sizes = [10u32, 1_000, 100_000];
    let mut first = vec![];
    let mut est_udp = vec![];
    let mut est_tcp = vec![];
    for n in sizes {
        eprintln!("bench: security groups with {n} rules on the receiver's group");
        let started = std::time::Instant::now();
        t.install(&world(n, true));
        eprintln!("bench:   installed in {} ms", started.elapsed().as_millis());
        // The previous size's connections would turn the first packet
        // into a hit (and a recheck under the new policy).
        t.ct_clear();
        // A reset is never tracked: every run misses the table and looks
        // the policies up (the first packet's work but the insertion).
        let before = t.ct_stats();
        first.push(time(&mut t, tp2, &tcp(0x04 | 0x10, 1, 1)));
        let after = t.ct_stats();
        anyhow::ensure!(
            after.hits == before.hits
                && after.policy_lookups - before.policy_lookups
                    >= 2 * args.repeat as u64 * args.rounds as u64,
            "the first-packet row hit the connection table: {before:?} -> {after:?}"
        );
        // UDP: the first run creates the entries, the rest hit them.
        let before = t.ct_stats();
        est_udp.push(time(&mut t, tp2, &udp));
        let after = t.ct_stats();
        // Every run must have hit the connection's entry.
        anyhow::ensure!(
            after.hits - before.hits >= args.repeat as u64 * args.rounds as u64,
            "established UDP did not hit the connection table: {before:?} -> {after:?}"
        );
        // TCP: handshake, then the same ACK again and again (in window).
        for (i, f) in [
            (tp2, tcp(0x02, 1000, 0)),
            (tp1, syn_ack.clone()),
            (tp2, tcp(0x10, 1001, 5001)),
        ] {
            t.run(Attach::Port, i, &f);
        }
        let before = t.ct_stats();
        est_tcp.push(time(&mut t, tp2, &tcp(0x10, 1001, 5001)));
        let after = t.ct_stats();
        anyhow::ensure!(
            after.hits - before.hits >= args.repeat as u64 * args.rounds as u64
                && after.policy_lookups == before.policy_lookups,
            "established TCP did not hit the connection table: {before:?} -> {after:?}"
        );
        t.install(&world(0, false));
    }
    // The connection table empty, then full (1,000,000 entries): new flows
    // (each frame a new UDP source port: one insertion, evictions when
    // full), one run each; and established packets.
    t.install(&world(10, true));
    let new_flows = |t: &mut ProgramTester, base: u16, n: u16| -> f64 {
        let mut v: Vec<f64> = (0..n)
            .map(|i| {
                let mut f = Vec::new();
                etherparse::PacketBuilder::ethernet2(c1.0, w1.0)
                    .ipv4(c1.1, w1.1, 64)
                    .udp(base + i, 53)
                    .write(&mut f, &[0; 18])
                    .expect("frame");
                t.time_on(Attach::Port, tp2, &f, 1).as_nanos() as f64
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!("bench: security groups: new flows into an empty connection table");
    let new_empty = new_flows(&mut t, 1024, 5000);
    let est_empty = time(&mut t, tp2, &udp);
    eprintln!("bench: security groups: filling the connection table");
    let capacity = dataplane_common::maps::CT_MAX_DEFAULT;
    t.ct_fill(999, capacity);
    let ct_mib = t.map_memlock(dataplane_common::maps::CT).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    let before = t.ct_stats();
    let new_full = new_flows(&mut t, 10_000, 5000);
    let after = t.ct_stats();
    let est_full = time(&mut t, tp2, &udp);
    t.install(&world(0, false));
    writeln!(
        out,
        "### Security groups, ns/packet (BPF_PROG_TEST_RUN, median of {} rounds of {} packets)\n",
        args.rounds, args.repeat
    )?;
    writeln!(out, "c1 -> w1 switched on one network, both ports on this host with a stateful group: each packet is checked against c1's egress and w1's ingress rules, and the connection has one entry for both. Rules on w1's group: TCP 443 and UDP 53 from c1's subnet, the rest fillers (a /32 and a port each). First packet: a TCP reset (never tracked), so every run misses the connection table and looks both policies up. Reference without groups (port security off): {none:.0} ns.\n")?;
    writeln!(
        out,
        "| path | 10 rules | 1,000 rules | 100,000 rules | 100k / 10 | x no group |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    for (name, r) in [
        ("first packet (table miss, 2 policy lookups)", &first),
        ("established UDP (1 table hit)", &est_udp),
        ("established TCP (1 table hit, window checks)", &est_tcp),
    ] {
        writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            r[0],
            r[1],
            r[2],
            r[2] / r[0].max(1.0),
            r[0] / none.max(1.0)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "Connection table of {capacity} flows (LRU hash, preallocated): {ct_mib:.0} MiB of kernel memory. New UDP flow (both ports' rules looked up, one entry inserted; median of 5,000 single runs): {new_empty:.0} ns into an empty table, {new_full:.0} ns into the full one (the LRU evicts; {} insertions refused while full). Established UDP: {est_empty:.0} ns with the table nearly empty, {est_full:.0} ns full.\n", after.insert_failures - before.insert_failures)?;
    Ok(())
}

use strato_tests::benchvpc::sh;

fn rx_packets(region: &Region, node: &str) -> anyhow::Result<u64> {
    sh(
        region,
        node,
        &["cat", "/sys/class/net/eth0/statistics/rx_packets"],
    )?
    .trim()
    .parse()
    .context("rx_packets")
}

struct LinuxPath {
    pps: f64,
    sent_pps: f64,
    gbps: f64,
}

fn measure_vm_to_vm(region: &Region, seconds: u64, gw_mac: &str) -> anyhow::Result<LinuxPath> {
    // 64-byte frames on the wire: 14 + 20 + 8 + 18 bytes of payload + 4 FCS.
    let cfg = format!(
        "{{ eth(da={gw_mac}, type=0x0800), ipv4(saddr=10.10.1.2, daddr=10.10.2.2, ttl=64), udp(sport=4000, dport=9), fill(0x00, 18) }}\n"
    );
    let cfg_path = region.state_dir().join("trafgen.cfg");
    std::fs::write(&cfg_path, cfg).context("writing trafgen config")?;
    let before = rx_packets(region, "vm-benchb")?;
    let sent_before = sh(
        region,
        "vm-bencha",
        &["cat", "/sys/class/net/eth0/statistics/tx_packets"],
    )?
    .trim()
    .parse::<u64>()?;
    let start = Instant::now();
    // trafgen on one CPU, stopped by SIGINT after the interval.
    let secs = seconds.to_string();
    let cfg_s = cfg_path.display().to_string();
    let _ = region.exec(
        "vm-bencha",
        &[
            "timeout", "-s", "INT", &secs, "trafgen", "--dev", "eth0", "--conf", &cfg_s, "--cpus",
            "1",
        ],
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let after = rx_packets(region, "vm-benchb")?;
    let sent_after = sh(
        region,
        "vm-bencha",
        &["cat", "/sys/class/net/eth0/statistics/tx_packets"],
    )?
    .trim()
    .parse::<u64>()?;
    let pps = (after - before) as f64 / elapsed;
    let sent_pps = (sent_after - sent_before) as f64 / elapsed;

    let mut server = region.command("vm-benchb", &["iperf3", "-s", "-1", "-B", "10.10.2.2"])?;
    let mut child = server
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let json = sh(
        region,
        "vm-bencha",
        &["iperf3", "-c", "10.10.2.2", "-t", &secs, "-J"],
    );
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&json?).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received")?;
    Ok(LinuxPath {
        pps,
        sent_pps,
        gbps: bps / 1e9,
    })
}

fn linux_baseline(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let prefix = format!("bn{}", std::process::id() % 100000);
    eprintln!("bench: bringing up the default region as {prefix} for the Linux VM-to-VM baseline");
    let region = Region::up(&Topology::default_region(), &prefix).context("region up")?;
    let result = (|| -> anyhow::Result<()> {
        for (vm, port, addr, gw) in [
            ("bencha", "tapbencha", "10.10.1.2/24", "10.10.1.1"),
            ("benchb", "tapbenchb", "10.10.2.2/24", "10.10.2.1"),
        ] {
            let mut spec = VmSpec::new(vm, "az1-c1", port);
            spec.addr = Some(addr.parse()?);
            spec.gateway = Some(gw.parse()?);
            region
                .vm_create(&spec)
                .with_context(|| format!("vm {vm}"))?;
        }
        // The host routes between the two VMs' subnets: the Linux alternative.
        sh(
            &region,
            "az1-c1",
            &["ip", "addr", "add", "10.10.1.1/24", "dev", "tapbencha"],
        )?;
        sh(
            &region,
            "az1-c1",
            &["ip", "addr", "add", "10.10.2.1/24", "dev", "tapbenchb"],
        )?;
        sh(
            &region,
            "az1-c1",
            &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        )?;
        // Receiver: drop the UDP flood before the socket layer, so the
        // measurement is forwarding, not ICMP port-unreachable generation.
        sh(&region, "vm-benchb", &["nft", "add table ip sink; add chain ip sink input_filter { type filter hook input priority 0; }; add rule ip sink input_filter udp dport 9 drop"])?;
        sh(&region, "vm-bencha", &["ping", "-c1", "-W2", "10.10.2.2"])
            .context("VMs cannot reach each other through the host")?;
        let link: serde_json::Value = serde_json::from_str(&sh(
            &region,
            "az1-c1",
            &["ip", "-j", "link", "show", "tapbencha"],
        )?)?;
        let gw_mac = link[0]["address"].as_str().context("tap MAC")?.to_owned();

        eprintln!("bench: Linux routed, {} s per measurement", args.seconds);
        let routed = measure_vm_to_vm(&region, args.seconds, &gw_mac)?;
        sh(&region, "az1-c1", &["nft", "add table inet bench; add chain inet bench forward_filter { type filter hook forward priority 0; policy drop; }; add rule inet bench forward_filter ct state established,related accept; add rule inet bench forward_filter ct state new ip saddr 10.10.0.0/16 ip daddr 10.10.0.0/16 accept"])?;
        eprintln!("bench: Linux routed + nftables conntrack");
        let ct = measure_vm_to_vm(&region, args.seconds, &gw_mac)?;

        writeln!(out, "### VM to VM on one host, Linux baselines ({} s each, trafgen on 1 CPU, iperf3 single stream)\n", args.seconds)?;
        writeln!(out, "| path | 64 B UDP received pkts/s | offered pkts/s | TCP Gbit/s | pkts/s x routed | Gbit/s x routed |")?;
        writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
        for (name, r) in [
            ("Linux routed namespaces", &routed),
            ("Linux routed + nftables conntrack", &ct),
        ] {
            writeln!(
                out,
                "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                r.pps,
                r.sent_pps,
                r.gbps,
                r.pps / routed.pps.max(1.0),
                r.gbps / routed.gbps.max(1e-9)
            )?;
        }
        writeln!(out)?;
        Ok(())
    })();
    Region::down(&prefix).context("region down")?;
    result
}

fn machine() -> String {
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{date}, commit {commit}, kernel {kernel}, {cpus} CPUs")
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    strato_tests::require_root("benchmarks");
    let mut out = String::new();
    let cwd = std::env::current_dir()
        .map(|d| format!("{}/", d.display()))
        .unwrap_or_default();
    let cmdline = std::env::args()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(&cwd, "");
    writeln!(
        out,
        "Produced by `make bench` (`{cmdline}`), {}.\n",
        machine()
    )?;
    if args.only_eip_netns {
        strato_tests::benchnat::run_netns(args.seconds, &mut out)?;
        print!("{out}");
        return Ok(());
    }
    if args.only_lb_netns {
        strato_tests::benchlb::run_netns(args.seconds, &mut out)?;
        print!("{out}");
        return Ok(());
    }
    if args.only_policy || args.only_nat || args.only_lb {
        let o = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut o = String::new();
                if args.only_nat {
                    nat_program_benchmarks(&args, &mut o)?;
                } else if args.only_lb {
                    lb_program_benchmarks(&args, &mut o)?;
                } else {
                    policy_program_benchmarks(&args, &mut o)?;
                }
                anyhow::Ok(o)
            })
            .join()
            .expect("bench thread")
        })?;
        print!("{o}");
        return Ok(());
    }
    program_benchmarks(&args, &mut out)?;
    // On its own thread: the test network is entered by the calling thread.
    let vpc = std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut o = String::new();
            vpc_program_benchmarks(&args, &mut o)?;
            policy_program_benchmarks(&args, &mut o)?;
            nat_program_benchmarks(&args, &mut o)?;
            lb_program_benchmarks(&args, &mut o)?;
            anyhow::Ok(o)
        })
        .join()
        .expect("bench thread")
    })?;
    out.push_str(&vpc);
    if !args.skip_netns {
        strato_tests::benchvpc::run(
            &strato_tests::benchvpc::Options {
                seconds: args.seconds,
            },
            &mut out,
        )?;
        linux_baseline(&args, &mut out)?;
        strato_tests::benchnat::run_netns(args.seconds, &mut out)?;
        strato_tests::benchlb::run_netns(args.seconds, &mut out)?;
    }
    if !args.skip_cp {
        if args.cp_sample == 0 || args.cp_ports < 2 * args.cp_sample {
            bail!("--cp-ports must be at least twice --cp-sample (and --cp-sample at least 1)");
        }
        strato_tests::benchcp::run(
            &strato_tests::benchcp::Options {
                total: args.cp_ports,
                sample: args.cp_sample,
            },
            &mut out,
        )?;
        strato_tests::benchsg::run(
            &strato_tests::benchsg::Options {
                samples: 50,
                large: 100_000,
            },
            &mut out,
        )?;
    }
    print!("{out}");
    if let Some(path) = &args.write {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let (b, e) = ("<!-- bench:begin -->", "<!-- bench:end -->");
        let (Some(i), Some(j)) = (text.find(b), text.find(e)) else {
            bail!("{path} has no {b} ... {e} block to replace");
        };
        let new = format!("{}{b}\n{out}{}", &text[..i], &text[j..]);
        std::fs::write(path, new).with_context(|| format!("writing {path}"))?;
        eprintln!("bench: results written to {path}");
    }
    Ok(())
}
