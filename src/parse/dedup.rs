//! Exact duplicate-tuple detection within a blob, rule and NIC/ACL ("scope"), cheap enough
//! to run on every tuple.
//!
//! A duplicate has the same text, so the same timestamp, as an earlier tuple of its scope.
//! Azure writes each scope's tuples in time order, so while a scope stays in order only the
//! tuples sharing the newest timestamp need comparing (a short run at the end of its list).
//! The first tuple that goes back in time switches that scope to a full hash set, built
//! from everything seen so far: the answer is exact either way, only the cost differs.
//! Whole duplicate records are found earlier, by a record hash (see `parse::record_hash`).

use crate::hash::{HMap, HSet};
use std::hash::Hash;

/// A tuple's text as a set key, hashed whole by the set's seeded hasher ([`crate::hash`]).
/// (Hashing a sample of it was cheaper, but tuples of a port scan in one second share
/// every sampled byte — the source address after the timestamp, the empty counters at the
/// end — and all fell into one bucket.)
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Text<'de>(&'de str);

/// Runs up to this long are scanned linearly (cheaper than hashing for the usual handful of
/// tuples per second and scope); longer runs use `run_set`. Chosen by measurement on
/// generated containers: the cross-over of scan vs. set cost lies between 8 and 32.
const RUN_SCAN_MAX: usize = 16;

/// One scope's memory of tuples seen in this blob.
#[derive(Default)]
pub struct Scope<'de> {
    /// Every tuple text seen, in order (until `index` takes over).
    seen: Vec<&'de str>,
    /// Newest timestamp seen, and where its run starts in `seen`.
    newest_ms: i64,
    run_start: usize,
    /// A set over the current run once it is longer than `RUN_SCAN_MAX` (busy seconds), so
    /// the cost per tuple stays bounded; emptied when the timestamp moves on.
    run_set: HSet<Text<'de>>,
    /// Set of all texts, once the scope went back in time.
    index: Option<HSet<Text<'de>>>,
}

impl<'de> Scope<'de> {
    /// Whether `text` (with timestamp `time_ms`) is seen here for the first time.
    #[inline]
    pub fn first_sighting(&mut self, text: &'de str, time_ms: i64) -> bool {
        if let Some(ix) = &mut self.index {
            return ix.insert(Text(text));
        }
        if self.seen.is_empty() || time_ms > self.newest_ms {
            self.newest_ms = time_ms;
            self.run_start = self.seen.len();
            self.run_set.clear();
            self.seen.push(text);
            return true;
        }
        if time_ms == self.newest_ms {
            let run = &self.seen[self.run_start..];
            if run.len() < RUN_SCAN_MAX {
                if run.contains(&text) {
                    return false;
                }
            } else {
                if self.run_set.is_empty() {
                    self.run_set.extend(run.iter().map(|t| Text(t)));
                }
                if !self.run_set.insert(Text(text)) {
                    return false;
                }
            }
            self.seen.push(text);
            return true;
        }
        // Out of order: index everything and answer from the index from now on.
        let mut ix: HSet<Text<'de>> = self.seen.drain(..).map(Text).collect();
        let fresh = ix.insert(Text(text));
        self.index = Some(ix);
        fresh
    }
}

/// Scopes of one blob, keyed by a hash of (resource or ACL id, rule, MAC).
#[derive(Default)]
pub struct DupTracker<'de> {
    scopes: HMap<u64, Scope<'de>>,
}

impl<'de> DupTracker<'de> {
    pub fn scope(&mut self, key: u64) -> &mut Scope<'de> {
        self.scopes.entry(key).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port scan's tuples of one second differ only in their ports: each still gets a
    /// hash of its own (a sampled hash gave them one, and the run set went quadratic).
    #[test]
    fn a_scan_in_one_second_spreads_over_the_set() {
        use std::hash::BuildHasher;
        let b = crate::hash::Build::default();
        let texts: Vec<String> = (0..1000)
            .map(|p| {
                format!(
                    "1767607200,1.2.3.4,10.0.0.4,{},{},T,I,D,B,,,,",
                    40000 + p,
                    1000 + p
                )
            })
            .collect();
        let hashes: std::collections::BTreeSet<u64> =
            texts.iter().map(|t| b.hash_one(Text(t))).collect();
        assert_eq!(hashes.len(), texts.len());
    }

    #[test]
    fn long_runs_of_one_timestamp_stay_exact() {
        let texts: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let mut s = Scope::default();
        for t in &texts {
            assert!(s.first_sighting(t, 5));
        }
        for t in &texts {
            assert!(!s.first_sighting(t, 5));
        }
        assert!(s.first_sighting("next", 6));
        assert!(!s.first_sighting("next", 6));
        assert!(!s.first_sighting(&texts[3], 5), "back in time, still found");
    }

    #[test]
    fn in_order_and_out_of_order_duplicates_are_found() {
        let mut s = Scope::default();
        assert!(s.first_sighting("a1", 1));
        assert!(s.first_sighting("b1", 1));
        assert!(!s.first_sighting("a1", 1));
        assert!(s.first_sighting("c2", 2));
        assert!(!s.first_sighting("c2", 2));
        // Back in time: still exact.
        assert!(!s.first_sighting("b1", 1));
        assert!(s.first_sighting("d1", 1));
        assert!(!s.first_sighting("c2", 2));
        assert!(s.first_sighting("e3", 3));
    }
}
