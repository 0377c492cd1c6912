//! A monotone priority queue (a radix heap) for the round ends in virtual
//! time.
//!
//! The virtual clock only moves forward and a round's end is never before
//! it, so keys pushed are almost never below the smallest one in the heap:
//! the condition under which a radix heap works. With a million rounds in
//! flight a binary heap costs twenty levels of cache misses per push and
//! pop; here an entry is appended to one of 65 buckets (by the highest bit
//! in which its key differs from the heap's floor, the smallest key found
//! last) and moves down a few buckets over its life, so a push is an append
//! and a pop amortizes to a few sequential passes. The rare key below the
//! floor (a round shorter than the time to the next event; an ulp of
//! rounding) waits in a small binary heap taken from first. Entries with
//! equal keys come out in ascending order of their tie-breaker, as from an
//! ordered heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Entries `(key, tie, payload)`: smallest key first, then smallest `tie`.
#[derive(Debug)]
pub(crate) struct RadixHeap<T> {
    /// The floor: every key in the buckets is at least this.
    last: u64,
    /// Keys below the floor.
    early: BinaryHeap<Reverse<(u64, u64, T)>>,
    /// `buckets[0]`: keys equal to `last`, sorted by descending `tie` (the
    /// next out is at the end); `buckets[i]`: keys whose highest bit
    /// differing from `last` is bit `i - 1`.
    buckets: Vec<Vec<(u64, u64, T)>>,
    len: usize,
}

impl<T: Copy + Ord> Default for RadixHeap<T> {
    fn default() -> Self {
        Self {
            last: 0,
            early: BinaryHeap::new(),
            buckets: (0..65).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }
}

/// A key for a non-negative virtual time: the order of the bits of a
/// non-negative `f64` is its numeric order.
pub(crate) fn key_of(v: f64) -> u64 {
    v.max(0.0).to_bits()
}

/// The virtual time a key stands for.
pub(crate) fn time_of_key(key: u64) -> f64 {
    f64::from_bits(key)
}

impl<T: Copy + Ord> RadixHeap<T> {
    fn bucket(&self, key: u64) -> usize {
        (64 - (key ^ self.last).leading_zeros()) as usize
    }

    /// Adds an entry.
    pub fn push(&mut self, key: u64, tie: u64, payload: T) {
        self.len += 1;
        if key < self.last {
            self.early.push(Reverse((key, tie, payload)));
            return;
        }
        let b = self.bucket(key);
        if b == 0 {
            // Keep bucket 0 in descending `tie` order.
            let at = self.buckets[0].partition_point(|e| e.1 > tie);
            self.buckets[0].insert(at, (key, tie, payload));
        } else {
            self.buckets[b].push((key, tie, payload));
        }
    }

    /// The smallest entry, without taking it (it may redistribute a bucket).
    pub fn peek(&mut self) -> Option<(u64, u64, T)> {
        if let Some(Reverse(entry)) = self.early.peek() {
            return Some(*entry);
        }
        if self.buckets[0].is_empty() {
            let b = (1..65).find(|&b| !self.buckets[b].is_empty())?;
            let bucket = std::mem::take(&mut self.buckets[b]);
            self.last = bucket.iter().map(|e| e.0).min().expect("not empty");
            for &entry in &bucket {
                let to = self.bucket(entry.0);
                self.buckets[to].push(entry);
            }
            // Hand the allocation back for the next entries of bucket `b`.
            let mut bucket = bucket;
            bucket.clear();
            self.buckets[b] = bucket;
            self.buckets[0].sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
        }
        self.buckets[0].last().copied()
    }

    /// Takes the smallest entry.
    pub fn pop(&mut self) -> Option<(u64, u64, T)> {
        self.peek()?;
        self.len -= 1;
        match self.early.pop() {
            Some(Reverse(entry)) => Some(entry),
            None => self.buckets[0].pop(),
        }
    }

    pub fn clear(&mut self) {
        for bucket in &mut self.buckets {
            bucket.clear();
        }
        self.early.clear();
        self.last = 0;
        self.len = 0;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a sorted list: pushes mostly above the last key taken,
        /// some below it, interleaved with peeks and pops.
        #[test]
        fn pops_in_order_of_key_then_tie(ops in prop::collection::vec((any::<bool>(), 0u64..1000, 0u64..5), 1..300)) {
            // Ties by insertion (distinct), keys often equal (`delta` small or 0).
            let mut heap = RadixHeap::default();
            let mut reference: Vec<(u64, u64, u32)> = Vec::new();
            let mut next_tie = 1000u64;
            let mut last = 0;
            for (i, (pop, delta, tie)) in ops.into_iter().enumerate() {
                if pop {
                    reference.sort();
                    let expected = (!reference.is_empty()).then(|| reference.remove(0));
                    let got = heap.pop();
                    prop_assert_eq!(got, expected);
                    if let Some(e) = got {
                        last = e.0;
                    }
                } else {
                    // Every tenth a little below the last key taken.
                    let key = if i % 10 == 9 { last.saturating_sub(delta) } else { last + delta * tie };
                    let _ = heap.peek();
                    // Descending ties too: not the order of insertion.
                    next_tie -= 1;
                    heap.push(key, next_tie, i as u32);
                    reference.push((key, next_tie, i as u32));
                }
                prop_assert_eq!(heap.len(), reference.len());
            }
        }
    }

    #[test]
    fn float_keys_keep_their_order() {
        let values = [0.0, 1e-300, 0.5, 1.0, 3.0, 1e12, 1.5e12];
        for pair in values.windows(2) {
            assert!(key_of(pair[0]) < key_of(pair[1]));
            assert_eq!(time_of_key(key_of(pair[1])), pair[1]);
        }
    }
}
