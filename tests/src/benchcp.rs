//! Control-plane benchmark (part of `make bench`): API-to-realised latency,
//! memory and API throughput with the real controller and agents in the
//! default region.
//!
//! Ports are created through the API, a tap device (a veth pair on the host) appears on a compute host as Nova would plug it, and
//! the port is bound to that host; the latency is from the binding request
//! to the API showing the port ACTIVE (the agent got the delta, attached its
//! program, wrote the port into its map and reported it). Measured for the
//! first `sample` ports and for the last `sample` ports of `total`.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netns_harness::{Host, HostRole, Topology};
use serde_json::json;

use crate::e2e::{Api, Cloud};

pub struct Options {
    pub total: usize,
    pub sample: usize,
    /// No figures.
    pub smoke: bool,
}

/// The `p` quantile of sorted samples (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Resident memory of a process, KiB; an error if it cannot be read.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .filter(|k| *k > 0)
        .with_context(|| format!("/proc/{pid}/status: no VmRSS"))
}

/// The pid of a process the harness started; an error if it is unknown.
fn pid_of(cloud: &Cloud, name: &str) -> anyhow::Result<u32> {
    let path = cloud
        .region
        .state_dir()
        .join("pids")
        .join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .with_context(|| format!("{}: no pid", path.display()))
}

/// Creates the tap devices for `taps` in host `h`'s namespace: veth pairs
/// with both ends on the host (no VM behind them; the kernel here has no
/// dummy or tun-less cheaper device).
fn plug(cloud: &Cloud, h: &Host, taps: &[String]) {
    let script: String = taps
        .iter()
        .map(|t| {
            let peer = format!("v{}", &t[3..]);
            format!(
                "link add {t} type veth peer name {peer}\nlink set {t} up\nlink set {peer} up\n"
            )
        })
        .collect();
    let mut child = std::process::Command::new("ip")
        .args(["-n", &h.netns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip -batch");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write batch");
    assert!(
        child.wait().expect("ip").success(),
        "creating taps on {}",
        h.name
    );
    let _ = cloud;
}

struct Run {
    latencies_first: Vec<f64>,
    latencies_last: Vec<f64>,
    create_rate: f64,
}

fn create_port(admin: &Api, net: &str) -> String {
    let v = admin.expect(
        201,
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net}})),
    );
    v["port"]["id"].as_str().expect("id").to_owned()
}

fn bind(admin: &Api, id: &str, host: &str) {
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/ports/{id}"),
        Some(json!({"port": {"binding:host_id": host}})),
    );
}

fn wait_active(admin: &Api, id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let v = admin.expect(200, "GET", &format!("/v2.0/ports/{id}?fields=status"), None);
        if v["port"]["status"] == "ACTIVE" {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

fn measured(
    cloud: &Cloud,
    admin: &Api,
    net: &str,
    hosts: &[Host],
    n: usize,
    offset: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let h = &hosts[(offset + i) % hosts.len()];
        let id = create_port(admin, net);
        plug(cloud, h, &[strato_proto::naming::tap_name(&id)]);
        let t = Instant::now();
        bind(admin, &id, &Cloud::host_id(h));
        assert!(
            wait_active(admin, &id),
            "port {id} never turned ACTIVE on {}",
            h.name
        );
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    out
}

pub fn run(opts: &Options, out: &mut String) -> anyhow::Result<()> {
    eprintln!("bench: control plane: default region, controller + 6 agents, {} ports (latency sampled on the first and last {})", opts.total, opts.sample);
    // Agents do a full interface scan every second (their default), not the
    // tests' 0.2 s: with thousands of taps per host the scan is what costs.
    std::env::set_var("STRATO_AGENT_INTERVAL", "1");
    let cloud = Cloud::up("bcp", &Topology::default_region());
    let admin = cloud.admin();
    // Unlimited ports for the admin project.
    let projects = admin.expect(200, "GET", "/v3/projects?name=admin", None);
    let project_id = projects["projects"][0]["id"]
        .as_str()
        .expect("admin project")
        .to_owned();
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/quotas/{project_id}"),
        Some(json!({"quota": {"port": -1, "network": -1, "subnet": -1}})),
    );
    let net = admin.expect(
        201,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "bench"}})),
    )["network"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    admin.expect(
        201,
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": net, "cidr": "10.0.0.0/16", "ip_version": 4}})),
    );
    let hosts: Vec<Host> = cloud
        .region
        .hosts()
        .into_iter()
        .filter(|h| h.role == HostRole::Compute)
        .collect();

    let first = measured(&cloud, &admin, &net, &hosts, opts.sample, 0);
    eprintln!(
        "bench: first {} ports: p50 {:.1} ms, p99 {:.1} ms",
        opts.sample,
        percentile(&first, 0.5),
        percentile(&first, 0.99)
    );

    // Fill up to total - sample: create, plug (batched per host), bind; no waiting.
    let fill = opts.total.saturating_sub(2 * opts.sample);
    let t = Instant::now();
    let mut batch: Vec<(String, usize)> = Vec::new();
    for i in 0..fill {
        batch.push((create_port(&admin, &net), i % hosts.len()));
        if batch.len() == 200 || i + 1 == fill {
            for (hi, h) in hosts.iter().enumerate() {
                let taps: Vec<String> = batch
                    .iter()
                    .filter(|(_, j)| *j == hi)
                    .map(|(id, _)| strato_proto::naming::tap_name(id))
                    .collect();
                if !taps.is_empty() {
                    plug(&cloud, h, &taps);
                }
            }
            for (id, hi) in batch.drain(..) {
                bind(&admin, &id, &Cloud::host_id(&hosts[hi]));
            }
            eprintln!("bench: {} of {} ports", opts.sample + i + 1, opts.total);
        }
    }
    let fill_secs = t.elapsed().as_secs_f64();
    // Let the agents catch up before measuring at scale.
    cloud.wait_until("agents realised the fill", Duration::from_secs(600), || {
        let hosts_status = cloud.hosts();
        let active: usize = hosts_status
            .iter()
            .map(|h| {
                h.report
                    .ports
                    .iter()
                    .filter(|p| p.state == strato_proto::report::PortState::Active)
                    .count()
            })
            .sum();
        active >= opts.sample + fill
    });
    let last = measured(&cloud, &admin, &net, &hosts, opts.sample, 1);
    eprintln!(
        "bench: last {} ports (at {}): p50 {:.1} ms, p99 {:.1} ms",
        opts.sample,
        opts.total,
        percentile(&last, 0.5),
        percentile(&last, 0.99)
    );

    // Memory at scale.
    let ctl_rss = rss_kib(pid_of(&cloud, "controller")?)?;
    let mut agent_rss: Vec<(String, u64)> = vec![];
    for h in &hosts {
        agent_rss.push((
            h.name.clone(),
            rss_kib(pid_of(&cloud, &format!("agent-{}", h.name))?)?,
        ));
    }

    // API throughput at scale: single client, sequential.
    let t = Instant::now();
    let n_create = if opts.smoke { 5 } else { 200 };
    for _ in 0..n_create {
        create_port(&admin, &net);
    }
    let create_rps = n_create as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n_list = if opts.smoke { 2 } else { 10 };
    for _ in 0..n_list {
        admin.expect(200, "GET", "/v2.0/ports", None);
    }
    let list_rps = n_list as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n_show = if opts.smoke { 5 } else { 500 };
    let some_port = create_port(&admin, &net);
    for _ in 0..n_show {
        admin.expect(200, "GET", &format!("/v2.0/ports/{some_port}"), None);
    }
    let show_rps = n_show as f64 / t.elapsed().as_secs_f64();
    let run = Run {
        latencies_first: first,
        latencies_last: last,
        create_rate: fill as f64 * 2.0 / fill_secs.max(1e-9),
    };

    if opts.smoke {
        return Ok(());
    }
    let p99 = percentile(&run.latencies_last, 0.99);
    crate::benchkit::target(
        "Control plane",
        &format!(
            "port bound -> ACTIVE: p99 <= 100 ms at {} ports",
            opts.total
        ),
        crate::benchkit::Bound::AtMost(100.0),
        &crate::benchkit::Stat::of(&[p99]),
        1,
        " ms",
    );
    writeln!(out, "### Control plane: port bound -> ACTIVE, memory, API throughput (default region, 4 compute hosts)\n")?;
    writeln!(out, "Latency: from the binding `PUT` to the API showing the port ACTIVE (polled every 0.5 ms), the port's tap already plugged.\n")?;
    writeln!(
        out,
        "| ports in the system | sample | p50 ms | p90 ms | p99 ms | max ms |"
    )?;
    writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for (at, l) in [
        (opts.sample, &run.latencies_first),
        (opts.total, &run.latencies_last),
    ] {
        writeln!(
            out,
            "| {at} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            l.last().copied().unwrap_or(f64::NAN)
        )?;
    }
    writeln!(
        out,
        "\nMemory (RSS) with {} ports: controller {:.1} MiB; agents {}.\n",
        opts.total + n_create + 1,
        ctl_rss as f64 / 1024.0,
        agent_rss
            .iter()
            .map(|(h, k)| format!("{h} {:.1} MiB", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "| API call (one client, sequential, {} ports present) | requests/s |",
        opts.total
    )?;
    writeln!(out, "| --- | ---: |")?;
    writeln!(out, "| POST /v2.0/ports | {create_rps:.0} |")?;
    writeln!(out, "| GET /v2.0/ports/{{id}} | {show_rps:.0} |")?;
    writeln!(
        out,
        "| GET /v2.0/ports (all {} ports) | {list_rps:.1} |",
        opts.total
    )?;
    writeln!(
        out,
        "| fill: create + bind, pipelined | {:.0} |",
        run.create_rate
    )?;
    writeln!(out)?;
    drop(cloud);
    Ok(())
}
