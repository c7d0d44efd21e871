//! The ledger: every blob, record and tuple read is counted here as accepted or rejected
//! with a reason, so a run can always say what it skipped. `tuples == accepted + rejected`
//! holds per blob and in total; [`Ledger::merge`] is associative and commutative (examples
//! and failures are kept in a canonical order), so parallel and sharded runs agree.

use super::tuple::RejectReason;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::AddAssign;

/// How many examples of each reject reason are kept (the smallest locations win).
pub const EXAMPLES_PER_REASON: usize = 5;

/// One rejected tuple, kept as an example with its location.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RejectExample {
    /// Field order matters: examples sort by reason, then location.
    #[serde(serialize_with = "ser_reason", deserialize_with = "de_reason")]
    pub reason: RejectReason,
    pub path: String,
    /// 0-based record index within the blob.
    pub record: usize,
    /// Rule name as written.
    pub rule: String,
    /// 0-based index of the tuple within its `flowTuples` array.
    pub tuple: usize,
    /// The tuple text (cut at 200 bytes).
    pub text: String,
    /// What is wrong, naming the field.
    pub message: String,
    /// Where the tuple's text starts in the blob's bytes (after decompression, for gzip
    /// and zip), when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
}

fn de_reason<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RejectReason, D::Error> {
    let name = String::deserialize(d)?;
    RejectReason::ALL
        .iter()
        .copied()
        .find(|r| r.name() == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown reject reason {name:?}")))
}

fn ser_reason<S: serde::Serializer>(r: &RejectReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.name())
}

impl RejectExample {
    /// `path: record 12, rule R, tuple 3: message`
    pub fn location(&self) -> String {
        format!(
            "{}: record {}, rule {}, tuple {}",
            self.path, self.record, self.rule, self.tuple
        )
    }
}

/// How bad a blob problem was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobProblemKind {
    /// Nothing usable was read from the blob (unreadable, not JSON, another schema).
    Failed,
    /// The blob breaks part-way (truncated, or invalid JSON after some records): every
    /// complete record before the break was kept.
    Partial,
    /// The blob parsed, but some records were not flow-log records and were skipped.
    Warning,
}

/// A blob-level problem, reported as `path: message`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobProblem {
    pub path: String,
    pub kind: BlobProblemKind,
    pub message: String,
    /// Byte offset of the break in the file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
}

/// Input shapes that are not the standard `{"records":[…]}` blob but are tolerated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tolerated {
    /// Blobs starting with a UTF-8 byte-order mark.
    pub bom: u64,
    /// Blobs holding a single record without the `records` wrapper.
    pub bare_record: u64,
    /// Blobs holding several top-level JSON values (one record or wrapper per line).
    pub ndjson: u64,
    /// Block fragments starting with `,` (incremental reads), wrapped before parsing.
    pub fragment: u64,
    /// Top-level JSON arrays of records.
    pub array: u64,
    /// Blobs read from gzip, and zip entries read (told by their bytes, not their names).
    #[serde(default)]
    pub gzip: u64,
    #[serde(default)]
    pub zip_entries: u64,
}

impl AddAssign for Tolerated {
    fn add_assign(&mut self, o: Self) {
        self.bom += o.bom;
        self.bare_record += o.bare_record;
        self.ndjson += o.ndjson;
        self.fragment += o.fragment;
        self.array += o.array;
        self.gzip += o.gzip;
        self.zip_entries += o.zip_entries;
    }
}

/// Category names kept apart in [`Ledger::unrecognized_by_category`].
pub const MAX_CATEGORIES: usize = 32;

/// Counts of what was read. Value type with `merge`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Blobs attempted (read or tried to read).
    pub blobs: u64,
    /// Blobs from which nothing was used.
    pub blobs_failed: u64,
    /// Blobs that broke part-way; the records before the break were used.
    pub blobs_partial: u64,
    /// Blobs left unread because `--strict` stopped the run at an earlier loss.
    pub blobs_unread: u64,
    /// Blobs of 0 bytes (or only white space): nothing to read, a warning, not a failure.
    #[serde(default)]
    pub blobs_empty: u64,
    /// Bytes read from blobs.
    pub bytes: u64,
    /// Records parsed (complete JSON records, flow-log or not).
    pub records: u64,
    /// Records that were not NSG or VNet flow-log records (skipped, no tuples).
    pub records_unrecognized: u64,
    /// The same by `category` (`no category` when absent; at most [`MAX_CATEGORIES`] names,
    /// the rest under `other categories`).
    #[serde(default)]
    pub unrecognized_by_category: BTreeMap<String, u64>,
    /// Records with a part of the wrong JSON type (`"properties": "x"`, a rule that is a
    /// number, a record that is no object): that part was skipped, the rest read.
    #[serde(default)]
    pub records_malformed: u64,
    /// Records that repeat an earlier record of the same blob exactly.
    pub duplicate_records: u64,
    /// Accepted tuples more than an hour outside their blob's hour (from its path): kept,
    /// and flagged (a clock or a copy gone wrong).
    #[serde(default)]
    pub clock_skew: u64,
    /// Tuples seen: accepted + rejected.
    pub tuples: u64,
    pub tuples_accepted: u64,
    pub tuples_rejected: u64,
    /// Accepted tuples that repeat an earlier tuple of the same blob, rule and NIC/ACL.
    pub duplicate_tuples: u64,
    /// Accepted tuples dropped by `--dedup` (a subset of `duplicate_tuples`).
    pub tuples_deduplicated: u64,
    /// Accepted tuples outside the run's filters (time window, NSG, subscription, …).
    pub tuples_filtered: u64,
    pub rejected_by_reason: [u64; RejectReason::COUNT],
    pub tolerated: Tolerated,
    /// The first examples of each reject reason, sorted.
    pub examples: Vec<RejectExample>,
    /// Blob-level problems, sorted by path.
    pub problems: Vec<BlobProblem>,
    /// Keep every rejected tuple in `all_rejects` (for `--rejects FILE`), not only the
    /// first examples. Not saved in partials.
    #[serde(skip)]
    pub keep_all: bool,
    /// With `keep_all`, every rejected tuple of the blobs merged in, in reading order; the
    /// pipeline hands a blob's to the rejects file as the blob ends.
    #[serde(skip)]
    pub all_rejects: Vec<RejectExample>,
}

impl Ledger {
    /// Count one rejected tuple; keeps it as an example when among the first of its reason.
    pub fn reject(&mut self, reason: RejectReason, example: impl FnOnce() -> RejectExample) {
        self.tuples += 1;
        self.tuples_rejected += 1;
        let n = &mut self.rejected_by_reason[reason.index()];
        *n += 1;
        // Within one blob, locations grow monotonically, so the first few are the smallest.
        let kept = self.examples.iter().filter(|e| e.reason == reason).count();
        if kept < EXAMPLES_PER_REASON || self.keep_all {
            let e = example();
            if self.keep_all {
                self.all_rejects.push(e.clone());
            }
            if kept < EXAMPLES_PER_REASON {
                self.examples.push(e);
            }
        }
    }

    /// Count `n` records of another category than flow logs.
    pub fn count_unrecognized(&mut self, category: String, n: u64) {
        let key = if self.unrecognized_by_category.len() < MAX_CATEGORIES
            || self.unrecognized_by_category.contains_key(&category)
        {
            category
        } else {
            "other categories".to_string()
        };
        *self.unrecognized_by_category.entry(key).or_default() += n;
    }

    /// Rejected tuples by reason name, every reason listed (zeros included), sorted by name.
    pub fn rejected_map(&self) -> BTreeMap<&'static str, u64> {
        RejectReason::ALL
            .iter()
            .map(|r| (r.name(), self.rejected_by_reason[r.index()]))
            .collect()
    }

    /// Whether anything at all was skipped, rejected or failed.
    pub fn has_losses(&self) -> bool {
        self.tuples_rejected > 0
            || self.blobs_failed > 0
            || self.blobs_partial > 0
            || self.records_unrecognized > 0
            || self.records_malformed > 0
    }

    /// Merge another ledger into this one (associative and commutative).
    pub fn merge(&mut self, o: Ledger) {
        self.blobs += o.blobs;
        self.blobs_failed += o.blobs_failed;
        self.blobs_partial += o.blobs_partial;
        self.blobs_unread += o.blobs_unread;
        self.blobs_empty += o.blobs_empty;
        self.bytes += o.bytes;
        self.records += o.records;
        self.records_unrecognized += o.records_unrecognized;
        for (k, n) in o.unrecognized_by_category {
            self.count_unrecognized(k, n);
        }
        self.records_malformed += o.records_malformed;
        self.duplicate_records += o.duplicate_records;
        self.clock_skew += o.clock_skew;
        self.tuples += o.tuples;
        self.tuples_accepted += o.tuples_accepted;
        self.tuples_rejected += o.tuples_rejected;
        self.duplicate_tuples += o.duplicate_tuples;
        self.tuples_deduplicated += o.tuples_deduplicated;
        self.tuples_filtered += o.tuples_filtered;
        for (a, b) in self.rejected_by_reason.iter_mut().zip(o.rejected_by_reason) {
            *a += b;
        }
        self.tolerated += o.tolerated;
        if !o.examples.is_empty() {
            self.examples.extend(o.examples);
            self.examples.sort();
            let mut per = [0usize; RejectReason::COUNT];
            self.examples.retain(|e| {
                per[e.reason.index()] += 1;
                per[e.reason.index()] <= EXAMPLES_PER_REASON
            });
        }
        if !o.problems.is_empty() {
            self.problems.extend(o.problems);
            self.problems.sort();
        }
        self.all_rejects.extend(o.all_rejects);
    }

    /// Whether the tuple balance holds.
    pub fn balances(&self) -> bool {
        self.tuples == self.tuples_accepted + self.tuples_rejected
            && self.tuples_rejected == self.rejected_by_reason.iter().sum::<u64>()
    }
}
