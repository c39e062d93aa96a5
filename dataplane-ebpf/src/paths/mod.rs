//! Layer 4, paths: what happens to a frame at each attach point, putting
//! `net` and the features together. `port`: a frame a VM sent (and the
//! port pipeline's tails); `uplink`: a frame from the underlay; `external`:
//! a frame on a gateway host's external interface.
//!
//! May import: `base`, `net`, `features`.
//! Must never: hold a table of its own, or be imported by a lower layer;
//! a path does not import another path.

pub mod external;
pub mod port;
pub mod uplink;
