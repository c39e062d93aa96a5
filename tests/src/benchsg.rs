//! Security group benchmark (part of `make bench`): time from a rule POST
//! to its enforcement on every host, with the real controller and agents
//! in the default region, for a small group and for one of 100,000 rules.
//!
//! One port on each compute host, all in one group. A rule is enforced on
//! a host when that host's pinned policy tries (what its programs look up)
//! allow what the rule allows for the policy its port points at: the same
//! lookup the packet path does, read from user space.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netns_harness::{HostRole, Topology, VmSpec};
use serde_json::{json, Value};

use crate::{
    benchcp::percentile,
    e2e::{Api, Cloud},
};

pub struct Options {
    /// Single-rule POSTs measured per group size.
    pub samples: usize,
    /// Rules in the large group.
    pub large: usize,
    /// No figures.
    pub smoke: bool,
}

/// Whether every host's maps allow TCP `port` from 10.9.1.1 into its port
/// (the one port with a policy on each host).
fn enforced(pins: &[PathBuf], port: u16) -> bool {
    pins.iter().all(|pin| {
        let Ok(ports) = strato_dataplane::read_pinned_ports(pin) else {
            return false;
        };
        ports.values().filter(|p| p.policy != 0).any(|p| {
            strato_dataplane::read_pinned_policy(
                pin,
                p.policy,
                dataplane_common::DIR_INGRESS,
                std::net::Ipv4Addr::new(10, 9, 1, 1),
                6,
                port,
            )
            .ok()
            .flatten()
            .is_some()
        })
    })
}

fn wait_enforced(pins: &[PathBuf], port: u16, limit: Duration) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    while !enforced(pins, port) {
        if t0.elapsed() > limit {
            anyhow::bail!("rule for port {port} not enforced on every host within {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

fn rule(port: u16, group: &str) -> Value {
    json!({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
           "port_range_min": port, "port_range_max": port, "remote_ip_prefix": "10.9.0.0/16"})
}

/// POSTs `n` single rules (ports from `base`) and returns the times from
/// each POST to enforcement on every host, sorted (ms).
fn measure(
    api: &Api,
    group: &str,
    pins: &[PathBuf],
    base: u16,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let port = base + i as u16;
        let t0 = Instant::now();
        api.expect(
            201,
            "POST",
            "/v2.0/security-group-rules",
            Some(json!({ "security_group_rule": rule(port, group) })),
        );
        wait_enforced(pins, port, Duration::from_secs(60))?;
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// The largest kernel memory of a pinned map over the hosts, KiB; an
/// error if any host's cannot be read.
fn memlock_kib(pins: &[PathBuf], map: &str) -> anyhow::Result<u64> {
    let mut max = 0;
    for p in pins {
        let path = p.join(map);
        let b = strato_dataplane::pinned_map_memlock(&path)
            .with_context(|| format!("the kernel memory of {} cannot be read", path.display()))?;
        max = max.max(b);
    }
    Ok(max / 1024)
}

pub fn run(opts: &Options, out: &mut String) -> anyhow::Result<()> {
    eprintln!(
        "bench: security groups: bringing up the default region with a controller and agents"
    );
    let cloud = Cloud::up("bsg", &Topology::default_region());
    let admin = cloud.admin();
    let api = cloud.tenant("sgbench");
    let net = api.expect(
        201,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "n"}})),
    )["network"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.expect(
        201,
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": net, "cidr": "10.9.0.0/16", "ip_version": 4}})),
    );
    let group = api.expect(
        201,
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": "bench"}})),
    )["security_group"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let project = api.expect(200, "GET", &format!("/v2.0/security-groups/{group}"), None)
        ["security_group"]["project_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/quotas/{project}"),
        Some(json!({"quota": {"security_group_rule": -1}})),
    );
    let computes: Vec<_> = cloud
        .region
        .hosts()
        .into_iter()
        .filter(|h| h.role == HostRole::Compute)
        .collect();
    let mut pins = Vec::new();
    for (i, h) in computes.iter().enumerate() {
        let p = api.expect(
            201,
            "POST",
            "/v2.0/ports",
            Some(json!({"port": {"network_id": net, "security_groups": [group]}})),
        )["port"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = format!("sg{i}");
        cloud.region.vm_create(&VmSpec::new(
            &name,
            &h.name,
            &strato_proto::naming::tap_name(&p),
        ))?;
        admin.expect(
            200,
            "PUT",
            &format!("/v2.0/ports/{p}"),
            Some(json!({"port": {"binding:host_id": Cloud::host_id(h), "device_id": name}})),
        );
        cloud.wait_until("bench port ACTIVE", Duration::from_secs(20), || {
            api.expect(200, "GET", &format!("/v2.0/ports/{p}"), None)["port"]["status"] == "ACTIVE"
        });
        pins.push(std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(h)));
    }
    eprintln!(
        "bench: security groups: {} single rules on a small group",
        opts.samples
    );
    let small = measure(&api, &group, &pins, 20_000, opts.samples)?;
    let small_addr = memlock_kib(&pins, dataplane_common::maps::POLICY_ADDR)?
        + memlock_kib(&pins, dataplane_common::maps::POLICY_HOST)?;
    let small_port = memlock_kib(&pins, dataplane_common::maps::POLICY_PORT)?
        + memlock_kib(&pins, dataplane_common::maps::POLICY_EXACT)?;
    // The large group: bulk requests of 10,000 rules (ports 1024 + i, each
    // from its own /32), then the last one's enforcement everywhere.
    eprintln!(
        "bench: security groups: {} rules in bulk requests",
        opts.large
    );
    let t0 = Instant::now();
    let mut posted = 0usize;
    while posted < opts.large {
        let n = (opts.large - posted).min(10_000);
        let rules: Vec<Value> = (posted..posted + n)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a80_0000u32 + i as u32);
                json!({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
                       "port_range_min": 1024 + (i % 18_000) as u16, "port_range_max": 1024 + (i % 18_000) as u16,
                       "remote_ip_prefix": format!("{ip}/32")})
            })
            .collect();
        api.expect(
            201,
            "POST",
            "/v2.0/security-group-rules",
            Some(json!({ "security_group_rules": rules })),
        );
        posted += n;
        eprintln!(
            "bench:   {posted} rules posted ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
    }
    let posted_s = t0.elapsed().as_secs_f64();
    // A marker rule after the bulk: when it is enforced, so is the bulk.
    api.expect(
        201,
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({ "security_group_rule": rule(19_999, &group) })),
    );
    wait_enforced(&pins, 19_999, Duration::from_secs(600))?;
    let bulk_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "bench: security groups: {} single rules on the large group",
        opts.samples
    );
    let large = measure(&api, &group, &pins, 21_000, opts.samples)?;
    let large_addr = memlock_kib(&pins, dataplane_common::maps::POLICY_ADDR)?
        + memlock_kib(&pins, dataplane_common::maps::POLICY_HOST)?;
    let large_port = memlock_kib(&pins, dataplane_common::maps::POLICY_PORT)?
        + memlock_kib(&pins, dataplane_common::maps::POLICY_EXACT)?;
    let ct = memlock_kib(&pins, dataplane_common::maps::CT)?;

    if opts.smoke {
        return Ok(());
    }
    let large_name = format!("with {} rules", opts.large);
    writeln!(out, "### Security groups: rule POST to enforcement on every host ({} compute hosts, one port each in the group)\n", pins.len())?;
    writeln!(out, "From the POST of one rule to the moment every host's policy tries (what its programs look up) allow what it allows. {} rules each. Then {} rules were added in bulk requests of 10,000: posted in {:.1} s, enforced everywhere {:.1} s after the first request.\n", opts.samples, opts.large, posted_s, bulk_s)?;
    writeln!(
        out,
        "| group | p50 ms | p99 ms | max ms | policy tries' memory per host |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: |")?;
    for (name, v, a, p) in [
        ("a few rules", &small, small_addr, small_port),
        (large_name.as_str(), &large, large_addr, large_port),
    ] {
        writeln!(
            out,
            "| {name} | {:.1} | {:.1} | {:.1} | {} KiB + {} KiB |",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
            a,
            p
        )?;
    }
    writeln!(
        out,
        "\nConnection table per host (`CT`, 1,000,000 flows, preallocated): {} MiB.\n",
        ct / 1024
    )?;
    Ok(())
}
