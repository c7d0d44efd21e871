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

/// Runs up to this long are scanned linearly (cheaper than hashing a text for the usual
/// handful of tuples per second and scope); longer runs use `run_set`, so a tuple costs at
/// most this many word compares. The scan compares fingerprints only, four to a vector
/// ([`Scope::first_sighting`]): with pairs of fingerprint and text scanned one by one the
/// cross-over with the set lay between 8 and 32 (16 was used); with the fingerprints apart,
/// `summary -j 1` on a generated 148 MB container took 2-4% less CPU at 32, 48 and 96 than
/// at 16 (a third of its tuples are in runs of 17 to 32). 64 keeps those runs out of the set
/// with room to spare.
const RUN_SCAN_MAX: usize = 64;

/// One scope's memory of tuples seen in this blob.
///
/// While the scope stays in time order it holds only the run of texts sharing the newest
/// timestamp, and the raw `flowTuples` arrays it read (one entry per array, not per tuple):
/// a blob held in one huge record costs no memory per tuple here. Should the scope go back
/// in time, the texts seen so far are read again from those arrays into a set.
#[derive(Default)]
pub struct Scope<'de> {
    /// The raw `flowTuples` texts read, in order; the last is being read.
    arrays: Vec<&'de str>,
    /// The fingerprints of the current run (the newest timestamp), in order (until `index`
    /// takes over), and their texts in `run_text`: kept apart, the fingerprints are one
    /// contiguous slice the scan compares four at a time.
    run_fp: Vec<u64>,
    run_text: Vec<&'de str>,
    newest_ms: i64,
    /// A set over the current run once it is longer than `RUN_SCAN_MAX` (busy seconds), so
    /// the cost per tuple stays bounded; emptied when the timestamp moves on.
    run_set: HSet<Text<'de>>,
    /// Set of all texts, once the scope went back in time.
    index: Option<HSet<Text<'de>>>,
}

impl<'de> Scope<'de> {
    /// The scope starts reading the raw `flowTuples` text `raw` (borrowed from the blob).
    pub fn begin_array(&mut self, raw: &'de str) {
        if self.index.is_none() {
            self.arrays.push(raw);
        }
    }

    /// Whether `text` (with timestamp `time_ms`, item `at` of the array being read) is seen
    /// here for the first time.
    ///
    /// `fp` is any function of the text alone (the parser passes one of the parsed fields,
    /// [`fingerprint`]): equal texts have equal fingerprints, so the run is scanned by
    /// comparing words, and only a matching fingerprint compares the texts.
    #[inline]
    pub fn first_sighting(&mut self, text: &'de str, fp: u64, time_ms: i64, at: usize) -> bool {
        if let Some(ix) = &mut self.index {
            return ix.insert(Text(text));
        }
        if self.run_fp.is_empty() || time_ms > self.newest_ms {
            self.newest_ms = time_ms;
            self.run_fp.clear();
            self.run_text.clear();
            self.run_set.clear();
            self.run_fp.push(fp);
            self.run_text.push(text);
            return true;
        }
        if time_ms == self.newest_ms {
            if self.run_fp.len() < RUN_SCAN_MAX {
                // Every fingerprint is compared (no early exit, so the loop runs four to a
                // vector); only a match, a duplicate or a rare collision, reads texts.
                let hit = self.run_fp.iter().fold(false, |a, &f| a | (f == fp));
                if hit
                    && self
                        .run_fp
                        .iter()
                        .zip(&self.run_text)
                        .any(|(&f, &t)| f == fp && t == text)
                {
                    return false;
                }
            } else {
                if self.run_set.is_empty() {
                    self.run_set.extend(self.run_text.iter().map(|&t| Text(t)));
                }
                if !self.run_set.insert(Text(text)) {
                    return false;
                }
            }
            self.run_fp.push(fp);
            self.run_text.push(text);
            return true;
        }
        // Out of order: index every text read before this one (the earlier arrays whole,
        // the current one up to `at`), and answer from the index from now on. Texts that
        // were rejected go in too: the same text is rejected again, never looked up.
        let mut ix: HSet<Text<'de>> = HSet::default();
        let last = self.arrays.len().saturating_sub(1);
        for (n, raw) in self.arrays.iter().enumerate() {
            super::each_tuple(raw, &mut |i, t| {
                if n < last || i < at {
                    if let (std::borrow::Cow::Borrowed(s), true) = (t.0, t.1) {
                        ix.insert(Text(s));
                    }
                }
            });
        }
        let fresh = ix.insert(Text(text));
        self.index = Some(ix);
        self.arrays = Vec::new();
        self.run_fp = Vec::new();
        self.run_text = Vec::new();
        self.run_set = HSet::default();
        fresh
    }
}

/// A tuple's fingerprint for [`Scope::first_sighting`], from its parsed fields: equal texts
/// parse alike, so they get equal fingerprints. The addresses, ports and counters tell apart
/// the tuples of one second (a scan's differ in their ports).
#[inline(always)]
pub fn fingerprint(t: &crate::model::FlowTuple) -> u64 {
    let ip = |a: &std::net::IpAddr| match a {
        std::net::IpAddr::V4(v) => u32::from(*v) as u64,
        std::net::IpAddr::V6(v) => {
            let x = u128::from(*v);
            x as u64 ^ (x >> 64) as u64
        }
    };
    ip(&t.src).rotate_left(32)
        ^ ip(&t.dst)
        ^ ((t.sport as u64) << 48 | (t.dport as u64) << 32)
        ^ t.bytes_s2d.unwrap_or(0).rotate_left(8)
        ^ t.bytes_d2s.unwrap_or(0).rotate_left(24)
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

    /// Feed the texts of raw `flowTuples` arrays to a scope, the time of each text being
    /// the digit after its first letter; the answers in order.
    fn feed<'a>(s: &mut Scope<'a>, arrays: &[&'a str]) -> Vec<bool> {
        let mut out = Vec::new();
        for raw in arrays {
            s.begin_array(raw);
            super::super::each_tuple(raw, &mut |i, t| {
                let std::borrow::Cow::Borrowed(text) = t.0 else {
                    panic!("escaped")
                };
                let time = text[1..2].parse().unwrap();
                out.push(s.first_sighting(text, text.len() as u64, time, i));
            });
        }
        out
    }

    /// Fingerprints only rule texts out: two texts with one fingerprint (a port written
    /// `0443` and `443` parse alike) are still told apart by their text.
    #[test]
    fn equal_fingerprints_still_compare_the_texts() {
        let a = "1767607200,1.2.3.4,10.0.0.4,40000,0443,T,I,D,B,,,,";
        let b = "1767607200,1.2.3.4,10.0.0.4,40000,443,T,I,D,B,,,,";
        let fam = crate::model::Family::NsgV2;
        let (ta, tb) = (
            super::super::parse_tuple(a, fam).unwrap(),
            super::super::parse_tuple(b, fam).unwrap(),
        );
        assert_eq!(fingerprint(&ta), fingerprint(&tb));
        let raw = format!("[{a:?},{b:?},{a:?},{b:?}]");
        let mut s = Scope::default();
        s.begin_array(&raw);
        let fp = fingerprint(&ta);
        let got: Vec<bool> = [a, b, a, b]
            .iter()
            .enumerate()
            .map(|(i, t)| s.first_sighting(t, fp, ta.time_ms, i))
            .collect();
        assert_eq!(got, [true, true, false, false]);
    }

    #[test]
    fn long_runs_of_one_timestamp_stay_exact() {
        // 100 distinct texts of time 5xxx, each twice, then time 6, then back to 5.
        let texts: Vec<String> = (0..100).map(|i| format!("\"t5{i:03}\"")).collect();
        let first = format!("[{}]", texts.join(","));
        let again = first.clone();
        let mut s = Scope::default();
        let got = feed(
            &mut s,
            &[
                &first,
                &again,
                r#"["n6000","n6000"]"#,
                r#"["t5003","t5200"]"#,
            ],
        );
        assert!(got[..100].iter().all(|&f| f));
        assert!(got[100..200].iter().all(|&f| !f));
        assert_eq!(
            &got[200..],
            &[true, false, false, true],
            "back in time, still found"
        );
    }

    /// A run as long as the scan takes, then past it: repeats are found by the scan
    /// (distinct fingerprints, and one fingerprint shared by two texts), then by the set.
    #[test]
    fn runs_up_to_the_scan_limit_and_past_it_stay_exact() {
        let texts: Vec<String> = (0..=RUN_SCAN_MAX).map(|i| format!("t{i:03}")).collect();
        let mut s = Scope::default();
        // Fingerprints: the index, but texts 0 and 1 share one.
        fn see<'a>(s: &mut Scope<'a>, texts: &'a [String], i: usize) -> bool {
            s.first_sighting(&texts[i], i.max(1) as u64, 5, i)
        }
        // The scan answers while the run holds fewer than RUN_SCAN_MAX texts.
        for i in 0..RUN_SCAN_MAX {
            assert!(see(&mut s, &texts, i), "text {i} is new");
        }
        assert_eq!(s.run_fp.len(), RUN_SCAN_MAX);
        assert!(s.run_set.is_empty(), "the scan answered so far");
        // Repeats of a full run (and a shared fingerprint with a new text) go to the set.
        for i in (0..RUN_SCAN_MAX).rev() {
            assert!(!see(&mut s, &texts, i), "text {i} repeats");
        }
        assert!(!s.run_set.is_empty(), "past the limit, the set answers");
        assert!(see(&mut s, &texts, RUN_SCAN_MAX));
        assert!(!see(&mut s, &texts, RUN_SCAN_MAX));
        assert!(
            s.first_sighting("t999", 1, 5, 0),
            "a shared fingerprint, a new text"
        );
        // Below the limit, the scan finds repeats alike.
        let mut s = Scope::default();
        for i in 0..RUN_SCAN_MAX - 1 {
            assert!(see(&mut s, &texts, i));
        }
        for i in (0..RUN_SCAN_MAX - 1).rev() {
            assert!(!see(&mut s, &texts, i), "text {i} repeats");
        }
        assert!(
            s.first_sighting("t999", 1, 5, 0),
            "a shared fingerprint, a new text"
        );
        assert!(s.run_set.is_empty(), "the scan answered every time");
    }

    #[test]
    fn in_order_and_out_of_order_duplicates_are_found() {
        let mut s = Scope::default();
        let got = feed(
            &mut s,
            &[r#"["a1","b1","a1","c2"]"#, r#"["c2","b1","d1","c2","e3"]"#],
        );
        // Back in time at b1 (array 2, item 1): still exact, from the texts read before.
        assert_eq!(
            got,
            [true, true, false, true, false, false, true, false, true]
        );
    }

    /// Going back in time inside the array being read indexes only the items before it.
    #[test]
    fn back_in_time_mid_array_indexes_only_what_was_read() {
        let mut s = Scope::default();
        let got = feed(&mut s, &[r#"["a2","b1","c3","b1"]"#, r#"["c3"]"#]);
        assert_eq!(got, [true, true, true, false, false]);
        let mut s = Scope::default();
        // c3 comes after the step back: it is new when it comes.
        let got = feed(&mut s, &[r#"["a2","b1","c3"]"#]);
        assert_eq!(got, [true, true, true]);
    }
}
