//! Strato's test tiers beyond unit tests, as a library the test targets in
//! `tests/tests/` share:
//! - [`progtest`]: program tests, fixture rows run through the real eBPF
//!   object with BPF_PROG_TEST_RUN;
//! - [`packets`]: frame builders for fixtures and benchmarks.
//!
//! End-to-end tests drive the real binaries in the namespace harness
//! (`netns-harness`); nothing in this crate mocks a component.

pub mod benchcp;
pub mod benchkit;
pub mod benchl7;
pub mod benchlb;
pub mod benchnat;
pub mod benchsg;
pub mod benchvpc;
pub mod e2e;
pub mod layout;
pub mod packets;
pub mod progtest;

/// Panics with a clear message unless running as root: privileged tiers
/// (program tests, end-to-end) never skip silently.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!("{what} need root (CAP_BPF, CAP_NET_ADMIN): run `make test` as root");
    }
}
