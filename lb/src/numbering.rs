//! Numbers and ranges handed out to load-balancing objects and given back:
//! the dense ids the dataplane indexes (services, backends) and the ranges
//! of the shared Maglev array each table occupies. Pure bookkeeping; the
//! caller decides when a number may be given back (after its connections
//! drained).

use std::collections::BTreeMap;

/// Dense ids `1..max`, reused last-freed-first (0 is never handed out: the
/// dataplane reads it as "none").
#[derive(Clone, Debug)]
pub struct Ids {
    next: u32,
    max: u32,
    free: Vec<u32>,
}

impl Ids {
    pub fn new(max: u32) -> Ids {
        Ids {
            next: 1,
            max,
            free: Vec::new(),
        }
    }

    /// A free id; `None` when all `1..max` are taken.
    pub fn take(&mut self) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        if self.next >= self.max {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    /// Gives `i` back for reuse.
    pub fn give(&mut self, i: u32) {
        self.free.push(i);
    }
}

/// First-fit ranges of one array of `total` slots, merged with their free
/// neighbours when given back.
#[derive(Clone, Debug)]
pub struct Ranges {
    /// offset -> length, non-overlapping, not adjacent.
    free: BTreeMap<u32, u32>,
}

impl Ranges {
    pub fn new(total: u32) -> Ranges {
        Ranges {
            free: BTreeMap::from([(0, total)]),
        }
    }

    /// The offset of `len` free slots, now taken; `None` when no free run
    /// is that long.
    pub fn take(&mut self, len: u32) -> Option<u32> {
        let (&off, &have) = self.free.iter().find(|(_, &l)| l >= len)?;
        self.free.remove(&off);
        if have > len {
            self.free.insert(off + len, have - len);
        }
        Some(off)
    }

    /// Gives back `len` slots at `off`.
    pub fn give(&mut self, off: u32, len: u32) {
        let mut off = off;
        let mut len = len;
        if let Some((&p, &pl)) = self.free.range(..off).next_back() {
            if p + pl == off {
                self.free.remove(&p);
                off = p;
                len += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(off + len)) {
            self.free.remove(&(off + len));
            len += nl;
        }
        self.free.insert(off, len);
    }

    /// The free runs, (offset, length) by offset.
    pub fn free_runs(&self) -> Vec<(u32, u32)> {
        self.free.iter().map(|(o, l)| (*o, *l)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_stop_at_max_and_are_reused() {
        let mut ids = Ids::new(4);
        assert_eq!(
            [ids.take(), ids.take(), ids.take()],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(ids.take(), None, "only 1..max");
        ids.give(2);
        assert_eq!(ids.take(), Some(2));
        assert_eq!(ids.take(), None);
    }

    #[test]
    fn ranges_are_first_fit_and_merge_when_given_back() {
        let mut r = Ranges::new(100);
        let a = r.take(30).unwrap();
        let b = r.take(30).unwrap();
        let c = r.take(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(r.take(11), None, "10 left");
        r.give(b, 30);
        assert_eq!(r.free_runs(), [(30, 30), (90, 10)]);
        // Giving back the neighbours merges everything into one run.
        r.give(a, 30);
        r.give(c, 30);
        assert_eq!(r.free_runs(), [(0, 100)]);
        assert_eq!(r.take(100), Some(0));
    }
}
