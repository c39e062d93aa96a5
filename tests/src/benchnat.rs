//! Elastic IP and SNAT paths through BPF_PROG_TEST_RUN, with 10 and 10,000
//! elastic IPs bound in the maps (the cost must not grow with them), and
//! the memory their tables take.
//!
//! Rows (64-byte UDP frames, every run gets its frame back from the bench
//! harness program first; the harness's own cost is taken off):
//! - on the host of the bound port, the VM's group stateful (connection
//!   table hit after the first run): the way out (routed, the source
//!   becomes the EIP in the tail program, tunnelled to a gateway host) and
//!   the way in (decapsulated, the destination becomes the fixed IP, the
//!   port's ingress rules and connection entry, delivered); the same paths
//!   without NAT (routed + VXLAN to a remote port; decapsulation to a local
//!   port) for comparison;
//! - on a gateway host: internet -> EIP steered over VXLAN; router SNAT of
//!   an established flow out of the external interface, and its reply back
//!   over VXLAN.

use std::fmt::Write as _;

use anyhow::Context as _;

use dataplane_common::{maps, HostInfo, HOST_F_GATEWAY};
use strato_dataplane::Attach;
use strato_proto::config::{Entry, FloatingIpEntry, SnatEntry};

use crate::progtest::{
    Net, Port, ProgramTester, Router, SecurityGroupEntry, SgRuleEntry, World, OTHER_LINK, UPLINK,
    UPLINK_MAC,
};

/// How the bench runs (with `smoke`: tiny sizes, no figures).
pub use crate::benchkit::ProgramRuns as Options;

const fn mac(a: u8, b: u8) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, 0, a, b]
}

const GW_A: [u8; 6] = mac(0xa0, 1);
const A1: ([u8; 6], [u8; 4]) = (mac(1, 5), [10, 1, 0, 5]);
const B3: ([u8; 6], [u8; 4]) = (mac(2, 7), [10, 1, 1, 7]);
const GW_B: [u8; 6] = mac(0xb0, 1);
const EXT_VNI: u32 = 900;
const EXT_MAC: [u8; 6] = mac(0xe0, 1);
const EIP: [u8; 4] = [198, 51, 100, 10];
const SNAT_IP: [u8; 4] = [198, 51, 100, 2];
const CLIENT: [u8; 4] = [198, 18, 100, 7];
const GATEWAY_HOST: [u8; 4] = [198, 18, 2, 2];
/// The host of the remote port b3.
const B3_HOST: [u8; 4] = [198, 18, 2, 3];
const PEER: [u8; 6] = [2, 0, 0x5e, 2, 2, 2];
const EXT_IF_MAC: [u8; 6] = [2, 0, 0x5e, 0x0e, 0x0e, 0x0e];

/// A 64-byte UDP frame (18 bytes of payload, TTL 64).
fn udp(macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    crate::packets::udp4(macs.0, macs.1, src, dst, 64, sport, dport, &[0; 18])
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(PEER, UPLINK_MAC)
        .ipv4(GATEWAY_HOST, [198, 18, 1, 1], 64)
        .udp(50000, 4789)
        .write(
            &mut f,
            &[&[0x08, 0, 0, 0, v[1], v[2], v[3], 0][..], inner].concat(),
        )
        .expect("frame");
    f
}

/// A stateful group open both ways: connection entries, rule lookups only
/// for first packets.
fn open_stateful() -> SecurityGroupEntry {
    SecurityGroupEntry {
        id: "open-stateful".into(),
        stateful: true,
        rules: vec![
            SgRuleEntry::ipv4("in", "ingress", None, (None, None), Some("0.0.0.0/0"), None),
            SgRuleEntry::ipv4("out", "egress", None, (None, None), Some("0.0.0.0/0"), None),
        ],
    }
}

/// `n` elastic IPs bound to ports of other hosts (what fills the gateway's
/// steering table; on a compute host they are entries it never matches).
fn filler(mut w: World, n: u32) -> World {
    for i in 0..n {
        w = w.entry(Entry::FloatingIp(FloatingIpEntry {
            id: format!("fill-{i}"),
            floating_ip_address: format!("100.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff),
            fixed_ip_address: "10.9.0.9".into(),
            port_id: format!("remote-{i}"),
            network_id: format!("ext{EXT_VNI}"),
            vni: EXT_VNI,
            host: "other".into(),
            underlay_ip: format!("198.18.3.{}", i % 100),
            steer: true,
            qos_policy_id: None,
            limits: vec![],
        }));
    }
    w
}

fn compute_world(n: u32) -> World {
    let w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .net(Net::new("b", 101).subnet("sb", "10.1.1.0/24", "10.1.1.1"))
        .group(open_stateful())
        .router(Router::on("r1", &[("sa", GW_A), ("sb", GW_B)]).external(
            EXT_VNI,
            SNAT_IP,
            EXT_MAC,
            GATEWAY_HOST,
        ))
        .port(Port::local("a1", "a", "tp1", A1.0, A1.1).groups(&["open-stateful"]))
        .port(Port::remote("b3", "b", [198, 18, 2, 3], B3.0, B3.1))
        .floating_ip(EIP, EXT_VNI, "a1", A1.1, [198, 18, 1, 1], false);
    filler(w, n)
}

fn gateway_world(n: u32) -> World {
    let w = World::new()
        .net(Net::new("a", 100).subnet("sa", "10.1.0.0/24", "10.1.0.1"))
        .router(Router::new("r1").interface("sa", GW_A))
        .entry(Entry::Snat(SnatEntry {
            router_id: "r1".into(),
            ip: "198.51.100.2".into(),
            ext_vni: EXT_VNI,
            vnis: vec![100],
            host: "gw".into(),
            underlay_ip: "198.18.1.1".into(),
            local: true,
        }));
    filler(w, n)
}

pub fn run(t: &mut ProgramTester, opts: &Options, out: &mut String) -> anyhow::Result<()> {
    use crate::benchkit::{self, ratios, run_checked, time_checked, vxlan_parts, Bound, Stat};
    use crate::progtest::Verdict;
    let (tp1, up, ext) = (t.ifindex("tp1"), t.ifindex(UPLINK), t.ifindex(OTHER_LINK));
    let sizes: [u32; 2] = if opts.smoke { [10, 100] } else { [10, 10_000] };
    type Row = (&'static str, Attach, u32, Vec<u8>);
    let compute_rows: Vec<Row> = vec![
        (
            "host of the port: out, routed + VXLAN to a remote port (no NAT)",
            Attach::BenchPort,
            tp1,
            udp((A1.0, GW_A), A1.1, B3.1, 4000, 9),
        ),
        (
            "host of the port: out by the EIP (SNAT in the tail program) + VXLAN to the gateway",
            Attach::BenchPort,
            tp1,
            udp((A1.0, GW_A), A1.1, CLIENT, 4000, 9),
        ),
        (
            "host of the port: in, VXLAN decapsulation to the port (no NAT)",
            Attach::BenchUplink,
            up,
            vxlan(100, &udp((GW_A, A1.0), B3.1, A1.1, 9, 4000)),
        ),
        (
            "host of the port: in to the EIP (DNAT), decapsulated, delivered",
            Attach::BenchUplink,
            up,
            vxlan(EXT_VNI, &udp((PEER, EXT_IF_MAC), CLIENT, EIP, 9, 4000)),
        ),
    ];
    let gateway_rows: Vec<Row> = vec![
        (
            "gateway: internet -> EIP, steered over VXLAN to the port's host",
            Attach::BenchExternal,
            ext,
            udp((PEER, EXT_IF_MAC), CLIENT, [100, 64, 0, 5], 9, 4000),
        ),
        (
            "gateway: router SNAT of an established flow, out of the external interface",
            Attach::BenchUplink,
            up,
            vxlan(100, &udp((A1.0, GW_A), A1.1, CLIENT, 4000, 9)),
        ),
    ];
    let reply_name = "gateway: the reply to that flow, translated back, VXLAN to the VM's host";
    let direct = |a: Attach| match a {
        Attach::BenchPort => Attach::Port,
        Attach::BenchUplink => Attach::Uplink,
        Attach::BenchExternal => Attach::External,
        other => other,
    };
    // A row's path once, un-timed, through the entry point its harness
    // row wraps; checked forwarded.
    let run_row = |t: &mut ProgramTester, (name, attach, ingress, frame): &Row| {
        run_checked(t, direct(*attach), *ingress, frame, Verdict::Redirect, name)
    };
    // Times rows interleaved, `rounds` rounds, the harness's own cost
    // (restore) in each round taken off; checks the verdict of every run
    // and that every run was forwarded, none dropped.
    let timed = |t: &mut ProgramTester, rows: &[Row], f: &[u8]| -> anyhow::Result<Vec<Vec<f64>>> {
        let before = t.outcomes();
        let mut all: Vec<(&str, Attach, u32, &[u8], Verdict)> =
            vec![("restore", Attach::BenchRestore, 0, f, Verdict::Pass)];
        all.extend(
            rows.iter()
                .map(|(n, a, i, fr)| (*n, *a, *i, fr.as_slice(), Verdict::Redirect)),
        );
        for (name, a, i, fr, v) in &all {
            t.bench_frame(fr);
            time_checked(t, *a, *i, fr, 1000, *v, name)?;
        }
        let mut s = vec![vec![]; all.len()];
        for _ in 0..opts.rounds {
            for (k, (name, a, i, fr, v)) in all.iter().enumerate() {
                t.bench_frame(fr);
                s[k].push(time_checked(t, *a, *i, fr, opts.repeat, *v, name)?);
            }
        }
        let after = t.outcomes();
        let runs = rows.len() as u64 * (opts.rounds as u64 * opts.repeat as u64 + 1000);
        anyhow::ensure!(
            after.0 - before.0 == runs && after.1 == before.1,
            "elastic IP rows: {} of {runs} runs forwarded, {} dropped",
            after.0 - before.0,
            after.1 - before.1
        );
        let restore = s.remove(0);
        let mut net: Vec<Vec<f64>> = s
            .iter()
            .map(|r| benchkit::paired(r, &restore, |a, b| a - b))
            .collect();
        net.push(restore);
        Ok(net)
    };
    // The sizes alternate over the passes: a noisy stretch of the shared
    // machine then hits both sizes alike instead of one.
    let nrows = compute_rows.len() + gateway_rows.len() + 1;
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![vec![]; sizes.len()]; nrows];
    let mut memory = Vec::new();
    let mut restore = vec![];
    for pass in 0..opts.passes {
        for (si, &n) in sizes.iter().enumerate() {
            eprintln!(
                "bench: elastic IP paths with {n} elastic IPs bound (pass {}/{})",
                pass + 1,
                opts.passes
            );
            t.install(&compute_world(n));
            let h = t.default_host();
            t.set_host(h);
            t.ct_clear();
            // Each path once, un-timed, with its output.
            let mut outs = vec![];
            for row in &compute_rows {
                outs.push(run_row(t, row)?.output);
            }
            let (o0, i0) = vxlan_parts(compute_rows[0].0, &outs[0])?;
            anyhow::ensure!(
                o0 == B3_HOST && i0[30..34] == B3.1,
                "{}: not to b3",
                compute_rows[0].0
            );
            let (o1, i1) = vxlan_parts(compute_rows[1].0, &outs[1])?;
            anyhow::ensure!(
                o1 == GATEWAY_HOST && i1[26..30] == EIP && i1[30..34] == CLIENT,
                "{}: not translated to the EIP and tunnelled to the gateway: {}",
                compute_rows[1].0,
                crate::progtest::hex(&outs[1])
            );
            anyhow::ensure!(
                outs[2][0..6] == A1.0 && outs[2][30..34] == A1.1,
                "{}: not delivered to a1",
                compute_rows[2].0
            );
            anyhow::ensure!(
                outs[3][0..6] == A1.0 && outs[3][26..30] == CLIENT && outs[3][30..34] == A1.1,
                "{}: not translated to a1's fixed IP and delivered: {}",
                compute_rows[3].0,
                crate::progtest::hex(&outs[3])
            );
            let f = udp((A1.0, GW_A), A1.1, B3.1, 4000, 9);
            let s = timed(t, &compute_rows, &f)?;
            for (i, v) in s[..compute_rows.len()].iter().enumerate() {
                samples[i][si].extend(v);
            }
            restore.extend(s.last().expect("restore"));
            t.install(&gateway_world(n));
            let host = HostInfo {
                flags: HOST_F_GATEWAY,
                ext_ifindex: ext,
                ext_slot: t.slot_for(ext),
                ext_mac: EXT_IF_MAC,
                ..t.default_host()
            };
            t.set_host(host);
            let base = compute_rows.len();
            let o = run_row(t, &gateway_rows[0])?;
            let (outer, inner) = vxlan_parts(gateway_rows[0].0, &o.output)?;
            anyhow::ensure!(
                outer == [198, 18, 3, 5] && inner[30..34] == [100, 64, 0, 5],
                "{}: not steered to the EIP's host (untranslated: its host translates): {}",
                gateway_rows[0].0,
                crate::progtest::hex(&o.output)
            );
            // The SNAT flow: translated out of the external interface; the
            // reply needs its port: take it from the translated copy.
            let o = run_row(t, &gateway_rows[1])?;
            anyhow::ensure!(
                o.output[26..30] == SNAT_IP && o.output[30..34] == CLIENT,
                "{}: not translated to the router's address: {}",
                gateway_rows[1].0,
                crate::progtest::hex(&o.output)
            );
            let port = u16::from_be_bytes([o.output[34], o.output[35]]);
            let reply = udp((PEER, EXT_IF_MAC), CLIENT, SNAT_IP, 9, port);
            let o = run_checked(
                t,
                Attach::External,
                ext,
                &reply,
                Verdict::Redirect,
                reply_name,
            )?;
            let (_, inner) = vxlan_parts(reply_name, &o.output)?;
            anyhow::ensure!(
                inner[30..34] == A1.1 && inner[36..38] == 4000u16.to_be_bytes(),
                "{reply_name}: not translated back to a1:4000: {}",
                crate::progtest::hex(&o.output)
            );
            let mut rows = gateway_rows.clone();
            rows.push((reply_name, Attach::BenchExternal, ext, reply));
            let s = timed(t, &rows, &f)?;
            for (i, v) in s[..rows.len()].iter().enumerate() {
                samples[base + i][si].extend(v);
            }
            restore.extend(s.last().expect("restore"));
            if pass == 0 {
                let mut m = vec![];
                for name in [
                    maps::EIPS,
                    maps::EIP_OUT,
                    maps::EIP_QOS,
                    maps::SNAT_OUT,
                    maps::SNAT_IN,
                ] {
                    m.push((
                        name,
                        t.map_memlock(name).with_context(|| {
                            format!("the kernel memory of {name} cannot be read")
                        })?,
                    ));
                }
                memory.push(m);
            }
            let h = t.default_host();
            t.set_host(h);
        }
    }
    t.install(&World::new());
    if opts.smoke {
        return Ok(());
    }
    let names: Vec<&str> = compute_rows
        .iter()
        .chain(&gateway_rows)
        .map(|r| r.0)
        .chain(std::iter::once(reply_name))
        .collect();
    let table = "Elastic IP and SNAT paths";
    for (i, (name, r)) in names.iter().zip(&samples).enumerate() {
        // The translation paths (not the rows without NAT).
        if i == 0 || i == 2 {
            continue;
        }
        for (si, at) in [(0, "10"), (1, "10,000")] {
            benchkit::target(
                table,
                &format!("{name}, {at} EIPs: <= 120 ns"),
                Bound::AtMost(120.0),
                &Stat::of(&r[si]),
                0,
                " ns",
            );
        }
        benchkit::target(
            table,
            &format!("{name}: flat within 10% at 10,000 EIPs (10k / 10)"),
            Bound::Between(0.9, 1.1),
            &Stat::of(&ratios(&r[1], &r[0])),
            2,
            "x",
        );
    }
    writeln!(
        out,
        "### Elastic IP and SNAT paths, ns/packet (BPF_PROG_TEST_RUN), 10 and 10,000 EIPs bound\n"
    )?;
    writeln!(out, "64-byte UDP frames; the VM's group is stateful and open (after the first run every packet is a connection-table hit); the bench harness's cost, measured in the same rounds ({} ns), is taken off. The sizes alternate, {} passes, each {} rounds of {} packets with the rows interleaved; median (min-max). The bench checks each path once with its output (translated addresses and ports, tunnel endpoints), the verdict of every timed run, and that every run was forwarded. NAT rows next to the same path without NAT: the difference is the translation.\n", Stat::of(&restore).fmt(0), opts.passes, opts.rounds, opts.repeat)?;
    writeln!(out, "| path | 10 EIPs | 10,000 EIPs | 10k / 10 |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for (name, r) in names.iter().zip(&samples) {
        let flat = {
            let t = Stat::of(&ratios(&r[1], &r[0])).fmt(2);
            if benchkit::within_noise(&r[1], &r[0]) {
                format!("{t}, within noise")
            } else {
                t
            }
        };
        writeln!(
            out,
            "| {name} | {} | {} | {flat} |",
            Stat::of(&r[0]).fmt(0),
            Stat::of(&r[1]).fmt(0),
        )?;
    }
    writeln!(out, "\nThe translation's cost, NAT row minus the same path without NAT (per round, 10 EIPs): out {} ns, in {} ns.", Stat::of(&benchkit::paired(&samples[1][0], &samples[0][0], |a, b| a - b)).fmt(0), Stat::of(&benchkit::paired(&samples[3][0], &samples[2][0], |a, b| a - b)).fmt(0))?;
    let mib = |b: u64| b as f64 / 1048576.0;
    let list = |m: &[(&str, u64)]| {
        m.iter()
            .map(|(n, b)| format!("{n} {:.1}", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "\nTheir tables as the kernel accounts them, MiB (hashes preallocate their capacity, so 10,000 EIPs take what 10 do): with 10 EIPs {}; with 10,000 {}.\n",
        list(&memory[0]),
        list(&memory[1])
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Internet to VM through an elastic IP, in the default region.

/// Internet client -> VM, one region, one run, side by side, over the same
/// hops (client -> internet router -> az1-gw1 -> az1 fabric -> az1-c1 ->
/// VM): Strato's elastic IP (steered by the gateway's XDP, translated by
/// az1-c1's, the VM's group on its port); Linux on the same hosts, the
/// gateway translating with nftables DNAT (conntrack) and both hosts
/// routing; and Linux routing alone (no translation: the ceiling these hops
/// allow; a bare redirect cannot cross hosts without a tunnel).
pub fn run_netns(seconds: u64, passes: usize, smoke: bool, out: &mut String) -> anyhow::Result<()> {
    use crate::benchkit::{self, Bound, Stat};
    use crate::benchvpc::{host_xdp_progs, measure_to, sh, sink, vm, PathProgs};
    use crate::e2e::Cloud;
    use serde_json::json;
    use std::time::Duration;
    eprintln!("bench: internet to VM: bringing up the default region with a controller and agents");
    let cloud = Cloud::up("be", &netns_harness::Topology::default_region());
    let region = &cloud.region;
    let admin = cloud.admin();
    let api = cloud.tenant("bench");
    let id = |v: serde_json::Value, k: &str| v[k]["id"].as_str().expect("id").to_owned();
    let ext = Cloud::external_network(&admin);
    let vpc = Cloud::vpc(&api, &["10.0.1.0/24"], &[]);
    Cloud::router_gateway(&api, &vpc.router, &ext);
    let g = id(
        api.expect(
            201,
            "POST",
            "/v2.0/security-groups",
            Some(json!({"security_group": {"name": "bench"}})),
        ),
        "security_group",
    );
    for (proto, port) in [("udp", 9), ("tcp", 5201)] {
        api.expect(
            201,
            "POST",
            "/v2.0/security-group-rules",
            Some(
                json!({"security_group_rule": {"security_group_id": g, "direction": "ingress",
                "protocol": proto, "port_range_min": port, "port_range_max": port,
                "remote_ip_prefix": "0.0.0.0/0"}}),
            ),
        );
    }
    let v = cloud.boot(&admin, &api, &vpc.nets[0], "ev", "az1-c1", Some(&[&g]));
    cloud.wait_until_active(&api, &[&v]);
    let f = api.expect(
        201,
        "POST",
        "/v2.0/floatingips",
        Some(json!({"floatingip": {"floating_network_id": ext, "port_id": v.port}})),
    );
    let eip = f["floatingip"]["floating_ip_address"]
        .as_str()
        .expect("eip")
        .to_owned();
    sink(region, "ev")?;
    // The client's next hop (the internet router) for trafgen's frames.
    let router_mac = {
        sh(
            region,
            "inet-client1",
            &["ping", "-c1", "-W2", "203.0.113.4"],
        )?;
        let o = sh(
            region,
            "inet-client1",
            &["ip", "neigh", "show", "203.0.113.4"],
        )?;
        o.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no neighbour entry for the internet router"))?
    };
    // TCP 5201 is open in the group: a listener answering means the path works.
    let mut probe = region
        .command(
            "ev",
            &["busybox", "nc", "-ll", "-p", "5201", "-e", "/bin/true"],
        )?
        .spawn()?;
    cloud.wait_until(
        "the client reaches the VM by its EIP",
        Duration::from_secs(15),
        || {
            sh(
                region,
                "inet-client1",
                &["busybox", "nc", "-w", "1", &eip, "5201"],
            )
            .is_ok()
        },
    );
    let _ = probe.kill();
    let _ = probe.wait();
    // Linux on the same hops: a VM on az1-c1 behind a veth the agent does
    // not own, 192.0.2.10 translated to it by nftables on az1-gw1.
    vm(
        region,
        "lv",
        "az1-c1",
        "lxv",
        "10.41.0.2/24",
        "10.41.0.1",
        None,
    )?;
    let hosts = region.hosts();
    let underlay = |n: &str| {
        hosts
            .iter()
            .find(|h| h.name == n)
            .map(|h| h.underlay_ip.to_string())
            .ok_or_else(|| anyhow::anyhow!("no host {n}"))
    };
    let (c1, gw1) = (underlay("az1-c1")?, underlay("az1-gw1")?);
    for (node, cmd) in [
        ("az1-c1", "ip addr add 10.41.0.1/24 dev lxv".to_owned()),
        ("az1-c1", "sysctl -qw net.ipv4.ip_forward=1".to_owned()),
        ("az1-fab", format!("ip route add 10.41.0.0/24 via {c1}")),
        ("az1-fab", format!("ip route add 203.0.113.0/24 via {gw1}")),
        ("az1-gw1", "sysctl -qw net.ipv4.ip_forward=1".to_owned()),
        (
            "internet",
            "ip route add 192.0.2.0/24 via 203.0.113.1".to_owned(),
        ),
    ] {
        let argv: Vec<&str> = cmd.split(' ').collect();
        sh(region, node, &argv)?;
    }
    sink(region, "lv")?;
    sh(region, "inet-client1", &["ping", "-c1", "-W2", "10.41.0.2"])
        .or_else(|_| {
            sh(
                region,
                "internet",
                &["ip", "route", "add", "10.41.0.0/24", "via", "203.0.113.1"],
            )
            .and_then(|_| sh(region, "inet-client1", &["ping", "-c1", "-W2", "10.41.0.2"]))
        })
        .map_err(|e| anyhow::anyhow!("Linux routed path: {e}"))?;
    sh(region, "az1-gw1", &["nft", "add table ip bench; add chain ip bench pre { type nat hook prerouting priority -100; }; add rule ip bench pre ip daddr 192.0.2.10 dnat to 10.41.0.2"])?;
    sh(
        region,
        "inet-client1",
        &["ping", "-c1", "-W2", "192.0.2.10"],
    )
    .map_err(|e| anyhow::anyhow!("nftables DNAT path: {e}"))?;
    // The three paths side by side (the DNAT rule only matches its own
    // address), measured in turn every pass, the order reversed every
    // other pass.
    let _stats = benchkit::BpfStats::enable()?;
    let strato_progs = {
        let mut ids = host_xdp_progs(region, "az1-gw1")?;
        ids.extend(host_xdp_progs(region, "az1-c1")?);
        PathProgs {
            ids,
            what:
                "the XDP programs of az1-gw1 and az1-c1 (counted once per host the packet crosses)"
                    .into(),
        }
    };
    let names = [
        "Strato elastic IP (gateway XDP steering, DNAT in XDP on the VM's host, security group)",
        "Linux routing on the same hosts, no translation (ceiling of these hops)",
        "Linux nftables DNAT on the gateway host (conntrack), routed",
    ];
    let mut samples: Vec<Vec<crate::benchvpc::Sample>> = vec![vec![]; names.len()];
    let none = PathProgs::default();
    for pass in 0..passes {
        let mut order = vec![0, 1, 2];
        if pass % 2 == 1 {
            order.reverse();
        }
        for i in order {
            eprintln!(
                "bench: internet -> VM ({}/{passes}): {}",
                pass + 1,
                names[i]
            );
            let s = match i {
                0 => measure_to(
                    region,
                    ("inet-client1", "203.0.113.5"),
                    ("ev", &v.ip),
                    &eip,
                    &router_mac,
                    seconds,
                    &strato_progs,
                )?,
                1 => measure_to(
                    region,
                    ("inet-client1", "203.0.113.5"),
                    ("lv", "10.41.0.2"),
                    "10.41.0.2",
                    &router_mac,
                    seconds,
                    &none,
                )?,
                _ => measure_to(
                    region,
                    ("inet-client1", "203.0.113.5"),
                    ("lv", "10.41.0.2"),
                    "192.0.2.10",
                    &router_mac,
                    seconds,
                    &none,
                )?,
            };
            samples[i].push(s);
        }
    }
    if smoke {
        return Ok(());
    }
    let pps = |i: usize| samples[i].iter().map(|s| s.pps).collect::<Vec<f64>>();
    let gbps = |i: usize| samples[i].iter().map(|s| s.gbps).collect::<Vec<f64>>();
    let table = "Internet to VM";
    benchkit::target(
        table,
        "Strato elastic IP: pkts/s >= 1.2x nftables DNAT",
        Bound::AtLeast(1.2),
        &Stat::of(&benchkit::ratios(&pps(0), &pps(2))),
        2,
        "x",
    );
    benchkit::target(
        table,
        "Strato elastic IP: pkts/s within 15% of the ceiling (Linux routing, no translation)",
        Bound::AtLeast(0.85),
        &Stat::of(&benchkit::ratios(&pps(0), &pps(1))),
        2,
        "x",
    );
    writeln!(out, "### Internet to VM through an elastic IP ({seconds} s each, trafgen 64 B UDP on 1 CPU from the internet client, iperf3 1 TCP stream, {passes} passes)\n")?;
    writeln!(out, "Same hops for every row: client -> internet router -> az1-gw1 -> az1 fabric -> az1-c1 -> VM. The three paths exist side by side and are measured in turn every pass (the order reversed every other pass); median (min-max) of the passes, ratios against nftables DNAT per pass. The bench checks trafgen's and iperf3's exit status, that packets arrived, and for Strato's row that the XDP programs of both hosts (driver mode) ran for every packet received.\n")?;
    writeln!(out, "| path | 64 B pkts/s received | offered | TCP Gbit/s | pkts/s x nftables DNAT | Gbit/s x nftables DNAT |")?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    for (i, name) in names.iter().enumerate() {
        let st = |f: &dyn Fn(&crate::benchvpc::Sample) -> f64| {
            Stat::of(&samples[i].iter().map(f).collect::<Vec<_>>())
        };
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            st(&|s| s.pps).fmt(0),
            st(&|s| s.offered_pps).fmt(0),
            st(&|s| s.gbps).fmt(2),
            benchkit::ratio_text(&pps(i), &pps(2)),
            benchkit::ratio_text(&gbps(i), &gbps(2)),
        )?;
    }
    writeln!(out)?;
    Ok(())
}
