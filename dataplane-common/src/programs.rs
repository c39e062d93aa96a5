//! Program names: the entry-point function names in `dataplane-ebpf`, and
//! which object carries them. The production object (`strato-dataplane`,
//! what agents and `stratoctl` load) has [`PRODUCTION`]; the benchmark
//! object (`strato-dataplane-bench`, benchmarks and the program tests'
//! harness) has those and [`BENCH`].

/// XDP program attached to a host's uplink (underlay NIC).
pub const UPLINK: &str = "strato_uplink";
/// XDP program with the VM port pipeline (the host end of its veth
/// "tap"): used by `stratoctl trace`, tests and benchmarks.
pub const PORT: &str = "strato_port";
/// The same pipeline as a TC (clsact ingress) program: what agents
/// attach to VM ports.
pub const PORT_TC: &str = "strato_port_tc";
/// The XDP port pipeline that reads the connection table but never
/// writes it: what `stratoctl trace` runs over the live maps.
pub const PORT_TRACE: &str = "strato_port_trace";
/// XDP program on a gateway host's external interface: answers ARP for
/// elastic IPs and steers their traffic to the bound port's host.
pub const EXTERNAL: &str = "strato_external";
/// Tail of the XDP port pipeline (reached by tail call through
/// `PORT_OUT_XDP`, never attached): a packet leaving the VPC gets its
/// elastic IP (or goes to the router's SNAT untranslated) and is
/// tunnelled to a gateway host.
pub const PORT_OUT: &str = "strato_port_out";
/// The same tail for the TC build (`PORT_OUT_TC`).
pub const PORT_OUT_TC: &str = "strato_port_out_tc";
/// Tail of the port pipeline for packets to a load balancer VIP.
pub const PORT_LB: &str = "strato_port_lb";
pub const PORT_LB_TC: &str = "strato_port_lb_tc";
/// Tail of the port pipeline for a member's packets to local ports.
pub const PORT_LB_REPLY: &str = "strato_port_lb_reply";
pub const PORT_LB_REPLY_TC: &str = "strato_port_lb_reply_tc";

/// Reference program that only returns XDP_PASS: the floor benchmarks
/// compare every path against, and what the program tests put on veth
/// peers so redirected frames arrive. Benchmark object only.
pub const FLOOR: &str = "strato_floor";
/// Benchmark ceiling: XDP that only redirects (per `BARE`). Never
/// attached by an agent.
pub const BARE: &str = "strato_bare";
/// The same ceiling as a TC (clsact ingress) program.
pub const BARE_TC: &str = "strato_bare_tc";
/// Benchmark harness: puts `BENCH_FRAME` back into the packet, then runs
/// the port pipeline. A repeated BPF_PROG_TEST_RUN reuses one buffer,
/// and paths that rewrite the frame would otherwise time something else
/// from the second run on. Never attached.
pub const BENCH_PORT: &str = "strato_bench_port";
/// The same without the load balancer in front of the pipeline: what
/// that front check costs a packet that is not to a VIP.
pub const BENCH_PORT_PLAIN: &str = "strato_bench_port_plain";
/// The same for the uplink program.
pub const BENCH_UPLINK: &str = "strato_bench_uplink";
/// The harness's own cost: puts the frame back, passes.
pub const BENCH_RESTORE: &str = "strato_bench_restore";
/// Benchmark harness: the frame put back, then the external program.
pub const BENCH_EXTERNAL: &str = "strato_bench_external";

/// Every program of the production object.
pub const PRODUCTION: &[&str] = &[
    UPLINK,
    PORT,
    PORT_TC,
    PORT_TRACE,
    EXTERNAL,
    PORT_OUT,
    PORT_OUT_TC,
    PORT_LB,
    PORT_LB_TC,
    PORT_LB_REPLY,
    PORT_LB_REPLY_TC,
];

/// The programs only the benchmark object has (it has [`PRODUCTION`] too).
pub const BENCH: &[&str] = &[
    FLOOR,
    BARE,
    BARE_TC,
    BENCH_PORT,
    BENCH_PORT_PLAIN,
    BENCH_UPLINK,
    BENCH_RESTORE,
    BENCH_EXTERNAL,
];
