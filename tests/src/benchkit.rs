//! What every benchmark shares: timing through BPF_PROG_TEST_RUN that
//! checks the verdict of the timed runs, figures as a median with their
//! spread, comparisons that say "within noise" when the difference is
//! smaller than the spread, the targets table, and the kernel's BPF run
//! statistics (proof that a namespace row went through Strato's program).
//!
//! A check that fails is an error: the bench run stops with it (in smoke
//! mode too, which runs every path and every check with tiny counts).

use std::{
    fmt::Write as _,
    os::fd::OwnedFd,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use aya::programs::{TestRun as _, TestRunOptions};
use strato_dataplane::Attach;

use crate::progtest::{Outcome, ProgramTester, Verdict};

// ---------------------------------------------------------------------------
// Figures with their spread.

/// A set of samples summarised: median, min and max.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// Panics on no samples or a NaN (a bench bug, not a measurement).
    pub fn of(v: &[f64]) -> Stat {
        assert!(!v.is_empty(), "a figure without samples");
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN among the samples"));
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Stat {
            median,
            min: s[0],
            max: s[n - 1],
            n,
        }
    }

    /// max - min.
    pub fn spread(&self) -> f64 {
        self.max - self.min
    }

    /// "median (min-max)" with `prec` decimals; the median alone for one
    /// sample.
    pub fn fmt(&self, prec: usize) -> String {
        if self.n <= 1 || self.min == self.max {
            format!("{:.prec$}", self.median)
        } else {
            // "a-b" reads badly with a negative bound: "-45 to 35".
            let sep = if self.min < 0.0 { " to " } else { "-" };
            format!(
                "{:.prec$} ({:.prec$}{sep}{:.prec$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// Element-wise `f(a[i], b[i])` of samples taken in the same rounds
/// (interleaved): the per-round differences or ratios, whose spread is the
/// spread of the comparison.
pub fn paired(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    assert_eq!(a.len(), b.len(), "paired samples of unequal rounds");
    a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect()
}

/// Per-round ratios a / b (b floored at a tiny positive value).
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    paired(a, b, |x, y| x / y.max(1e-9))
}

/// Whether differences taken per round are smaller than their spread
/// over the rounds: |median| <= max - min (then the difference is not a
/// result). Rounds run interleaved, so a slow stretch of the machine moves
/// both rows of a round alike and the per-round difference keeps only
/// what the rows do differently.
pub fn noise(differences: &[f64]) -> bool {
    let d = Stat::of(differences);
    d.median.abs() <= d.spread()
}

/// Whether A and B, sampled in the same rounds, differ by less than the
/// spread of their per-round differences.
pub fn within_noise(a: &[f64], b: &[f64]) -> bool {
    noise(&paired(a, b, |x, y| x - y))
}

/// "1.23 (1.20-1.26)" for per-round ratios of A over B, or the same
/// followed by ", within noise" when A and B differ by less than the
/// spread of their per-round differences (then the ratio says nothing).
pub fn ratio_text(a: &[f64], b: &[f64]) -> String {
    if a == b {
        // The reference row against itself.
        return "1.00".into();
    }
    let r = Stat::of(&ratios(a, b));
    let t = r.fmt(2);
    if within_noise(a, b) {
        format!("{t}, within noise")
    } else {
        t
    }
}

// ---------------------------------------------------------------------------
// Targets.

/// What a target asks of a figure.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
    /// A ratio between the two (flat: e.g. 0.9 ..= 1.1).
    Between(f64, f64),
}

impl Bound {
    /// The values that meet it, as a closed interval.
    fn interval(self) -> (f64, f64) {
        match self {
            Bound::AtMost(b) => (f64::NEG_INFINITY, b),
            Bound::AtLeast(b) => (b, f64::INFINITY),
            Bound::Between(lo, hi) => (lo, hi),
        }
    }
}

struct TargetRow {
    table: String,
    target: String,
    measured: String,
    outcome: &'static str,
}

static TARGETS: Mutex<Vec<TargetRow>> = Mutex::new(Vec::new());

/// Records a target and how the figure compares: **met** when the whole
/// spread (min-max) meets it, **missed** when none of it does, otherwise
/// "within noise of the target".
pub fn target(table: &str, target: &str, bound: Bound, measured: &Stat, prec: usize, unit: &str) {
    let (lo, hi) = bound.interval();
    let outcome = if measured.min >= lo && measured.max <= hi {
        "met"
    } else if measured.max < lo || measured.min > hi {
        "**missed**"
    } else {
        "within noise of the target"
    };
    TARGETS.lock().expect("targets").push(TargetRow {
        table: table.into(),
        target: target.into(),
        measured: format!("{}{unit}", measured.fmt(prec)),
        outcome,
    });
}

/// The targets table of everything recorded so far (and forgets them).
pub fn targets_table(out: &mut String) -> std::fmt::Result {
    let rows = std::mem::take(&mut *TARGETS.lock().expect("targets"));
    writeln!(out, "### Targets\n")?;
    writeln!(out, "Each target as docs/benchmarks.md states it, the figure of this run (median, min-max over the rounds) and the outcome: met when the whole spread meets it, missed when the whole spread misses it, otherwise within noise of the target.\n")?;
    writeln!(out, "| table | target | measured | outcome |")?;
    writeln!(out, "| --- | --- | ---: | --- |")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.table, r.target, r.measured, r.outcome
        )?;
    }
    writeln!(out)
}

// ---------------------------------------------------------------------------
// Checked runs through BPF_PROG_TEST_RUN.

/// `struct xdp_md` for BPF_PROG_TEST_RUN (as `progtest` builds it).
fn xdp_md(ingress: u32, len: usize) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress.to_ne_bytes());
    ctx
}

/// ns per packet over `repeat` runs (the kernel's own timing), and an
/// error unless the runs returned `want` (BPF_PROG_TEST_RUN reports the
/// last repetition's verdict: a path that changes verdict after the first
/// run, as a rewritten frame would, is caught).
pub fn time_checked(
    t: &mut ProgramTester,
    attach: Attach,
    ingress: u32,
    frame: &[u8],
    repeat: u32,
    want: Verdict,
    what: &str,
) -> anyhow::Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = xdp_md(ingress, frame.len());
    let prog = t.dataplane().program(attach);
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: (ingress != 0).then_some(&ctx[..]),
            repeat,
            ..Default::default()
        })
        .with_context(|| format!("{what}: BPF_PROG_TEST_RUN"))?;
    let got = Verdict::from_code(r.return_value);
    ensure!(
        got == Some(want),
        "{what}: the timed runs returned {:?} (code {}), the path's verdict is {want:?}",
        got,
        r.return_value
    );
    Ok(r.duration.as_nanos() as f64)
}

/// One un-timed run of the frame (fresh counters, the output kept), and an
/// error unless its verdict is `want`: run before timing a path, so the
/// figure is the path the row names.
pub fn run_checked(
    t: &mut ProgramTester,
    attach: Attach,
    ingress: u32,
    frame: &[u8],
    want: Verdict,
    what: &str,
) -> anyhow::Result<Outcome> {
    let o = t
        .try_run(attach, ingress, frame)
        .map_err(|e| anyhow::anyhow!("{what}: BPF_PROG_TEST_RUN: {e}"))?;
    ensure!(
        o.verdict == want,
        "{what}: verdict {:?}, the path's is {want:?} (counters moved: {:?})",
        o.verdict,
        o.counters
    );
    Ok(o)
}

/// The outer destination of a VXLAN frame (Ethernet + IPv4 + UDP 4789),
/// and its inner frame; an error unless the output is one.
pub fn vxlan_parts(what: &str, frame: &[u8]) -> anyhow::Result<([u8; 4], Vec<u8>)> {
    ensure!(
        frame.len() > 50 + 14
            && frame[12..14] == [0x08, 0x00]
            && frame[23] == 17
            && frame[36..38] == 4789u16.to_be_bytes(),
        "{what}: the output is not a VXLAN frame: {}",
        crate::progtest::hex(frame)
    );
    Ok((frame[30..34].try_into().expect("4"), frame[50..].to_vec()))
}

// ---------------------------------------------------------------------------
// The kernel's BPF run statistics.

/// Keeps the kernel's BPF run-time statistics on while held
/// (BPF_ENABLE_STATS: reference-counted, so other users of the machine are
/// not disturbed, and off again when dropped, also on an error).
pub struct BpfStats(#[allow(dead_code)] OwnedFd);

impl BpfStats {
    pub fn enable() -> anyhow::Result<BpfStats> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (the kernel's BPF run statistics)")?;
        Ok(BpfStats(fd))
    }
}

/// Runs and run time of a BPF program so far (needs [`BpfStats`] held
/// while the traffic runs). Missing fields are an error, never 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgRuns {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl std::ops::Sub for ProgRuns {
    type Output = ProgRuns;
    fn sub(self, o: ProgRuns) -> ProgRuns {
        ProgRuns {
            run_cnt: self.run_cnt.saturating_sub(o.run_cnt),
            run_time_ns: self.run_time_ns.saturating_sub(o.run_time_ns),
        }
    }
}

pub fn prog_runs(id: u64) -> anyhow::Result<ProgRuns> {
    let o = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .context("bpftool")?;
    ensure!(
        o.status.success(),
        "bpftool prog show id {id}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("bpftool JSON")?;
    // bpftool leaves both fields out while the run time is 0 (no run
    // since the statistics went on): that is 0 runs, and the callers'
    // checks (runs > 0) fail on it.
    let field = |k: &str| -> anyhow::Result<u64> {
        match v.get(k) {
            None => Ok(0),
            Some(x) => x
                .as_u64()
                .with_context(|| format!("program {id}: {k} is not a count: {v}")),
        }
    };
    ensure!(
        v["id"].as_u64() == Some(id),
        "bpftool prog show id {id}: another answer: {v}"
    );
    Ok(ProgRuns {
        run_cnt: field("run_cnt")?,
        run_time_ns: field("run_time_ns")?,
    })
}

/// Sum of the runs of several programs.
pub fn progs_runs(ids: &[u64]) -> anyhow::Result<ProgRuns> {
    ids.iter().try_fold(ProgRuns::default(), |acc, id| {
        let r = prog_runs(*id)?;
        Ok(ProgRuns {
            run_cnt: acc.run_cnt + r.run_cnt,
            run_time_ns: acc.run_time_ns + r.run_time_ns,
        })
    })
}

/// The XDP program attached to `dev` (in the namespace `ip` runs in:
/// `ip_prefix` is e.g. `["ip", "netns", "exec", ns]`), and an error unless
/// it is attached in driver (native) mode: a generic-mode program would
/// make an "XDP" row a row of the kernel's skb path.
pub fn xdp_native_prog(ip_prefix: &[&str], dev: &str) -> anyhow::Result<u64> {
    let mut argv: Vec<&str> = ip_prefix.to_vec();
    argv.extend(["ip", "-j", "-d", "link", "show", "dev", dev]);
    let o = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .context("ip link show")?;
    ensure!(
        o.status.success(),
        "{}: {}",
        argv.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("ip JSON")?;
    let xdp = &v[0]["xdp"];
    // XDP_ATTACHED_DRV = 1 (2: generic/skb, 3: hardware).
    ensure!(
        xdp["mode"].as_u64() == Some(1),
        "{dev}: no XDP program in driver mode: {xdp}"
    );
    xdp["prog"]["id"]
        .as_u64()
        .with_context(|| format!("{dev}: XDP program without an id: {xdp}"))
}

/// How a program bench (BPF_PROG_TEST_RUN) runs.
pub struct ProgramRuns {
    /// Rounds per pass, every row once per round (interleaved).
    pub rounds: usize,
    /// Packets per timed run.
    pub repeat: u32,
    /// Passes over the sizes or configurations (they alternate).
    pub passes: usize,
    /// Tiny sizes, no figures.
    pub smoke: bool,
}

/// Runs `f` on a thread inside network namespace `ns`, keeping what it
/// returns alive until `done` is signalled (programs attached without pins
/// live as long as their `Dataplane`).
pub fn hold_in_netns(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<strato_dataplane::Dataplane> + Send + 'static,
) -> anyhow::Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let path = std::path::Path::new("/run/netns").join(ns);
    let h = std::thread::spawn(move || {
        let r = (|| -> anyhow::Result<strato_dataplane::Dataplane> {
            let file = std::fs::File::open(&path).context("netns")?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        })();
        match r {
            Ok(dp) => {
                let _ = ready_tx.send(Ok(()));
                let _ = done_rx.recv();
                drop(dp);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx.recv().context("the thread in the namespace")??;
    Ok((done_tx, h))
}

/// The BPF program on `dev`'s TC ingress: a netlink filter (as agents
/// attach) or a TCX link.
pub fn tc_ingress_prog(ip_prefix: &[&str], dev: &str) -> anyhow::Result<u64> {
    let run = |tail: &[&str]| -> anyhow::Result<serde_json::Value> {
        let mut argv: Vec<&str> = ip_prefix.to_vec();
        argv.extend(tail);
        let o = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .with_context(|| argv.join(" "))?;
        ensure!(
            o.status.success(),
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).with_context(|| format!("{}: JSON", argv.join(" ")))
    };
    let filters = run(&["tc", "-j", "filter", "show", "dev", dev, "ingress"])?;
    if let Some(id) = filters
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|f| f["options"]["prog"]["id"].as_u64())
    {
        return Ok(id);
    }
    // bpftool lists TCX links too: [{"tc": [{"kind": "tcx/ingress", "prog_id": ..}]}].
    let net = run(&["bpftool", "-j", "net", "show", "dev", dev])?;
    net.as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["tc"].as_array().into_iter().flatten())
        .find(|t| t["kind"].as_str().is_some_and(|k| k.ends_with("ingress")))
        .and_then(|t| t["prog_id"].as_u64())
        .with_context(|| format!("no BPF program on {dev}'s TC ingress: {filters} / {net}"))
}

// ---------------------------------------------------------------------------
// Waiting.

/// Polls `f` until it answers `Some`, up to `limit`; the last error
/// otherwise.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let t0 = Instant::now();
    loop {
        let r = f();
        match r {
            Ok(Some(v)) => return Ok(v),
            Ok(None) if t0.elapsed() > limit => bail!("{what}: not within {limit:?}"),
            Err(e) if t0.elapsed() > limit => {
                return Err(e.context(format!("{what}: not within {limit:?}")))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

// ---------------------------------------------------------------------------
// The hand-written prose around the results block.

/// The markers of the generated results block in docs/benchmarks.md.
pub const BLOCK_BEGIN: &str = "<!-- bench:begin -->";
pub const BLOCK_END: &str = "<!-- bench:end -->";

/// The figures of a text: numbers not part of a name (`IPv4`, `802.1Q`,
/// `5xx` are names; `1.2x`, `10,000`, `0.5` are figures).
pub fn figures(text: &str) -> std::collections::BTreeSet<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = std::collections::BTreeSet::new();
    let mut i = 0;
    while i < c.len() {
        let starts = c[i].is_ascii_digit()
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_' || c[i - 1] == '.'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < c.len()
            && (c[j].is_ascii_digit()
                || ((c[j] == ',' || c[j] == '.') && j + 1 < c.len() && c[j + 1].is_ascii_digit()))
        {
            j += 1;
        }
        // A letter right after makes it a name, but for a ratio's lone x.
        let ratio_x = c.get(j) == Some(&'x') && !c.get(j + 1).is_some_and(|n| n.is_alphanumeric());
        let name = c.get(j).is_some_and(|n| n.is_alphabetic() || *n == '_') && !ratio_x;
        if !name {
            out.insert(c[i..j].iter().collect());
        }
        i = j;
    }
    out
}

/// Figures of the prose of `doc` (everything outside the results block)
/// that the block does not contain: the prose must refer to the block's
/// tables instead of stating figures of its own.
pub fn prose_figures_not_in_block(doc: &str) -> anyhow::Result<Vec<String>> {
    let (Some(i), Some(j)) = (doc.find(BLOCK_BEGIN), doc.find(BLOCK_END)) else {
        bail!("no {BLOCK_BEGIN} ... {BLOCK_END} block");
    };
    ensure!(i < j, "{BLOCK_END} before {BLOCK_BEGIN}");
    let block = figures(&doc[i..j]);
    let prose = format!("{}\n{}", &doc[..i], &doc[j..]);
    Ok(figures(&prose)
        .into_iter()
        .filter(|f| !block.contains(f))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_and_spread() {
        let s = Stat::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stat::of(&[1.0, 3.0]).median, 2.0);
        assert_eq!(s.fmt(0), "2 (1-3)");
        assert_eq!(Stat::of(&[5.0]).fmt(1), "5.0");
        assert_eq!(Stat::of(&[-45.0, 16.0, 35.0]).fmt(0), "16 (-45 to 35)");
    }

    #[test]
    fn a_difference_smaller_than_the_spread_is_noise() {
        // Differences -4, 12, -12: the spread (24) exceeds the median (4).
        assert!(ratio_text(&[100.0, 110.0, 90.0], &[104.0, 98.0, 102.0]).ends_with("within noise"));
        // Differences 100, 105: a result.
        assert_eq!(ratio_text(&[200.0, 210.0], &[100.0, 105.0]), "2.00");
        // The machine slowed down in the second round, for both rows alike.
        assert_eq!(ratio_text(&[110.0, 220.0], &[100.0, 200.0]), "1.10");
    }

    #[test]
    fn figures_are_numbers_not_names() {
        let f =
            figures("IPv4 and 802.1Q, 5xx, 10,000 rules, 1.2x, 0.5 ms, 64-byte, v2.0, `repeat` 1.");
        let want: Vec<&str> = vec!["1", "1.2", "10,000", "64", "0.5"];
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(f.into_iter().collect::<Vec<_>>(), want);
        let doc = format!("about 160 ns; 2 cores\n{BLOCK_BEGIN}\n| 2 | 253 |\n{BLOCK_END}\n");
        assert_eq!(
            prose_figures_not_in_block(&doc).unwrap(),
            vec!["160".to_string()]
        );
    }

    #[test]
    fn a_spread_across_a_band_is_not_a_miss() {
        let _guard = TEST_TARGETS.lock().unwrap();
        let _ = std::mem::take(&mut *TARGETS.lock().unwrap());
        target(
            "u",
            "e",
            Bound::Between(0.9, 1.1),
            &Stat::of(&[0.7, 1.4]),
            2,
            "x",
        );
        target(
            "u",
            "f",
            Bound::Between(0.9, 1.1),
            &Stat::of(&[1.2, 1.4]),
            2,
            "x",
        );
        let mut s = String::new();
        targets_table(&mut s).unwrap();
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("| u |")).collect();
        assert!(lines[0].ends_with("| within noise of the target |"), "{s}");
        assert!(lines[1].ends_with("| **missed** |"), "{s}");
    }

    /// The tests of the targets table share it.
    static TEST_TARGETS: Mutex<()> = Mutex::new(());

    #[test]
    fn targets_say_met_missed_or_within_noise() {
        let _guard = TEST_TARGETS.lock().unwrap();
        let _ = std::mem::take(&mut *TARGETS.lock().unwrap());
        target(
            "t",
            "a",
            Bound::AtMost(10.0),
            &Stat::of(&[8.0, 9.0]),
            0,
            " ns",
        );
        target(
            "t",
            "b",
            Bound::AtMost(10.0),
            &Stat::of(&[11.0, 12.0]),
            0,
            " ns",
        );
        target(
            "t",
            "c",
            Bound::AtMost(10.0),
            &Stat::of(&[9.0, 11.0]),
            0,
            " ns",
        );
        target(
            "t",
            "d",
            Bound::Between(0.9, 1.1),
            &Stat::of(&[1.0]),
            2,
            "x",
        );
        let mut s = String::new();
        targets_table(&mut s).unwrap();
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("| t |")).collect();
        assert!(lines[0].ends_with("| met |"), "{s}");
        assert!(lines[1].ends_with("| **missed** |"), "{s}");
        assert!(lines[2].ends_with("| within noise of the target |"), "{s}");
        assert!(lines[3].ends_with("| met |"), "{s}");
    }
}
