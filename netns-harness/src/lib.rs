//! The test-bed layer of Strato: it simulates a multi-AZ cloud region on one
//! Linux machine with network namespaces, and plays the hypervisor. It owns the
//! region file format ([`Topology`]), the deterministic address plan
//! ([`plan`]), every namespace, veth pair, address and route of a run, the VM
//! namespaces and their "tap" ports, fault injection (`fail`/`heal`), the
//! processes it was asked to [`Region::spawn`], and the run's state directory
//! `/run/strato/<prefix>/`. It must never touch anything outside the
//! namespaces whose names start with `<prefix>-` (no link, address or route in
//! the root namespace, no traffic to any address it did not create), never
//! program the dataplane itself (the agents own the eBPF programs, maps and
//! the host end of every VM port), and never kill a process it cannot prove
//! belongs to the run.
//!
//! # Layout of a run
//! A run is identified by a *prefix* (`[a-z][a-z0-9]{0,7}`, see
//! [`validate_prefix`]). Every namespace is `<prefix>-<node>`, where `<node>`
//! is a logical node name (`az1-c1`, `az1-fab`, `spine`, `internet`,
//! `inet-client1`, `onprem-gw`, `onprem-h1`, `vm-<name>`). Two runs with
//! different prefixes coexist; [`Region::down`] removes everything of one
//! prefix, also after a crash, from what it finds on the machine alone.
//!
//! # Using it from a test
//! ```no_run
//! use netns_harness::{Region, Topology, VmSpec};
//! let topo = Topology::default_region();
//! let region = Region::up(&topo, "t1").expect("region up");
//! let out = region.exec("az1-c1", &["ping", "-c1", "-W1", "198.18.2.1"]).expect("exec");
//! assert!(out.status.success());
//! // No static address: the VM runs a DHCP client (udhcpc).
//! let vm = region
//!     .vm_create(&VmSpec::new("vm1", "az1-c1", "tap1a2b3c4d-5e"))
//!     .expect("vm");
//! println!("{} on {}", vm.name, vm.host);
//! // Once the dataplane answers DHCP on the port:
//! let lease = region
//!     .vm_wait_lease("vm1", std::time::Duration::from_secs(10))
//!     .expect("lease");
//! println!("{} via {:?}", lease.ip, lease.router);
//! Region::down("t1").expect("down");
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod dhcp;
mod error;
mod ip;
mod netns;
pub mod plan;
mod procs;
mod region;
mod state;
mod status;
mod topology;
mod vm;

pub use dhcp::Lease;
pub use error::HarnessError;
pub use plan::{Host, HostRole, EXTERNAL_IFACE};
pub use region::{validate_prefix, DownReport, FailTarget, Region, RUN_DIR};
pub use status::{LinkEnd, LinkStatus, NamespaceStatus, Status};
pub use topology::{Az, Internet, Site, Topology, TopologyError};
pub use vm::{DhcpMode, MacAddr, Vm, VmSpec};
