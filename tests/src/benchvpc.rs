//! VM-to-VM forwarding benchmark, one region, one run, side by side:
//!
//! * Strato's VPC path (the real controller and agents, configured through
//!   the API): routed between two subnets on one host, and routed +
//!   VXLAN-encapsulated to a VM on another host;
//! * the Linux alternative: the host routes (IPv4 forwarding), on one host
//!   and across two hosts through the fabric (plain routing, no overlay);
//! * the ceilings: a one-line redirect program (XDP, and TC clsact ingress)
//!   between two VMs' veths on one host.
//!
//! Each path: 64-byte UDP packets/s received (trafgen on one CPU in the
//! sender; the receiver drops them in nftables before any socket), and one
//! iperf3 TCP stream's Gbit/s. XDP cannot see the segment size of TSO/GSO
//! frames nor fill in offloaded checksums, so VMs on XDP paths run with
//! those offloads off; VMs have them on by default (Strato attaches its
//! port program at TC); Linux and TC are measured both ways.

use std::{fmt::Write as _, net::Ipv4Addr, sync::mpsc, time::Duration};

use anyhow::{bail, Context as _};
use dataplane_common::{BareTarget, BARE_F_MACS};
use netns_harness::{Region, Topology, VmSpec};
use serde_json::{json, Value};
use strato::dataplane::{Attach, Dataplane};

use crate::e2e::{Api, Cloud};

pub struct Options {
    pub seconds: u64,
}

/// One measured path.
pub struct Sample {
    pub pps: f64,
    pub offered_pps: f64,
    pub gbps: f64,
}

/// Runs in a node; an error with its output unless it succeeds.
pub fn sh(region: &Region, node: &str, argv: &[&str]) -> anyhow::Result<String> {
    let o = region
        .exec(node, argv)
        .with_context(|| format!("{node}: {}", argv.join(" ")))?;
    if !o.status.success() {
        bail!(
            "{node}: {} failed: {}{}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn counter(region: &Region, vm: &str, name: &str) -> anyhow::Result<u64> {
    sh(
        region,
        vm,
        &["cat", &format!("/sys/class/net/eth0/statistics/{name}")],
    )?
    .trim()
    .parse()
    .context("interface counter")
}

pub fn mac_of(region: &Region, node: &str, dev: &str) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(&sh(region, node, &["ip", "-j", "link", "show", dev])?)?;
    Ok(v[0]["address"].as_str().context("MAC")?.to_owned())
}

fn ifindex_of(region: &Region, node: &str, dev: &str) -> anyhow::Result<u32> {
    let v: Value = serde_json::from_str(&sh(region, node, &["ip", "-j", "link", "show", dev])?)?;
    v[0]["ifindex"]
        .as_u64()
        .map(|i| i as u32)
        .context("ifindex")
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    strato::tables::parse_mac(s).with_context(|| format!("{s:?} is not a MAC"))
}

/// VM offloads: off is what XDP needs (and the harness default), on is
/// what a VM has on Linux or TC paths.
fn offloads(region: &Region, vm: &str, on: bool) -> anyhow::Result<()> {
    let v = if on { "on" } else { "off" };
    sh(
        region,
        vm,
        &["ethtool", "-K", "eth0", "tx", v, "tso", v, "gso", v],
    )?;
    Ok(())
}

/// The receiver drops the flood in nftables, before any socket.
pub fn sink(region: &Region, vm: &str) -> anyhow::Result<()> {
    sh(region, vm, &["nft", "add table ip sink; add chain ip sink input_filter { type filter hook input priority 0; }; add rule ip sink input_filter udp dport 9 drop"])?;
    Ok(())
}

/// 64-byte UDP frames from `from` (its eth0 MAC) to `dmac`/`dst` for
/// `seconds`, then one TCP stream for `seconds`.
fn measure(
    region: &Region,
    from: (&str, &str),
    (to, dst): (&str, &str),
    dmac: &str,
    seconds: u64,
) -> anyhow::Result<Sample> {
    measure_to(region, from, (to, dst), dst, dmac, seconds)
}

/// [`measure`] where the sender addresses `dst` but the receiver (`to`)
/// has another address (`bind`: the traffic is translated on the way).
pub fn measure_to(
    region: &Region,
    (from, src): (&str, &str),
    (to, bind): (&str, &str),
    dst: &str,
    dmac: &str,
    seconds: u64,
) -> anyhow::Result<Sample> {
    // 14 + 20 + 8 + 18 bytes of payload + 4 FCS = 64 bytes on the wire.
    let cfg = format!(
        "{{ eth(da={dmac}, type=0x0800), ipv4(saddr={src}, daddr={dst}, ttl=64), udp(sport=4000, dport=9), fill(0x00, 18) }}\n"
    );
    let path = region.state_dir().join(format!("trafgen-{from}.cfg"));
    std::fs::write(&path, cfg).context("writing trafgen config")?;
    let (rx0, tx0) = (
        counter(region, to, "rx_packets")?,
        counter(region, from, "tx_packets")?,
    );
    let start = std::time::Instant::now();
    let secs = seconds.to_string();
    let p = path.display().to_string();
    let _ = region.exec(
        from,
        &[
            "timeout", "-s", "INT", &secs, "trafgen", "--dev", "eth0", "--conf", &p, "--cpus", "1",
        ],
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let (rx1, tx1) = (
        counter(region, to, "rx_packets")?,
        counter(region, from, "tx_packets")?,
    );
    let mut server = region.command(to, &["iperf3", "-s", "-1", "-B", bind])?;
    let mut child = server
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let json = sh(region, from, &["iperf3", "-c", dst, "-t", &secs, "-J"]);
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(&json?).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received")?;
    Ok(Sample {
        pps: (rx1 - rx0) as f64 / elapsed,
        offered_pps: (tx1 - tx0) as f64 / elapsed,
        gbps: bps / 1e9,
    })
}

/// A VM with a static address on `host`, its veth's host end named `port`.
pub fn vm(
    region: &Region,
    name: &str,
    host: &str,
    port: &str,
    addr: &str,
    gw: &str,
    mac: Option<&str>,
) -> anyhow::Result<()> {
    let mut spec = VmSpec::new(name, host, port);
    spec.addr = Some(addr.parse()?);
    spec.gateway = Some(gw.parse()?);
    if let Some(m) = mac {
        spec.mac = Some(m.parse()?);
    }
    region
        .vm_create(&spec)
        .with_context(|| format!("vm {name}"))?;
    Ok(())
}

/// Runs `f` on a thread inside network namespace `ns`, keeping what it
/// returns alive until `done` is signalled (programs attached without pins
/// live as long as their `Dataplane`).
fn hold_in_netns(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<Dataplane> + Send + 'static,
) -> anyhow::Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let path = std::path::Path::new("/run/netns").join(ns);
    let h = std::thread::spawn(move || {
        let r = (|| -> anyhow::Result<Dataplane> {
            let file = std::fs::File::open(&path).context("netns")?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
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
    ready_rx.recv().context("bench thread")??;
    Ok((done_tx, h))
}

fn vpc(api: &Api) -> (Vec<String>, String) {
    let r = api.expect(
        201,
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"name": "bench"}})),
    )["router"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut nets = vec![];
    for (i, cidr) in ["10.30.1.0/24", "10.30.2.0/24"].iter().enumerate() {
        let n = api.expect(
            201,
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": format!("bench{i}")}})),
        )["network"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let s = api.expect(
            201,
            "POST",
            "/v2.0/subnets",
            Some(json!({"subnet": {"network_id": n, "cidr": cidr, "ip_version": 4}})),
        )["subnet"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        api.expect(
            200,
            "PUT",
            &format!("/v2.0/routers/{r}/add_router_interface"),
            Some(json!({"subnet_id": s})),
        );
        nets.push(n);
    }
    (nets, r)
}

/// A Strato VM: port through the API, VM with the port's address, binding.
fn strato_vm(
    cloud: &Cloud,
    admin: &Api,
    api: &Api,
    net: &str,
    name: &str,
    host: &str,
) -> anyhow::Result<(String, String)> {
    let p = api.expect(
        201,
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net, "name": name}})),
    )["port"]
        .clone();
    let pid = p["id"].as_str().context("id")?.to_owned();
    let ip = p["fixed_ips"][0]["ip_address"]
        .as_str()
        .context("ip")?
        .to_owned();
    let mac = p["mac_address"].as_str().context("mac")?.to_owned();
    let gw = ip.rsplit_once('.').context("ip")?.0.to_owned() + ".1";
    vm(
        &cloud.region,
        name,
        host,
        &strato::network::ports::tap_name(&pid),
        &format!("{ip}/24"),
        &gw,
        Some(&mac),
    )?;
    let h = cloud
        .region
        .hosts()
        .into_iter()
        .find(|h| h.name == host)
        .context("host")?;
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/ports/{pid}"),
        Some(
            json!({"port": {"binding:host_id": Cloud::host_id(&h), "device_id": name,
            "device_owner": format!("compute:{}", h.az)}}),
        ),
    );
    let _ = cloud
        .region
        .exec(name, &["ip", "link", "set", "eth0", "mtu", "1450"]);
    Ok((ip, pid))
}

fn hosts_named(region: &Region, name: &str) -> anyhow::Result<netns_harness::Host> {
    region
        .hosts()
        .into_iter()
        .find(|h| h.name == name)
        .with_context(|| format!("no host {name}"))
}

/// Runs every path and writes the tables.
pub fn run(opts: &Options, out: &mut String) -> anyhow::Result<()> {
    eprintln!("bench: VM to VM: bringing up the default region with a controller and agents");
    let cloud = Cloud::up("bv", &Topology::default_region());
    let region = &cloud.region;
    let s = opts.seconds;
    let mut rows: Vec<(&str, &str, Sample)> = vec![];

    // --- Strato: a VPC through the API.
    let admin = cloud.admin();
    let api = cloud.tenant("bench");
    let (nets, _router) = vpc(&api);
    let (ip_a, port_a) = strato_vm(&cloud, &admin, &api, &nets[0], "sa", "az1-c1")?;
    let (ip_b, port_b) = strato_vm(&cloud, &admin, &api, &nets[1], "sb", "az1-c1")?;
    let (ip_c, port_c) = strato_vm(&cloud, &admin, &api, &nets[1], "sc", "az1-c2")?;
    for p in [&port_b, &port_c] {
        cloud.wait_until("bench ports ACTIVE", Duration::from_secs(20), || {
            api.expect(200, "GET", &format!("/v2.0/ports/{p}"), None)["port"]["status"] == "ACTIVE"
        });
    }
    for v in ["sb", "sc"] {
        sink(region, v)?;
    }
    for (to, ip) in [("sb", &ip_b), ("sc", &ip_c)] {
        let ok = (0..20).any(|_| sh(region, "sa", &["ping", "-c1", "-W1", ip]).is_ok());
        if !ok {
            bail!("Strato path sa -> {to} ({ip}) does not work");
        }
    }
    let gw_mac = {
        let o = sh(
            region,
            "sa",
            &[
                "ip",
                "neigh",
                "show",
                &format!("{}.1", ip_a.rsplit_once('.').expect("ip").0),
            ],
        )?;
        o.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .context("gateway MAC")?
            .to_owned()
    };
    eprintln!("bench: Strato VPC, same host (routed), default security group on every port");
    let same = measure(region, ("sa", &ip_a), ("sb", &ip_b), &gw_mac, s)?;
    rows.push((
        "same host",
        "Strato VPC (TC port, routed, security group)",
        same,
    ));
    eprintln!("bench: Strato VPC, two hosts (routed + VXLAN), default security group");
    let two = measure(region, ("sa", &ip_a), ("sc", &ip_c), &gw_mac, s)?;
    rows.push((
        "two hosts",
        "Strato VPC (TC port, routed + VXLAN, security group)",
        two,
    ));
    // The same without security groups (port security off): their cost.
    for p in [&port_a, &port_b, &port_c] {
        api.expect(
            200,
            "PUT",
            &format!("/v2.0/ports/{p}"),
            Some(json!({"port": {"security_groups": [], "port_security_enabled": false}})),
        );
    }
    // The agents apply it within a pass; give them a moment, then check
    // the path still works.
    std::thread::sleep(Duration::from_secs(2));
    for ip in [&ip_b, &ip_c] {
        if !(0..20).any(|_| sh(region, "sa", &["ping", "-c1", "-W1", ip]).is_ok()) {
            bail!("Strato path to {ip} without security groups does not work");
        }
    }
    eprintln!("bench: Strato VPC without security groups");
    let same_open = measure(region, ("sa", &ip_a), ("sb", &ip_b), &gw_mac, s)?;
    let two_open = measure(region, ("sa", &ip_a), ("sc", &ip_c), &gw_mac, s)?;
    rows.push((
        "same host",
        "Strato VPC (TC port, routed, no security group)",
        same_open,
    ));
    rows.push((
        "two hosts",
        "Strato VPC (TC port, routed + VXLAN, no security group)",
        two_open,
    ));
    // The same pipeline at XDP on the same ports, over the agent's own
    // maps (XDP runs before TC, so the TC program sees nothing meanwhile).
    {
        let host = hosts_named(region, "az1-c1")?;
        let pin = std::path::Path::new(strato::dataplane::PIN_ROOT).join(Cloud::host_id(&host));
        let taps = [
            strato::network::ports::tap_name(&port_a),
            strato::network::ports::tap_name(&port_b),
        ];
        let (done, h) = hold_in_netns(&host.netns, move || {
            let mut dp = Dataplane::load(Some(&pin))?;
            for t in &taps {
                dp.attach_transient(Attach::Port, t)?;
            }
            Ok(dp)
        })?;
        for v in ["sa", "sb", "sc"] {
            offloads(region, v, false)?;
        }
        eprintln!("bench: Strato VPC with XDP ports");
        let same = measure(region, ("sa", &ip_a), ("sb", &ip_b), &gw_mac, s);
        let two = measure(region, ("sa", &ip_a), ("sc", &ip_c), &gw_mac, s);
        let _ = done.send(());
        let _ = h.join();
        for v in ["sa", "sb", "sc"] {
            offloads(region, v, true)?;
        }
        rows.push(("same host", "Strato VPC (XDP port, VM offloads off)", same?));
        rows.push(("two hosts", "Strato VPC (XDP port, VM offloads off)", two?));
    }

    // --- Linux: the hosts route (veth names outside the agents' tap prefix).
    vm(
        region,
        "la",
        "az1-c1",
        "lxa",
        "10.40.1.2/24",
        "10.40.1.1",
        None,
    )?;
    vm(
        region,
        "lb",
        "az1-c1",
        "lxb",
        "10.40.2.2/24",
        "10.40.2.1",
        None,
    )?;
    vm(
        region,
        "lc",
        "az1-c2",
        "lxc",
        "10.40.3.2/24",
        "10.40.3.1",
        None,
    )?;
    let hosts = region.hosts();
    let underlay = |n: &str| -> anyhow::Result<Ipv4Addr> {
        Ok(hosts
            .iter()
            .find(|h| h.name == n)
            .context("host")?
            .underlay_ip)
    };
    let (c1, c2) = (underlay("az1-c1")?, underlay("az1-c2")?);
    for (host, cmds) in [
        (
            "az1-c1",
            vec![
                "addr add 10.40.1.1/24 dev lxa".to_owned(),
                "addr add 10.40.2.1/24 dev lxb".to_owned(),
            ],
        ),
        ("az1-c2", vec!["addr add 10.40.3.1/24 dev lxc".to_owned()]),
        (
            "az1-fab",
            vec![
                format!("route add 10.40.1.0/24 via {c1}"),
                format!("route add 10.40.2.0/24 via {c1}"),
                format!("route add 10.40.3.0/24 via {c2}"),
            ],
        ),
    ] {
        for c in cmds {
            let argv: Vec<&str> = std::iter::once("ip").chain(c.split(' ')).collect();
            sh(region, host, &argv)?;
        }
    }
    for host in ["az1-c1", "az1-c2"] {
        sh(region, host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    }
    for v in ["lb", "lc"] {
        sink(region, v)?;
    }
    for ip in ["10.40.2.2", "10.40.3.2"] {
        sh(region, "la", &["ping", "-c1", "-W2", ip]).context("Linux path")?;
    }
    let lxa_mac = mac_of(region, "az1-c1", "lxa")?;
    for on in [true, false] {
        for v in ["la", "lb", "lc"] {
            offloads(region, v, on)?;
        }
        let tag = if on {
            "VM offloads on"
        } else {
            "VM offloads off"
        };
        eprintln!("bench: Linux routed, {tag}");
        let same = measure(
            region,
            ("la", "10.40.1.2"),
            ("lb", "10.40.2.2"),
            &lxa_mac,
            s,
        )?;
        let two = measure(
            region,
            ("la", "10.40.1.2"),
            ("lc", "10.40.3.2"),
            &lxa_mac,
            s,
        )?;
        let (n1, n2) = if on {
            (
                "Linux routed (VM offloads on)",
                "Linux routed underlay (VM offloads on)",
            )
        } else {
            (
                "Linux routed (VM offloads off)",
                "Linux routed underlay (VM offloads off)",
            )
        };
        rows.push(("same host", n1, same));
        rows.push(("two hosts", n2, two));
    }
    // Linux with the default group's equivalent in nftables on every
    // routing host: conntrack, replies and members allowed, the rest
    // dropped.
    for v in ["la", "lb", "lc"] {
        offloads(region, v, true)?;
    }
    let nft = "add table inet sg; \
        add chain inet sg sgchain { type filter hook forward priority 0; policy drop; }; \
        add rule inet sg sgchain ct state established,related accept; \
        add rule inet sg sgchain ct state invalid drop; \
        add rule inet sg sgchain ip saddr 10.40.0.0/16 ip daddr 10.40.0.0/16 accept";
    for host in ["az1-c1", "az1-c2"] {
        sh(region, host, &["nft", nft])?;
    }
    for ip in ["10.40.2.2", "10.40.3.2"] {
        sh(region, "la", &["ping", "-c1", "-W2", ip]).context("Linux + nftables path")?;
    }
    eprintln!("bench: Linux routed + nftables conntrack");
    let same = measure(
        region,
        ("la", "10.40.1.2"),
        ("lb", "10.40.2.2"),
        &lxa_mac,
        s,
    )?;
    let two = measure(
        region,
        ("la", "10.40.1.2"),
        ("lc", "10.40.3.2"),
        &lxa_mac,
        s,
    )?;
    for host in ["az1-c1", "az1-c2"] {
        sh(region, host, &["nft", "delete table inet sg"])?;
    }
    rows.push((
        "same host",
        "Linux routed + nftables conntrack (VM offloads on)",
        same,
    ));
    rows.push((
        "two hosts",
        "Linux routed underlay + nftables conntrack (VM offloads on)",
        two,
    ));

    // --- Ceilings: redirect only, between two VMs' veths on one host.
    vm(
        region,
        "ba",
        "az1-c1",
        "bra",
        "10.50.1.2/24",
        "10.50.1.1",
        None,
    )?;
    vm(
        region,
        "bb",
        "az1-c1",
        "brb",
        "10.50.1.3/24",
        "10.50.1.1",
        None,
    )?;
    let (ba_mac, bb_mac) = (mac_of(region, "ba", "eth0")?, mac_of(region, "bb", "eth0")?);
    let (bra, brb) = (
        ifindex_of(region, "az1-c1", "bra")?,
        ifindex_of(region, "az1-c1", "brb")?,
    );
    let (bra_mac, brb_mac) = (
        mac_of(region, "az1-c1", "bra")?,
        mac_of(region, "az1-c1", "brb")?,
    );
    // Same subnet: the VMs address each other directly.
    sh(
        region,
        "ba",
        &[
            "ip",
            "neigh",
            "replace",
            "10.50.1.3",
            "lladdr",
            &bb_mac,
            "dev",
            "eth0",
        ],
    )?;
    sh(
        region,
        "bb",
        &[
            "ip",
            "neigh",
            "replace",
            "10.50.1.2",
            "lladdr",
            &ba_mac,
            "dev",
            "eth0",
        ],
    )?;
    sink(region, "bb")?;
    let targets = [
        (
            bra,
            BareTarget {
                ifindex: brb,
                flags: BARE_F_MACS,
                dmac: parse_mac(&bb_mac)?,
                smac: parse_mac(&brb_mac)?,
            },
        ),
        (
            brb,
            BareTarget {
                ifindex: bra,
                flags: BARE_F_MACS,
                dmac: parse_mac(&ba_mac)?,
                smac: parse_mac(&bra_mac)?,
            },
        ),
    ];
    let ns = format!("{}-az1-c1", region.prefix());
    for tc in [false, true] {
        let t = targets;
        let (done, h) = hold_in_netns(&ns, move || {
            let mut dp = Dataplane::load(None)?;
            for (i, target) in t {
                dp.set_bare(i, target)?;
            }
            for iface in ["bra", "brb"] {
                if tc {
                    dp.attach_bare_tc(iface)?;
                } else {
                    dp.attach(Attach::Bare, iface)?;
                }
            }
            Ok(dp)
        })?;
        let mut result = vec![];
        for on in if tc { vec![true, false] } else { vec![false] } {
            for v in ["ba", "bb"] {
                offloads(region, v, on)?;
            }
            let name = match (tc, on) {
                (false, _) => "bare XDP redirect (VM offloads off)",
                (true, true) => "bare TC redirect (VM offloads on)",
                (true, false) => "bare TC redirect (VM offloads off)",
            };
            eprintln!("bench: {name}");
            sh(region, "ba", &["ping", "-c1", "-W2", "10.50.1.3"]).context("bare path")?;
            result.push((
                name,
                measure(region, ("ba", "10.50.1.2"), ("bb", "10.50.1.3"), &bb_mac, s)?,
            ));
        }
        let _ = done.send(());
        let _ = h.join();
        for (name, r) in result {
            rows.push(("same host", name, r));
        }
    }

    writeln!(out, "### VM to VM: Strato vs Linux vs a bare redirect ({s} s each, trafgen 64 B UDP on 1 CPU, iperf3 1 TCP stream)\n")?;
    writeln!(out, "Ratios against Linux routed with the VMs' offloads on (what a VM gets today), same placement. Strato's rows with a security group have the project's default group (stateful, remote-group rules) on both ports; the nftables rows put its equivalent (conntrack, members allowed) in the routing hosts' forward chains.\n")?;
    writeln!(out, "| placement | path | 64 B pkts/s received | offered | TCP Gbit/s | pkts/s x Linux | Gbit/s x Linux |")?;
    writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for place in ["same host", "two hosts"] {
        let base = rows
            .iter()
            .find(|(p, n, _)| {
                *p == place && n.starts_with("Linux routed") && n.contains("offloads on")
            })
            .map(|(_, _, r)| (r.pps.max(1.0), r.gbps.max(1e-9)))
            .unwrap_or((1.0, 1.0));
        for (p, name, r) in rows.iter().filter(|(p, _, _)| *p == place) {
            writeln!(
                out,
                "| {p} | {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                r.pps,
                r.offered_pps,
                r.gbps,
                r.pps / base.0,
                r.gbps / base.1
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}
