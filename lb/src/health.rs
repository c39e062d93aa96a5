//! Health-check state of one member: how results in a row move it up or
//! down (Octavia's `max_retries` rise and `max_retries_down` fall). Pure;
//! the prober that sends the checks feeds it.

/// A member's health from the results of its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RiseFall {
    /// Successes in a row that bring a member up (at least 1).
    pub rise: u8,
    /// Failures in a row that take it down (at least 1).
    pub fall: u8,
    ok_run: u32,
    fail_run: u32,
    up: Option<bool>,
}

impl RiseFall {
    pub fn new(rise: u8, fall: u8) -> RiseFall {
        RiseFall {
            rise,
            fall,
            ..RiseFall::default()
        }
    }

    /// `None` until the first result: unknown, not up.
    pub fn up(&self) -> Option<bool> {
        self.up
    }

    /// Counts one result; true when the member's state changed. The first
    /// success brings a member of unknown state up at once.
    pub fn record(&mut self, ok: bool) -> bool {
        let before = self.up;
        if ok {
            self.fail_run = 0;
            self.ok_run += 1;
            if self.up.is_none() || self.ok_run >= self.rise.max(1) as u32 {
                self.up = Some(true);
            }
        } else {
            self.ok_run = 0;
            self.fail_run += 1;
            if self.fail_run >= self.fall.max(1) as u32 {
                self.up = Some(false);
            }
        }
        before != self.up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_rises_after_rise_successes_and_falls_after_fall_failures() {
        let mut h = RiseFall::new(2, 3);
        assert_eq!(h.up(), None);
        assert!(h.record(true), "the first success counts at once");
        assert_eq!(h.up(), Some(true));
        assert!(
            !h.record(false) && !h.record(false),
            "two failures are not three"
        );
        assert!(h.record(false));
        assert_eq!(h.up(), Some(false));
        assert!(!h.record(true), "one success is not two");
        assert!(!h.record(false) && !h.record(true));
        assert!(h.record(true), "two in a row");
        assert_eq!(h.up(), Some(true));
    }

    #[test]
    fn zero_thresholds_mean_one() {
        let mut h = RiseFall::new(0, 0);
        assert!(h.record(false));
        assert_eq!(h.up(), Some(false));
        assert!(h.record(true));
        assert_eq!(h.up(), Some(true));
    }
}
