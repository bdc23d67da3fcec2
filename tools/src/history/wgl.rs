//! A linearizability search in the style of Porcupine: Wing & Gong's algorithm with Lowe's
//! cache of (linearized set, state) pairs, over a nondeterministic model. The model's state is
//! carried as the set of states the object could be in, so an operation whose effect depends on
//! something the history does not show (an unknown outcome, a multi-key purge) keeps every
//! possibility open rather than guessing one.

use std::collections::HashSet;
use std::hash::Hash;

/// One operation on one object: its real-time interval and what the model needs to step it.
pub struct Entry<I> {
    pub start: u64,
    /// `u64::MAX` when the outcome is unknown: it may take effect at any later moment, or never.
    pub end: u64,
    pub input: I,
}

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order respecting real time explains the answers; `stuck_at` is the operation the
    /// deepest attempt could not place.
    Violation {
        stuck_at: usize,
    },
    /// The step budget ran out before an answer.
    Undecided,
}

/// Decides whether `entries` (one object's history) is linearizable under `step`, which maps a
/// state and an operation to every state the operation may leave (empty: the answer is
/// impossible from that state).
pub fn check<S, I, F>(entries: &[Entry<I>], init: S, step: F, budget: u64) -> Verdict
where
    S: Clone + Eq + Hash + Ord,
    F: Fn(&S, &I) -> Vec<S>,
{
    let n = entries.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events: (time, is_return, op). Calls sort before returns at the same instant, so only an
    // operation that ended strictly before another started is ordered before it.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in entries.iter().enumerate() {
        events.push((e.start, false, i));
        events.push((e.end, true, i));
    }
    events.sort_unstable();
    // A doubly linked list over the events; node k = events[k], head = node `len`.
    let len = events.len();
    let head = len;
    let mut next: Vec<usize> = (1..=len + 1).collect();
    let mut prev: Vec<usize> = Vec::with_capacity(len + 1);
    prev.extend((0..len).map(|k| if k == 0 { head } else { k - 1 }));
    prev.push(len); // head's prev, unused
    next[head] = 0;
    next[len - 1] = usize::MAX;
    let mut return_of = vec![0usize; n];
    let mut call_of = vec![0usize; n];
    for (k, &(_, is_return, op)) in events.iter().enumerate() {
        if is_return {
            return_of[op] = k;
        } else {
            call_of[op] = k;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        let (p, q) = (prev[k], next[k]);
        next[p] = q;
        if q != usize::MAX {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        let (p, q) = (prev[k], next[k]);
        next[p] = k;
        if q != usize::MAX {
            prev[q] = k;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Vec<S>)> = HashSet::new();
    let mut state: Vec<S> = vec![init];
    let mut stack: Vec<(usize, Vec<S>)> = Vec::new();
    // The operation that could not be placed at the greatest depth reached.
    let mut stuck = (0usize, 0usize);
    let mut steps = 0u64;
    let mut cur = next[head];
    while next[head] != usize::MAX {
        steps += 1;
        if steps > budget {
            return Verdict::Undecided;
        }
        if cur == usize::MAX {
            // Cannot happen: a list that still holds calls ends with returns.
            return Verdict::Undecided;
        }
        let (_, is_return, op) = events[cur];
        if !is_return {
            let mut after: Vec<S> = state.iter().flat_map(|s| step(s, &entries[op].input)).collect();
            after.sort();
            after.dedup();
            let mut moved = false;
            if !after.is_empty() {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut state, after)));
                    unlink(&mut next, &mut prev, call_of[op]);
                    unlink(&mut next, &mut prev, return_of[op]);
                    cur = next[head];
                    moved = true;
                } else {
                    linearized[op / 64] &= !(1 << (op % 64));
                }
            }
            if !moved {
                cur = next[cur];
            }
        } else {
            // The earliest pending operation has returned: something before it must move.
            if stack.len() >= stuck.0 {
                stuck = (stack.len(), op);
            }
            let Some((op, before)) = stack.pop() else {
                return Verdict::Violation { stuck_at: stuck.1 };
            };
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            relink(&mut next, &mut prev, return_of[op]);
            relink(&mut next, &mut prev, call_of[op]);
            cur = next[call_of[op]];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: `Some(v)` writes v, `None` paired with an expected value reads it.
    fn reg(s: &u8, op: &(bool, u8)) -> Vec<u8> {
        match op {
            (true, v) => vec![*v],
            (false, v) if v == s => vec![*s],
            _ => vec![],
        }
    }

    fn e(start: u64, end: u64, input: (bool, u8)) -> Entry<(bool, u8)> {
        Entry { start, end, input }
    }

    #[test]
    fn concurrent_write_explains_a_read_but_a_stale_read_after_it_does_not() {
        let ok = [e(0, 10, (true, 1)), e(5, 6, (false, 1)), e(20, 30, (false, 1))];
        assert_eq!(check(&ok, 0, reg, 10_000), Verdict::Linearizable);
        let stale = [e(0, 10, (true, 1)), e(11, 12, (false, 0))];
        assert!(matches!(check(&stale, 0, reg, 10_000), Verdict::Violation { .. }));
        // An unknown write may land late: a later read of either value is explainable.
        let unknown = [e(0, u64::MAX, (true, 1)), e(11, 12, (false, 0)), e(13, 14, (false, 1))];
        assert_eq!(check(&unknown, 0, reg, 10_000), Verdict::Linearizable);
        let flip_back = [e(0, u64::MAX, (true, 1)), e(11, 12, (false, 1)), e(13, 14, (false, 0))];
        assert!(matches!(check(&flip_back, 0, reg, 10_000), Verdict::Violation { .. }));
    }
}
