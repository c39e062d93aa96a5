//! `status`: what is actually on the machine for a run, read back with
//! `ip -j` (one `ip -j -n NS addr show` per namespace).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use crate::dhcp::Lease;
use crate::ip;
use crate::netns;
use crate::plan::{Link, LinkKind, Plan};
use crate::state::FailTarget;
use crate::vm::Vm;

/// One namespace of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceStatus {
    /// Logical node name (`az1-c1`, `vm-web1`); empty for a stray namespace.
    pub node: String,
    pub netns: String,
    /// `compute`, `gateway`, `fabric`, `spine`, `internet`, `client`,
    /// `site-gw`, `site-host`, `vm` or `stray` (has the prefix, not in the plan).
    pub kind: String,
    pub present: bool,
    /// Processes inside it.
    pub pids: Vec<i32>,
}

/// One end of a link as found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkEnd {
    pub node: String,
    pub netns: String,
    pub ifname: String,
    /// Whether the interface exists.
    pub present: bool,
    /// Administratively up.
    pub up: bool,
    /// Carrier (`LOWER_UP`): the peer is up too.
    pub carrier: bool,
    /// Kernel operstate (`UP`, `LOWERLAYERDOWN`, `DOWN`, ...); it follows
    /// carrier changes with a delay of up to a second.
    pub operstate: String,
    /// IPv4 addresses with prefix length.
    pub addrs: Vec<String>,
}

/// One link (veth pair) of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    pub name: String,
    pub kind: LinkKind,
    pub a: LinkEnd,
    pub b: LinkEnd,
    /// `up` (both ends administratively up with carrier), `down` or `missing`.
    pub state: String,
    /// Covered by an injected failure.
    pub failed: bool,
}

/// Everything `status` reports. `Display` prints tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub prefix: String,
    pub namespaces: Vec<NamespaceStatus>,
    pub links: Vec<LinkStatus>,
    pub vms: Vec<Vm>,
    /// Current DHCP leases, by VM name (DHCP VMs that have one).
    pub leases: BTreeMap<String, Lease>,
    pub failures: Vec<FailTarget>,
}

#[derive(Default, Clone)]
struct Iface {
    up: bool,
    carrier: bool,
    operstate: String,
    addrs: Vec<String>,
}

fn interfaces(netns: &str) -> Option<HashMap<String, Iface>> {
    let v = ip::json(netns, &["addr", "show"]).ok()?;
    let mut out = HashMap::new();
    for i in v.as_array()? {
        let Some(name) = i["ifname"].as_str() else {
            continue;
        };
        let flag = |name: &str| {
            i["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == name))
        };
        let (up, carrier) = (flag("UP"), flag("LOWER_UP"));
        let operstate = i["operstate"].as_str().unwrap_or("").to_string();
        let addrs = i["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["family"] == "inet")
                    .filter_map(|x| {
                        Some(format!(
                            "{}/{}",
                            x["local"].as_str()?,
                            x["prefixlen"].as_u64()?
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            name.to_string(),
            Iface {
                up,
                carrier,
                operstate,
                addrs,
            },
        );
    }
    Some(out)
}

/// Whether `link` is covered by one of `failures`.
fn covered(link: &Link, failures: &[FailTarget], plan: &Plan, vms: &[Vm]) -> bool {
    let host_az = |node: &str| {
        plan.hosts
            .iter()
            .find(|h| h.name == node)
            .map(|h| h.az.clone())
    };
    failures.iter().any(|f| match f {
        FailTarget::Link(n) => link.name == *n,
        FailTarget::Host(h) => {
            link.a.node == *h
                || link.b.node == *h
                || vms
                    .iter()
                    .any(|v| v.host == *h && v.link_name() == link.name)
        }
        FailTarget::Az(az) => {
            link.name == format!("{az}-spine")
                || [&link.a.node, &link.b.node]
                    .iter()
                    .any(|n| host_az(n).as_deref() == Some(az))
        }
    })
}

pub(crate) fn collect(
    prefix: &str,
    plan: &Plan,
    links: &[Link],
    vms: &[Vm],
    failures: &[FailTarget],
) -> Status {
    let existing = netns::list(prefix);
    let pids = netns::pids(&existing);
    let mut namespaces: Vec<NamespaceStatus> = plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.netns.clone(), n.kind.label().to_string()))
        .chain(
            vms.iter()
                .map(|v| (format!("vm-{}", v.name), v.netns.clone(), "vm".to_string())),
        )
        .map(|(node, netns, kind)| NamespaceStatus {
            present: existing.contains(&netns),
            pids: pids.get(&netns).cloned().unwrap_or_default(),
            node,
            netns,
            kind,
        })
        .collect();
    for ns in &existing {
        if !namespaces.iter().any(|n| n.netns == *ns) {
            namespaces.push(NamespaceStatus {
                node: String::new(),
                netns: ns.clone(),
                kind: "stray".into(),
                present: true,
                pids: pids.get(ns).cloned().unwrap_or_default(),
            });
        }
    }
    let ifaces: HashMap<String, HashMap<String, Iface>> = namespaces
        .iter()
        .filter(|n| n.present)
        .filter_map(|n| Some((n.netns.clone(), interfaces(&n.netns)?)))
        .collect();
    let end = |e: &crate::plan::End| {
        let found = ifaces.get(&e.netns).and_then(|m| m.get(&e.ifname));
        let i = found.cloned().unwrap_or_default();
        LinkEnd {
            node: e.node.clone(),
            netns: e.netns.clone(),
            ifname: e.ifname.clone(),
            present: found.is_some(),
            up: i.up,
            carrier: i.carrier,
            operstate: i.operstate,
            addrs: i.addrs,
        }
    };
    let links = links
        .iter()
        .map(|l| {
            let (a, b) = (end(&l.a), end(&l.b));
            let state = if !a.present || !b.present {
                "missing"
            } else if a.up && b.up && a.carrier && b.carrier {
                "up"
            } else {
                "down"
            };
            LinkStatus {
                name: l.name.clone(),
                kind: l.kind,
                failed: covered(l, failures, plan, vms),
                state: state.to_string(),
                a,
                b,
            }
        })
        .collect();
    Status {
        prefix: prefix.to_string(),
        namespaces,
        links,
        vms: vms.to_vec(),
        leases: BTreeMap::new(),
        failures: failures.to_vec(),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = self.namespaces.iter().filter(|n| n.present).count();
        writeln!(
            f,
            "prefix {}: {present}/{} namespaces present",
            self.prefix,
            self.namespaces.len()
        )?;
        if self.failures.is_empty() {
            writeln!(f, "failures: none")?;
        } else {
            let list: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
            writeln!(f, "failures: {}", list.join(", "))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<16} {:<10} {:<24} {:<8} PIDS",
            "NODE", "KIND", "NAMESPACE", "PRESENT"
        )?;
        for n in &self.namespaces {
            let pids: Vec<String> = n.pids.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "{:<16} {:<10} {:<24} {:<8} {}",
                if n.node.is_empty() { "-" } else { &n.node },
                n.kind,
                n.netns,
                if n.present { "yes" } else { "NO" },
                if pids.is_empty() {
                    "-".to_string()
                } else {
                    pids.join(",")
                }
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{:<16} {:<8} {:<38} END B", "LINK", "STATE", "END A")?;
        let end = |e: &LinkEnd| {
            let addr = e.addrs.first().map(String::as_str).unwrap_or("-");
            format!("{}:{} {}", e.node, e.ifname, addr)
        };
        for l in &self.links {
            writeln!(
                f,
                "{:<16} {:<8} {:<38} {:<38} {}",
                l.name,
                l.state,
                end(&l.a),
                end(&l.b),
                if l.failed { "FAILED" } else { "" }
            )?;
        }
        if !self.vms.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<16} {:<10} {:<16} {:<18} {:<18} GATEWAY",
                "VM", "HOST", "PORT", "MAC", "ADDR"
            )?;
            for v in &self.vms {
                let lease = self.leases.get(&v.name);
                writeln!(
                    f,
                    "{:<16} {:<10} {:<16} {:<18} {:<18} {}",
                    v.name,
                    v.host,
                    v.port,
                    v.mac.to_string(),
                    v.addr_label(lease),
                    v.gateway
                        .or(lease.and_then(|l| l.router))
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into())
                )?;
            }
        }
        Ok(())
    }
}
