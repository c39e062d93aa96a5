//! Map names, as they appear in the object file and under the pin directory
//! `/sys/fs/bpf/strato/<host>/`, and the maps' capacities.
//!
//! Every name is written once, in [`map_names!`] below: it makes a
//! `pub const NAME: &str = "NAME"` per map and the lists of which object
//! has which maps. The kernel's statics carry exactly these names
//! (`#[map] static PORTS: ...`: aya names a map after its static), and a
//! user-space test parses the built objects and checks that their maps are
//! exactly [`PRODUCTION`] and [`PRODUCTION`] + [`BENCH`], so the two sides
//! cannot drift.

/// Defines each map name once: `pub const NAME: &str = "NAME";` for every
/// entry, and `pub const LIST: &[&str]` per list.
macro_rules! map_names {
    ($(
        $(#[$list_doc:meta])*
        $list:ident = [$( $(#[$doc:meta])* $name:ident ),* $(,)?];
    )*) => {
        $(
            $(
                $(#[$doc])*
                pub const $name: &str = stringify!($name);
            )*
            $(#[$list_doc])*
            pub const $list: &[&str] = &[$($name),*];
        )*
    };
}

map_names! {
    /// The maps an agent pins per host (`<pin dir>/<name>`), so tables and
    /// counters survive an agent restart and `stratoctl` can read them.
    PINNED = [
        /// Per-CPU array: counter slot -> [`crate::IfStats`]. Slot 0 counts
        /// interfaces without a slot; the agent gives every port and uplink one
        /// (in [`crate::PortInfo::slot`] / [`crate::HostInfo::uplink_slot`]).
        IF_STATS,
        /// Per-CPU hash: [`crate::DropKey`] -> [`crate::DropStats`].
        DROP_STATS,
        /// Hash: ifindex of a VM port's tap -> [`crate::PortInfo`]: the ports
        /// table user space reads and writes.
        PORTS,
        /// Array, ifindex -> [`crate::PortInfo`]: a dense copy of `PORTS` for
        /// ifindexes below [`PORT_INDEX_MAX`] (entries without
        /// [`crate::PORT_F_PRESENT`] are empty). The packet path reads it first:
        /// an array lookup is a few instructions, a hash lookup a helper call.
        PORT_INDEX,
        /// Hash: [`crate::EpKey`] (routing domain, IPv4) -> [`crate::Endpoint`]:
        /// every port and router interface address of the host's VPCs.
        ENDPOINTS,
        /// LPM trie: [`crate::RouteKey`] -> [`crate::Route`]: the subnets and
        /// static routes of each routing domain.
        ROUTES,
        /// Hash: VNI -> [`crate::VniInfo`], for decapsulation.
        VNIS,
        /// Hash: [`crate::MacKey`] (VNI, MAC) -> ifindex of the local port's tap,
        /// where decapsulated frames go.
        MACS,
        /// LPM trie: [`crate::AllowedKey`] (port, source prefix) -> [`crate::AllowedMac`]:
        /// the addresses a port may send from besides its primary one.
        ALLOWED,
        /// Array of one [`crate::HostInfo`]: the host's underlay.
        HOST,
        /// LRU hash: [`crate::CtKey`] -> [`crate::CtEntry`]: the connection
        /// tracking table (one per host). Its size is set by the agent at load
        /// time; the object's default is [`CT_MAX_DEFAULT`].
        CT,
        /// Per-CPU array of one [`crate::CtStats`].
        CT_STATS,
        /// LPM trie: [`crate::PolicyAddrKey`] (policy, direction, remote
        /// address) -> [`crate::PolicyClass`]: stage one of a policy lookup.
        POLICY_ADDR,
        /// LPM trie: [`crate::PolicyPortKey`] (class, protocol, port) ->
        /// [`crate::PolicyAllow`]: stage two; a hit allows.
        POLICY_PORT,
        /// Hash: [`crate::PolicyAddrKey`] -> [`crate::PolicyClass`] for host
        /// addresses (/32 remote prefixes, every remote-group member), looked up
        /// before `POLICY_ADDR`: a /32 is always the longest match, and a hash
        /// lookup costs the same however many there are (an LPM trie's walk
        /// grows with its depth).
        POLICY_HOST,
        /// Hash: [`crate::PolicyPortKey`] -> [`crate::PolicyAllow`] for single
        /// ports (and ICMP type and code), looked up before `POLICY_PORT`
        /// (every entry is an allow: any hit allows).
        POLICY_EXACT,
        /// Hash: elastic IP (`[u8; 4]`) -> [`crate::EipEntry`]. On the host of
        /// the bound port: translate inbound traffic to the fixed IP. On gateway
        /// hosts: steer inbound traffic to that host over the overlay.
        EIPS,
        /// Hash: [`crate::EpKey`] (routing domain, fixed IP) -> [`crate::EipOut`]:
        /// the elastic IP outbound traffic of a local port is translated to.
        EIP_OUT,
        /// Hash: routing domain -> [`crate::SnatRouter`]: the routers whose
        /// SNAT this gateway host does (each router has one such host).
        SNAT_ROUTERS,
        /// LRU hash: [`crate::NatKey`] (a VM's flow) -> [`crate::NatOut`]: the
        /// external address and port it was given.
        SNAT_OUT,
        /// LRU hash: [`crate::NatRevKey`] (the translated flow as the remote
        /// end sees it) -> [`crate::NatIn`]: the VM behind it.
        SNAT_IN,
        /// Hash: [`crate::QosKey`] (elastic IP, direction) -> [`crate::QosBucket`]:
        /// the bandwidth limit of an elastic IP in one direction.
        EIP_QOS,
        /// Program array: the XDP port pipeline's tails, by `TAIL_*` slot
        /// (e.g. [`crate::programs::PORT_OUT`] for packets leaving the VPC).
        PORT_OUT_XDP,
        /// The same for the TC build ([`crate::programs::PORT_OUT_TC`]).
        PORT_OUT_TC,
        /// `LbServiceKey` -> `LbService`: the listeners of load balancers.
        LB_SERVICES,
        /// A bit per (domain, address) hash ([`crate::lb_vip_bit`]), set for
        /// every listener's VIP: the port program looks a packet up in
        /// `LB_SERVICES` only when its destination's bit is set, so traffic
        /// that is not to a VIP pays an array read, not a hash lookup.
        LB_VIP_FILTER,
        /// Backend id -> `LbBackend`.
        LB_BACKENDS,
        /// The Maglev lookup tables of every service, back to back: backend
        /// ids (`LbService::table_off` .. `+ table_size`).
        LB_MAGLEV,
        /// `LbFlowKey` (client -> VIP) -> `LbFlow`: a connection's backend.
        LB_FLOWS,
        /// `LbFlowKey` (backend -> client, as the reply) -> `LbRev`.
        LB_REV,
        /// Per-CPU counters by service id and by backend id (`LbStats`).
        LB_SERVICE_STATS,
        LB_BACKEND_STATS,
        /// `LbPublicKey` -> `LbPublic`: the elastic IP of a public listener,
        /// by member and listener port (a member's host learns each internet
        /// connection's listener from its tunnel header, see `VXLAN_F_LB`).
        LB_PUBLIC_OUT,
        /// `LbFlowKey` (client, member) -> `LbPublic`: how a member's host
        /// translates the replies of one internet connection.
        LB_PUBLIC_FLOWS,
    ];

    /// Maps of the production object that are never pinned: each load has
    /// its own.
    PRIVATE = [
        /// Per-CPU LRU hash: [`crate::NextHopKey`] (interface, destination) ->
        /// [`crate::NextHop`]: the next hop of a tunnel (or, on gateway hosts, of
        /// the external interface) as `bpf_fib_lookup` last gave it, reused for
        /// [`NEXTHOP_TTL_NS`] (the FIB lookup is most of a tunnelled packet's
        /// cost).
        NEXTHOPS,
        /// Per-CPU array of one: the kernel programs' scratch for one run
        /// (flow, routing step, load balancer keys). Never read from user
        /// space.
        SCRATCH,
    ];

    /// Maps only the benchmark object (`strato-dataplane-bench`) has: never
    /// in what an agent loads.
    BENCH = [
        /// Array of one [`crate::BenchFrame`]: the frame the benchmark harness
        /// programs put back before each run.
        BENCH_FRAME,
        /// Hash: ifindex -> [`crate::BareTarget`], for the benchmark ceiling
        /// programs only (never written by an agent).
        BARE,
    ];
}

/// `N` names: `a` then `b`.
const fn concat<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    assert!(a.len() + b.len() == N);
    let mut out = [""; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[i + j] = b[j];
        j += 1;
    }
    out
}

const PRODUCTION_ARRAY: [&str; PINNED.len() + PRIVATE.len()] = concat(PINNED, PRIVATE);

/// Every map of the production object (`strato-dataplane`): [`PINNED`] and
/// [`PRIVATE`]. The benchmark object has these and [`BENCH`].
pub const PRODUCTION: &[&str] = &PRODUCTION_ARRAY;

/// Capacity of [`PORT_INDEX`].
pub const PORT_INDEX_MAX: u32 = 65_536;
/// Capacity of [`PORTS`]: VM ports on one host.
pub const PORTS_MAX: u32 = 4096;
/// Capacity of [`IF_STATS`]: counter slots (ports and uplinks) per host.
pub const IF_STATS_MAX: u32 = 8192;
/// Capacity of [`DROP_STATS`]: (interface, reason) pairs one host can count.
pub const DROP_STATS_MAX: u32 = 16384;
/// Capacity of [`ENDPOINTS`]: addresses in the VPCs a host serves.
pub const ENDPOINTS_MAX: u32 = 262_144;
/// Capacity of [`ROUTES`].
pub const ROUTES_MAX: u32 = 65_536;
/// Capacity of [`MACS`].
pub const MACS_MAX: u32 = 16_384;
/// Capacity of [`VNIS`].
pub const VNIS_MAX: u32 = 16_384;
/// Capacity of [`ALLOWED`].
pub const ALLOWED_MAX: u32 = 65_536;
/// Flows one host tracks by default ([`CT`]).
pub const CT_MAX_DEFAULT: u32 = 1_000_000;
/// Capacity of [`POLICY_ADDR`] (no preallocation: an LPM trie takes
/// memory per entry).
pub const POLICY_ADDR_MAX: u32 = 1 << 21;
/// Capacity of [`POLICY_HOST`] and [`POLICY_EXACT`] each. Created
/// without preallocation, but the kernel allocates a hash's bucket
/// array up front (16 bytes a bucket: 2 MiB here). Entries beyond it go
/// to the tries, which answer the same (slower).
pub const POLICY_HASH_MAX: u32 = 1 << 17;
/// Capacity of [`POLICY_PORT`].
pub const POLICY_PORT_MAX: u32 = 1 << 21;
/// Capacity of [`EIPS`].
pub const EIPS_MAX: u32 = 65_536;
/// Capacity of [`EIP_OUT`].
pub const EIP_OUT_MAX: u32 = 65_536;
/// Capacity of [`SNAT_ROUTERS`].
pub const SNAT_ROUTERS_MAX: u32 = 16_384;
/// Capacity of [`SNAT_OUT`] and [`SNAT_IN`]: translated flows per
/// gateway host.
pub const SNAT_MAX: u32 = 262_144;
/// Capacity of [`EIP_QOS`].
pub const EIP_QOS_MAX: u32 = 131_072;
/// Capacity of [`NEXTHOPS`] (per CPU).
pub const NEXTHOPS_MAX: u32 = 16_384;
/// How long a cached next hop is used before the FIB is asked again: a
/// route or neighbour change reaches tunnelled traffic within this.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;
/// Source ports of the agents' load balancer health checks (outside
/// Linux's ephemeral range): what VMs answer to.
pub const PROBE_PORT_MIN: u16 = 61_000;
pub const PROBE_PORT_MAX: u16 = 61_999;
/// Slots of the program arrays `PORT_OUT_XDP` / `PORT_OUT_TC`: a packet
/// leaving the VPC ([`crate::programs::PORT_OUT`]).
pub const TAIL_EXTERNAL: u32 = 0;
/// The load balancer's translation of a packet to a VIP.
pub const TAIL_LB: u32 = 1;
/// The port pipeline itself: a packet the load balancer translated
/// goes through it again, towards its backend.
pub const TAIL_PORT: u32 = 2;
/// Delivery of a local member's reply, translated back to the VIP.
pub const TAIL_LB_REPLY: u32 = 3;
pub const TAILS: u32 = 4;
/// Capacity of [`LB_SERVICES`].
pub const LB_SERVICES_MAX: u32 = 65_536;
/// Capacity of [`LB_BACKENDS`].
pub const LB_BACKENDS_MAX: u32 = 262_144;
/// Capacity of [`LB_MAGLEV`].
pub const LB_MAGLEV_MAX: u32 = 1 << 23;
/// Capacity of [`LB_FLOWS`], [`LB_REV`] and [`LB_PUBLIC_FLOWS`].
pub const LB_FLOWS_MAX: u32 = 524_288;
/// Capacity of [`LB_PUBLIC_OUT`].
pub const LB_PUBLIC_OUT_MAX: u32 = 65_536;
/// [`LB_VIP_FILTER`]: 2^20 bits in u64 words.
pub const LB_VIP_FILTER_WORDS: u32 = 16_384;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_their_constants_and_unique() {
        assert_eq!(PORTS, "PORTS");
        assert_eq!(LB_PUBLIC_FLOWS, "LB_PUBLIC_FLOWS");
        for (i, a) in PRODUCTION.iter().chain(BENCH).enumerate() {
            for b in PRODUCTION.iter().chain(BENCH).skip(i + 1) {
                assert_ne!(a, b, "{a} listed twice");
            }
        }
        assert_eq!(PRODUCTION.len(), PINNED.len() + PRIVATE.len());
        assert_eq!(PRODUCTION[PINNED.len()], NEXTHOPS);
    }
}
