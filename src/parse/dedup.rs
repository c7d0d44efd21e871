//! Exact duplicate-tuple detection within a blob, rule and NIC/ACL ("scope"), cheap enough
//! to run on every tuple.
//!
//! A duplicate has the same text, so the same timestamp, as an earlier tuple of its scope.
//! Azure writes each scope's tuples in time order, so while a scope stays in order only the
//! tuples sharing the newest timestamp need comparing (a short run at the end of its list).
//! The first tuple that goes back in time switches that scope to a full hash set, built
//! from everything seen so far: the answer is exact either way, only the cost differs.
//! Whole duplicate records are found earlier, by a record hash (see `parse::record_hash`).

use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::{Hash, Hasher};

/// A tuple's text as a set key, hashed over a sample (its length, the 16 bytes after the
/// timestamp's comma, the last 8 bytes) where tuples of one second differ, and compared in
/// full: exact, at a third of the hashing of all ~60 bytes.
#[derive(Clone, Copy, Eq)]
struct Text<'de>(&'de str);

impl PartialEq for Text<'_> {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}

impl Hash for Text<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        let b = self.0.as_bytes();
        let n = b.len();
        h.write_usize(n);
        let at = b.iter().position(|c| *c == b',').map_or(0, |i| i + 1);
        let mid = &b[at.min(n)..(at + 16).min(n)];
        let mut w = [0u8; 16];
        w[..mid.len()].copy_from_slice(mid);
        h.write_u128(u128::from_le_bytes(w));
        let mut t = [0u8; 8];
        let tail = &b[n.saturating_sub(8)..];
        t[..tail.len()].copy_from_slice(tail);
        h.write_u64(u64::from_le_bytes(t));
    }
}

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
    run_set: FxHashSet<Text<'de>>,
    /// Set of all texts, once the scope went back in time.
    index: Option<FxHashSet<Text<'de>>>,
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
        let mut ix: FxHashSet<Text<'de>> = self.seen.drain(..).map(Text).collect();
        let fresh = ix.insert(Text(text));
        self.index = Some(ix);
        fresh
    }
}

/// Scopes of one blob, keyed by a hash of (resource or ACL id, rule, MAC).
#[derive(Default)]
pub struct DupTracker<'de> {
    scopes: FxHashMap<u64, Scope<'de>>,
}

impl<'de> DupTracker<'de> {
    pub fn scope(&mut self, key: u64) -> &mut Scope<'de> {
        self.scopes.entry(key).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
