//! Builds the kernel programs (`dataplane-ebpf`) for bpfel-unknown-none with
//! aya-build (nightly + build-std) and leaves the object in OUT_DIR, where
//! `src/lib.rs` embeds them: `strato-dataplane` (production) and
//! `strato-dataplane-bench` (benchmarks and the program tests' harness).
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("dataplane has no parent directory"))?;
    let ebpf_dir = root.join("dataplane-ebpf");
    // The kernel crate also compiles dataplane-common: rebuild when it changes.
    println!(
        "cargo::rerun-if-changed={}",
        root.join("dataplane-common/src").display()
    );
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dataplane-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
