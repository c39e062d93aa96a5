//! VM ports: the table the agent fills from the compiled configuration
//! (ifindex of the port's tap -> its network, MAC, address, flags). The VPC
//! pipeline (anti-spoofing, routing, encapsulation) reads it; today the
//! port program only proves the table is there.

use aya_ebpf::{macros::map, maps::HashMap};
use dataplane_common::{maps, PortInfo};

#[map(name = "PORTS")]
pub static PORTS: HashMap<u32, PortInfo> = HashMap::with_max_entries(maps::PORTS_MAX, 0);
