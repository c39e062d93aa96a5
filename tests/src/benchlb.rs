//! The L4 load balancer's benchmarks.
//!
//! [`run`]: ns/packet through BPF_PROG_TEST_RUN of a VM's packet to a VIP
//! (the port pipeline, the `strato_port_lb` tail: Maglev, translation, the
//! pipeline again: routed + VXLAN to a remote member), against the same
//! frame sent straight to the member the balancer chose (no load balancer):
//! the difference and the ratio are what the load balancer costs. Rows: a
//! connection's first packet (Maglev selection, `LB_FLOWS` and `LB_REV`
//! inserted) and an established one (an `LB_FLOWS` hit); the measured
//! listener has 2 to 1,000 members, with 1 to 10,000 VIPs installed.
//!
//! [`run_netns`]: new connections/s and requests/s through a load balancer
//! between namespaces, one run, the same topology for every row: a client
//! VM (wrk), a host namespace in the middle, two nginx members; the middle
//! is plain routing to one member (direct), Strato (the TC port program on
//! the host's taps, the agent's tables written by the agent's code), HAProxy
//! (`mode tcp`, round robin) and nftables DNAT (`numgen inc mod 2`).

use std::{fmt::Write as _, net::Ipv4Addr};

use anyhow::{ensure, Context as _};
use dataplane_common::HOST_F_LB;
use strato_dataplane::Attach;
use strato_proto::config::{Entry, ListenerEntry, LoadBalancerEntry, MemberEntry};

use crate::progtest::{Net, Port, ProgramTester, Router, World};

/// How the bench runs (with `smoke`: tiny sizes, no figures).
pub use crate::benchkit::ProgramRuns as Options;

const fn mac(a: u8, b: u8, c: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, a, b, c]
}

const GW_A: [u8; 6] = mac(0xa0, 0, 1);
const GW_B: [u8; 6] = mac(0xb0, 0, 1);
const C1: ([u8; 6], [u8; 4]) = (mac(0, 1, 5), [10, 1, 0, 5]);
const VIP: [u8; 4] = [10, 1, 0, 100];
const VIP_MAC: [u8; 6] = mac(0, 1, 100);
const VIP_PORT: u16 = 80;
const MEMBER_PORT: u16 = 8080;
/// The members' host (they are remote: the output is a VXLAN frame).
const MEMBER_HOST: [u8; 4] = [198, 18, 2, 3];
const LISTENER: &str = "bench-listener";

/// Member `i` of the measured listener: 10.2.x.y.
fn member_ip(i: u32) -> [u8; 4] {
    let n = 10 + i;
    [10, 2, (n >> 8) as u8, n as u8]
}

fn member(id: String, ip: [u8; 4]) -> MemberEntry {
    MemberEntry {
        id,
        address: Ipv4Addr::from(ip).to_string(),
        protocol_port: MEMBER_PORT,
        weight: 1,
        backup: false,
        state: "active".into(),
        monitor_address: None,
        monitor_port: None,
        location: None,
    }
}

fn listener(id: String, members: Vec<MemberEntry>) -> ListenerEntry {
    ListenerEntry {
        id: id.clone(),
        protocol: "TCP".into(),
        protocol_port: VIP_PORT,
        idle_timeout_s: 3600,
        drain_timeout_s: 30,
        source_ip: false,
        pool_id: Some(format!("pool-{id}")),
        at_limit: false,
        monitor: None,
        members,
    }
}

/// Client c1 (tp1, net a) and `backends` members on another host (net b,
/// routed); the measured load balancer's VIP is on net a. `vips - 1` more
/// load balancers (net v, a TCP listener each with two members) fill the
/// tables. Port security off: the pipeline and the balancer alone.
fn world(backends: u32, vips: u32) -> World {
    let mut w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .net(Net::new("b", 200).subnet("sb", "10.2.0.0/16", "10.2.0.1"))
        .net(Net::new("v", 300).subnet("sv", "10.128.0.0/16", "10.128.0.1"))
        .router(Router::on("r1", &[("sa", GW_A), ("sb", GW_B)]).interface("sv", mac(0xc0, 0, 1)))
        .port(Port::local("c1", "a", "tp1", C1.0, C1.1).no_security());
    let mut members = vec![];
    for i in 0..backends {
        let ip = member_ip(i);
        w = w.port(
            Port::remote(
                &format!("m{i}"),
                "b",
                MEMBER_HOST,
                mac(2, (i >> 8) as u8, i as u8),
                ip,
            )
            .no_security(),
        );
        members.push(member(format!("m{i}"), ip));
    }
    w = w.entry(Entry::LoadBalancer(LoadBalancerEntry {
        id: "bench-lb".into(),
        vip_network_id: "a".into(),
        vip_address: Ipv4Addr::from(VIP).to_string(),
        vip_mac: "fa:16:3e:00:01:64".into(),
        admin_state_up: true,
        listeners: vec![listener(LISTENER.into(), members)],
        domain: 0,
        floating_ip: None,
        gateway: false,
        checked_pools: vec![],
    }));
    for i in 1..vips {
        w = w.entry(Entry::LoadBalancer(LoadBalancerEntry {
            id: format!("fill-{i}"),
            vip_network_id: "v".into(),
            vip_address: format!("10.128.{}.{}", i >> 8, i & 0xff),
            vip_mac: format!("fa:16:3e:03:{:02x}:{:02x}", i >> 8, i & 0xff),
            admin_state_up: true,
            listeners: vec![listener(
                format!("fill-{i}-l"),
                vec![
                    member(format!("fill-{i}-a"), member_ip(0)),
                    member(format!("fill-{i}-b"), member_ip(1)),
                ],
            )],
            domain: 0,
            floating_ip: None,
            gateway: false,
            checked_pools: vec![],
        }));
    }
    w
}

/// A TCP segment of 74 bytes (20 bytes of payload): a SYN, or an ACK of an
/// established connection.
fn tcp(dmac: [u8; 6], dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(C1.0, dmac)
        .ipv4(C1.1, dst, 64)
        .tcp(sport, dport, 1000, 65535);
    let b = if syn { b.syn() } else { b.ack(5000) };
    let mut f = Vec::new();
    b.write(&mut f, &[0; 20]).expect("frame");
    f
}

/// One configuration's figures (ns/packet), one per round (or chunk of
/// single runs).
#[derive(Clone, Debug, Default)]
struct Figures {
    /// Repeated runs through the harness (its cost taken off).
    established: Vec<f64>,
    direct: Vec<f64>,
    /// `direct` without the load balancer in front of the pipeline.
    plain: Vec<f64>,
    /// Single runs (one BPF_PROG_TEST_RUN each), medians of chunks.
    first_single: Vec<f64>,
    established_single: Vec<f64>,
    direct_single: Vec<f64>,
}

/// Single runs per configuration for the first-packet rows.
const SINGLE_RUNS: u16 = 4000;

pub fn run(t: &mut ProgramTester, opts: &Options, out: &mut String) -> anyhow::Result<()> {
    use crate::benchkit::{self, run_checked, time_checked, vxlan_parts, Bound, Stat};
    use crate::progtest::Verdict;
    let tp1 = t.ifindex("tp1");
    let (backends, vips): (&[u32], &[u32]) = if opts.smoke {
        (&[2, 1_000], &[1, 100])
    } else {
        (&[2, 10, 100, 1_000], &[1, 100, 10_000])
    };
    let single_runs: u16 = if opts.smoke { 20 } else { SINGLE_RUNS };
    let mut restore = vec![];
    let mut results: Vec<((u32, u32), Figures)> = vec![];
    // The configurations, `passes` times, every other pass in reverse
    // order; the first configuration once more before the others,
    // unreported: the first measurements of a fresh tester run cold.
    let grid: Vec<(u32, u32)> = vips
        .iter()
        .flat_map(|&n| backends.iter().map(move |&b| (n, b)))
        .collect();
    let mut configs = vec![grid[0]];
    for pass in 0..opts.passes {
        if pass % 2 == 0 {
            configs.extend(grid.iter().copied());
        } else {
            configs.extend(grid.iter().rev().copied());
        }
    }
    for (k, &(n, b)) in configs.iter().enumerate() {
        eprintln!("bench: load balancer paths, {b} members, {n} VIPs");
        let started = std::time::Instant::now();
        t.install(&world(b, n));
        let mut host = t.default_host();
        host.flags |= HOST_F_LB;
        t.set_host(host);
        eprintln!(
            "bench:   installed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let svc =
            t.lb.services()
                .into_iter()
                .find(|(_, l)| l == LISTENER)
                .map(|(id, _)| id)
                .context("the measured listener has no service number")?;
        let stats = |t: &mut ProgramTester| {
            t.dataplane()
                .lb_stats([svc], false)
                .expect("read LB_SERVICE_STATS")
                .remove(&svc)
                .unwrap_or_default()
        };
        // No connection of an earlier configuration is left.
        t.dataplane()
            .lb_gc(u64::MAX, 0)
            .context("empty LB_FLOWS and LB_REV")?;
        // The established connection: its SYN chose a member; the direct
        // rows send the same segments to that member.
        let est_sport = 60_000;
        let o = run_checked(
            t,
            Attach::Port,
            tp1,
            &tcp(VIP_MAC, VIP, est_sport, VIP_PORT, true),
            Verdict::Redirect,
            "SYN to the VIP",
        )?;
        let (outer, inner) = vxlan_parts("SYN to the VIP", &o.output)?;
        ensure!(
            outer == MEMBER_HOST && inner[36..38] == MEMBER_PORT.to_be_bytes(),
            "the SYN to the VIP did not leave tunnelled to a member's port on the members' host: {}",
            crate::progtest::hex(&o.output)
        );
        let chosen: [u8; 4] = inner[30..34].try_into().expect("4");
        ensure!(
            (0..b).any(|i| member_ip(i) == chosen),
            "the SYN went to {chosen:?}, not a member of the listener"
        );
        let est = tcp(VIP_MAC, VIP, est_sport, VIP_PORT, false);
        let direct = tcp(GW_A, chosen, est_sport, MEMBER_PORT, false);
        // Each once, un-timed: both reach the chosen member, translated
        // the same way (the established segment to the member's port).
        for (what, f) in [("established", &est), ("direct", &direct)] {
            let o = run_checked(t, Attach::Port, tp1, f, Verdict::Redirect, what)?;
            let (outer, inner) = vxlan_parts(what, &o.output)?;
            ensure!(
                outer == MEMBER_HOST
                    && inner[30..34] == chosen
                    && inner[36..38] == MEMBER_PORT.to_be_bytes(),
                "{what}: not to the chosen member {chosen:?}:{MEMBER_PORT}: {}",
                crate::progtest::hex(&o.output)
            );
        }
        // Repeated runs through the harness, interleaved: restore (its
        // cost), established, direct, direct without the front check.
        let rows: [(&str, Attach, &[u8]); 4] = [
            ("restore", Attach::BenchRestore, &direct),
            ("established", Attach::BenchPort, &est),
            ("direct", Attach::BenchPort, &direct),
            ("direct, no front check", Attach::BenchPortPlain, &direct),
        ];
        let s0 = stats(t);
        let before = t.outcomes();
        let verdict = |a: Attach| {
            if a == Attach::BenchRestore {
                Verdict::Pass
            } else {
                Verdict::Redirect
            }
        };
        for (name, a, f) in rows {
            t.bench_frame(f);
            time_checked(
                t,
                a,
                if a == Attach::BenchRestore { 0 } else { tp1 },
                f,
                1000,
                verdict(a),
                name,
            )?;
        }
        let mut s: Vec<Vec<f64>> = vec![vec![]; rows.len()];
        for _ in 0..opts.rounds {
            for (i, (name, a, f)) in rows.iter().enumerate() {
                t.bench_frame(f);
                let ingress = if *a == Attach::BenchRestore { 0 } else { tp1 };
                s[i].push(time_checked(
                    t,
                    *a,
                    ingress,
                    f,
                    opts.repeat,
                    verdict(*a),
                    name,
                )?);
            }
        }
        let after = t.outcomes();
        let s1 = stats(t);
        let n_runs = opts.rounds as u64 * opts.repeat as u64 + 1000;
        ensure!(
            after.0 - before.0 == 3 * n_runs && after.1 == before.1,
            "load balancer rows: {} of {} runs forwarded, {} dropped",
            after.0 - before.0,
            3 * n_runs,
            after.1 - before.1
        );
        ensure!(
            s1.connections == s0.connections && s1.packets_in - s0.packets_in == n_runs,
            "established packets were not all LB_FLOWS hits (and only they counted by the listener): {s0:?} -> {s1:?}"
        );
        let restore_s = s.remove(0);
        let net: Vec<Vec<f64>> = s
            .iter()
            .map(|r| benchkit::paired(r, &restore_s, |a, b| a - b))
            .collect();
        let mut fig = Figures {
            established: net[0].clone(),
            direct: net[1].clone(),
            plain: net[2].clone(),
            ..Figures::default()
        };
        // Single runs, interleaved: a new connection (a SYN from a new
        // source port: Maglev, LB_FLOWS and LB_REV inserted), the
        // established segment, the direct one (new source ports too).
        let (mut first, mut est1, mut dir1) = (vec![], vec![], vec![]);
        let s0 = stats(t);
        // Source ports start over: the tables were emptied above.
        let base: u16 = 1024;
        for i in 0..single_runs {
            let sport = base + i;
            let syn = tcp(VIP_MAC, VIP, sport, VIP_PORT, true);
            first.push(time_checked(
                t,
                Attach::Port,
                tp1,
                &syn,
                1,
                Verdict::Redirect,
                "first packet",
            )?);
            est1.push(time_checked(
                t,
                Attach::Port,
                tp1,
                &est,
                1,
                Verdict::Redirect,
                "established, single",
            )?);
            let d = tcp(GW_A, chosen, sport, MEMBER_PORT, true);
            dir1.push(time_checked(
                t,
                Attach::Port,
                tp1,
                &d,
                1,
                Verdict::Redirect,
                "direct, single",
            )?);
        }
        let s1 = stats(t);
        ensure!(
            s1.connections - s0.connections == single_runs as u64,
            "{} of {single_runs} first packets made a connection",
            s1.connections - s0.connections
        );
        // The single runs in `rounds` consecutive chunks: a median each,
        // so the first packet's figures have a spread too.
        let chunks = |v: &[f64]| -> Vec<f64> {
            let n = (v.len() / opts.rounds).max(1);
            v.chunks(n).map(|c| Stat::of(c).median).collect()
        };
        fig.first_single = chunks(&first);
        fig.established_single = chunks(&est1);
        fig.direct_single = chunks(&dir1);
        if k == 0 {
            continue;
        }
        restore.extend(restore_s);
        // The passes of a configuration pooled: its rounds and chunks.
        match results.iter_mut().find(|(c, _)| *c == (b, n)) {
            Some((_, f)) => {
                f.established.extend(fig.established);
                f.direct.extend(fig.direct);
                f.plain.extend(fig.plain);
                f.first_single.extend(fig.first_single);
                f.established_single.extend(fig.established_single);
                f.direct_single.extend(fig.direct_single);
            }
            None => results.push(((b, n), fig)),
        }
    }
    results.sort_by_key(|((b, n), _)| (*n, *b));
    t.install(&World::new());
    if opts.smoke {
        return Ok(());
    }
    let first_cost =
        |f: &Figures| benchkit::paired(&f.first_single, &f.direct_single, |a, b| a - b);
    let est_cost = |f: &Figures| benchkit::paired(&f.established, &f.direct, |a, b| a - b);
    let front = |f: &Figures| benchkit::paired(&f.direct, &f.plain, |a, b| a - b);
    let med = |v: &[f64]| Stat::of(v).median;
    let base = results[0].1.clone();
    // Targets: the worst configuration of each cost, and flatness as the
    // spread of the configurations' medians against the smallest one.
    let table = "Load balancer";
    let worst = |cost: &dyn Fn(&Figures) -> Vec<f64>| {
        results
            .iter()
            .max_by(|a, b| med(&cost(&a.1)).total_cmp(&med(&cost(&b.1))))
            .map(|((b, n), f)| ((*b, *n), Stat::of(&cost(f))))
            .expect("configurations")
    };
    let ((b, n), s) = worst(&first_cost);
    benchkit::target(
        table,
        &format!(
            "first packet: LB cost <= 150 ns (the worst configuration: {b} members, {n} VIPs)"
        ),
        Bound::AtMost(150.0),
        &s,
        0,
        " ns",
    );
    let ((b, n), s) = worst(&est_cost);
    benchkit::target(
        table,
        &format!("established: LB cost <= 100 ns (the worst configuration: {b} members, {n} VIPs)"),
        Bound::AtMost(100.0),
        &s,
        0,
        " ns",
    );
    let flat = |v: &dyn Fn(&Figures) -> f64| {
        Stat::of(
            &results
                .iter()
                .map(|(_, f)| v(f) / v(&base).max(1e-9))
                .collect::<Vec<_>>(),
        )
    };
    benchkit::target(table, "first packet flat from 2 to 1,000 members and 1 to 10,000 VIPs (each configuration / the smallest, within 10%)", Bound::Between(0.9, 1.1), &flat(&|f| med(&f.first_single)), 2, "x");
    benchkit::target(table, "established flat from 2 to 1,000 members and 1 to 10,000 VIPs (each configuration / the smallest, within 10%)", Bound::Between(0.9, 1.1), &flat(&|f| med(&f.established)), 2, "x");
    writeln!(out, "### Load balancer, ns/packet (BPF_PROG_TEST_RUN), 2 to 1,000 members per listener, 1 to 10,000 VIPs\n")?;
    writeln!(out, "A VM's TCP segment (74 B) to a VIP on its network: the load balancer in front of the port pipeline (`LB_VIP_FILTER`, then the connection in `LB_FLOWS`, or the listener and Maglev; translation), then the pipeline, routed + VXLAN to the chosen member on another host, in one program run. **LB cost** is the difference to the same segment sent straight to that member (same route and tunnel; it passes the front check, its destination's filter bit clear). **Front check**: what that check costs such a packet (not to a VIP), against the pipeline alone (a harness without it). The configurations alternate over {} passes (every other one in reverse order), each configuration's rounds and chunks pooled. Established: an `LB_FLOWS` hit, {} rounds of {} runs through the bench harness with established, direct and direct without the front check interleaved (the harness's cost, {} ns, measured in the same rounds and taken off; differences per round). The bench checks the SYN, the established and the direct segment once with their output (tunnelled to the chosen member's port), the verdict of every timed run, that every run was forwarded and that the listener counted every established run without a new connection. First packet: a repeated run reuses its frame, so every repetition after the first would be a hit; instead {single_runs} single runs (`repeat` 1), each a SYN from a new source port (the bench checks each was forwarded and made a connection: Maglev, `LB_FLOWS` and `LB_REV` inserted), interleaved with single runs of the direct SYN and of the established segment; medians of {} consecutive chunks. A single run also times the kernel's timer and context set-up, the same for all three, so compare single runs with single runs: the LB cost of a first packet is its median minus the direct one's. Port security off. Members other than the measured listener's: each filler VIP has a listener with 2 (Maglev tables of 251 slots); the measured listener's table is the first prime >= 100 x its members. Every figure: median (min-max) over the rounds or chunks; a cost smaller than its spread is within noise.\n", opts.passes, opts.rounds, opts.repeat, Stat::of(&restore).fmt(0), opts.rounds)?;
    writeln!(out, "| members | VIPs | first packet LB cost | established LB cost | established | direct | single runs: first / established / direct | front check |")?;
    writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    let cost_cell = |v: Vec<f64>| {
        let s = Stat::of(&v);
        if benchkit::noise(&v) {
            format!("{}, within noise", s.fmt(0))
        } else {
            s.fmt(0)
        }
    };
    for ((b, n), f) in &results {
        writeln!(
            out,
            "| {b} | {n} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} | {} |",
            cost_cell(first_cost(f)),
            cost_cell(est_cost(f)),
            Stat::of(&f.established).fmt(0),
            Stat::of(&f.direct).fmt(0),
            med(&f.first_single),
            med(&f.established_single),
            med(&f.direct_single),
            cost_cell(front(f)),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Connections/s and requests/s through a load balancer, in namespaces.

/// The namespaces of one run: `<p>h` (the host: the middle), `<p>c` (the
/// client VM), `<p>m1`, `<p>m2` (the members); processes started in them.
/// Dropping it (also on an error) kills the processes and deletes the
/// namespaces, with every veth in them.
struct Netns {
    prefix: String,
    dir: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl Netns {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Runs `argv` in namespace `n`; an error with its output unless it
    /// succeeds.
    fn sh(&self, n: &str, argv: &[&str]) -> anyhow::Result<String> {
        let ns = self.ns(n);
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(argv)
            .output()
            .with_context(|| format!("{ns}: {}", argv.join(" ")))?;
        ensure!(
            o.status.success(),
            "{ns}: {} failed: {}{}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Starts `argv` in namespace `n` (killed on drop); returns its pid.
    fn spawn(&mut self, n: &str, argv: &[&str], log: &str) -> anyhow::Result<u32> {
        let ns = self.ns(n);
        let f = std::fs::File::create(self.dir.join(log)).context("log file")?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(argv)
            .stdin(std::process::Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("{ns}: starting {}", argv.join(" ")))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Stops the process `pid` started with [`spawn`](Self::spawn).
    fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["c", "m1", "m2", "h"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.ns(n)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GW_C: [u8; 6] = mac(0xc0, 0, 1);
const M1: ([u8; 6], [u8; 4]) = (mac(0, 2, 10), [10, 2, 0, 10]);
const M2: ([u8; 6], [u8; 4]) = (mac(0, 3, 11), [10, 3, 0, 11]);

fn mac_s(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// client (eth0, 10.1.0.5) -- lbc [host] lbm1 -- m1 (10.2.0.10)
///                                        lbm2 -- m2 (10.3.0.11)
/// The host's ends carry the gateways' MACs of Strato's router, so the VMs'
/// neighbour entries for their gateways hold in every row.
fn topology() -> anyhow::Result<Netns> {
    let prefix = format!("slb{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("{prefix}-bench"));
    std::fs::create_dir_all(&dir).context("state dir")?;
    let net = Netns {
        prefix,
        dir,
        children: vec![],
    };
    for n in ["h", "c", "m1", "m2"] {
        let o = std::process::Command::new("ip")
            .args(["netns", "add", &net.ns(n)])
            .output()?;
        ensure!(
            o.status.success(),
            "ip netns add {}: {}",
            net.ns(n),
            String::from_utf8_lossy(&o.stderr)
        );
        net.sh(n, &["ip", "link", "set", "lo", "up"])?;
        net.sh(n, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        net.sh(
            n,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        )?;
        net.sh(n, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
        net.sh(
            n,
            &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"],
        )?;
        net.sh(n, &["sysctl", "-qw", "net.core.somaxconn=4096"])?;
        // No TIME_WAIT sockets: the rows reuse the client's ports towards
        // the same members, and a SYN meeting the previous row's TIME_WAIT
        // socket waits for a retransmission (a row run after the others
        // fell from 11,000 to 2,000 connections/s).
        net.sh(n, &["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0"])?;
    }
    let h = net.ns("h");
    for (tap, gw_mac, vm, vm_mac, addr, gw) in [
        ("lbc", GW_A, "c", C1.0, "10.1.0.5/24", "10.1.0.1"),
        ("lbm1", GW_B, "m1", M1.0, "10.2.0.10/24", "10.2.0.1"),
        ("lbm2", GW_C, "m2", M2.0, "10.3.0.11/24", "10.3.0.1"),
    ] {
        let vm_ns = net.ns(vm);
        let o = std::process::Command::new("ip")
            .args(["-n", &h, "link", "add", tap, "address", &mac_s(gw_mac)])
            .args(["type", "veth", "peer", "name", "eth0", "address"])
            .args([&mac_s(vm_mac), "netns", &vm_ns])
            .output()?;
        ensure!(
            o.status.success(),
            "veth {tap}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        net.sh("h", &["ip", "link", "set", tap, "up"])?;
        let host_addr = format!("{gw}/24");
        net.sh("h", &["ip", "addr", "add", &host_addr, "dev", tap])?;
        net.sh(vm, &["ip", "link", "set", "eth0", "up"])?;
        net.sh(vm, &["ip", "addr", "add", addr, "dev", "eth0"])?;
        net.sh(vm, &["ip", "route", "add", "default", "via", gw])?;
    }
    net.sh("h", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    // The VIP for the Linux balancers (HAProxy binds it; nftables
    // translates it before routing); the host answers ARP for it.
    net.sh("h", &["ip", "addr", "add", "10.1.0.100/32", "dev", "lo"])?;
    Ok(net)
}

/// nginx in a member: one worker, a 3-byte static answer, no log.
fn nginx(net: &mut Netns, vm: &str) -> anyhow::Result<u32> {
    let d = net.dir.join(format!("nginx-{vm}"));
    std::fs::create_dir_all(&d)?;
    let conf = format!(
        "user root;\n# One process, no master: it is the pid we started (and stop).\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
           fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
           keepalive_requests 100000000;\n\
           server {{ listen 8080 backlog=4096 reuseport; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
        d = d.display()
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let p = path.display().to_string();
    net.spawn(
        vm,
        &["nginx", "-c", &p, "-g", "daemon off;"],
        &format!("nginx-{vm}.log"),
    )
}

/// One wrk run from the client: requests/s; an error if wrk counted any
/// error (socket errors, non-2xx answers).
fn wrk(
    net: &Netns,
    url: &str,
    close: bool,
    seconds: u64,
    (threads, connections): (usize, usize),
) -> anyhow::Result<f64> {
    let d = format!("{seconds}s");
    let c = format!("-c{connections}");
    let t = format!("-t{threads}");
    let mut argv = vec!["wrk", &t, &c, "-d", &d];
    if close {
        argv.extend(["-H", "Connection: close"]);
    }
    argv.push(url);
    let o = net.sh("c", &argv)?;
    let rps = o
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk said: {o}"))?;
    let mut errors = 0;
    for l in o.lines() {
        let l = l.trim();
        if let Some(r) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for p in r.split(',') {
                let n = p.split_whitespace().last().unwrap_or_default();
                errors += n
                    .parse::<u64>()
                    .with_context(|| format!("wrk: cannot read {l:?}"))?;
            }
        } else if let Some(r) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += r
                .trim()
                .parse::<u64>()
                .with_context(|| format!("wrk: cannot read {l:?}"))?;
        }
    }
    ensure!(
        errors == 0,
        "wrk to {url}: {errors} errors (socket errors and non-2xx answers): {o}"
    );
    ensure!(rps > 0.0, "wrk to {url}: no requests: {o}");
    Ok(rps)
}

/// Busy CPU time of the machine so far (seconds, from /proc/stat: user,
/// nice, system, irq, softirq, steal).
fn machine_cpu() -> anyhow::Result<f64> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let l = s.lines().next().context("/proc/stat")?;
    let v: Vec<f64> = l
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() >= 8, "/proc/stat: {l}");
    let hz = 100.0;
    Ok((v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz)
}

/// User + system CPU time of a process so far (seconds).
fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    let t: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(t / 100.0)
}

/// The id of the program of the TC filter on `dev`'s ingress in the host.
fn tc_prog_id(net: &Netns, dev: &str) -> anyhow::Result<u64> {
    let ns = net.ns("h");
    crate::benchkit::tc_ingress_prog(&["ip", "netns", "exec", &ns], dev)
}

/// The Strato world of the namespaces: client c1 on `lbc` (net a), members
/// m1 on `lbm1` (net b) and m2 on `lbm2` (net c), router r1, the load
/// balancer 10.1.0.100 TCP 80 -> m1:8080, m2:8080. Port security off (the
/// Linux balancers filter nothing either).
fn netns_world() -> World {
    let m = |id: &str, ip: [u8; 4]| member(id.into(), ip);
    World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .net(Net::new("b", 200).subnet("sb", "10.2.0.0/24", "10.2.0.1"))
        .net(Net::new("c", 300).subnet("sc", "10.3.0.0/24", "10.3.0.1"))
        .router(Router::on(
            "r1",
            &[("sa", GW_A), ("sb", GW_B), ("sc", GW_C)],
        ))
        .port(Port::local("c1", "a", "lbc", C1.0, C1.1).no_security())
        .port(Port::local("m1", "b", "lbm1", M1.0, M1.1).no_security())
        .port(Port::local("m2", "c", "lbm2", M2.0, M2.1).no_security())
        .entry(Entry::LoadBalancer(LoadBalancerEntry {
            id: "lb".into(),
            vip_network_id: "a".into(),
            vip_address: "10.1.0.100".into(),
            vip_mac: mac_s(VIP_MAC),
            admin_state_up: true,
            listeners: vec![listener("l80".into(), vec![m("m1", M1.1), m("m2", M2.1)])],
            domain: 0,
            floating_ip: None,
            gateway: false,
            checked_pools: vec![],
        }))
}

/// Loads the dataplane in the host namespace (on a thread of its own,
/// which stays there holding it: the tail-call table is emptied when the
/// last user-space reference goes), writes the world's tables with the
/// agent's code (policies, `lbmaps`, `tables::build`, `Dataplane::apply`)
/// and attaches the TC port program to the three taps, as agents do.
fn strato_up(
    net: &Netns,
) -> anyhow::Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    use strato_dataplane::Dataplane;
    let mut ifindex = std::collections::BTreeMap::new();
    for tap in ["lbc", "lbm1", "lbm2"] {
        let v: serde_json::Value =
            serde_json::from_str(&net.sh("h", &["ip", "-j", "link", "show", tap])?)?;
        ifindex.insert(
            tap.to_string(),
            v[0]["ifindex"].as_u64().context("ifindex")? as u32,
        );
    }
    crate::benchkit::hold_in_netns(&net.ns("h"), move || {
        let mut dp = Dataplane::load(None)?;
        let entries = netns_world().entries();
        let mut policies = strato_agent::security_groups::Policies::default();
        policies.start_after(0, 0);
        let slots: std::collections::BTreeMap<u32, u32> = ifindex
            .values()
            .enumerate()
            .map(|(i, &x)| (x, i as u32 + 1))
            .collect();
        let mut lb = strato_agent::lb::LbState::default();
        crate::progtest::write_as_the_agent(
            &mut dp,
            &entries,
            &mut policies,
            &mut lb,
            &ifindex,
            &slots,
        )?;
        dp.set_host(dataplane_common::HostInfo {
            flags: HOST_F_LB,
            ..Default::default()
        })?;
        for tap in ["lbc", "lbm1", "lbm2"] {
            dp.attach(Attach::PortTc, tap)?;
        }
        Ok(dp)
    })
}

/// One row: a balancing step's keep-alive requests/s and new
/// connections/s, with CPU times over the new-connection run.
#[derive(Default)]
struct LbRow {
    rps: f64,
    cps: f64,
    /// Machine busy CPU seconds per 1,000 connections (new-connection run).
    machine_ms_per_kconn: f64,
    /// The balancer's own CPU per 1,000 connections, where it can be
    /// attributed (HAProxy's process; Strato's programs).
    own_ms_per_kconn: Option<f64>,
}

/// The balancing steps compared, in the order of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    DirectOne,
    DirectBoth,
    Strato,
    Haproxy,
    Nftables,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::DirectOne,
        Step::DirectBoth,
        Step::Strato,
        Step::Haproxy,
        Step::Nftables,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::DirectOne => "direct to one member (no balancer; the host routes)",
            Step::DirectBoth => {
                "direct to both members (no balancer; two wrk, 1 thread and 16 connections to each)"
            }
            Step::Strato => {
                "Strato (TC port program on the host's taps: Maglev in the client's port)"
            }
            Step::Haproxy => "HAProxy 2.6, mode tcp, roundrobin, 1 thread (in the host)",
            Step::Nftables => "nftables DNAT, numgen inc mod 2 (conntrack, in the host)",
        }
    }
}

/// Busy CPU seconds of the machine, and of the balancer where it can be
/// attributed.
type CpuProbe<'a> = &'a dyn Fn() -> anyhow::Result<f64>;

/// Keep-alive requests/s, then new connections/s with CPU times around it,
/// from `urls` (one wrk each, the 32 connections shared out).
fn measure(net: &Netns, urls: &[&str], seconds: u64, own: CpuProbe<'_>) -> anyhow::Result<LbRow> {
    for url in urls {
        ready(net, url)?;
    }
    let both = |close: bool| -> anyhow::Result<f64> {
        std::thread::scope(|sc| {
            let hs: Vec<_> = urls
                .iter()
                .map(|u| {
                    sc.spawn(move || wrk(net, u, close, seconds, (2 / urls.len(), 32 / urls.len())))
                })
                .collect();
            let mut sum = 0.0;
            for h in hs {
                sum += h.join().expect("wrk thread")?;
            }
            Ok(sum)
        })
    };
    let rps = both(false)?;
    let (m0, o0) = (machine_cpu()?, own()?);
    let cps = both(true)?;
    let (m1, o1) = (machine_cpu()?, own()?);
    let kconn = (cps * seconds as f64 / 1000.0).max(1e-9);
    Ok(LbRow {
        rps,
        cps,
        machine_ms_per_kconn: (m1 - m0) * 1000.0 / kconn,
        own_ms_per_kconn: Some((o1 - o0) * 1000.0 / kconn),
    })
}

/// The URL answers (nginx up, the balancer in place).
fn ready(net: &Netns, url: &str) -> anyhow::Result<()> {
    for _ in 0..50 {
        if net
            .sh("c", &["busybox", "wget", "-q", "-O", "-", url])
            .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    net.sh("c", &["busybox", "wget", "-q", "-O", "-", url])
        .map(|_| ())
}

fn flush_neighbours(net: &Netns) -> anyhow::Result<()> {
    for n in ["c", "m1", "m2", "h"] {
        net.sh(n, &["ip", "neigh", "flush", "all"])?;
    }
    Ok(())
}

const VIP_URL: &str = "http://10.1.0.100/";

/// Puts the balancing step in place, measures it, takes it away.
fn measure_step(net: &mut Netns, step: Step, seconds: u64) -> anyhow::Result<LbRow> {
    let none = || anyhow::Ok(0.0);
    flush_neighbours(net)?;
    match step {
        Step::DirectOne => {
            let mut r = measure(net, &["http://10.2.0.10:8080/"], seconds, &none)?;
            r.own_ms_per_kconn = None;
            Ok(r)
        }
        Step::DirectBoth => {
            let urls = ["http://10.2.0.10:8080/", "http://10.3.0.11:8080/"];
            let mut r = measure(net, &urls, seconds, &none)?;
            r.own_ms_per_kconn = None;
            Ok(r)
        }
        Step::Strato => {
            let (done, h) = strato_up(net)?;
            let r = (|| {
                // The same program on the three taps: its runs and run
                // time count every packet both ways (the kernel's BPF
                // statistics, on for this row only).
                let id = tc_prog_id(net, "lbc")?;
                for tap in ["lbm1", "lbm2"] {
                    ensure!(
                        tc_prog_id(net, tap)? == id,
                        "{tap}: not the client's port program"
                    );
                }
                let _stats = crate::benchkit::BpfStats::enable()?;
                let runs0 = crate::benchkit::prog_runs(id)?;
                let r = measure(net, &[VIP_URL], seconds, &|| {
                    Ok(crate::benchkit::prog_runs(id)?.run_time_ns as f64 / 1e9)
                })?;
                let runs = crate::benchkit::prog_runs(id)? - runs0;
                // At least the SYN, the ACK and the request of every
                // connection went through the program, in measurable time.
                let conns = (r.cps * seconds as f64) as u64;
                ensure!(
                    runs.run_cnt >= 3 * conns
                        && runs.run_time_ns > 0
                        && r.own_ms_per_kconn.is_some_and(|v| v > 0.0),
                    "Strato's program ran {} times ({} ns) for {conns} connections: the row did not go through it",
                    runs.run_cnt,
                    runs.run_time_ns
                );
                Ok(r)
            })();
            let _ = done.send(());
            let _ = h.join();
            for tap in ["lbc", "lbm1", "lbm2"] {
                let _ = net.sh("h", &["tc", "qdisc", "del", "dev", tap, "clsact"]);
            }
            r
        }
        Step::Haproxy => {
            let cfg = net.dir.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                "global\n  maxconn 8000\n  nbthread 1\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend vip\n  bind 10.1.0.100:80\n  default_backend members\n\
                 backend members\n  balance roundrobin\n  server m1 10.2.0.10:8080\n  server m2 10.3.0.11:8080\n",
            )?;
            let c = cfg.display().to_string();
            // `ip netns exec` execs the command: its pid is haproxy's.
            let pid = net.spawn("h", &["haproxy", "-db", "-f", &c], "haproxy.log")?;
            let r = measure(net, &[VIP_URL], seconds, &|| process_cpu(pid)).and_then(|r| {
                ensure!(
                    r.own_ms_per_kconn.is_some_and(|v| v > 0.0),
                    "HAProxy's own CPU time did not move"
                );
                Ok(r)
            });
            net.stop(pid);
            r.with_context(|| {
                std::fs::read_to_string(net.dir.join("haproxy.log")).unwrap_or_default()
            })
        }
        Step::Nftables => {
            net.sh("h", &["nft", "add table ip lb; add chain ip lb pre { type nat hook prerouting priority -100; }; add rule ip lb pre ip daddr 10.1.0.100 tcp dport 80 dnat ip to numgen inc mod 2 map { 0 : 10.2.0.10 . 8080, 1 : 10.3.0.11 . 8080 }"])?;
            let r = measure(net, &[VIP_URL], seconds, &none);
            let _ = net.sh("h", &["nft", "delete table ip lb"]);
            let mut r = r?;
            r.own_ms_per_kconn = None;
            Ok(r)
        }
    }
}

/// `passes` passes, every other one in reverse order (a slow stretch of
/// the shared machine then weighs on every row alike); each figure is the
/// median (min-max) of the passes.
pub fn run_netns(seconds: u64, passes: usize, smoke: bool, out: &mut String) -> anyhow::Result<()> {
    use crate::benchkit::{self, Bound, Stat};
    eprintln!("bench: load balancers in namespaces (wrk, 2 nginx members)");
    let mut net = topology()?;
    for m in ["m1", "m2"] {
        nginx(&mut net, m)?;
    }
    let mut samples: Vec<Vec<LbRow>> = Step::ALL.iter().map(|_| vec![]).collect();
    for pass in 0..passes {
        let mut order: Vec<usize> = (0..Step::ALL.len()).collect();
        if pass % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let step = Step::ALL[i];
            eprintln!("bench: LB netns ({}/{passes}): {}", pass + 1, step.name());
            let r =
                measure_step(&mut net, step, seconds).with_context(|| step.name().to_owned())?;
            eprintln!(
                "bench:   {:.0} requests/s, {:.0} connections/s, {:.1} ms CPU / 1k conn, own {:?}",
                r.rps, r.cps, r.machine_ms_per_kconn, r.own_ms_per_kconn
            );
            samples[i].push(r);
        }
    }
    if smoke {
        return Ok(());
    }
    let col = |i: usize, f: &dyn Fn(&LbRow) -> f64| samples[i].iter().map(f).collect::<Vec<f64>>();
    let (one, both, strato, hap) = (0, 1, 2, 3);
    let cps = |i| col(i, &|r| r.cps);
    let rps = |i| col(i, &|r| r.rps);
    let own = |i| col(i, &|r| r.own_ms_per_kconn.unwrap_or(f64::NAN));
    let table = "Load balancer, namespaces";
    benchkit::target(
        table,
        "Strato: new connections/s >= 0.95x direct to one member",
        Bound::AtLeast(0.95),
        &Stat::of(&benchkit::ratios(&cps(strato), &cps(one))),
        2,
        "x",
    );
    benchkit::target(
        table,
        "Strato: new connections/s >= 1.25x HAProxy",
        Bound::AtLeast(1.25),
        &Stat::of(&benchkit::ratios(&cps(strato), &cps(hap))),
        2,
        "x",
    );
    benchkit::target(
        table,
        "Strato: the balancer's own CPU per connection <= 0.5x HAProxy's",
        Bound::AtMost(0.5),
        &Stat::of(&benchkit::ratios(&own(strato), &own(hap))),
        2,
        "x",
    );
    writeln!(out, "### Load balancer: new connections/s and requests/s in namespaces ({seconds} s each, {passes} passes, wrk 2 threads 32 connections, 2 nginx members)\n")?;
    writeln!(out, "Same namespaces and cores for every row: client VM -> host (the balancing step) -> two member VMs running nginx (one process each, a 3-byte answer). Requests/s: keep-alive; new connections/s: `-H 'Connection: close'` (one connection per request). Direct to one member: the client asks m1, the host routes (one nginx worker serves: on 2 cores that is the bound); direct to both: two wrk at once, 1 thread and 16 connections to each member (the same endpoints as the balanced rows, no balancer). Each step is put in place, measured and taken away in turn, every pass (the order reversed every other pass); every figure is the median (min-max) of the passes, ratios per pass. CPU per 1,000 new connections: the machine's busy time (/proc/stat: every process and softirq: wrk, nginx, the balancer), and the balancer's own where it can be attributed: HAProxy's process (user + system; not the kernel's TCP work in softirq), Strato's TC program (the kernel's BPF statistics: run time of the port program and its tails on the three taps, every packet both ways; on for that row only); nftables works in the packets' softirqs: not attributable. The bench fails on any wrk error (socket errors, non-2xx answers), checks that Strato's program ran for at least three packets of every connection, and that the balancers' own CPU figures moved.\n")?;
    writeln!(out, "| balancing step | requests/s | connections/s | conn/s x direct (1 member) | conn/s x direct (both) | conn/s x HAProxy | req/s x direct (both) | req/s x HAProxy | machine CPU ms / 1k conn | balancer's own CPU ms / 1k conn |")?;
    writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (i, step) in Step::ALL.iter().enumerate() {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            step.name(),
            Stat::of(&rps(i)).fmt(0),
            Stat::of(&cps(i)).fmt(0),
            benchkit::ratio_text(&cps(i), &cps(one)),
            benchkit::ratio_text(&cps(i), &cps(both)),
            benchkit::ratio_text(&cps(i), &cps(hap)),
            benchkit::ratio_text(&rps(i), &rps(both)),
            benchkit::ratio_text(&rps(i), &rps(hap)),
            Stat::of(&col(i, &|r| r.machine_ms_per_kconn)).fmt(1),
            if samples[i][0].own_ms_per_kconn.is_some() {
                Stat::of(&own(i)).fmt(2)
            } else {
                "-".into()
            },
        )?;
    }
    writeln!(out)?;
    Ok(())
}
