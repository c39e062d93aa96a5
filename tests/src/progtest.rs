//! Program-test tier: runs fixture rows through the real eBPF object with
//! BPF_PROG_TEST_RUN (aya `TestRun`), in the style of Katran's test tables.
//!
//! A row is data: description, input frame, expected verdict, expected output
//! bytes and expected counters. A new behaviour is a new row, not new code.
//! The object is loaded by the same `Dataplane::load` the agent uses, without
//! pinning, so rows never touch a host's live maps.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions};
use dataplane_common::{DropReason, DropStats, IfStats};
use strato::dataplane::{Attach, Counters, Dataplane};

/// BPF_PROG_TEST_RUN without a context runs the program as if the frame came
/// in on the loopback device of the caller's namespace.
pub const TEST_IFINDEX: u32 = 1;

/// The shortest frame the kernel hands to XDP (an Ethernet header).
pub const MIN_FRAME: usize = 14;

/// XDP verdicts (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub fn from_code(code: u32) -> Option<Verdict> {
        Some(match code {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            _ => return None,
        })
    }
}

/// How a passed frame was classified (which `IfStats` class counter moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Ipv4,
    Ipv6,
    Arp,
    Other,
}

/// What a row expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Passed unchanged, counted in this class.
    Pass(Class),
    /// Dropped and counted with this reason.
    Drop(DropReason),
}

/// One fixture row.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub description: String,
    pub attach: Attach,
    pub input: Vec<u8>,
    pub expect: Expect,
    /// Expected output frame; `None` means "the input, unchanged".
    pub output: Option<Vec<u8>>,
}

impl Fixture {
    pub fn new(description: impl Into<String>, input: Vec<u8>, expect: Expect) -> Fixture {
        Fixture {
            description: description.into(),
            attach: Attach::Uplink,
            input,
            expect,
            output: None,
        }
    }

    pub fn on(mut self, attach: Attach) -> Fixture {
        self.attach = attach;
        self
    }
}

/// What one run produced.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub output: Vec<u8>,
    pub counters: Counters,
}

/// Loads the object once and runs rows against it.
pub struct ProgramTester {
    dp: Dataplane,
}

impl ProgramTester {
    /// Loads the real object. Needs root (CAP_BPF + CAP_NET_ADMIN): the
    /// program-test tier is privileged and says so instead of skipping.
    pub fn new() -> ProgramTester {
        crate::require_root("program tests (BPF_PROG_TEST_RUN)");
        let dp =
            Dataplane::load(None).unwrap_or_else(|e| panic!("loading the dataplane object: {e:#}"));
        ProgramTester { dp }
    }

    /// Runs one frame through an entry point with fresh counters.
    pub fn run(&mut self, attach: Attach, input: &[u8]) -> Outcome {
        self.try_run(attach, input)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} byte frame: {e}", input.len()))
    }

    /// As [`run`](Self::run), but returns the kernel's refusal instead of panicking.
    pub fn try_run(
        &mut self,
        attach: Attach,
        input: &[u8],
    ) -> Result<Outcome, aya::programs::ProgramError> {
        self.dp.reset_counters().expect("reset counters");
        // Room for programs that grow the frame (encapsulation) later.
        let mut out = vec![0u8; input.len() + 256];
        let result = {
            let prog = self.dp.program(attach);
            let opts = TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            };
            prog.test_run(opts)?
        };
        out.truncate(result.data_size_out as usize);
        let verdict = Verdict::from_code(result.return_value).unwrap_or_else(|| {
            panic!(
                "program returned {} which is not an XDP action",
                result.return_value
            )
        });
        let counters = self.dp.counters().expect("read counters");
        Ok(Outcome {
            verdict,
            output: out,
            counters,
        })
    }

    /// Runs a row and panics with the row's description and every mismatch.
    ///
    /// Frames shorter than an Ethernet header cannot reach an XDP program:
    /// the kernel refuses them (BPF_PROG_TEST_RUN answers EINVAL, and packet
    /// injection checks the link-layer header length). For such rows the
    /// test asserts that refusal, and the row must expect TruncatedEthernet
    /// (the program still checks it, as defence in depth).
    pub fn check(&mut self, f: &Fixture) {
        if f.input.len() < MIN_FRAME {
            assert_eq!(
                f.expect,
                Expect::Drop(DropReason::TruncatedEthernet),
                "fixture '{}'",
                f.description
            );
            assert!(
                self.try_run(f.attach, &f.input).is_err(),
                "fixture '{}': kernel ran a {}-byte frame",
                f.description,
                f.input.len()
            );
            return;
        }
        let o = self.run(f.attach, &f.input);
        let mut problems = Vec::new();
        let len = f.input.len() as u64;
        let stats = o
            .counters
            .interfaces
            .get(&TEST_IFINDEX)
            .copied()
            .unwrap_or_default();
        if stats.rx_packets != 1 || stats.rx_bytes != len {
            problems.push(format!(
                "rx counters {}/{} bytes, want 1/{len}",
                stats.rx_packets, stats.rx_bytes
            ));
        }
        match &f.expect {
            Expect::Pass(class) => {
                if o.verdict != Verdict::Pass {
                    problems.push(format!("verdict {:?}, want Pass", o.verdict));
                }
                let want_out = f.output.as_ref().unwrap_or(&f.input);
                if &o.output != want_out {
                    problems.push(format!(
                        "output differs:\n  got  {}\n  want {}",
                        hex(&o.output),
                        hex(want_out)
                    ));
                }
                let mut want = IfStats {
                    rx_packets: 1,
                    rx_bytes: len,
                    passed: 1,
                    ..Default::default()
                };
                match class {
                    Class::Ipv4 => want.ipv4 = 1,
                    Class::Ipv6 => want.ipv6 = 1,
                    Class::Arp => want.arp = 1,
                    Class::Other => want.other = 1,
                }
                if stats != want {
                    problems.push(format!("interface counters {stats:?}, want {want:?}"));
                }
                if !o.counters.drops.is_empty() {
                    problems.push(format!("drop counters moved: {:?}", o.counters.drops));
                }
            }
            Expect::Drop(reason) => {
                if o.verdict != Verdict::Drop {
                    problems.push(format!(
                        "verdict {:?}, want Drop ({})",
                        o.verdict,
                        reason.label()
                    ));
                }
                if stats.dropped != 1 || stats.passed != 0 {
                    problems.push(format!(
                        "interface counters {stats:?}, want dropped=1 passed=0"
                    ));
                }
                let want = [(
                    (TEST_IFINDEX, *reason),
                    DropStats {
                        packets: 1,
                        bytes: len,
                    },
                )];
                let got: Vec<_> = o.counters.drops.iter().map(|(k, v)| (*k, *v)).collect();
                if got != want {
                    let got: Vec<_> = got
                        .iter()
                        .map(|((_, r), s)| format!("{}={}", r.label(), s.packets))
                        .collect();
                    problems.push(format!(
                        "drop counters [{}], want [{}=1]",
                        got.join(", "),
                        reason.label()
                    ));
                }
            }
        }
        if !problems.is_empty() {
            panic!(
                "fixture '{}' ({} bytes: {}):\n  - {}",
                f.description,
                f.input.len(),
                hex(&f.input[..f.input.len().min(64)]),
                problems.join("\n  - ")
            );
        }
    }

    /// Mean time per packet over `repeat` runs inside the kernel (the
    /// benchmark primitive: BPF_PROG_TEST_RUN's own duration).
    pub fn time(&mut self, attach: Attach, input: &[u8], repeat: u32) -> Duration {
        let mut out = vec![0u8; input.len() + 256];
        let prog = self.dp.program(attach);
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").duration
    }
}

impl Default for ProgramTester {
    fn default() -> Self {
        ProgramTester::new()
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}
