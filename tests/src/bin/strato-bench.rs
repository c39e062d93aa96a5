//! strato-bench: the benchmarks behind `make bench`. Everything in one run,
//! side by side, reported as ratios (the machine is shared and noisy):
//!
//! 1. ns/packet of each dataplane path through BPF_PROG_TEST_RUN, against
//!    the do-nothing floor program;
//! 2. VM-to-VM, internet-to-VM and load balancing between namespaces:
//!    Strato against the Linux alternatives and bare redirect programs;
//!    the L7 proxy against HAProxy and nginx (one namespace, loopback);
//! 3. the control plane: binding to ACTIVE, rule POST to enforcement.
//!
//! Every row checks its own path (the verdict of the runs it times, the
//! counters, the kernel's BPF run counts of Strato's programs, the traffic
//! tools' exit status and errors): a failed check fails the run. Compared
//! rows run interleaved, several rounds; each figure is the median with its
//! spread (min-max), and a difference smaller than the spread is reported
//! as "within noise". A "Targets" table closes the results: each target the
//! docs state, the figure, met or missed.
//!
//! `--smoke`: every path once with tiny counts and sizes, every check,
//! no figures (for `make test`). `--write FILE` replaces the block between
//! `<!-- bench:begin -->` and `<!-- bench:end -->` in FILE.

use std::{fmt::Write as _, process::Command, time::Instant};

use anyhow::{bail, ensure, Context as _};
use strato_dataplane::Attach;
use strato_tests::{
    benchkit::{self, ratios, run_checked, time_checked, vxlan_parts, Bound, Stat},
    packets,
    progtest::{Outcome, ProgramTester, Verdict},
};

struct Args {
    seconds: u64,
    repeat: u32,
    rounds: usize,
    /// Passes over the configurations compared across installs (sizes)
    /// and over the namespace rows.
    passes: usize,
    write: Option<String>,
    smoke: bool,
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
    /// Only the L7 proxies (a namespace, loopback).
    only_l7: bool,
    /// Only VM to VM (namespaces).
    only_vpc_netns: bool,
    /// Only the program tables.
    only_programs: bool,
    /// Only the control plane.
    only_cp: bool,
    cp_ports: usize,
    cp_sample: usize,
}

const USAGE: &str = "usage: strato-bench [--smoke] [--seconds N] [--repeat N] [--rounds N] [--passes N] [--skip-netns] [--skip-control-plane] [--only-programs] [--only-policy] [--only-nat] [--only-lb] [--only-vpc-netns] [--only-eip-netns] [--only-lb-netns] [--only-l7] [--only-cp] [--cp-ports N] [--cp-sample N] [--write docs/benchmarks.md]";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 5,
        repeat: 1_000_000,
        rounds: 5,
        passes: 3,
        write: None,
        smoke: false,
        skip_netns: false,
        skip_cp: false,
        only_policy: false,
        only_nat: false,
        only_eip_netns: false,
        only_lb: false,
        only_lb_netns: false,
        only_l7: false,
        only_vpc_netns: false,
        only_programs: false,
        only_cp: false,
        cp_ports: 10_000,
        cp_sample: 1_000,
    };
    let mut it = std::env::args().skip(1);
    let mut set = vec![];
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        let num = |name: &str, v: String| -> anyhow::Result<u64> {
            v.parse().with_context(|| format!("{name}: a whole number"))
        };
        match arg.as_str() {
            "--seconds" => a.seconds = num("--seconds", val("--seconds")?)?,
            "--repeat" => a.repeat = num("--repeat", val("--repeat")?)? as u32,
            "--rounds" => a.rounds = num("--rounds", val("--rounds")?)? as usize,
            "--passes" => a.passes = num("--passes", val("--passes")?)? as usize,
            "--write" => a.write = Some(val("--write")?),
            "--smoke" => a.smoke = true,
            "--skip-netns" => a.skip_netns = true,
            "--skip-control-plane" => a.skip_cp = true,
            "--only-programs" => a.only_programs = true,
            "--only-policy" => a.only_policy = true,
            "--only-nat" => a.only_nat = true,
            "--only-eip-netns" => a.only_eip_netns = true,
            "--only-lb" => a.only_lb = true,
            "--only-lb-netns" => a.only_lb_netns = true,
            "--only-l7" => a.only_l7 = true,
            "--only-vpc-netns" => a.only_vpc_netns = true,
            "--only-cp" => a.only_cp = true,
            "--cp-ports" => a.cp_ports = num("--cp-ports", val("--cp-ports")?)? as usize,
            "--cp-sample" => a.cp_sample = num("--cp-sample", val("--cp-sample")?)? as usize,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
        set.push(arg);
    }
    if a.smoke {
        // Every path once, every check, tiny counts; figures are not kept.
        if let Some(o) = set.iter().find(|o| {
            [
                "--write",
                "--seconds",
                "--repeat",
                "--rounds",
                "--passes",
                "--cp-ports",
                "--cp-sample",
            ]
            .contains(&o.as_str())
        }) {
            bail!("--smoke sets its own counts and writes no figures: drop {o}");
        }
        a.seconds = 1;
        a.repeat = 1000;
        a.rounds = 2;
        a.passes = 1;
        a.cp_ports = 8;
        a.cp_sample = 4;
    }
    if a.seconds == 0 || a.seconds > 600 || a.repeat == 0 || a.rounds == 0 || a.passes == 0 {
        bail!("--seconds must be 1..=600, --repeat, --rounds and --passes at least 1");
    }
    if a.cp_sample == 0 || a.cp_ports < 2 * a.cp_sample {
        bail!("--cp-ports must be at least twice --cp-sample (and --cp-sample at least 1)");
    }
    Ok(a)
}

/// A timed row: name, entry point, ingress, frame, the verdict of its path.
type Row = (&'static str, Attach, u32, Vec<u8>, Verdict);

/// Times `rows` interleaved, `args.rounds` rounds: every round runs each
/// row once (`args.repeat` packets), so a slow stretch of the machine weighs on all of them
/// alike. Checks the verdict of every timed run (the caller checks each
/// path once, un-timed, with its output, before). Returns the ns/packet
/// samples of each row, one per round.
fn interleaved(t: &mut ProgramTester, rows: &[Row], args: &Args) -> anyhow::Result<Vec<Vec<f64>>> {
    for (name, attach, ingress, frame, want) in rows {
        if is_harness(*attach) {
            t.bench_frame(frame);
        }
        // Warm the per-CPU entries and caches, checked like the rest.
        time_checked(t, *attach, *ingress, frame, 1000, *want, name)?;
    }
    let mut samples = vec![vec![]; rows.len()];
    for _ in 0..args.rounds {
        for (i, (name, attach, ingress, frame, want)) in rows.iter().enumerate() {
            if is_harness(*attach) {
                t.bench_frame(frame);
            }
            samples[i].push(time_checked(
                t,
                *attach,
                *ingress,
                frame,
                args.repeat,
                *want,
                name,
            )?);
        }
    }
    Ok(samples)
}

/// One row timed on its own (see [`interleaved`]): its samples.
fn timed_alone(t: &mut ProgramTester, row: Row, args: &Args) -> anyhow::Result<Vec<f64>> {
    Ok(interleaved(t, &[row], args)?.remove(0))
}

/// Runs `row`'s frame once, un-timed, through `attach` (the entry point
/// its harness row wraps) at its ingress, checking its verdict.
fn run_row_on(t: &mut ProgramTester, attach: Attach, row: &Row) -> anyhow::Result<Outcome> {
    let (name, _, ingress, frame, want) = row;
    run_checked(t, attach, *ingress, frame, *want, name)
}

/// Harness rows put their frame back before each run: the frame to put
/// back is written before each row is timed.
fn is_harness(attach: Attach) -> bool {
    matches!(
        attach,
        Attach::BenchPort
            | Attach::BenchPortPlain
            | Attach::BenchUplink
            | Attach::BenchExternal
            | Attach::BenchRestore
    )
}

const MAC: fn(u8, u8) -> [u8; 6] = |a, b| [0xfa, 0x16, 0x3e, 0, a, b];

/// The entry points with a minimal world: the uplink with its host record
/// and no tunnel (traffic for the host's stack: parsed, counted, passed),
/// and the port program on a configured port switching to another.
fn program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    use strato_tests::progtest::{Net, Port, World};
    eprintln!(
        "bench: entry points through BPF_PROG_TEST_RUN ({} rounds x {} packets, interleaved)",
        args.rounds, args.repeat
    );
    let mut t = ProgramTester::bench_in_test_net();
    let (p1, p2) = ((MAC(1, 5), [10, 1, 0, 5]), (MAC(1, 6), [10, 1, 0, 6]));
    t.install(
        &World::new()
            .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
            .port(Port::local("p1", "a", "tp1", p1.0, p1.1).no_security())
            .port(Port::local("p2", "a", "tp2", p2.0, p2.1).no_security()),
    );
    let tp1 = t.ifindex("tp1");
    let mut truncated = packets::ipv4_udp(&[0; 18]);
    truncated[16..18].copy_from_slice(&1500u16.to_be_bytes());
    packets::fix_ipv4_checksum(&mut truncated);
    let switched = udp_frame(p1.0, p2.0, p1.1, p2.1);
    // Uplink rows: traffic for the host's stack, passed.
    let uplink = |name: &'static str, frame: Vec<u8>| -> Row {
        (name, Attach::Uplink, 0, frame, Verdict::Pass)
    };
    let ext_headers = [(0, packets::ext_header(0)), (60, packets::ext_header(0))];
    let rows: Vec<Row> =
        vec![
        (
            "floor: XDP_PASS only (reference)",
            Attach::Floor,
            0,
            packets::ipv4_udp(&[0; 18]),
            Verdict::Pass,
        ),
        uplink("uplink: IPv4/UDP 64 B, parse + count, pass", packets::ipv4_udp(&[0; 18])),
        uplink("uplink: IPv4/TCP 74 B", packets::ipv4_tcp(&[0; 20])),
        uplink("uplink: 802.1Q IPv4/UDP", packets::vlan_ipv4_udp(7, &[0; 18])),
        uplink("uplink: IPv6/TCP", packets::ipv6_tcp(&[0; 20])),
        uplink("uplink: IPv6 + 2 ext headers/UDP", packets::ipv6_with_ext(&ext_headers, &[0; 10])),
        uplink("uplink: ARP", packets::arp_request()),
        (
            "uplink: malformed IPv4, drop + reason",
            Attach::Uplink,
            0,
            truncated,
            Verdict::Drop,
        ),
        (
            "port: IPv4/UDP 64 B from a configured port, switched to another (port security off)",
            Attach::Port,
            tp1,
            switched.clone(),
            Verdict::Redirect,
        ),
    ];
    for (name, attach, ingress, frame, want) in &rows {
        let o = run_checked(&mut t, *attach, *ingress, frame, *want, name)?;
        // The programs count what they did (the floor counts nothing):
        // passed on an interface, or dropped with a reason.
        let passed: u64 = o.counters.interfaces.values().map(|s| s.passed).sum();
        let dropped: u64 = o.counters.drops.values().map(|d| d.packets).sum();
        let counted = match (attach, want) {
            (Attach::Floor, _) => true,
            (_, Verdict::Pass) => passed == 1 && dropped == 0,
            (_, Verdict::Drop) => dropped == 1 && passed == 0,
            _ => true,
        };
        ensure!(
            counted,
            "{name}: counted {passed} passed and {dropped} dropped: {:?}",
            o.counters
        );
    }
    // The port row: the frame goes out unchanged to the other port.
    let o = run_checked(
        &mut t,
        Attach::Port,
        tp1,
        &switched,
        Verdict::Redirect,
        "port",
    )?;
    ensure!(
        o.output == switched && o.counters.interfaces.get(&tp1).map(|s| s.forwarded) == Some(1),
        "port: switching changed the frame or did not count it forwarded: {:?}",
        o.counters
    );
    let samples = interleaved(&mut t, &rows, args)?;
    t.install(&World::new());
    if args.smoke {
        return Ok(());
    }
    writeln!(out, "### Dataplane programs, ns/packet (BPF_PROG_TEST_RUN, {} rounds of {} packets, rows interleaved; median (min-max))\n", args.rounds, args.repeat)?;
    writeln!(out, "The bench checks every row's verdict (an un-timed run, then every timed run): the uplink rows pass to the host's stack (no tunnel in their frames), the malformed one is dropped, the port row is switched to the other port. Every row includes the program's invocation (the floor); the VPC table below takes a harness's cost, invocation included, off its rows, so its figures and these do not add up.\n")?;
    writeln!(out, "| path | ns/packet | x floor |")?;
    writeln!(out, "| --- | ---: | ---: |")?;
    for ((name, ..), s) in rows.iter().zip(&samples) {
        writeln!(
            out,
            "| {name} | {} | {} |",
            Stat::of(s).fmt(0),
            Stat::of(&ratios(s, &samples[0])).fmt(2)
        )?;
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

/// Ratio of the larger size's samples to the smaller's, and the flatness
/// text for a table cell.
fn flat_cell(small: &[f64], large: &[f64]) -> String {
    let r = Stat::of(&ratios(large, small)).fmt(2);
    if benchkit::within_noise(large, small) {
        format!("{r}, within noise")
    } else {
        r
    }
}

/// The VPC paths through BPF_PROG_TEST_RUN (the port pipeline's XDP build,
/// the logic the TC program runs too), with 10 and 100,000 remote ports in
/// the maps: the cost must not grow with them.
fn vpc_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    use strato_tests::progtest::{Net, Port, Router, World, UPLINK, UPLINK_MAC};
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
            .router(Router::on(
                "r1",
                &[("sa", gw_a), ("sb", gw_b), ("sc", MAC(0xc0, 1))],
            ))
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
    let mut t = ProgramTester::bench_in_test_net();
    let (tp1, tp3, up) = (t.ifindex("tp1"), t.ifindex("tp3"), t.ifindex(UPLINK));
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
    let from_a1 = |name: &'static str, frame: Vec<u8>| -> Row {
        (name, Attach::BenchPort, tp1, frame, Verdict::Redirect)
    };
    let rows: Vec<Row> = vec![
        from_a1(
            "port: switched to a local port",
            udp_frame(a1.0, a2.0, a1.1, a2.1),
        ),
        from_a1(
            "port: routed to a local port",
            udp_frame(a1.0, gw_a, a1.1, b1.1),
        ),
        from_a1(
            "port: routed + VXLAN encapsulation",
            udp_frame(a1.0, gw_a, a1.1, b3.1),
        ),
        (
            "uplink: VXLAN decapsulation to a local port",
            Attach::BenchUplink,
            up,
            vxlan,
            Verdict::Redirect,
        ),
        from_a1(
            "port: ARP reply for the gateway",
            packets::arp_request_from(a1.0, a1.1, [10, 1, 0, 1]),
        ),
    ];
    let sizes: [u32; 2] = if args.smoke { [10, 100] } else { [10, 100_000] };
    let refs = |f: &[u8]| -> Vec<Row> {
        vec![
            ("floor", Attach::Floor, 0, f.to_vec(), Verdict::Pass),
            (
                "restore",
                Attach::BenchRestore,
                0,
                f.to_vec(),
                Verdict::Pass,
            ),
        ]
    };
    // samples[row][size]: ns with the harness's cost of the same round
    // taken off; refs[0/1][size]: floor and restore.
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![vec![]; sizes.len()]; rows.len()];
    let mut ref_samples: Vec<Vec<Vec<f64>>> = vec![vec![vec![]; sizes.len()]; 2];
    for pass in 0..args.passes {
        for (si, &n) in sizes.iter().enumerate() {
            eprintln!(
                "bench: VPC program paths with {n} remote ports in the maps (pass {}/{})",
                pass + 1,
                args.passes
            );
            t.install(&world(n));
            // Each path checked once, with its output, before timing.
            let o = run_row_on(&mut t, Attach::Port, &rows[0])?;
            ensure!(o.output == rows[0].3, "{}: the frame changed", rows[0].0);
            let o = run_row_on(&mut t, Attach::Port, &rows[1])?;
            ensure!(
                o.output[0..6] == b1.0 && o.output[6..12] == gw_b && o.output[22] == 63,
                "{}: not routed to b1 (MACs, TTL): {}",
                rows[1].0,
                strato_tests::progtest::hex(&o.output)
            );
            let o = run_row_on(&mut t, Attach::Port, &rows[2])?;
            let (outer, inner) = vxlan_parts(rows[2].0, &o.output)?;
            ensure!(
                outer == [198, 18, 2, 3] && inner[0..6] == b3.0,
                "{}: not tunnelled to b3's host",
                rows[2].0
            );
            let o = run_row_on(&mut t, Attach::Uplink, &rows[3])?;
            ensure!(
                o.output[0..6] == b1.0
                    && o.counters.interfaces.get(&up).map(|s| s.forwarded) == Some(1),
                "{}: not delivered to b1: {:?}",
                rows[3].0,
                o.counters
            );
            let o = run_row_on(&mut t, Attach::Port, &rows[4])?;
            ensure!(
                o.output[12..14] == [0x08, 0x06] && o.output[20..22] == [0, 2],
                "{}: no ARP reply",
                rows[4].0
            );
            let _ = tp3;
            let before = t.outcomes();
            let all: Vec<Row> = refs(&rows[0].3)
                .into_iter()
                .chain(rows.iter().cloned())
                .collect();
            let s = interleaved(&mut t, &all, args)?;
            let after = t.outcomes();
            // Every run of the rows (not the references, which count
            // nothing) was forwarded or answered, nothing dropped.
            let runs = rows.len() as u64 * (args.rounds as u64 * args.repeat as u64 + 1000);
            ensure!(
                after.0 - before.0 == runs && after.1 == before.1,
                "VPC rows: {} of {runs} runs forwarded or answered, {} dropped",
                after.0 - before.0,
                after.1 - before.1
            );
            for r in 0..2 {
                ref_samples[r][si].extend(&s[r]);
            }
            for (i, row) in s[2..].iter().enumerate() {
                samples[i][si].extend(benchkit::paired(row, &s[1], |a, b| a - b));
            }
        }
    }
    t.install(&World::new());
    if args.smoke {
        return Ok(());
    }
    let table = "VPC paths";
    for (i, (name, ..)) in rows.iter().enumerate() {
        let (small, large) = (&samples[i][0], &samples[i][1]);
        let bound = if i == 2 { 100.0 } else { 80.0 };
        if i < 3 {
            for (s, at) in [(small, "10"), (large, "100,000")] {
                benchkit::target(
                    table,
                    &format!("{name}, {at} ports: <= {bound:.0} ns"),
                    Bound::AtMost(bound),
                    &Stat::of(s),
                    0,
                    " ns",
                );
            }
        }
        benchkit::target(
            table,
            &format!("{name}: flat within 10% from 10 to 100,000 ports (100k / 10)"),
            Bound::Between(0.9, 1.1),
            &Stat::of(&ratios(large, small)),
            2,
            "x",
        );
    }
    writeln!(
        out,
        "### VPC paths, ns/packet (BPF_PROG_TEST_RUN), as the maps grow\n"
    )?;
    writeln!(out, "The port pipeline's XDP build (the TC program agents attach runs the same code), 64-byte UDP frames, port security off (security groups: their own table). Every run gets the original frame back from a harness program first (a repeated test reuses one buffer, and these paths rewrite it); the harness's own cost, measured in the same round, is taken off: {} ns (XDP_PASS alone: {} ns). The sizes alternate, {} passes, each {} rounds of {} packets with the rows interleaved; median (min-max) over all of them. The bench checks each path's verdict and output before timing, the verdict of every timed run, and that every run was forwarded or answered.\n", Stat::of(&ref_samples[1][0]).fmt(0), Stat::of(&ref_samples[0][0]).fmt(0), args.passes, args.rounds, args.repeat)?;
    writeln!(out, "| path | 10 ports | 100,000 ports | 100k / 10 |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for ((name, ..), r) in rows.iter().zip(&samples) {
        writeln!(
            out,
            "| {name} | {} | {} | {} |",
            Stat::of(&r[0]).fmt(0),
            Stat::of(&r[1]).fmt(0),
            flat_cell(&r[0], &r[1]),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// How the program benches run.
fn program_runs(args: &Args) -> benchkit::ProgramRuns {
    benchkit::ProgramRuns {
        rounds: args.rounds,
        repeat: args.repeat,
        passes: args.passes,
        smoke: args.smoke,
    }
}

/// Elastic IP and SNAT paths (see `strato_tests::benchnat`).
fn nat_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let mut t = ProgramTester::bench_in_test_net();
    strato_tests::benchnat::run(&mut t, &program_runs(args), out)
}

/// The L4 load balancer (see `strato_tests::benchlb`).
fn lb_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let mut t = ProgramTester::bench_in_test_net();
    strato_tests::benchlb::run(&mut t, &program_runs(args), out)
}

/// Security groups through BPF_PROG_TEST_RUN: a first packet (connection
/// table miss and two policy lookups, one per port) with 10 to 100,000 rules
/// on the receiver's group, and established packets (two table hits).
/// Every row runs c1 -> w1 on one network (switched), so the difference to
/// the "no group" row is the security group's cost.
fn policy_program_benchmarks(args: &Args, out: &mut String) -> anyhow::Result<()> {
    use strato_tests::progtest::{Net, Port, SecurityGroupEntry, SgRuleEntry, World};
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
    let tcp_from = |sport: u16, flags: u8, seq: u32, ack: u32| {
        let mut b = etherparse::PacketBuilder::ethernet2(c1.0, w1.0)
            .ipv4(c1.1, w1.1, 64)
            .tcp(sport, 443, seq, 65535);
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
    let tcp = |flags: u8, seq: u32, ack: u32| tcp_from(40000, flags, seq, ack);
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
    let udp_from = |sport: u16| {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(c1.0, w1.0)
            .ipv4(c1.1, w1.1, 64)
            .udp(sport, 53)
            .write(&mut f, &[0; 18])
            .expect("frame");
        f
    };
    let udp = udp_from(4000);
    let mut t = ProgramTester::bench_in_test_net();
    let (tp1, tp2) = (t.ifindex("tp1"), t.ifindex("tp2"));
    // Delivered to w1 unchanged, counted forwarded on c1's port.
    let delivered = |t: &mut ProgramTester, frame: &[u8], what: &str| -> anyhow::Result<()> {
        let o = run_checked(t, Attach::Port, tp2, frame, Verdict::Redirect, what)?;
        ensure!(
            o.output == frame
                && o.counters.interfaces.get(&tp2).map(|s| s.forwarded) == Some(1)
                && o.counters.drops.is_empty(),
            "{what}: not delivered to w1 unchanged: {:?}",
            o.counters
        );
        Ok(())
    };
    // A row of c1's frames to w1, forwarded.
    let to_w1 = |name: &'static str, frame: Vec<u8>| -> Row {
        (name, Attach::Port, tp2, frame, Verdict::Redirect)
    };
    let runs = |n: usize| (n * args.rounds) as u64 * args.repeat as u64;
    let sizes: [u32; 3] = if args.smoke {
        [10, 100, 1_000]
    } else {
        [10, 1_000, 100_000]
    };
    let est_tcp = tcp(0x10, 1001, 5001);
    // The sizes alternate over the passes, the reference without groups
    // first in each; within a size the three rows run interleaved.
    let mut none: Vec<f64> = vec![];
    let (mut first, mut est_u, mut est_t) = (
        vec![vec![]; sizes.len()],
        vec![vec![]; sizes.len()],
        vec![vec![]; sizes.len()],
    );
    for pass in 0..args.passes {
        eprintln!(
            "bench: security groups, no group (reference; pass {}/{})",
            pass + 1,
            args.passes
        );
        t.install(&world(0, false));
        delivered(&mut t, &udp, "no group: UDP")?;
        none.extend(timed_alone(&mut t, to_w1("no group", udp.clone()), args)?);
        for (si, &n) in sizes.iter().enumerate() {
            eprintln!("bench: security groups with {n} rules on the receiver's group");
            let started = Instant::now();
            t.install(&world(n, true));
            eprintln!("bench:   installed in {} ms", started.elapsed().as_millis());
            // The previous size's connections would turn the first packet
            // into a hit (and a recheck under the new policy).
            t.ct_clear();
            // TCP: handshake, then the same ACK again and again (in window).
            for (what, i, f) in [
                ("SYN", tp2, tcp(0x02, 1000, 0)),
                ("SYN-ACK", tp1, syn_ack.clone()),
                ("ACK", tp2, est_tcp.clone()),
            ] {
                run_checked(&mut t, Attach::Port, i, &f, Verdict::Redirect, what)?;
            }
            // UDP: the first run creates the entries, the rest hit them.
            delivered(&mut t, &udp, "UDP")?;
            // A reset (of another connection) is never tracked: every run
            // misses the table and looks the policies up (the first
            // packet's work but the insertion). It is allowed (TCP 443
            // from c1's subnet).
            let rst = tcp_from(41000, 0x04 | 0x10, 1, 1);
            // What one run of each does to the connection counters.
            let mut per_run = vec![];
            for (what, f) in [
                ("first packet (RST)", &rst),
                ("established UDP", &udp),
                ("established TCP", &est_tcp),
            ] {
                let b = t.ct_stats();
                delivered(&mut t, f, what)?;
                let a = t.ct_stats();
                per_run.push((
                    a.hits - b.hits,
                    a.policy_lookups - b.policy_lookups,
                    a.inserts - b.inserts,
                ));
            }
            ensure!(
                per_run[0].0 == 0 && per_run[0].1 >= 2 && per_run[0].2 == 0,
                "first packet (RST): (hits, policy lookups, inserts) {:?}, want no hit, both policies, no entry",
                per_run[0]
            );
            for (what, p) in [
                ("established UDP", per_run[1]),
                ("established TCP", per_run[2]),
            ] {
                ensure!(
                    p.0 >= 1 && p.1 == 0 && p.2 == 0,
                    "{what}: (hits, policy lookups, inserts) {p:?}, want a hit and nothing else"
                );
            }
            let before = t.ct_stats();
            let rows: Vec<Row> = vec![
                to_w1("first packet", rst.clone()),
                to_w1("established UDP", udp.clone()),
                to_w1("established TCP", est_tcp.clone()),
            ];
            let s = interleaved(&mut t, &rows, args)?;
            let after = t.ct_stats();
            // Every timed run did what its one run did.
            let n = runs(1) + 1000;
            let want = ((per_run[1].0 + per_run[2].0) * n, per_run[0].1 * n, 0);
            let got = (
                after.hits - before.hits,
                after.policy_lookups - before.policy_lookups,
                after.inserts - before.inserts,
            );
            ensure!(
                got == want,
                "security group rows, {n} runs each: (hits, policy lookups, inserts) {got:?}, want {want:?}"
            );
            first[si].extend(&s[0]);
            est_u[si].extend(&s[1]);
            est_t[si].extend(&s[2]);
        }
    }
    // The connection table empty, then full (1,000,000 entries): new flows
    // (each frame a new UDP source port: one insertion, evictions when
    // full), one run each; and established packets.
    t.install(&world(10, true));
    t.ct_clear();
    let flows: u16 = if args.smoke { 50 } else { 5000 };
    let new_flows = |t: &mut ProgramTester, base: u16| -> anyhow::Result<Vec<f64>> {
        // One un-timed new flow first: delivered, and one entry more.
        let n0 = t.ct_stats().inserts;
        delivered(t, &udp_from(base - 1), "new UDP flow")?;
        ensure!(t.ct_stats().inserts == n0 + 1, "the new flow made no entry");
        (0..flows)
            .map(|i| {
                time_checked(
                    t,
                    Attach::Port,
                    tp2,
                    &udp_from(base + i),
                    1,
                    Verdict::Redirect,
                    "new UDP flow",
                )
            })
            .collect()
    };
    eprintln!("bench: security groups: new flows into an empty connection table");
    let s0 = t.ct_stats();
    let new_empty = new_flows(&mut t, 1025)?;
    let s1 = t.ct_stats();
    ensure!(
        s1.inserts - s0.inserts == flows as u64 + 1,
        "{} of {} new flows inserted into the empty table",
        s1.inserts - s0.inserts,
        flows as u64 + 1
    );
    delivered(&mut t, &udp, "established UDP")?;
    let est_empty = timed_alone(
        &mut t,
        to_w1("established UDP, table nearly empty", udp.clone()),
        args,
    )?;
    eprintln!("bench: security groups: filling the connection table");
    let capacity = dataplane_common::maps::CT_MAX_DEFAULT;
    t.ct_fill(999, capacity);
    let ct_mib = t
        .map_memlock(dataplane_common::maps::CT)
        .context("the connection table's kernel memory cannot be read")? as f64
        / (1024.0 * 1024.0);
    let before = t.ct_stats();
    let new_full = new_flows(&mut t, 20_000)?;
    let after = t.ct_stats();
    delivered(&mut t, &udp, "established UDP, table full")?;
    let est_full = timed_alone(
        &mut t,
        to_w1("established UDP, table full", udp.clone()),
        args,
    )?;
    t.install(&world(0, false));
    if args.smoke {
        return Ok(());
    }
    let table = "Security groups";
    benchkit::target(
        table,
        "first packet flat within 15% from 10 to 100,000 rules (100k / 10)",
        Bound::Between(0.85, 1.15),
        &Stat::of(&ratios(&first[2], &first[0])),
        2,
        "x",
    );
    for (name, r) in [("UDP", &est_u), ("TCP", &est_t)] {
        for (si, at) in [(0, "10"), (2, "100,000")] {
            benchkit::target(
                table,
                &format!("established {name}, {at} rules: the group's cost (established - no group) <= 100 ns"),
                Bound::AtMost(100.0),
                &Stat::of(&benchkit::paired(&r[si], &none, |a, b| a - b)),
                0,
                " ns",
            );
        }
    }
    benchkit::target(
        table,
        "established UDP flat as the connection table fills (full / nearly empty, within 10%)",
        Bound::Between(0.9, 1.1),
        &Stat::of(&ratios(&est_full, &est_empty)),
        2,
        "x",
    );
    writeln!(out, "### Security groups, ns/packet (BPF_PROG_TEST_RUN)\n")?;
    writeln!(out, "c1 -> w1 switched on one network, both ports on this host with a stateful group: each packet is checked against c1's egress and w1's ingress rules, and the connection has one entry for both. Rules on w1's group: TCP 443 and UDP 53 from c1's subnet, the rest fillers (a /32 and a port each). First packet: a TCP reset (never tracked), so every run misses the connection table and looks both policies up. The sizes alternate, {} passes (the reference without groups, port security off, first in each), each {} rounds of {} packets with the three rows interleaved; median (min-max). The bench checks that each row's frame is delivered to w1 unchanged, the verdict of every timed run, that the resets never hit the connection table and the established packets always did. Reference without groups: {} ns.\n", args.passes, args.rounds, args.repeat, Stat::of(&none).fmt(0))?;
    writeln!(
        out,
        "| path | 10 rules | 1,000 rules | 100,000 rules | 100k / 10 | x no group (10 rules) |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    for (name, r) in [
        ("first packet (table miss, 2 policy lookups)", &first),
        ("established UDP (1 table hit)", &est_u),
        ("established TCP (1 table hit, window checks)", &est_t),
    ] {
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            Stat::of(&r[0]).fmt(0),
            Stat::of(&r[1]).fmt(0),
            Stat::of(&r[2]).fmt(0),
            flat_cell(&r[0], &r[2]),
            benchkit::ratio_text(&r[0], &none),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "Connection table of {capacity} flows (LRU hash, preallocated): {ct_mib:.0} MiB of kernel memory. New UDP flow (both ports' rules looked up, one entry inserted; {flows} single runs, each checked delivered): {} ns into an empty table, {} ns into the full one (the LRU evicts; {} insertions refused while full); median (min-max) of single runs. Established UDP: {} ns with the table nearly empty, {} ns full (full / empty {}).\n", Stat::of(&new_empty).fmt(0), Stat::of(&new_full).fmt(0), after.insert_failures - before.insert_failures, Stat::of(&est_empty).fmt(0), Stat::of(&est_full).fmt(0), flat_cell(&est_empty, &est_full))?;
    Ok(())
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
    let started = Instant::now();
    let only = args.only_programs
        || args.only_policy
        || args.only_nat
        || args.only_lb
        || args.only_vpc_netns
        || args.only_eip_netns
        || args.only_lb_netns
        || args.only_l7
        || args.only_cp;
    if args.write.is_some() && (only || args.skip_netns || args.skip_cp) {
        bail!("--write replaces the whole results block: it needs every table (no --only-* or --skip-*)");
    }
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
    let all_programs = !only || args.only_programs;
    if all_programs || args.only_policy || args.only_nat || args.only_lb {
        // On its own thread: the test networks are entered by the calling
        // thread.
        let o = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut o = String::new();
                if all_programs {
                    program_benchmarks(&args, &mut o)?;
                    vpc_program_benchmarks(&args, &mut o)?;
                }
                if all_programs || args.only_policy {
                    policy_program_benchmarks(&args, &mut o)?;
                }
                if all_programs || args.only_nat {
                    nat_program_benchmarks(&args, &mut o)?;
                }
                if all_programs || args.only_lb {
                    lb_program_benchmarks(&args, &mut o)?;
                }
                anyhow::Ok(o)
            })
            .join()
            .expect("bench thread")
        })?;
        out.push_str(&o);
    }
    let netns = !only && !args.skip_netns;
    if netns || args.only_vpc_netns {
        strato_tests::benchvpc::run(
            &strato_tests::benchvpc::Options {
                seconds: args.seconds,
                passes: args.passes,
                smoke: args.smoke,
            },
            &mut out,
        )?;
    }
    if netns || args.only_eip_netns {
        strato_tests::benchnat::run_netns(args.seconds, args.passes, args.smoke, &mut out)?;
    }
    if netns || args.only_lb_netns {
        strato_tests::benchlb::run_netns(args.seconds, args.passes, args.smoke, &mut out)?;
    }
    if netns || args.only_l7 {
        strato_tests::benchl7::run(
            &strato_tests::benchl7::Options {
                seconds: args.seconds,
                passes: args.passes,
                smoke: args.smoke,
            },
            &mut out,
        )?;
    }
    if (!only && !args.skip_cp) || args.only_cp {
        strato_tests::benchcp::run(
            &strato_tests::benchcp::Options {
                total: args.cp_ports,
                sample: args.cp_sample,
                smoke: args.smoke,
            },
            &mut out,
        )?;
        strato_tests::benchsg::run(
            &strato_tests::benchsg::Options {
                samples: if args.smoke { 3 } else { 50 },
                large: if args.smoke { 200 } else { 100_000 },
                smoke: args.smoke,
            },
            &mut out,
        )?;
    }
    let took = started.elapsed().as_secs_f64();
    if args.smoke {
        // The committed docs: their prose states no figure their results
        // block does not (once the block is one with a targets table).
        let docs = "docs/benchmarks.md";
        if let Ok(text) = std::fs::read_to_string(docs) {
            if text.contains("### Targets") {
                check_prose(docs, &text)?;
            } else {
                eprintln!("bench: {docs} has no generated targets table yet (run `make bench`): prose not checked");
            }
        }
        println!("strato-bench --smoke: every benchmark path ran and every check passed in {took:.0} s (no figures kept)");
        return Ok(());
    }
    benchkit::targets_table(&mut out)?;
    writeln!(out, "The run took {:.1} min.\n", took / 60.0)?;
    print!("{out}");
    if let Some(path) = &args.write {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let (b, e) = (benchkit::BLOCK_BEGIN, benchkit::BLOCK_END);
        let (Some(i), Some(j)) = (text.find(b), text.find(e)) else {
            bail!("{path} has no {b} ... {e} block to replace");
        };
        let new = format!("{}{b}\n{out}{}", &text[..i], &text[j..]);
        std::fs::write(path, &new).with_context(|| format!("writing {path}"))?;
        eprintln!("bench: results written to {path}");
        check_prose(path, &new)?;
    }
    Ok(())
}

/// An error listing the figures the hand-written prose of `path` states
/// that its results block does not contain.
fn check_prose(path: &str, text: &str) -> anyhow::Result<()> {
    let missing = benchkit::prose_figures_not_in_block(text)?;
    ensure!(
        missing.is_empty(),
        "{path}: the prose states figures its results block does not contain: {}; refer to the block's tables instead",
        missing.join(", ")
    );
    Ok(())
}
