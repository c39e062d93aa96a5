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

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{bail, ensure, Context as _};
use dataplane_common::{BareTarget, BARE_F_MACS};
use netns_harness::{Region, Topology, VmSpec};
use serde_json::{json, Value};
use strato_dataplane::{Attach, Dataplane};

use crate::{
    benchkit::{self, Bound, Stat},
    e2e::{Api, Cloud},
};

pub struct Options {
    pub seconds: u64,
    /// Passes over every configuration.
    pub passes: usize,
    /// No figures.
    pub smoke: bool,
}

/// One measured path.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub pps: f64,
    pub offered_pps: f64,
    pub gbps: f64,
}

/// What a row checks about the programs on its path while its 64-byte
/// flood runs: the kernel's BPF run counts of these programs (their sum)
/// must cover the packets received.
#[derive(Clone, Default)]
pub struct PathProgs {
    pub ids: Vec<u64>,
    pub what: String,
}

/// Runs in a node; an error with its output unless it succeeds.
/// Waits until something in `node` listens on TCP `port` (a server just
/// spawned: a client started before would be refused), up to `timeout`.
pub fn wait_listening(
    region: &Region,
    node: &str,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let filter = format!("sport = :{port}");
    loop {
        let o = region
            .exec(node, &["ss", "-Hltn", &filter])
            .with_context(|| format!("{node}: ss"))?;
        if o.status.success() && !o.stdout.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{node}: nothing listens on TCP {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sh(region: &Region, node: &str, argv: &[&str]) -> anyhow::Result<String> {
    let o = region
        .exec(node, argv)
        .with_context(|| format!("{node}: {}", argv.join(" ")))?;
    if !o.status.success() {
        bail!(
            "{node}: {} failed ({}): {}{}",
            argv.join(" "),
            o.status,
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
    strato_proto::naming::parse_mac(s).with_context(|| format!("{s:?} is not a MAC"))
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

/// `ip netns exec <host's namespace>`: for the benchkit probes.
pub fn in_host(region: &Region, host: &str) -> anyhow::Result<Vec<String>> {
    let h = hosts_named(region, host)?;
    Ok(vec!["ip".into(), "netns".into(), "exec".into(), h.netns])
}

/// The TC port program agents attach, on `tap` of `host`.
pub fn tc_prog(region: &Region, host: &str, tap: &str) -> anyhow::Result<u64> {
    let p = in_host(region, host)?;
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    benchkit::tc_ingress_prog(&p, tap)
}

/// Every XDP program attached in `host` (each must be in driver mode).
pub fn host_xdp_progs(region: &Region, host: &str) -> anyhow::Result<Vec<u64>> {
    let v: Value = serde_json::from_str(&sh(region, host, &["ip", "-j", "link", "show"])?)?;
    let p = in_host(region, host)?;
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    let mut ids = vec![];
    for l in v.as_array().into_iter().flatten() {
        if l.get("xdp").is_some() {
            let dev = l["ifname"].as_str().context("ifname")?;
            ids.push(benchkit::xdp_native_prog(&p, dev)?);
        }
    }
    ensure!(!ids.is_empty(), "{host}: no XDP program attached");
    Ok(ids)
}

/// 64-byte UDP frames from `from` (its eth0 MAC) to `dmac`/`dst` for
/// `seconds`, then one TCP stream for `seconds`.
fn measure(
    region: &Region,
    from: (&str, &str),
    (to, dst): (&str, &str),
    dmac: &str,
    seconds: u64,
    progs: &PathProgs,
) -> anyhow::Result<Sample> {
    measure_to(region, from, (to, dst), dst, dmac, seconds, progs)
}

/// [`measure`] where the sender addresses `dst` but the receiver (`to`)
/// has another address (`bind`: the traffic is translated on the way).
/// Checks trafgen's and iperf3's exit status, that packets and bytes
/// arrived, and (with `progs`) that the programs of the path ran for
/// every packet received (the kernel's BPF statistics must be on:
/// [`benchkit::BpfStats`]).
pub fn measure_to(
    region: &Region,
    (from, src): (&str, &str),
    (to, bind): (&str, &str),
    dst: &str,
    dmac: &str,
    seconds: u64,
    progs: &PathProgs,
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
    let runs0 = benchkit::progs_runs(&progs.ids)?;
    let start = std::time::Instant::now();
    let secs = seconds.to_string();
    let p = path.display().to_string();
    // trafgen stops on SIGINT and exits 0; --preserve-status makes that
    // the status. One failure is not the measurement's: at SIGINT the
    // final flush of its TX ring can find the device busy (EAGAIN, seen
    // with XDP on the receiving veth); the frames sent until then are
    // what the counters count. Any other failure fails the row.
    let argv = [
        "timeout",
        "--preserve-status",
        "-s",
        "INT",
        &secs,
        "trafgen",
        "--dev",
        "eth0",
        "--conf",
        &p,
        "--cpus",
        "1",
    ];
    let o = region
        .exec(from, &argv)
        .with_context(|| format!("{from}: trafgen"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let busy_flush = o.status.code() == Some(1)
        && text.contains("Flushing TX_RING failed: Resource temporarily unavailable");
    ensure!(
        o.status.success() || busy_flush,
        "{from}: trafgen failed ({}): {text}",
        o.status
    );
    let elapsed = start.elapsed().as_secs_f64();
    let (rx1, tx1) = (
        counter(region, to, "rx_packets")?,
        counter(region, from, "tx_packets")?,
    );
    let runs = benchkit::progs_runs(&progs.ids)? - runs0;
    let rx = rx1 - rx0;
    ensure!(
        rx > 0 && tx1 > tx0,
        "{from} -> {to}: {} packets sent, {rx} received",
        tx1 - tx0
    );
    if !progs.ids.is_empty() {
        // Every packet received went through the path's programs (a few
        // packets of other traffic allowed for).
        ensure!(
            runs.run_cnt > 0 && runs.run_cnt + rx / 100 >= rx && runs.run_time_ns > 0,
            "{from} -> {to}: {} received, but {} ran {} times ({} ns): the row did not take the path it names",
            rx,
            progs.what,
            runs.run_cnt,
            runs.run_time_ns
        );
    }
    let mut server = region.command(to, &["iperf3", "-s", "-1", "-B", bind])?;
    let mut child = server
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait_listening(region, to, 5201, Duration::from_secs(30))?;
    let json = sh(region, from, &["iperf3", "-c", dst, "-t", &secs, "-J"]);
    let _ = child.kill();
    let _ = child.wait();
    let json = json.context("iperf3 client")?;
    let v: Value = serde_json::from_str(&json).context("iperf3 JSON")?;
    ensure!(
        v.get("error").is_none(),
        "iperf3 {from} -> {to}: {}",
        v["error"]
    );
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received")?;
    ensure!(bps > 0.0, "iperf3 {from} -> {to}: nothing received");
    Ok(Sample {
        pps: rx as f64 / elapsed,
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
        &strato_proto::naming::tap_name(&pid),
        &format!("{ip}/24"),
        &gw,
        Some(&mac),
    )?;
    Cloud::bind_port(admin, &pid, name, &hosts_named(&cloud.region, host)?);
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

/// The configurations of the VM-to-VM table, each put in place, measured
/// and taken away in turn, every pass (the order reversed every other
/// pass).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    StratoSg,
    StratoNoSg,
    StratoXdp,
    LinuxOn,
    LinuxOff,
    LinuxNft,
    BareXdp,
    BareTcOn,
    BareTcOff,
}

impl Config {
    const ALL: [Config; 9] = [
        Config::StratoSg,
        Config::StratoNoSg,
        Config::StratoXdp,
        Config::LinuxOn,
        Config::LinuxOff,
        Config::LinuxNft,
        Config::BareXdp,
        Config::BareTcOn,
        Config::BareTcOff,
    ];

    /// (same host, two hosts) row names; bare redirects have no second.
    fn rows(self) -> (&'static str, Option<&'static str>) {
        match self {
            Config::StratoSg => (
                "Strato VPC (TC port, routed, security group)",
                Some("Strato VPC (TC port, routed + VXLAN, security group)"),
            ),
            Config::StratoNoSg => (
                "Strato VPC (TC port, routed, no security group)",
                Some("Strato VPC (TC port, routed + VXLAN, no security group)"),
            ),
            Config::StratoXdp => (
                "Strato VPC (XDP port, routed, security group, VM offloads off)",
                Some("Strato VPC (XDP port, routed + VXLAN, security group, VM offloads off)"),
            ),
            Config::LinuxOn => (
                "Linux routed (VM offloads on)",
                Some("Linux routed underlay (VM offloads on)"),
            ),
            Config::LinuxOff => (
                "Linux routed (VM offloads off)",
                Some("Linux routed underlay (VM offloads off)"),
            ),
            Config::LinuxNft => (
                "Linux routed + nftables conntrack (VM offloads on)",
                Some("Linux routed underlay + nftables conntrack (VM offloads on)"),
            ),
            Config::BareXdp => ("bare XDP redirect (VM offloads off)", None),
            Config::BareTcOn => ("bare TC redirect (VM offloads on)", None),
            Config::BareTcOff => ("bare TC redirect (VM offloads off)", None),
        }
    }
}

/// Port security of Strato's bench ports, set through the API and read
/// back from the API and from what the agents wrote in their pinned maps
/// (`PORTS`: a policy and the anti-spoofing flag, or neither).
struct StratoPorts<'a> {
    cloud: &'a Cloud,
    api: &'a Api,
    /// (port id, its default groups, host, tap).
    ports: Vec<(String, Value, String, String)>,
    secured: Option<bool>,
}

impl StratoPorts<'_> {
    fn set(&mut self, on: bool) -> anyhow::Result<()> {
        if self.secured == Some(on) {
            return Ok(());
        }
        for (id, groups, _, _) in &self.ports {
            let body = if on {
                json!({"port": {"port_security_enabled": true, "security_groups": groups}})
            } else {
                json!({"port": {"security_groups": [], "port_security_enabled": false}})
            };
            self.api
                .expect(200, "PUT", &format!("/v2.0/ports/{id}"), Some(body));
            let p = self
                .api
                .expect(200, "GET", &format!("/v2.0/ports/{id}"), None);
            ensure!(
                p["port"]["port_security_enabled"] == on
                    && p["port"]["security_groups"]
                        .as_array()
                        .is_some_and(|g| g.is_empty() != on),
                "port {id}: the API did not keep port security {on}: {}",
                p["port"]
            );
        }
        // The agents' maps: what the packet path reads.
        let region = &self.cloud.region;
        for (id, _, host, tap) in &self.ports {
            let h = hosts_named(region, host)?;
            let pin = std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(&h));
            let ifindex = ifindex_of(region, host, tap)?;
            benchkit::wait_for(
                &format!("port {id}: the agent on {host} applies port security {on}"),
                Duration::from_secs(30),
                || {
                    let ports = strato_dataplane::read_pinned_ports(&pin)
                        .with_context(|| format!("{host}: reading the pinned PORTS"))?;
                    let p = ports
                        .get(&ifindex)
                        .with_context(|| format!("{host}: {tap} is not in PORTS"))?;
                    let has = p.policy != 0 && p.flags & dataplane_common::PORT_F_SECURITY != 0;
                    let none = p.policy == 0 && p.flags & dataplane_common::PORT_F_SECURITY == 0;
                    Ok((if on { has } else { none }).then_some(()))
                },
            )?;
        }
        self.secured = Some(on);
        Ok(())
    }
}

/// Runs every path and writes the table.
pub fn run(opts: &Options, out: &mut String) -> anyhow::Result<()> {
    eprintln!("bench: VM to VM: bringing up the default region with a controller and agents");
    let cloud = Cloud::up("bv", &Topology::default_region());
    let region = &cloud.region;
    let s = opts.seconds;
    // The kernel's BPF run statistics, for every row: the rows with
    // programs prove they ran through them (they pay the statistics'
    // cost: two clock reads per program run; Linux's rows have none).
    let _stats = benchkit::BpfStats::enable()?;

    // --- Strato: a VPC through the API.
    let admin = cloud.admin();
    let api = cloud.tenant("bench");
    let nets = Cloud::vpc(&api, &["10.30.1.0/24", "10.30.2.0/24"], &[]).nets;
    let (ip_a, port_a) = strato_vm(&cloud, &admin, &api, &nets[0], "sa", "az1-c1")?;
    let (ip_b, port_b) = strato_vm(&cloud, &admin, &api, &nets[1], "sb", "az1-c1")?;
    let (ip_c, port_c) = strato_vm(&cloud, &admin, &api, &nets[1], "sc", "az1-c2")?;
    for p in [&port_a, &port_b, &port_c] {
        cloud.wait_until("bench ports ACTIVE", Duration::from_secs(20), || {
            api.expect(200, "GET", &format!("/v2.0/ports/{p}"), None)["port"]["status"] == "ACTIVE"
        });
    }
    let tap = strato_proto::naming::tap_name;
    let mut strato_ports = StratoPorts {
        cloud: &cloud,
        api: &api,
        ports: vec![],
        secured: None,
    };
    for (p, host) in [
        (&port_a, "az1-c1"),
        (&port_b, "az1-c1"),
        (&port_c, "az1-c2"),
    ] {
        let groups = api.expect(200, "GET", &format!("/v2.0/ports/{p}"), None)["port"]
            ["security_groups"]
            .clone();
        ensure!(
            groups.as_array().is_some_and(|g| !g.is_empty()),
            "port {p} has no default security group: {groups}"
        );
        strato_ports
            .ports
            .push((p.clone(), groups, host.to_owned(), tap(p)));
    }
    strato_ports.set(true)?;
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
    let tap_a = tap(&port_a);
    let tc_a = PathProgs {
        ids: vec![tc_prog(region, "az1-c1", &tap_a)?],
        what: format!("the TC port program on {tap_a}"),
    };

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
    // The default group's equivalent in nftables on every routing host:
    // conntrack, replies and members allowed, the rest dropped.
    let nft = "add table inet sg; \
        add chain inet sg sgchain { type filter hook forward priority 0; policy drop; }; \
        add rule inet sg sgchain ct state established,related accept; \
        add rule inet sg sgchain ct state invalid drop; \
        add rule inet sg sgchain ip saddr 10.40.0.0/16 ip daddr 10.40.0.0/16 accept";

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
    for (vm, ip, mac) in [("ba", "10.50.1.3", &bb_mac), ("bb", "10.50.1.2", &ba_mac)] {
        sh(
            region,
            vm,
            &["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "eth0"],
        )?;
    }
    sink(region, "bb")?;
    // Each veth redirects to the other, rewriting the MACs on the way.
    let to = |ifindex: u32, dmac: &str, smac: &str| -> anyhow::Result<BareTarget> {
        Ok(BareTarget {
            ifindex,
            flags: BARE_F_MACS,
            dmac: parse_mac(dmac)?,
            smac: parse_mac(smac)?,
        })
    };
    let targets = [
        (bra, to(brb, &bb_mac, &brb_mac)?),
        (brb, to(bra, &ba_mac, &bra_mac)?),
    ];
    let c1_ns = hosts_named(region, "az1-c1")?.netns;
    let c1_exec = in_host(region, "az1-c1")?;
    let c1_exec: Vec<&str> = c1_exec.iter().map(String::as_str).collect();

    // samples[row name]: one Sample per pass.
    let mut samples: std::collections::BTreeMap<&str, Vec<Sample>> = Default::default();
    for pass in 0..opts.passes {
        let mut order = Config::ALL.to_vec();
        if pass % 2 == 1 {
            order.reverse();
        }
        for c in order {
            let (same_name, two_name) = c.rows();
            eprintln!("bench: VM to VM ({}/{}): {c:?}", pass + 1, opts.passes);
            let (same, two) = match c {
                Config::StratoSg | Config::StratoNoSg => {
                    strato_ports.set(c == Config::StratoSg)?;
                    for ip in [&ip_b, &ip_c] {
                        if !(0..20).any(|_| sh(region, "sa", &["ping", "-c1", "-W1", ip]).is_ok()) {
                            bail!("{c:?}: Strato path to {ip} does not work");
                        }
                    }
                    (
                        measure(region, ("sa", &ip_a), ("sb", &ip_b), &gw_mac, s, &tc_a)?,
                        Some(measure(
                            region,
                            ("sa", &ip_a),
                            ("sc", &ip_c),
                            &gw_mac,
                            s,
                            &tc_a,
                        )?),
                    )
                }
                Config::StratoXdp => {
                    // The same pipeline at XDP on the same ports, over the
                    // agent's own maps (XDP runs before TC, so the TC
                    // program sees nothing meanwhile).
                    strato_ports.set(true)?;
                    let host = hosts_named(region, "az1-c1")?;
                    let pin = std::path::Path::new(strato_proto::naming::PIN_ROOT)
                        .join(Cloud::host_id(&host));
                    let taps = [tap(&port_a), tap(&port_b)];
                    let (done, h) = benchkit::hold_in_netns(&host.netns, move || {
                        let mut dp = Dataplane::load(Some(&pin))?;
                        for t in &taps {
                            dp.attach_transient(Attach::Port, t)?;
                        }
                        Ok(dp)
                    })?;
                    let r = (|| {
                        for v in ["sa", "sb", "sc"] {
                            offloads(region, v, false)?;
                        }
                        let xdp = PathProgs {
                            ids: vec![benchkit::xdp_native_prog(&c1_exec, &tap_a)?],
                            what: format!("the XDP port program on {tap_a}"),
                        };
                        anyhow::Ok((
                            measure(region, ("sa", &ip_a), ("sb", &ip_b), &gw_mac, s, &xdp)?,
                            Some(measure(
                                region,
                                ("sa", &ip_a),
                                ("sc", &ip_c),
                                &gw_mac,
                                s,
                                &xdp,
                            )?),
                        ))
                    })();
                    let _ = done.send(());
                    let _ = h.join();
                    for v in ["sa", "sb", "sc"] {
                        offloads(region, v, true)?;
                    }
                    r?
                }
                Config::LinuxOn | Config::LinuxOff | Config::LinuxNft => {
                    let on = c != Config::LinuxOff;
                    for v in ["la", "lb", "lc"] {
                        offloads(region, v, on)?;
                    }
                    if c == Config::LinuxNft {
                        for host in ["az1-c1", "az1-c2"] {
                            sh(region, host, &["nft", nft])?;
                        }
                    }
                    let r = (|| {
                        for ip in ["10.40.2.2", "10.40.3.2"] {
                            sh(region, "la", &["ping", "-c1", "-W2", ip])
                                .with_context(|| format!("{c:?}: Linux path"))?;
                        }
                        let none = PathProgs::default();
                        anyhow::Ok((
                            measure(
                                region,
                                ("la", "10.40.1.2"),
                                ("lb", "10.40.2.2"),
                                &lxa_mac,
                                s,
                                &none,
                            )?,
                            Some(measure(
                                region,
                                ("la", "10.40.1.2"),
                                ("lc", "10.40.3.2"),
                                &lxa_mac,
                                s,
                                &none,
                            )?),
                        ))
                    })();
                    if c == Config::LinuxNft {
                        for host in ["az1-c1", "az1-c2"] {
                            sh(region, host, &["nft", "delete table inet sg"])?;
                        }
                    }
                    for v in ["la", "lb", "lc"] {
                        offloads(region, v, true)?;
                    }
                    r?
                }
                Config::BareXdp | Config::BareTcOn | Config::BareTcOff => {
                    let tc = c != Config::BareXdp;
                    let t = targets;
                    let (done, h) = benchkit::hold_in_netns(&c1_ns, move || {
                        let mut dp = Dataplane::load_bench(None)?;
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
                    let r = (|| {
                        for v in ["ba", "bb"] {
                            offloads(region, v, c == Config::BareTcOn)?;
                        }
                        let progs = PathProgs {
                            ids: vec![if tc {
                                benchkit::tc_ingress_prog(&c1_exec, "bra")?
                            } else {
                                benchkit::xdp_native_prog(&c1_exec, "bra")?
                            }],
                            what: "the bare redirect program on bra".into(),
                        };
                        sh(region, "ba", &["ping", "-c1", "-W2", "10.50.1.3"])
                            .context("bare path")?;
                        anyhow::Ok((
                            measure(
                                region,
                                ("ba", "10.50.1.2"),
                                ("bb", "10.50.1.3"),
                                &bb_mac,
                                s,
                                &progs,
                            )?,
                            None,
                        ))
                    })();
                    let _ = done.send(());
                    let _ = h.join();
                    if tc {
                        for iface in ["bra", "brb"] {
                            let _ = sh(
                                region,
                                "az1-c1",
                                &["tc", "qdisc", "del", "dev", iface, "clsact"],
                            );
                        }
                    }
                    r?
                }
            };
            samples.entry(same_name).or_default().push(same);
            if let (Some(n), Some(t)) = (two_name, two) {
                samples.entry(n).or_default().push(t);
            }
        }
    }
    if opts.smoke {
        return Ok(());
    }
    let pps = |n: &str| samples[n].iter().map(|s| s.pps).collect::<Vec<f64>>();
    let gbps = |n: &str| samples[n].iter().map(|s| s.gbps).collect::<Vec<f64>>();
    let table = "VM to VM";
    let target = |what: &str, a: &str, b: &str, bound: Bound, gbit: bool| {
        let (x, y) = if gbit {
            (gbps(a), gbps(b))
        } else {
            (pps(a), pps(b))
        };
        benchkit::target(
            table,
            &format!("{what}: {a} / {b}"),
            bound,
            &Stat::of(&benchkit::ratios(&x, &y)),
            2,
            "x",
        );
    };
    for (place, strato_open, strato_sg, linux, nftables) in [
        (
            "same host",
            Config::StratoNoSg.rows().0,
            Config::StratoSg.rows().0,
            Config::LinuxOn.rows().0,
            Config::LinuxNft.rows().0,
        ),
        (
            "two hosts",
            Config::StratoNoSg.rows().1.expect("two"),
            Config::StratoSg.rows().1.expect("two"),
            Config::LinuxOn.rows().1.expect("two"),
            Config::LinuxNft.rows().1.expect("two"),
        ),
    ] {
        target(
            &format!("{place}, pkts/s >= 1.2x Linux routed"),
            strato_open,
            linux,
            Bound::AtLeast(1.2),
            false,
        );
        target(
            &format!("{place}, Gbit/s >= 1.0x Linux routed"),
            strato_open,
            linux,
            Bound::AtLeast(1.0),
            true,
        );
        target(
            &format!("{place}, with security groups, pkts/s >= 1.3x nftables conntrack"),
            strato_sg,
            nftables,
            Bound::AtLeast(1.3),
            false,
        );
    }
    let bare = Config::BareTcOn.rows().0;
    target(
        "same host, pkts/s within 10% of the bare redirect",
        Config::StratoNoSg.rows().0,
        bare,
        Bound::AtLeast(0.9),
        false,
    );
    target(
        "same host, with security groups, pkts/s within 15% of the bare redirect",
        Config::StratoSg.rows().0,
        bare,
        Bound::AtLeast(0.85),
        false,
    );

    writeln!(out, "### VM to VM: Strato vs Linux vs a bare redirect ({s} s each, trafgen 64 B UDP on 1 CPU, iperf3 1 TCP stream, {} passes)\n", opts.passes)?;
    writeln!(out, "Ratios against Linux routed with the VMs' offloads on (what a VM gets today), same placement, per pass. Each configuration is put in place, measured and taken away in turn, every pass (the order reversed every other pass); every figure is the median (min-max) of the passes. Strato's rows with a security group have the project's default group (stateful, remote-group rules) on the ports; \"no security group\": port security off, read back from the API and from the agents' maps before the row runs. The nftables rows put the default group's equivalent (conntrack, members allowed) in the routing hosts' forward chains. The bench checks trafgen's and iperf3's exit status and that packets arrived, and for the rows with programs that the program on the sender's port (Strato's TC or XDP port program, the bare redirect) ran for every packet received (the kernel's BPF statistics, on for every row: a program run costs two clock reads more); XDP rows check the program is attached in driver mode.\n")?;
    writeln!(out, "| placement | path | 64 B pkts/s received | offered | TCP Gbit/s | pkts/s x Linux | Gbit/s x Linux |")?;
    writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for (place, pick) in [("same host", 0), ("two hosts", 1)] {
        let base = if pick == 0 {
            Config::LinuxOn.rows().0
        } else {
            Config::LinuxOn.rows().1.expect("two")
        };
        for c in Config::ALL {
            let name = match (pick, c.rows()) {
                (0, (n, _)) => n,
                (_, (_, Some(n))) => n,
                _ => continue,
            };
            let v = &samples[name];
            let st = |f: &dyn Fn(&Sample) -> f64| Stat::of(&v.iter().map(f).collect::<Vec<_>>());
            writeln!(
                out,
                "| {place} | {name} | {} | {} | {} | {} | {} |",
                st(&|s| s.pps).fmt(0),
                st(&|s| s.offered_pps).fmt(0),
                st(&|s| s.gbps).fmt(2),
                benchkit::ratio_text(&pps(name), &pps(base)),
                benchkit::ratio_text(&gbps(name), &gbps(base)),
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}
