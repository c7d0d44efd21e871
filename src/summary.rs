//! The `summary` output model and its two renderers (JSON, terminal table).
//!
//! [`SummaryReport`] is the contract of `summary --format json` from `../shared/DESIGN.md`:
//! `ledger`, `time`, `totals`, `rules` with the names given there; further fields
//! (`families`, `encryption`, `warnings`, examples) are additions. Order is deterministic.

use crate::aggregate::coverage::Coverage;
use crate::aggregate::{Counters, Summary};
use crate::discover::Discovered;
use crate::model::Encryption;
use crate::parse::{BlobProblem, RejectExample};
use crate::text::{fmt_ms, term_safe};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The ledger as reported.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerReport {
    /// Blobs read (or attempted).
    pub blobs: u64,
    /// Blobs from which nothing was used.
    pub blobs_failed: u64,
    /// Blobs that broke part-way; their complete records before the break were used.
    pub blobs_partial: u64,
    /// Blobs left unread because `--strict` stopped the run at the first loss.
    pub blobs_unread: u64,
    /// Blobs of 0 bytes: a warning, not a failure.
    pub blobs_empty: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Records parsed.
    pub records: u64,
    /// Records that were not flow-log records.
    pub records_unrecognized: u64,
    /// Records with a part of the wrong JSON type, skipped (the rest of the record read).
    pub records_malformed: u64,
    /// The same by `category`.
    pub unrecognized_by_category: std::collections::BTreeMap<String, u64>,
    /// Tuples seen (= `tuples_accepted + tuples_rejected`).
    pub tuples: u64,
    pub tuples_accepted: u64,
    pub tuples_rejected: u64,
    /// Accepted tuples outside the filters.
    pub tuples_filtered: u64,
    /// Rejected tuples per reason (every reason listed).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Records repeating an earlier record of the same blob exactly.
    pub duplicate_records: u64,
    /// Accepted tuples more than an hour outside their blob's hour: kept, flagged.
    pub clock_skew: u64,
    /// Accepted tuples repeating an earlier tuple of the same blob, rule and NIC/ACL.
    pub duplicate_tuples: u64,
    /// Tuples dropped by `--dedup` (0 without it).
    pub tuples_deduplicated: u64,
    /// Non-standard shapes tolerated (BOM, bare record, NDJSON, fragment, array).
    pub tolerated: crate::parse::ledger::Tolerated,
    /// Paths under the inputs that could not be walked.
    pub skipped_paths: Vec<SkippedReport>,
    /// Blobs of an hour still being written: read, and counted again by a later run.
    pub provisional_blobs: Vec<String>,
    /// The same, left out by `--skip-open-hour`.
    pub open_hour_skipped: Vec<String>,
    /// Blobs found twice, read once (see [`DuplicateReport`]).
    pub duplicate_blobs: Vec<DuplicateReport>,
    /// Blobs found but left out by path filters.
    pub blobs_filtered: u64,
    /// Per Azure Blob Storage input: what its (window-pruned) listing saw and kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_listings: Vec<crate::discover::RemoteListing>,
    /// `--state-dir`: units and blobs taken from the state and read this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::state::incremental::StateUse>,
    /// Blob-level problems (failed, partial, warnings), sorted by path.
    pub problems: Vec<BlobProblem>,
    /// First examples of each reject reason, with locations.
    pub reject_examples: Vec<RejectExample>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SkippedReport {
    pub path: String,
    pub reason: String,
}

/// A blob read once though found twice (`duplicate_blobs` in the ledger).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DuplicateReport {
    pub path: String,
    /// The path that was read.
    pub same_as: String,
    /// `the same file` or `the same bytes`.
    pub how: String,
}

/// First and last tuple time, RFC 3339 UTC; `null` when no tuple was counted.
#[derive(Debug, Serialize)]
pub struct TimeReport {
    pub first: Option<String>,
    pub last: Option<String>,
}

/// One NSG rule's row.
#[derive(Clone, Debug, Serialize)]
pub struct RuleRow {
    /// NSG name (last segment of `resourceId`, or of `aclID` for VNet logs), spelled as
    /// ARM spells it where a log wrote it so (see [`crate::model::NsgIdentity`]).
    pub nsg: String,
    /// The NSG's subscription and resource group (as written; empty when the logs do not
    /// say). With the name, they are the NSG's identity, compared case-insensitively.
    pub subscription: String,
    pub resource_group: String,
    /// The NSG as tables show it: the name, with the resource group (and subscription)
    /// where two NSGs share a name.
    #[serde(skip)]
    pub label: String,
    /// Rule name as written.
    pub rule: String,
    #[serde(flatten)]
    pub counters: Counters,
    /// First and last tuple time of this rule (RFC 3339), `null` if it logged none.
    pub first: Option<String>,
    pub last: Option<String>,
}

/// Per-family totals.
#[derive(Debug, Serialize)]
pub struct FamiliesReport {
    pub nsg_v1: Counters,
    pub nsg_v2: Counters,
    pub vnet: Counters,
}

/// `summary --format json`.
#[derive(Debug, Serialize)]
pub struct SummaryReport {
    pub ledger: LedgerReport,
    pub time: TimeReport,
    pub totals: Counters,
    pub families: FamiliesReport,
    /// VNet tuples per encryption code (only codes seen; unknown codes under `other`).
    pub encryption: BTreeMap<&'static str, u64>,
    pub rules: Vec<RuleRow>,
    /// Things the reader should know (double logging, …), deterministic order.
    pub warnings: Vec<String>,
}

/// Things the reader should know, worded once for `summary` and `report`: double logging
/// (NIC-hours with both NSG and VNet flow logs, which can describe the same flows).
/// What discovery has to say in a summary or report: blobs of an hour still being written.
pub fn discovery_warnings(d: &Discovered) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(first) = d.provisional.first() {
        w.push(format!(
            "provisional: {} blobs are of an hour Azure may still be writing (e.g. {}): their counts will grow; --skip-open-hour leaves them out",
            d.provisional.len(),
            first.display()
        ));
    }
    if let Some(first) = d.open_hour_skipped.first() {
        w.push(format!(
            "--skip-open-hour: {} blobs of an hour still being written were left out (e.g. {})",
            d.open_hour_skipped.len(),
            first.display()
        ));
    }
    w
}

pub fn warnings(c: &Coverage) -> Vec<String> {
    let mut warnings = Vec::new();
    let doubles = c.double_logged();
    if !doubles.is_empty() {
        let macs: BTreeSet<&str> = doubles.iter().map(|(m, _)| m.as_str()).collect();
        warnings.push(format!(
            "double logging: {} NIC-hours ({} NICs, e.g. {} at {}) have both NSG and VNet flow logs, \
             which can describe the same flows; pick one with --family nsg or --family vnet",
            doubles.len(),
            macs.len(),
            doubles[0].0,
            fmt_ms(doubles[0].1)
        ));
    }
    let missing = c.missing();
    if !missing.is_empty() {
        let hours: usize = missing.iter().map(|(_, h)| h.len()).sum();
        let (mac, first) = (&missing[0].0, &missing[0].1);
        warnings.push(format!(
            "missing hours: {} NICs have no blob for {hours} NIC-hours of the window (e.g. {} from {}, {} hours): a NIC that stopped logging or blobs not downloaded, not a drop in traffic",
            missing.len(),
            mac,
            fmt_ms(first[0]),
            first.len()
        ));
    }
    warnings
}

impl LedgerReport {
    /// The ledger of a run, with what discovery skipped or filtered.
    pub fn new(l: &crate::parse::Ledger, d: &Discovered) -> LedgerReport {
        LedgerReport {
            blobs: l.blobs,
            blobs_failed: l.blobs_failed,
            blobs_partial: l.blobs_partial,
            blobs_unread: l.blobs_unread,
            blobs_empty: l.blobs_empty,
            bytes: l.bytes,
            records: l.records,
            records_unrecognized: l.records_unrecognized,
            records_malformed: l.records_malformed,
            unrecognized_by_category: l.unrecognized_by_category.clone(),
            tuples: l.tuples,
            tuples_accepted: l.tuples_accepted,
            tuples_rejected: l.tuples_rejected,
            tuples_filtered: l.tuples_filtered,
            rejected_by_reason: l.rejected_map(),
            duplicate_records: l.duplicate_records,
            clock_skew: l.clock_skew,
            duplicate_tuples: l.duplicate_tuples,
            tuples_deduplicated: l.tuples_deduplicated,
            tolerated: l.tolerated,
            provisional_blobs: d
                .provisional
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            remote_listings: d.remote_listings.clone(),
            state: d.state.clone(),
            open_hour_skipped: d
                .open_hour_skipped
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            duplicate_blobs: d
                .duplicates
                .iter()
                .map(|x| DuplicateReport {
                    path: crate::text::path_text(&x.path),
                    same_as: x.same_as.display().to_string(),
                    how: x.how.to_string(),
                })
                .collect(),
            skipped_paths: d
                .skipped
                .iter()
                .map(|s| SkippedReport {
                    path: crate::text::path_text(&s.path),
                    reason: s.reason.clone(),
                })
                .collect(),
            blobs_filtered: d.filtered_out,
            problems: l.problems.clone(),
            reject_examples: l.examples.clone(),
        }
    }
}

/// Rule rows sorted by NSG, then rule.
pub fn rule_rows(s: &Summary) -> Vec<RuleRow> {
    let labels = nsg_labels(s);
    s.sorted_rules()
        .into_iter()
        .map(|(key, nsg, rule, st)| RuleRow {
            nsg: nsg.name.clone(),
            subscription: nsg.subscription.clone(),
            resource_group: nsg.resource_group.clone(),
            label: labels[key].clone(),
            rule: rule.to_string(),
            counters: st.counters,
            first: st.first_ms.map(fmt_ms),
            last: st.last_ms.map(fmt_ms),
        })
        .collect()
}

/// How each NSG is shown, by identity key ([`crate::aggregate::rules::nsg_labels`]).
pub fn nsg_labels(s: &Summary) -> BTreeMap<&str, String> {
    crate::aggregate::rules::nsg_labels(s.sorted_nsgs())
}

impl SummaryReport {
    /// The report of a finished summary fold, its coverage (for warnings) and what
    /// discovery skipped or left out.
    pub fn new(s: &Summary, c: &Coverage, d: &Discovered) -> SummaryReport {
        let l = &s.ledger;
        let mut warnings = warnings(c);
        warnings.extend(discovery_warnings(d));
        let mut encryption = BTreeMap::new();
        for e in Encryption::ALL {
            let n = s.encryption[e.index()];
            if n > 0 {
                encryption.insert(e.code(), n);
            }
        }
        SummaryReport {
            ledger: LedgerReport::new(l, d),
            time: TimeReport {
                first: s.first_ms.map(fmt_ms),
                last: s.last_ms.map(fmt_ms),
            },
            totals: s.totals,
            families: FamiliesReport {
                nsg_v1: s.families[0],
                nsg_v2: s.families[1],
                vnet: s.families[2],
            },
            encryption,
            rules: rule_rows(s),
            warnings,
        }
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = crate::text::json_pretty(self);
        s.push('\n');
        s
    }

    /// A readable terminal table. Every name from the log is made terminal-safe.
    pub fn to_table(&self) -> String {
        let l = &self.ledger;
        let t = &self.totals;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "blobs {}  ({} failed, {} partial)   records {}   bytes {}",
            l.blobs, l.blobs_failed, l.blobs_partial, l.records, l.bytes
        );
        let _ = writeln!(
            o,
            "tuples {} = {} accepted + {} rejected   ({} outside filters, {} duplicates{})",
            l.tuples,
            l.tuples_accepted,
            l.tuples_rejected,
            l.tuples_filtered,
            l.duplicate_tuples,
            if l.tuples_deduplicated > 0 {
                format!(", {} dropped by --dedup", l.tuples_deduplicated)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "time   {} .. {}",
            self.time.first.as_deref().unwrap_or("-"),
            self.time.last.as_deref().unwrap_or("-")
        );
        let [tuples, allowed, denied, inbound, outbound, p_sd, b_sd, p_ds, b_ds] = t.cells();
        let _ = writeln!(
            o,
            "counted {tuples} tuples: {allowed} allowed, {denied} denied, {inbound} in, {outbound} out; packets {p_sd} / {p_ds}, bytes {b_sd} / {b_ds} (src→dst / dst→src)",
        );
        let fams: Vec<String> = [
            ("nsg_v1", &self.families.nsg_v1),
            ("nsg_v2", &self.families.nsg_v2),
            ("vnet", &self.families.vnet),
        ]
        .iter()
        .filter(|(_, c)| c.tuples > 0)
        .map(|(n, c)| format!("{n} {}", c.tuples))
        .collect();
        if !fams.is_empty() {
            let _ = writeln!(o, "families: {}", fams.join(", "));
        }
        if !self.encryption.is_empty() {
            let enc: Vec<String> = self
                .encryption
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "encryption: {}", enc.join(", "));
        }
        o.push('\n');
        let header = [
            "NSG",
            "RULE",
            "TUPLES",
            "ALLOWED",
            "DENIED",
            "IN",
            "OUT",
            "BYTES S→D",
            "BYTES D→S",
            "FIRST",
            "LAST",
        ];
        let rows: Vec<[String; 11]> = self
            .rules
            .iter()
            .map(|r| {
                let [tuples, allowed, denied, inbound, outbound, _, b_sd, _, b_ds] =
                    r.counters.cells();
                [
                    term_safe(&r.label).into_owned(),
                    term_safe(&r.rule).into_owned(),
                    tuples,
                    allowed,
                    denied,
                    inbound,
                    outbound,
                    b_sd,
                    b_ds,
                    r.first
                        .as_deref()
                        .map(short_time)
                        .unwrap_or("-")
                        .to_string(),
                    r.last.as_deref().map(short_time).unwrap_or("-").to_string(),
                ]
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>, o: &mut String| {
            let mut first = true;
            for (i, c) in cells.iter().enumerate() {
                if !first {
                    o.push_str("  ");
                }
                first = false;
                let pad = widths[i].saturating_sub(c.chars().count());
                if (2..9).contains(&i) {
                    o.push_str(&" ".repeat(pad));
                    o.push_str(c);
                } else {
                    o.push_str(c);
                    if i + 1 < cells.len() {
                        o.push_str(&" ".repeat(pad));
                    }
                }
            }
            o.push('\n');
        };
        line(header.to_vec(), &mut o);
        for r in &rows {
            line(r.iter().map(String::as_str).collect(), &mut o);
        }
        for w in &self.warnings {
            let _ = writeln!(o, "\nwarning: {}", term_safe(w));
        }
        o
    }
}

/// One line saying what was skipped, or empty when nothing was. `unwalkable` counts input
/// paths that could not be walked.
pub fn skipped_line(l: &crate::parse::Ledger, unwalkable: usize) -> String {
    let mut parts = Vec::new();
    if unwalkable > 0 {
        parts.push(format!("{unwalkable} paths could not be walked"));
    }
    if l.blobs_failed > 0 {
        parts.push(format!("{} blobs failed", l.blobs_failed));
    }
    if l.blobs_partial > 0 {
        parts.push(format!(
            "{} blobs broke part-way (records before the break kept)",
            l.blobs_partial
        ));
    }
    if l.records_unrecognized > 0 {
        let by: Vec<String> = l
            .unrecognized_by_category
            .iter()
            .map(|(k, n)| format!("{} {n}", crate::text::term_safe(k)))
            .collect();
        parts.push(format!(
            "{} records were not flow-log records, never read as flow logs ({})",
            l.records_unrecognized,
            by.join(", ")
        ));
    }
    if l.records_malformed > 0 {
        parts.push(format!(
            "{} records had parts of the wrong JSON type (skipped; the rest of each was read)",
            l.records_malformed
        ));
    }
    if l.tuples_rejected > 0 {
        let by: Vec<String> = l
            .rejected_map()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        parts.push(format!(
            "{} tuples rejected ({})",
            l.tuples_rejected,
            by.join(", ")
        ));
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "skipped: {}. Details: --format json; every one: --rejects FILE.",
        parts.join("; ")
    )
}

fn short_time(s: &str) -> &str {
    // 2026-01-05T13:00:00.000Z -> 2026-01-05T13:00:00
    s.get(..19).unwrap_or(s)
}
