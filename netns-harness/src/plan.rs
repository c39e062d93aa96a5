//! The address plan: a pure function from a [`Topology`] to nodes (network
//! namespaces) and links (veth pairs) with their addresses and routes.
//!
//! * Node names: host `<az>-<host>` (`az1-c1`), AZ fabric router `<az>-fab`,
//!   inter-AZ `spine`, `internet` router, internet clients `inet-<client>`,
//!   site gateway `<site>-gw`, site hosts `<site>-<host>`. The namespace of a
//!   node is `<prefix>-<node>`.
//! * Every link is a routed point-to-point /31 (leaf-spine style), the router
//!   end on the even address. AZ k (1-based) owns the k-th /24 of the
//!   underlay: host i (0-based, compute hosts then gateways) has fabric side
//!   `.2i` and host side `.2i+1`, its underlay address. Spine links come from
//!   the underlay's first /24: spine side `.2(k-1)`, fabric side `.2(k-1)+1`.
//! * Routes: host default via its fabric; fabric default via the spine;
//!   spine: each AZ /24 via that AZ's fabric.
//! * Internet /31s (router side even) in order: gateway hosts' `ext0` (AZ
//!   order), clients' `eth0`, site gateways' `wan0`. The internet router routes
//!   `eip_pool` via all gateway `ext0` addresses (ECMP); clients and site
//!   gateways default via the internet router; gateway hosts route only the
//!   internet's own `cidr` via their `ext0` peer (so clients can reach their
//!   ext addresses), no default route (the dataplane decides).
//! * Site LAN: the site gateway holds bridge `lan0` with the first address;
//!   site host j (0-based) is `.(j+2)` on `eth0`, attached by a veth whose
//!   gateway end (named after the host) is a port of `lan0`.
//! * Link names (for `fail link`): `az1-c1` (host uplink), `az1-spine`,
//!   `az1-gw1-ext`, `inet-client1`, `onprem-wan`, `onprem-h1`.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::topology::Topology;

/// A gateway host's interface towards the internet router.
pub const EXTERNAL_IFACE: &str = "ext0";

/// What a host is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// Runs VMs.
    Compute,
    /// Connects the region to the internet (EIP, SNAT, VPN, LB).
    Gateway,
}

impl std::fmt::Display for HostRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            HostRole::Compute => "compute",
            HostRole::Gateway => "gateway",
        })
    }
}

/// A compute or gateway host of the region, as the agents and tests see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Logical name `<az>-<host>`, e.g. `az1-c1`.
    pub name: String,
    /// AZ name, e.g. `az1`.
    pub az: String,
    pub role: HostRole,
    /// Network namespace, `<prefix>-<name>`.
    pub netns: String,
    /// The host's underlay address (its side of the uplink /31).
    pub underlay_ip: Ipv4Addr,
    /// Underlay interface in the host namespace: `eth0`.
    pub uplink: String,
}

/// The kind of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NodeKind {
    Host { az: String, role: HostRole },
    Fabric { az: String },
    Spine,
    Internet,
    Client,
    SiteGateway { site: String },
    SiteHost { site: String },
}

impl NodeKind {
    /// Short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            NodeKind::Host {
                role: HostRole::Compute,
                ..
            } => "compute",
            NodeKind::Host {
                role: HostRole::Gateway,
                ..
            } => "gateway",
            NodeKind::Fabric { .. } => "fabric",
            NodeKind::Spine => "spine",
            NodeKind::Internet => "internet",
            NodeKind::Client => "client",
            NodeKind::SiteGateway { .. } => "site-gw",
            NodeKind::SiteHost { .. } => "site-host",
        }
    }
}

/// A bridge inside a node (the site gateway's LAN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    pub ifname: String,
    pub addr: Ipv4Network,
}

/// A route: `dst` (None = default) via one or more next hops (ECMP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Option<Ipv4Network>,
    pub via: Vec<Ipv4Addr>,
}

/// One network namespace of the region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Logical name (`az1-c1`, `spine`, ...).
    pub name: String,
    /// `<prefix>-<name>`.
    pub netns: String,
    pub kind: NodeKind,
    /// Whether the node forwards (net.ipv4.ip_forward=1).
    pub router: bool,
    pub bridge: Option<Bridge>,
    pub routes: Vec<Route>,
}

/// The kind of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    HostUplink,
    Spine,
    GatewayExternal,
    Client,
    SiteWan,
    SiteLan,
    Vm,
}

/// One end of a veth pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Logical node name.
    pub node: String,
    pub netns: String,
    pub ifname: String,
    /// Address with its prefix length (a /31, or the LAN prefix).
    pub addr: Option<Ipv4Network>,
    /// Bridge the end is a port of.
    pub master: Option<String>,
}

/// A veth pair. `a` is the end that creates the pair (the router side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Logical link name (`az1-c1`, `az1-spine`, `az1-gw1-ext`, ...).
    pub name: String,
    pub kind: LinkKind,
    pub a: End,
    pub b: End,
    /// MTU of both ends, if not the default 1500.
    pub mtu: Option<u32>,
}

/// The region's nodes and links for one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub prefix: String,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    pub hosts: Vec<Host>,
}

/// `net`'s network address plus `offset`.
pub fn nth(net: Ipv4Network, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + offset)
}

/// The k-th /24 of the underlay (k = 0 is the spine's, k >= 1 is AZ k's).
pub fn az_block(underlay: Ipv4Network, k: usize) -> Ipv4Network {
    Ipv4Network::new(nth(underlay, (k as u32) << 8), 24).expect("/24 is valid")
}

/// The j-th /31 of `net`: (router side, other side), both as /31.
pub fn p2p(net: Ipv4Network, j: usize) -> (Ipv4Network, Ipv4Network) {
    let even = nth(net, 2 * j as u32);
    let odd = nth(net, 2 * j as u32 + 1);
    (
        Ipv4Network::new(even, 31).expect("/31"),
        Ipv4Network::new(odd, 31).expect("/31"),
    )
}

/// Host i (0-based, compute then gateways) of AZ k (1-based): (fabric side, host side).
pub fn host_link_addrs(underlay: Ipv4Network, k: usize, i: usize) -> (Ipv4Network, Ipv4Network) {
    p2p(az_block(underlay, k), i)
}

/// AZ k's (1-based) spine link: (spine side, fabric side).
pub fn spine_link_addrs(underlay: Ipv4Network, k: usize) -> (Ipv4Network, Ipv4Network) {
    p2p(az_block(underlay, 0), k - 1)
}

impl Plan {
    /// Computes the plan of `topology` for run `prefix`.
    pub fn new(topology: &Topology, prefix: &str) -> Plan {
        let ns = |node: &str| format!("{prefix}-{node}");
        let underlay = topology.underlay();
        let mtu = (topology.mtu() != 1500).then_some(topology.mtu());
        let mut nodes = Vec::new();
        let mut links = Vec::new();
        let mut hosts = Vec::new();
        let end = |node: &str, ifname: &str, addr: Option<Ipv4Network>| End {
            node: node.to_string(),
            netns: ns(node),
            ifname: ifname.to_string(),
            addr,
            master: None,
        };

        let mut spine_routes = Vec::new();
        let mut gateway_ext = Vec::new();
        let inet = topology.internet();
        let mut inet_j = 0usize;
        let mut azs_nodes = Vec::new();
        for (k0, az) in topology.azs().iter().enumerate() {
            let k = k0 + 1;
            let fab = format!("{}-fab", az.name);
            let (spine_side, fab_side) = spine_link_addrs(underlay, k);
            spine_routes.push(Route {
                dst: Some(az_block(underlay, k)),
                via: vec![fab_side.ip()],
            });
            links.push(Link {
                name: format!("{}-spine", az.name),
                kind: LinkKind::Spine,
                a: end("spine", &az.name, Some(spine_side)),
                b: end(&fab, "spine", Some(fab_side)),
                mtu,
            });
            azs_nodes.push(Node {
                name: fab.clone(),
                netns: ns(&fab),
                kind: NodeKind::Fabric {
                    az: az.name.clone(),
                },
                router: true,
                bridge: None,
                routes: vec![Route {
                    dst: None,
                    via: vec![spine_side.ip()],
                }],
            });
            let all = az
                .compute
                .iter()
                .map(|h| (h, HostRole::Compute))
                .chain(az.gateway.iter().map(|h| (h, HostRole::Gateway)));
            for (i, (short, role)) in all.enumerate() {
                let name = format!("{}-{short}", az.name);
                let (fab_addr, host_addr) = host_link_addrs(underlay, k, i);
                links.push(Link {
                    name: name.clone(),
                    kind: LinkKind::HostUplink,
                    a: end(&fab, short, Some(fab_addr)),
                    b: end(&name, "eth0", Some(host_addr)),
                    mtu,
                });
                let mut inet_router = None;
                if role == HostRole::Gateway {
                    let (router, ext) = p2p(inet.cidr, inet_j);
                    inet_router = Some(router.ip());
                    inet_j += 1;
                    gateway_ext.push(ext.ip());
                    links.push(Link {
                        name: format!("{name}-ext"),
                        kind: LinkKind::GatewayExternal,
                        a: end("internet", &name, Some(router)),
                        b: end(&name, EXTERNAL_IFACE, Some(ext)),
                        mtu: None,
                    });
                }
                let mut routes = vec![Route {
                    dst: None,
                    via: vec![fab_addr.ip()],
                }];
                if let Some(router) = inet_router {
                    routes.push(Route {
                        dst: Some(inet.cidr),
                        via: vec![router],
                    });
                }
                azs_nodes.push(Node {
                    name: name.clone(),
                    netns: ns(&name),
                    kind: NodeKind::Host {
                        az: az.name.clone(),
                        role,
                    },
                    router: false,
                    bridge: None,
                    routes,
                });
                hosts.push(Host {
                    name: name.clone(),
                    az: az.name.clone(),
                    role,
                    netns: ns(&name),
                    underlay_ip: host_addr.ip(),
                    uplink: "eth0".to_string(),
                });
            }
        }

        nodes.push(Node {
            name: "spine".into(),
            netns: ns("spine"),
            kind: NodeKind::Spine,
            router: true,
            bridge: None,
            routes: spine_routes,
        });
        let mut inet_routes = Vec::new();
        if !gateway_ext.is_empty() {
            inet_routes.push(Route {
                dst: Some(inet.eip_pool),
                via: gateway_ext,
            });
        }
        nodes.push(Node {
            name: "internet".into(),
            netns: ns("internet"),
            kind: NodeKind::Internet,
            router: true,
            bridge: None,
            routes: inet_routes,
        });
        nodes.extend(azs_nodes);

        for client in &inet.clients {
            let name = format!("inet-{client}");
            let (router, side) = p2p(inet.cidr, inet_j);
            inet_j += 1;
            links.push(Link {
                name: name.clone(),
                kind: LinkKind::Client,
                a: end("internet", client, Some(router)),
                b: end(&name, "eth0", Some(side)),
                mtu: None,
            });
            nodes.push(Node {
                name: name.clone(),
                netns: ns(&name),
                kind: NodeKind::Client,
                router: false,
                bridge: None,
                routes: vec![Route {
                    dst: None,
                    via: vec![router.ip()],
                }],
            });
        }

        for site in topology.sites() {
            let gw = format!("{}-gw", site.name);
            let (router, wan) = p2p(inet.cidr, inet_j);
            inet_j += 1;
            links.push(Link {
                name: format!("{}-wan", site.name),
                kind: LinkKind::SiteWan,
                a: end("internet", &site.name, Some(router)),
                b: end(&gw, "wan0", Some(wan)),
                mtu: None,
            });
            let lan_gw = nth(site.lan, 1);
            nodes.push(Node {
                name: gw.clone(),
                netns: ns(&gw),
                kind: NodeKind::SiteGateway {
                    site: site.name.clone(),
                },
                router: true,
                bridge: Some(Bridge {
                    ifname: "lan0".into(),
                    addr: Ipv4Network::new(lan_gw, site.lan.prefix()).expect("lan prefix"),
                }),
                routes: vec![Route {
                    dst: None,
                    via: vec![router.ip()],
                }],
            });
            for (j, short) in site.hosts.iter().enumerate() {
                let name = format!("{}-{short}", site.name);
                let addr = Ipv4Network::new(nth(site.lan, j as u32 + 2), site.lan.prefix())
                    .expect("lan prefix");
                let mut a = end(&gw, short, None);
                a.master = Some("lan0".into());
                links.push(Link {
                    name: name.clone(),
                    kind: LinkKind::SiteLan,
                    a,
                    b: end(&name, "eth0", Some(addr)),
                    mtu: None,
                });
                nodes.push(Node {
                    name: name.clone(),
                    netns: ns(&name),
                    kind: NodeKind::SiteHost {
                        site: site.name.clone(),
                    },
                    router: false,
                    bridge: None,
                    routes: vec![Route {
                        dst: None,
                        via: vec![lan_gw],
                    }],
                });
            }
        }

        Plan {
            prefix: prefix.to_string(),
            nodes,
            links,
            hosts,
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The link called `name`.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The ends (of any link) that live in node `name`.
    pub fn ends_in<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a End> + 'a {
        self.links
            .iter()
            .flat_map(|l| [&l.a, &l.b])
            .filter(move |e| e.node == name)
    }

    /// Links touching node `name`.
    pub fn links_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Link> + 'a {
        self.links
            .iter()
            .filter(move |l| l.a.node == name || l.b.node == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }
    fn net(s: &str) -> Ipv4Network {
        s.parse().expect("net")
    }

    #[test]
    fn arithmetic() {
        let u = net("198.18.0.0/16");
        assert_eq!(az_block(u, 0), net("198.18.0.0/24"));
        assert_eq!(az_block(u, 3), net("198.18.3.0/24"));
        assert_eq!(
            host_link_addrs(u, 1, 0),
            (net("198.18.1.0/31"), net("198.18.1.1/31"))
        );
        assert_eq!(
            host_link_addrs(u, 2, 2),
            (net("198.18.2.4/31"), net("198.18.2.5/31"))
        );
        assert_eq!(host_link_addrs(u, 1, 127).1.ip(), ip("198.18.1.255"));
        assert_eq!(
            spine_link_addrs(u, 1),
            (net("198.18.0.0/31"), net("198.18.0.1/31"))
        );
        assert_eq!(
            spine_link_addrs(u, 2),
            (net("198.18.0.2/31"), net("198.18.0.3/31"))
        );
        // A non-/16 underlay: blocks are taken from it.
        let u = net("10.8.0.0/22");
        assert_eq!(az_block(u, 3), net("10.8.3.0/24"));
    }

    #[test]
    fn default_region_plan() {
        let plan = Plan::new(&Topology::default_region(), "t");
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "spine",
                "internet",
                "az1-fab",
                "az1-c1",
                "az1-c2",
                "az1-gw1",
                "az2-fab",
                "az2-c1",
                "az2-c2",
                "az2-gw1",
                "inet-client1",
                "onprem-gw",
                "onprem-h1"
            ]
        );
        assert!(plan
            .nodes
            .iter()
            .all(|n| n.netns == format!("t-{}", n.name)));

        let hosts: Vec<(&str, Ipv4Addr, HostRole)> = plan
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.underlay_ip, h.role))
            .collect();
        assert_eq!(
            hosts,
            [
                ("az1-c1", ip("198.18.1.1"), HostRole::Compute),
                ("az1-c2", ip("198.18.1.3"), HostRole::Compute),
                ("az1-gw1", ip("198.18.1.5"), HostRole::Gateway),
                ("az2-c1", ip("198.18.2.1"), HostRole::Compute),
                ("az2-c2", ip("198.18.2.3"), HostRole::Compute),
                ("az2-gw1", ip("198.18.2.5"), HostRole::Gateway),
            ]
        );
        assert_eq!(plan.hosts[0].netns, "t-az1-c1");
        assert_eq!(plan.hosts[0].uplink, "eth0");

        let l = plan.link("az1-c2").expect("uplink");
        assert_eq!(
            (l.a.netns.as_str(), l.a.ifname.as_str()),
            ("t-az1-fab", "c2")
        );
        assert_eq!(
            (l.b.netns.as_str(), l.b.ifname.as_str()),
            ("t-az1-c2", "eth0")
        );
        assert_eq!(l.a.addr, Some(net("198.18.1.2/31")));
        let l = plan.link("az2-spine").expect("spine link");
        assert_eq!(
            (l.a.node.as_str(), l.a.ifname.as_str(), l.a.addr),
            ("spine", "az2", Some(net("198.18.0.2/31")))
        );
        assert_eq!(
            (l.b.node.as_str(), l.b.ifname.as_str(), l.b.addr),
            ("az2-fab", "spine", Some(net("198.18.0.3/31")))
        );

        let l = plan.link("az1-gw1-ext").expect("ext");
        assert_eq!(
            (l.a.ifname.as_str(), l.a.addr),
            ("az1-gw1", Some(net("203.0.113.0/31")))
        );
        assert_eq!(
            (l.b.ifname.as_str(), l.b.addr),
            ("ext0", Some(net("203.0.113.1/31")))
        );
        assert_eq!(
            plan.link("az2-gw1-ext").expect("ext").b.addr,
            Some(net("203.0.113.3/31"))
        );
        let l = plan.link("inet-client1").expect("client");
        assert_eq!(
            (l.a.ifname.as_str(), l.b.addr),
            ("client1", Some(net("203.0.113.5/31")))
        );
        let l = plan.link("onprem-wan").expect("wan");
        assert_eq!(
            (l.a.ifname.as_str(), l.b.ifname.as_str(), l.b.addr),
            ("onprem", "wan0", Some(net("203.0.113.7/31")))
        );
        let l = plan.link("onprem-h1").expect("site lan");
        assert_eq!(
            (l.a.ifname.as_str(), l.a.master.as_deref()),
            ("h1", Some("lan0"))
        );
        assert_eq!(l.b.addr, Some(net("172.16.200.2/24")));

        let spine = plan.node("spine").expect("spine");
        assert_eq!(
            spine.routes,
            [
                Route {
                    dst: Some(net("198.18.1.0/24")),
                    via: vec![ip("198.18.0.1")]
                },
                Route {
                    dst: Some(net("198.18.2.0/24")),
                    via: vec![ip("198.18.0.3")]
                },
            ]
        );
        assert_eq!(
            plan.node("az2-fab").expect("fab").routes,
            [Route {
                dst: None,
                via: vec![ip("198.18.0.2")]
            }]
        );
        assert_eq!(
            plan.node("az2-c2").expect("host").routes,
            [Route {
                dst: None,
                via: vec![ip("198.18.2.2")]
            }]
        );
        assert_eq!(
            plan.node("internet").expect("inet").routes,
            [Route {
                dst: Some(net("198.51.100.0/24")),
                via: vec![ip("203.0.113.1"), ip("203.0.113.3")]
            }]
        );
        assert_eq!(
            plan.node("inet-client1").expect("c").routes[0].via,
            [ip("203.0.113.4")]
        );
        let gw = plan.node("onprem-gw").expect("site gw");
        assert_eq!(
            gw.bridge.as_ref().expect("bridge").addr,
            net("172.16.200.1/24")
        );
        assert_eq!(gw.routes[0].via, [ip("203.0.113.6")]);
        assert_eq!(
            plan.node("onprem-h1").expect("h").routes[0].via,
            [ip("172.16.200.1")]
        );

        let routers: Vec<&str> = plan
            .nodes
            .iter()
            .filter(|n| n.router)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(
            routers,
            ["spine", "internet", "az1-fab", "az2-fab", "onprem-gw"]
        );
        // Gateway hosts: no default route to the internet, only its own cidr.
        assert_eq!(
            plan.node("az2-gw1").expect("gw").routes,
            [
                Route {
                    dst: None,
                    via: vec![ip("198.18.2.4")]
                },
                Route {
                    dst: Some(net("203.0.113.0/24")),
                    via: vec![ip("203.0.113.2")]
                },
            ]
        );
        // All interface names fit IFNAMSIZ and are unique per namespace.
        for node in &plan.nodes {
            let mut names: Vec<&str> = plan
                .ends_in(&node.name)
                .map(|e| e.ifname.as_str())
                .collect();
            assert!(names.iter().all(|n| n.len() <= 15));
            names.sort();
            let before = names.len();
            names.dedup();
            assert_eq!(
                before,
                names.len(),
                "duplicate interface names in {}",
                node.name
            );
        }
        let mut link_names: Vec<&str> = plan.links.iter().map(|l| l.name.as_str()).collect();
        link_names.sort();
        link_names.dedup();
        assert_eq!(link_names.len(), plan.links.len());
    }

    #[test]
    fn mtu_applies_to_underlay_only() {
        let text = Topology::default_region()
            .source()
            .replace("mtu = 1500", "mtu = 9000");
        let plan = Plan::new(&Topology::parse(&text, "x").expect("valid"), "t");
        assert_eq!(plan.link("az1-c1").expect("l").mtu, Some(9000));
        assert_eq!(plan.link("az1-spine").expect("l").mtu, Some(9000));
        assert_eq!(plan.link("az1-gw1-ext").expect("l").mtu, None);
    }
}
