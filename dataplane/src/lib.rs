//! The user-space side of the eBPF dataplane: the embedded kernel objects
//! and a loaded instance of one ([`Dataplane`]), in modules by concern:
//!
//! - `load`: loading with maps pinned per host (or private), tail-call
//!   arrays; `attach`: which entry point an interface gets ([`Attach`]),
//!   through pinned bpf links (forwarding survives an agent restart, a new
//!   program replaces the old one atomically) or TC clsact;
//! - typed map writes and reads per feature: `vpc` (host record, ports,
//!   the VPC maps as a [`tables::Tables`] value and its diff),
//!   [`security_groups`] (rules -> policy trie entries, policy writes,
//!   connection table), `snat`, [`lb`]; `map_access` under them;
//! - `counters` ([`Counters`]), `trace` (`stratoctl trace`), `pinned`
//!   (reads of a host's pinned maps without loading).
//!
//! Used by the agent (production), by the program-test tier (the same
//! loading code, no pinning) and by `stratoctl`. It decides nothing: what
//! to write is the agent's realisers' business.

use std::path::PathBuf;

use aya::{maps::MapError, Ebpf};

mod attach;
mod counters;
pub mod lb;
mod load;
mod map_access;
mod pinned;
pub mod security_groups;
mod snat;
pub mod tables;
mod trace;
mod vpc;

pub use attach::Attach;
pub use counters::{pinned_map_memlock, Counters};
pub use pinned::{read_pinned_ct, read_pinned_endpoint, read_pinned_policy, read_pinned_ports};
pub use security_groups::CtSummary;
pub use trace::{trace, Trace};

pub use lb::LbOps;
use load::pin_note;
pub use strato_proto::naming::PIN_ROOT;
use thiserror::Error;

/// The production object (`strato-dataplane`), built by build.rs from
/// `dataplane-ebpf`: what agents and `stratoctl` load. Its programs are
/// [`dataplane_common::programs::PRODUCTION`], its maps [`dataplane_common::maps::PRODUCTION`].
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strato-dataplane"));

/// The benchmark object (`strato-dataplane-bench`), from the same source:
/// the production programs and maps plus [`dataplane_common::programs::BENCH`] and
/// [`dataplane_common::maps::BENCH`] (floor, ceilings, harness). Benchmarks and the program
/// tests' harness only; never an agent.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strato-dataplane-bench"));

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |e| DataplaneError::Map {
        name,
        source: Box::new(e),
    }
}

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object{}: {source}", pin_note(.pin_dir))]
    Load {
        pin_dir: Option<PathBuf>,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {name} not found in the eBPF object")]
    NoProgram { name: &'static str },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to interface {iface}: {source}")]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("pinning {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A loaded instance of the dataplane object.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// This instance fills the port pipeline's program arrays (an agent, or
    /// private maps), so the pipeline itself goes into `TAIL_PORT` when it
    /// is loaded.
    owns_tails: bool,
}

/// The coarse monotonic clock the programs stamp entries with.
pub fn coarse_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod objects {
    //! The two kernel objects against the lists in `dataplane_common`: a
    //! map or program added on one side only fails here, before anything
    //! is loaded.
    use std::collections::BTreeSet;

    use dataplane_common::{maps, programs};

    use super::{BENCH_OBJECT, OBJECT};

    /// (maps, programs) of an object, by name; the compiler's data
    /// sections (`.rodata`, `.bss`, ...) are not maps of ours.
    fn contents(object: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
        let obj = aya_obj::Object::parse(object).expect("parse the eBPF object");
        let maps = obj
            .maps
            .keys()
            .filter(|m| !m.starts_with('.'))
            .cloned()
            .collect();
        let programs = obj.programs.keys().cloned().collect();
        (maps, programs)
    }

    fn set<'a>(lists: impl IntoIterator<Item = &'a [&'a str]>) -> BTreeSet<String> {
        lists.into_iter().flatten().map(|s| s.to_string()).collect()
    }

    #[test]
    fn production_object_has_exactly_the_production_maps_and_programs() {
        let (m, p) = contents(OBJECT);
        assert_eq!(m, set([maps::PRODUCTION]), "maps of strato-dataplane");
        assert_eq!(
            p,
            set([programs::PRODUCTION]),
            "programs of strato-dataplane"
        );
    }

    #[test]
    fn production_object_carries_no_benchmark_program_or_map() {
        let (m, p) = contents(OBJECT);
        for name in maps::BENCH {
            assert!(
                !m.contains(*name),
                "benchmark map {name} in the production object"
            );
        }
        for name in programs::BENCH {
            assert!(
                !p.contains(*name),
                "benchmark program {name} in the production object"
            );
        }
    }

    #[test]
    fn bench_object_is_production_plus_bench() {
        let (m, p) = contents(BENCH_OBJECT);
        assert_eq!(
            m,
            set([maps::PRODUCTION, maps::BENCH]),
            "maps of strato-dataplane-bench"
        );
        assert_eq!(
            p,
            set([programs::PRODUCTION, programs::BENCH]),
            "programs of strato-dataplane-bench"
        );
    }

    #[test]
    fn the_agent_pins_only_production_maps() {
        let production = set([maps::PRODUCTION]);
        for name in maps::PINNED {
            assert!(
                production.contains(*name),
                "{name} pinned but not in the object"
            );
        }
    }
}
