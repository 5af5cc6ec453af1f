//! Remaining-listener and remaining-dependency counts, 16 bits each.
//!
//! Propagation decrements a count for every edge it follows and `compile` resets every count, so
//! at a million nodes their size is memory traffic: 4 bytes a node instead of 8 made a run of the
//! 1e6 fan-out benchmark about 20% faster (README, "Benchmarks").
//!
//! A count is `field + excess`: `field` is the 16-bit part the hot loop decrements and tests for
//! zero, and `excess` sits in a side table ([`Excess`]), nonzero only for a count that does not fit:
//!
//! * **Above `i16::MAX`** (a node with over 32,767 listeners, as the root of a wide fan-out has):
//!   the field holds `i16::MAX` and the table the rest. Such a node is flagged wide, and when its
//!   field reaches zero it is refilled from the table ([`Excess::refill`]), so propagation sees a
//!   zero only when the whole count is zero. The hot loop pays one flag test per zero for this.
//! * **Below zero.** A count only goes negative when a node is stored more often than once, which
//!   takes a store from outside the drain (`set_value` on a node already set), a count set from
//!   outside, or a node added after `compile`. The hot loop does not test for it; the graph
//!   instead counts those stores and switches the run to checked arithmetic
//!   ([`Excess::take_one`]) before any field could fall below `i16::MIN` (see
//!   [`crate::graph::Graph`]'s `unchecked_stores_left`).

use crate::id::NodeId;

/// A node's two counts, side by side: propagation touches both for neighbouring nodes, and
/// `compile` resets them all with one copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub listeners: i16,
    pub dependencies: i16,
}

/// Which of a node's two counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Which {
    Listeners,
    Dependencies,
}

impl Counts {
    pub fn field_mut(&mut self, which: Which) -> &mut i16 {
        match which {
            Which::Listeners => &mut self.listeners,
            Which::Dependencies => &mut self.dependencies,
        }
    }

    pub fn field(&self, which: Which) -> i16 {
        match which {
            Which::Listeners => self.listeners,
            Which::Dependencies => self.dependencies,
        }
    }
}

/// Splits a count into the part its field holds and the excess: all of it when it fits.
pub(crate) fn split(count: i64) -> (i16, i64) {
    let field = count.clamp(i16::MIN.into(), i16::MAX.into()) as i16;
    (field, count - i64::from(field))
}

/// The parts of counts that do not fit their fields. Usually empty, and never more than a few
/// entries outside checked runs, so a sorted list: lookups are a binary search, and the refill,
/// inlined into the hot loop, a plain scan with no hashing and no call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Excess(Vec<(u64, i64)>);

fn key(id: NodeId, which: Which) -> u64 {
    (u64::from(id) << 1) | which as u64
}

impl Excess {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.iter().all(|&(_, excess)| excess == 0)
    }

    #[inline(always)]
    fn find(&self, id: NodeId, which: Which) -> Result<usize, usize> {
        let key = key(id, which);
        self.0.binary_search_by_key(&key, |&(k, _)| k)
    }

    /// The whole count whose field is `field`.
    pub fn count(&self, field: i16, id: NodeId, which: Which) -> i64 {
        let excess = match self.find(id, which) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        };
        i64::from(field) + excess
    }

    /// Sets a count to `count`; returns whether it is wide (above what its field holds).
    pub fn set(&mut self, field: &mut i16, id: NodeId, which: Which, count: i64) -> bool {
        let (part, excess) = split(count);
        *field = part;
        if excess == 0 && self.0.is_empty() {
            return false;
        }
        match (self.find(id, which), excess) {
            (Ok(i), 0) => {
                self.0.remove(i);
            }
            (Ok(i), _) => self.0[i].1 = excess,
            (Err(_), 0) => {}
            (Err(i), _) => self.0.insert(i, (key(id, which), excess)),
        }
        excess > 0
    }

    /// Adds one to a count (an edge added to the graph); returns whether it is now wide.
    pub fn add_one(&mut self, field: &mut i16, id: NodeId, which: Which) -> bool {
        match field.checked_add(1) {
            Some(more) if self.0.is_empty() => {
                *field = more;
                false
            }
            _ => {
                let count = self.count(*field, id, which) + 1;
                self.set(field, id, which, count)
            }
        }
    }

    /// A wide count's field reached zero: moves the next part of the excess into it. Returns
    /// whether the whole count is zero. Inlined into the hot loop (a call there costs it
    /// registers), so a plain scan: outside checked runs the list holds only wide counts, a few.
    #[inline(always)]
    pub fn refill(&mut self, field: &mut i16, id: NodeId, which: Which) -> bool {
        debug_assert_eq!(*field, 0);
        let key = key(id, which);
        let Some((_, excess)) = self.0.iter_mut().find(|(k, _)| *k == key) else {
            return true;
        };
        let part = (*excess).clamp(0, i16::MAX.into());
        *field = part as i16;
        *excess -= part;
        part == 0
    }

    /// Takes one from a count exactly, whatever its size; returns whether it reached zero. The
    /// checked counterpart of the hot loop's `field -= 1; field == 0`.
    #[inline(never)]
    pub fn take_one(&mut self, field: &mut i16, id: NodeId, which: Which) -> bool {
        let count = self.count(*field, id, which) - 1;
        self.set(field, id, which, count);
        count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Which = Which::Listeners;

    #[test]
    fn counts_that_fit_stay_in_their_field() {
        let mut excess = Excess::default();
        let mut field = 0;
        for count in [0, 1, -1, 32_767, -32_768] {
            assert!(!excess.set(&mut field, 3, L, count));
            assert_eq!(i64::from(field), count);
            assert!(excess.is_empty());
        }
    }

    #[test]
    fn a_wide_count_is_refilled_until_it_is_really_zero() {
        let mut excess = Excess::default();
        let mut field = 0;
        let total = 100_000;
        assert!(excess.set(&mut field, 7, L, total));
        assert_eq!(field, i16::MAX);
        let mut zeros = 0;
        for taken in 1..=total {
            // What the hot loop does: decrement, and only on zero look further.
            field -= 1;
            if field == 0 && excess.refill(&mut field, 7, L) {
                zeros += 1;
                assert_eq!(taken, total, "zero only once everything is taken");
            }
            assert_eq!(excess.count(field, 7, L), total - taken);
        }
        assert_eq!(zeros, 1);
        assert!(excess.is_empty());
    }

    #[test]
    fn checked_takes_are_exact_far_below_zero() {
        let mut excess = Excess::default();
        let mut field = 0;
        excess.set(&mut field, 1, Which::Dependencies, 2);
        let mut zeros = 0;
        for _ in 0..100_002 {
            zeros += usize::from(excess.take_one(&mut field, 1, Which::Dependencies));
        }
        assert_eq!(zeros, 1);
        assert_eq!(excess.count(field, 1, Which::Dependencies), -100_000);
        assert_eq!(field, i16::MIN);
    }

    #[test]
    fn adding_edges_past_the_field_spills_into_the_excess() {
        let mut excess = Excess::default();
        let mut field = 0;
        let mut wide = false;
        for _ in 0..40_000 {
            wide = excess.add_one(&mut field, 9, L);
        }
        assert!(wide);
        assert_eq!(excess.count(field, 9, L), 40_000);
        assert_eq!(
            excess.count(field, 8, L),
            i64::from(field),
            "other nodes unaffected"
        );
    }
}
