//! Routing in a VPC: where each address lives (`ENDPOINTS`) and the
//! subnets and static routes of each routing domain (`ROUTES`).

/// Key of `ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpKey {
    pub domain: u32,
    pub ip: [u8; 4],
}

/// Where an address of a VPC lives (value of `ENDPOINTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// MAC of the address's owner (router interface MAC for a gateway).
    pub mac: [u8; 6],
    /// MAC of the router interface on the endpoint's network: the source MAC
    /// of packets routed to it (zero when its network has no router).
    pub gw_mac: [u8; 6],
    /// `EP_*`.
    pub kind: u8,
    /// `EP_F_*`.
    pub flags: u8,
    /// MTU of the endpoint's network.
    pub mtu: u16,
    /// VNI of the endpoint's network.
    pub vni: u32,
    /// `EP_LOCAL`: ifindex of the port's tap.
    pub ifindex: u32,
    /// `EP_REMOTE`: underlay address of the port's host.
    pub underlay: [u8; 4],
}

/// `Endpoint::kind`: a port on this host.
pub const EP_LOCAL: u8 = 1;
/// `Endpoint::kind`: a port on another host (reached over VXLAN).
pub const EP_REMOTE: u8 = 2;
/// `Endpoint::kind`: a router interface (the subnet's gateway address).
pub const EP_GATEWAY: u8 = 3;
/// `Endpoint::kind`: the way out of a routing domain whose router has an
/// external gateway (key: the domain and 0.0.0.0). `vni` is the external
/// network's, `underlay` the gateway host's, `mtu` the external network's.
pub const EP_EXTERNAL: u8 = 4;
/// `Endpoint::kind`: a load balancer's VIP: packets to it are translated
/// to a backend (`LB_SERVICES`) and routed again.
pub const EP_VIP: u8 = 5;
/// `Endpoint::flags`: the port (or its network) is administratively down:
/// nothing is delivered to it.
pub const EP_F_DOWN: u8 = 1;

/// Data of a `ROUTES` key; the trie's prefix length covers `domain` (32
/// bits) plus the route's prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKey {
    /// Big-endian bytes so that the trie matches the domain first.
    pub domain: [u8; 4],
    pub ip: [u8; 4],
}

/// Value of `ROUTES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// `ROUTE_*`.
    pub kind: u32,
    /// `ROUTE_NEXTHOP`: the next hop, an endpoint of the domain.
    pub nexthop: [u8; 4],
}

/// `Route::kind`: a subnet of the domain (destinations are endpoints).
pub const ROUTE_CONNECTED: u32 = 1;
/// `Route::kind`: a static route of the router.
pub const ROUTE_NEXTHOP: u32 = 2;
/// `Route::kind`: the default route of a router with an external gateway:
/// out through the [`EP_EXTERNAL`] endpoint.
pub const ROUTE_EXTERNAL: u32 = 3;

/// `Endpoint::flags` of an [`EP_EXTERNAL`] endpoint: VMs without an elastic
/// IP leave through SNAT (the router's `enable_snat`).
pub const EP_F_SNAT: u8 = 2;

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<EpKey>() == 8);
const _: () = assert!(core::mem::size_of::<Endpoint>() == 28);
const _: () = assert!(core::mem::size_of::<RouteKey>() == 8);
const _: () = assert!(core::mem::size_of::<Route>() == 8);

crate::pod!(EpKey, Endpoint, RouteKey, Route);
