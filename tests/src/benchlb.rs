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
use strato::compile::{Entry, ListenerEntry, LoadBalancerEntry, MemberEntry};
use strato::dataplane::Attach;

use crate::progtest::{Net, Port, ProgramTester, Router, World};

pub struct Options {
    pub rounds: usize,
    pub repeat: u32,
}

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
        .router(
            Router::new("r1")
                .interface("sa", GW_A)
                .interface("sb", GW_B)
                .interface("sv", mac(0xc0, 0, 1)),
        )
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One configuration's figures (ns/packet).
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    /// Repeated runs through the harness (its cost taken off).
    established: f64,
    direct: f64,
    /// `direct` without the load balancer in front of the pipeline.
    plain: f64,
    /// Single runs (one BPF_PROG_TEST_RUN each), medians.
    first_single: f64,
    established_single: f64,
    direct_single: f64,
}

/// Single runs per configuration for the first-packet rows.
const SINGLE_RUNS: u16 = 4000;

pub fn run(t: &mut ProgramTester, opts: &Options, out: &mut String) -> anyhow::Result<()> {
    let tp1 = t.ifindex("tp1");
    let backends = [2u32, 10, 100, 1_000];
    let vips = [1u32, 100, 10_000];
    let mut restore = vec![];
    let mut results: Vec<((u32, u32), Figures)> = vec![];
    // Each configuration's single runs use source ports of their own.
    let mut next_sport: u16 = 1024;
    let timed = |t: &mut ProgramTester, on: Attach, frame: &[u8], name: &str| {
        t.bench_frame(frame);
        let before = t.outcomes();
        t.time_on(on, tp1, frame, 1000);
        let ns = median(
            (0..opts.rounds)
                .map(|_| t.time_on(on, tp1, frame, opts.repeat).as_nanos() as f64)
                .collect(),
        );
        let after = t.outcomes();
        let runs = opts.rounds as u64 * opts.repeat as u64 + 1000;
        ensure!(
            after.0 - before.0 == runs && after.1 == before.1,
            "{name}: {} of {runs} runs forwarded, {} dropped",
            after.0 - before.0,
            after.1 - before.1
        );
        anyhow::Ok(ns)
    };
    // The first configuration once more before the others, unreported: the
    // first measurements of a fresh tester run cold.
    let configs: Vec<(u32, u32)> = std::iter::once((vips[0], backends[0]))
        .chain(
            vips.iter()
                .flat_map(|&n| backends.iter().map(move |&b| (n, b))),
        )
        .collect();
    for (k, &(n, b)) in configs.iter().enumerate() {
        {
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
            let r = {
                let f = tcp(GW_A, member_ip(0), 4000, MEMBER_PORT, false);
                t.bench_frame(&f);
                t.time_on(Attach::BenchRestore, 0, &f, 1000);
                median(
                    (0..opts.rounds)
                        .map(|_| {
                            t.time_on(Attach::BenchRestore, 0, &f, opts.repeat)
                                .as_nanos() as f64
                        })
                        .collect(),
                )
            };
            restore.push(r);
            // The established connection: its SYN chose a member; the
            // direct rows send the same segments to that member.
            let est_sport = 60_000;
            let o = t.run(
                Attach::Port,
                tp1,
                &tcp(VIP_MAC, VIP, est_sport, VIP_PORT, true),
            );
            // Outer Ethernet, IPv4, UDP, VXLAN (50 bytes), inner Ethernet.
            let inner = 50 + 14;
            ensure!(
                o.output.len() > inner + 20 && o.output[30..34] == MEMBER_HOST,
                "the SYN to the VIP did not leave tunnelled to the members' host: {}",
                crate::progtest::hex(&o.output)
            );
            let chosen: [u8; 4] = o.output[inner + 16..inner + 20].try_into().expect("4");
            let est = tcp(VIP_MAC, VIP, est_sport, VIP_PORT, false);
            let direct = tcp(GW_A, chosen, est_sport, MEMBER_PORT, false);
            let s0 = stats(t);
            let mut fig = Figures {
                established: timed(t, Attach::BenchPort, &est, "established")? - r,
                ..Figures::default()
            };
            let s1 = stats(t);
            ensure!(
                s1.connections == s0.connections
                    && s1.packets_in - s0.packets_in
                        == opts.rounds as u64 * opts.repeat as u64 + 1000,
                "established packets were not all LB_FLOWS hits: {s0:?} -> {s1:?}"
            );
            fig.direct = timed(t, Attach::BenchPort, &direct, "direct")? - r;
            fig.plain = timed(t, Attach::BenchPortPlain, &direct, "plain")? - r;
            // Single runs, interleaved: a new connection (a SYN from a new
            // source port: Maglev, LB_FLOWS and LB_REV inserted), the
            // established segment, the direct one (new source ports too).
            let (mut first, mut est1, mut dir1) = (vec![], vec![], vec![]);
            let s0 = stats(t);
            let base = next_sport;
            for i in 0..SINGLE_RUNS {
                let sport = base + i;
                let syn = tcp(VIP_MAC, VIP, sport, VIP_PORT, true);
                first.push(t.time_on(Attach::Port, tp1, &syn, 1).as_nanos() as f64);
                est1.push(t.time_on(Attach::Port, tp1, &est, 1).as_nanos() as f64);
                let d = tcp(GW_A, chosen, sport, MEMBER_PORT, true);
                dir1.push(t.time_on(Attach::Port, tp1, &d, 1).as_nanos() as f64);
            }
            next_sport = base + SINGLE_RUNS;
            let s1 = stats(t);
            ensure!(
                s1.connections - s0.connections == SINGLE_RUNS as u64,
                "{} of {SINGLE_RUNS} first packets made a connection",
                s1.connections - s0.connections
            );
            fig.first_single = median(first);
            fig.established_single = median(est1);
            fig.direct_single = median(dir1);
            if k == 0 {
                restore.clear();
                continue;
            }
            results.push(((b, n), fig));
        }
    }
    t.install(&World::new());
    let restore = median(restore);
    let base = results[0].1;
    let first_cost = |f: &Figures| f.first_single - f.direct_single;
    let est_cost = |f: &Figures| f.established - f.direct;
    writeln!(out, "### Load balancer, ns/packet (BPF_PROG_TEST_RUN), 2 to 1,000 members per listener, 1 to 10,000 VIPs\n")?;
    writeln!(out, "A VM's TCP segment (74 B) to a VIP on its network: the load balancer in front of the port pipeline (`LB_VIP_FILTER`, then the connection in `LB_FLOWS`, or the listener and Maglev; translation), then the pipeline, routed + VXLAN to the chosen member on another host, in one program run. **LB cost** is the difference to the same segment sent straight to that member (same route and tunnel; it passes the front check, its destination's filter bit clear). **Front check**: what that check costs such a packet (not to a VIP), against the pipeline alone (a harness without it). Established: an `LB_FLOWS` hit, median of {} rounds of {} runs through the bench harness (its {restore:.0} ns taken off; the bench checks every run was forwarded and counted by the listener, no new connection). First packet: a repeated run reuses its frame, so every repetition after the first would be a hit; instead {SINGLE_RUNS} single runs (`repeat` 1), each a SYN from a new source port (the bench checks each made a connection: Maglev, `LB_FLOWS` and `LB_REV` inserted), interleaved with single runs of the direct SYN and of the established segment; medians. A single run also times the kernel's timer and context set-up, the same for all three, so compare single runs with single runs: the LB cost of a first packet is its median minus the direct one's. Port security off. Members other than the measured listener's: each filler VIP has a listener with 2 (Maglev tables of 251 slots); the measured listener's table is the first prime >= 100 x its members.\n", opts.rounds, opts.repeat)?;
    writeln!(out, "| members | VIPs | first packet LB cost | established LB cost | established | direct | established x direct | first x smallest | established x smallest | single runs: first / established / direct | front check |")?;
    writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for ((b, n), f) in &results {
        writeln!(
            out,
            "| {b} | {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} / {:.0} / {:.0} | {:.0} |",
            first_cost(f),
            est_cost(f),
            f.established,
            f.direct,
            f.established / f.direct.max(1.0),
            f.first_single / base.first_single.max(1.0),
            f.established / base.established.max(1.0),
            f.first_single,
            f.established_single,
            f.direct_single,
            f.direct - f.plain,
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

/// One wrk run from the client: requests/s, and the errors it counted
/// (socket errors and non-2xx answers).
fn wrk(
    net: &Netns,
    url: &str,
    close: bool,
    seconds: u64,
    (threads, connections): (usize, usize),
) -> anyhow::Result<(f64, u64)> {
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
            errors += r
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(r) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += r.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok((rps, errors))
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

/// Run time and runs of a BPF program so far (kernel.bpf_stats_enabled).
fn bpf_prog_stats(id: u64) -> anyhow::Result<(f64, u64)> {
    let o = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("bpftool JSON")?;
    Ok((
        v["run_time_ns"].as_f64().unwrap_or(0.0) / 1e9,
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// The id of the program of the TC filter on `dev`'s ingress in the host.
fn tc_prog_id(net: &Netns, dev: &str) -> anyhow::Result<u64> {
    let o = net.sh("h", &["tc", "-j", "filter", "show", "dev", dev, "ingress"])?;
    let v: serde_json::Value = serde_json::from_str(&o).context("tc JSON")?;
    v.as_array()
        .into_iter()
        .flatten()
        .find_map(|f| f["options"]["prog"]["id"].as_u64())
        .with_context(|| format!("no BPF filter on {dev}: {o}"))
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
        .router(
            Router::new("r1")
                .interface("sa", GW_A)
                .interface("sb", GW_B)
                .interface("sc", GW_C),
        )
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
    use std::sync::mpsc;
    use strato::dataplane::Dataplane;
    use strato::tables;
    let path = std::path::Path::new("/run/netns").join(net.ns("h"));
    let mut ifindex = std::collections::BTreeMap::new();
    for tap in ["lbc", "lbm1", "lbm2"] {
        let v: serde_json::Value =
            serde_json::from_str(&net.sh("h", &["ip", "-j", "link", "show", tap])?)?;
        ifindex.insert(
            tap.to_string(),
            v[0]["ifindex"].as_u64().context("ifindex")? as u32,
        );
    }
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let r = (|| -> anyhow::Result<Dataplane> {
            let file = std::fs::File::open(&path).context("netns")?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let mut dp = Dataplane::load(None)?;
            let entries = netns_world().entries();
            let mut policies = strato::policy::Policies::default();
            policies.start_after(0, 0);
            for ops in &policies.plan(&entries, true).ops {
                dp.policy_apply(ops)?;
            }
            let pols = policies.port_policies(&entries);
            let slots: std::collections::BTreeMap<u32, u32> = ifindex
                .values()
                .enumerate()
                .map(|(i, &x)| (x, i as u32 + 1))
                .collect();
            let want = tables::build(
                &entries,
                &|tap| ifindex.get(tap).copied(),
                &mut |i| slots.get(&i).copied().unwrap_or(0),
                &|id| pols.get(id).copied().unwrap_or_default(),
            );
            let lbs = entries.values().filter_map(|e| match e {
                Entry::LoadBalancer(l) => Some(l),
                _ => None,
            });
            let specs = strato::lbmaps::specs(lbs, &tables::domains(&entries), &want.endpoints);
            let mut lb = strato::lbmaps::LbState::default();
            dp.lb_apply(&lb.sync(&specs, strato::dataplane::coarse_now_ns()))?;
            let have = dp.tables()?;
            dp.apply(&want.diff(&have))?;
            dp.set_host(dataplane_common::HostInfo {
                flags: HOST_F_LB,
                ..Default::default()
            })?;
            for tap in ["lbc", "lbm1", "lbm2"] {
                dp.attach(Attach::PortTc, tap)?;
            }
            Ok(dp)
        })();
        match r {
            Ok(dp) => {
                let _ = ready_tx.send(Ok(()));
                let _ = done_rx.recv();
                drop(dp);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx.recv().context("Strato thread")??;
    Ok((done_tx, h))
}

/// One row: a balancing step's keep-alive requests/s and new
/// connections/s, with CPU times over the new-connection run.
#[derive(Default)]
struct LbRow {
    rps: f64,
    cps: f64,
    errors: u64,
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
    let both = |close: bool| -> anyhow::Result<(f64, u64)> {
        std::thread::scope(|sc| {
            let hs: Vec<_> = urls
                .iter()
                .map(|u| {
                    sc.spawn(move || wrk(net, u, close, seconds, (2 / urls.len(), 32 / urls.len())))
                })
                .collect();
            let mut sum = (0.0, 0);
            for h in hs {
                let (r, e) = h.join().expect("wrk thread")?;
                sum.0 += r;
                sum.1 += e;
            }
            Ok(sum)
        })
    };
    let (rps, e1) = both(false)?;
    let (m0, o0) = (machine_cpu()?, own()?);
    let (cps, e2) = both(true)?;
    let (m1, o1) = (machine_cpu()?, own()?);
    let kconn = (cps * seconds as f64 / 1000.0).max(1e-9);
    Ok(LbRow {
        rps,
        cps,
        errors: e1 + e2,
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
                let id = tc_prog_id(net, "lbc")?;
                let was = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                    .unwrap_or_else(|_| "0".into());
                std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
                    .context("enable bpf_stats")?;
                let r = measure(net, &[VIP_URL], seconds, &|| Ok(bpf_prog_stats(id)?.0));
                let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", was.trim());
                r
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
            let r = measure(net, &[VIP_URL], seconds, &|| process_cpu(pid));
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

/// Two passes, the second in reverse order (a slow stretch of the shared
/// machine then weighs on every row alike); each figure is the mean of
/// the two.
pub fn run_netns(seconds: u64, out: &mut String) -> anyhow::Result<()> {
    eprintln!("bench: load balancers in namespaces (wrk, 2 nginx members)");
    let mut net = topology()?;
    for m in ["m1", "m2"] {
        nginx(&mut net, m)?;
    }
    let mut samples: Vec<Vec<LbRow>> = Step::ALL.iter().map(|_| vec![]).collect();
    for pass in 0..2 {
        let mut order: Vec<usize> = (0..Step::ALL.len()).collect();
        if pass == 1 {
            order.reverse();
        }
        // STRATO_BENCH_LB_STEPS=2,4 (indices into the table): only those
        // rows (while investigating one).
        let only: Option<Vec<usize>> = std::env::var("STRATO_BENCH_LB_STEPS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
        for i in order {
            if only.as_ref().is_some_and(|o| !o.contains(&i)) {
                samples[i].push(LbRow::default());
                continue;
            }
            let step = Step::ALL[i];
            eprintln!("bench: LB netns ({}/2): {}", pass + 1, step.name());
            let r = measure_step(&mut net, step, seconds)?;
            eprintln!(
                "bench:   {:.0} requests/s, {:.0} connections/s, {:.1} ms CPU / 1k conn, own {:?}, {} errors",
                r.rps, r.cps, r.machine_ms_per_kconn, r.own_ms_per_kconn, r.errors
            );
            samples[i].push(r);
        }
    }
    let rows: Vec<LbRow> = samples
        .iter()
        .map(|v| {
            let n = v.len() as f64;
            LbRow {
                rps: v.iter().map(|r| r.rps).sum::<f64>() / n,
                cps: v.iter().map(|r| r.cps).sum::<f64>() / n,
                errors: v.iter().map(|r| r.errors).sum(),
                machine_ms_per_kconn: v.iter().map(|r| r.machine_ms_per_kconn).sum::<f64>() / n,
                own_ms_per_kconn: v
                    .iter()
                    .map(|r| r.own_ms_per_kconn)
                    .sum::<Option<f64>>()
                    .map(|s| s / n),
            }
        })
        .collect();
    let (one, both, hap) = (&rows[0], &rows[1], &rows[3]);
    writeln!(out, "### Load balancer: new connections/s and requests/s in namespaces ({seconds} s each, two passes, wrk 2 threads 32 connections, 2 nginx members)\n")?;
    writeln!(out, "Same namespaces and cores for every row: client VM -> host (the balancing step) -> two member VMs running nginx (one process each, a 3-byte answer). Requests/s: keep-alive; new connections/s: `-H 'Connection: close'` (one connection per request). Direct to one member: the client asks m1, the host routes (one nginx worker serves: on 2 cores that is the bound); direct to both: two wrk at once, 1 thread and 16 connections to each member (the same endpoints as the balanced rows, no balancer). Each figure: the mean of two passes, the second in reverse order. CPU per 1,000 new connections: the machine's busy time (/proc/stat: every process and softirq: wrk, nginx, the balancer), its excess over direct to both members, and the balancer's own where it can be attributed: HAProxy's process (user + system; not the kernel's TCP work in softirq), Strato's TC program (the kernel's BPF statistics: run time of the port program and its tails on the three taps, every packet both ways; enabled for that row only); nftables works in the packets' softirqs: not attributable.\n")?;
    writeln!(out, "| balancing step | requests/s | connections/s | conn/s x direct (1 member) | conn/s x direct (both) | conn/s x HAProxy | req/s x direct (both) | req/s x HAProxy | machine CPU ms / 1k conn | excess over direct (both) | balancer's own CPU ms / 1k conn | errors |")?;
    writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (step, r) in Step::ALL.iter().zip(&rows) {
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:+.1} | {} | {} |",
            step.name(),
            r.rps,
            r.cps,
            r.cps / one.cps.max(1.0),
            r.cps / both.cps.max(1.0),
            r.cps / hap.cps.max(1.0),
            r.rps / both.rps.max(1.0),
            r.rps / hap.rps.max(1.0),
            r.machine_ms_per_kconn,
            r.machine_ms_per_kconn - both.machine_ms_per_kconn,
            r.own_ms_per_kconn
                .map_or("-".to_string(), |v| format!("{v:.2}")),
            r.errors,
        )?;
    }
    writeln!(out)?;
    Ok(())
}
