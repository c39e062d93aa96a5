//! The host record: underlay address, uplink, and on gateway hosts the
//! external interface (`HOST[0]`, written by the agent).

use aya_ebpf::{macros::map, maps::Array};
use dataplane_common::HostInfo;

#[map]
pub static HOST: Array<HostInfo> = Array::with_max_entries(1, 0);
