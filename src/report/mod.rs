//! `report`: the main job's output. [`build::assemble`] turns the finished folds of one pass
//! ([`crate::aggregate::report_pass`], or a merge of partial files) into a [`Report`] — the
//! ledger and coverage, the per-rule table, top talkers for ingress and egress, a time
//! series, the destination-port distribution, connections — and small renderers write it as
//! JSON, Markdown, HTML with inline SVG charts, and CSV tables. Nothing here parses, schedules
//! or tallies: renderers and charts read the model and never recompute, so every number in
//! every file is the same number.

pub mod build;
pub mod charts;
pub mod compare;
pub mod render;

use crate::aggregate::Counters;
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the `report.json` layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report (`report.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Layout version of this document ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// `--title`, or the inputs and the window.
    pub title: String,
    /// nsgflow version that wrote it.
    pub generator: String,
    /// When it was written (RFC 3339), only with `--stamp`, so reports reproduce byte for byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<String>,
    /// Inputs as given on the command line.
    pub inputs: Vec<String>,
    /// Filters applied, one human-readable line each (empty: none).
    pub filters: Vec<String>,
    /// What needs attention first: the detectors' findings.
    pub findings: Findings,
    /// The rule audit, with `report --rules` (the `audit --format json` document).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::Audit>,
    pub ledger: LedgerSection,
    pub coverage: Coverage,
    /// Counters over every counted tuple.
    pub totals: Counters,
    /// Per NSG and rule, sorted by NSG then rule.
    pub rules: Vec<RuleRow>,
    /// Inbound traffic (to the NICs).
    pub ingress: Talkers,
    /// Outbound traffic (from the NICs).
    pub egress: Talkers,
    /// Width of the time-series bins in ms: one hour unless the data spans more than 400
    /// hours, then wider (2 h, 3 h, 6 h, 12 h, 1 d, 7 d, 30 d, …) so there are at most 400.
    pub series_bin_ms: i64,
    /// One row per bin from the first to the last tuple's bin (empty bins as zeros).
    pub series: Vec<HourRow>,
    /// Destination ports over both directions, busiest first.
    pub ports: Vec<PortRow>,
    pub connections: ConnectionsSection,
    /// Things the reader should know (double logging, …).
    pub warnings: Vec<String>,
    /// Every external source and destination and destination port: what a later
    /// `report --compare` checks for new and vanished ones.
    pub endpoints: compare::Endpoints,
    /// `--compare PREVIOUS`: what changed since that report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<compare::Comparison>,
}

pub use crate::detect::Finding;
use crate::detect::Severity;

/// Every detector, as `kind` names it.
pub const DETECTORS: [&str; 8] = [
    "port_scan",
    "horizontal_sweep",
    "exfiltration",
    "beacon",
    "new_talker",
    "denied_spike",
    "lateral_movement",
    "exposure",
];

/// The detectors' answer (the `findings` of `report.json`; `anomalies --format json` prints
/// the same fields beside the ledger).
#[derive(Clone, Debug, Serialize)]
pub struct Findings {
    /// Whether the detectors ran (`anomalies`, `report` without `--no-findings`).
    pub ran: bool,
    /// Findings below this severity are left out.
    pub min_severity: Severity,
    /// The detectors that ran.
    pub checked: Vec<&'static str>,
    /// Findings per severity (every severity listed).
    pub counts: BTreeMap<&'static str, usize>,
    /// What new talkers and lateral movement were compared with.
    pub baseline: String,
    /// Sorted by severity, then score, then id.
    pub items: Vec<Finding>,
}

impl Findings {
    pub fn new(items: Vec<Finding>, min_severity: Severity, baseline: String) -> Findings {
        let counts = Severity::ALL
            .iter()
            .map(|s| (s.name(), items.iter().filter(|f| f.severity == *s).count()))
            .collect();
        Findings {
            ran: true,
            min_severity,
            checked: DETECTORS.to_vec(),
            counts,
            baseline,
            items,
        }
    }

    /// The detectors did not run (`report --no-findings`).
    pub fn not_run() -> Findings {
        Findings {
            ran: false,
            checked: Vec::new(),
            ..Findings::new(Vec::new(), Severity::Info, String::new())
        }
    }

    /// "3 high, 1 medium" (severities with findings, highest first), or "none".
    pub fn count_line(&self) -> String {
        let v: Vec<String> = Severity::ALL
            .iter()
            .filter_map(|s| {
                let n = self.counts[s.name()];
                (n > 0).then(|| format!("{n} {}", s.name()))
            })
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    }
}

/// Columns of `findings.csv` and `anomalies --format csv` ([`Finding::cells`]).
pub const FINDING_COLUMNS: [&str; 10] = [
    "severity",
    "kind",
    "score",
    "title",
    "subjects",
    "first",
    "last",
    "threshold",
    "evidence",
    "id",
];

impl Finding {
    /// The finding as CSV cells, in [`FINDING_COLUMNS`] order; evidence as
    /// `path:record:rule:tuple`, space-separated.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.severity.name().to_string(),
            self.kind.to_string(),
            self.score.to_string(),
            self.title.clone(),
            self.subject_line(),
            self.window.first.clone(),
            self.window.last.clone(),
            self.threshold.clone(),
            self.evidence
                .iter()
                .map(|e| format!("{}:{}:{}:{}", e.path, e.record, e.rule, e.tuple))
                .collect::<Vec<_>>()
                .join(" "),
            self.id.clone(),
        ]
    }

    /// `src=…, dst=…` for tables.
    pub fn subject_line(&self) -> String {
        self.subjects
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `path: record R, rule X, tuple K` of the first evidence, or empty.
    pub fn first_evidence(&self) -> String {
        self.evidence
            .first()
            .map(|e| {
                format!(
                    "{}: record {}, rule {}, tuple {}",
                    e.path, e.record, e.rule, e.tuple
                )
            })
            .unwrap_or_default()
    }
}

/// What was read and what was not: the same ledger `summary --format json` prints.
pub use crate::summary::LedgerReport as LedgerSection;

/// Which logs cover what.
#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    /// First and last tuple time (RFC 3339), `null` when none was counted.
    pub first: Option<String>,
    pub last: Option<String>,
    /// Counted tuples per family (`nsg_v1`, `nsg_v2`, `vnet`).
    pub families: BTreeMap<&'static str, u64>,
    /// NSG (or ACL) names seen in records, sorted.
    pub nsgs: Vec<String>,
    /// Hours between the first and last blob hour (the span each NIC is checked against).
    pub hours_spanned: usize,
    /// Per NIC (MAC from the blob path), sorted by MAC.
    pub nics: Vec<NicCoverage>,
}

impl Coverage {
    /// NICs with hours missing from the span: the ones the report lists.
    pub fn nics_with_gaps(&self) -> impl Iterator<Item = &NicCoverage> {
        self.nics.iter().filter(|n| n.hours_missing_count > 0)
    }

    /// "398 NICs complete for all 168 hours" (or "no NIC ..."): the NICs not listed.
    pub fn complete_line(&self) -> String {
        let complete = self.nics.len() - self.nics_with_gaps().count();
        let hours = match self.hours_spanned {
            1 => "the 1 hour".to_string(),
            h => format!("all {h} hours"),
        };
        match (complete, self.nics.len()) {
            (0, _) => format!("No NIC has blobs for {hours} of the span."),
            (c, n) if c == n => format!(
                "{c} NIC{} complete for {hours}: no hour missing.",
                if c == 1 { "" } else { "s" }
            ),
            (c, n) => format!(
                "{c} NIC{} complete for {hours}; the {} below {} gaps.",
                if c == 1 { "" } else { "s" },
                n - c,
                if n - c == 1 { "has" } else { "have" }
            ),
        }
    }
}

/// One NIC's blob hours.
#[derive(Clone, Debug, Serialize)]
pub struct NicCoverage {
    pub mac: String,
    /// `nsg`, `vnet` or both.
    pub kinds: Vec<&'static str>,
    pub hours_present: usize,
    /// Hours of the span with no blob for this NIC (RFC 3339 hour starts; at most 48 listed).
    pub hours_missing: Vec<String>,
    pub hours_missing_count: usize,
}

/// One rule's row: the same row `summary --format json` prints.
pub use crate::summary::RuleRow;

/// Top talkers of one direction.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Talkers {
    pub sources: Vec<Talker>,
    pub destinations: Vec<Talker>,
    /// Source → destination pairs (the flow picture's edges).
    pub pairs: Vec<Talker>,
    pub ports: Vec<PortRow>,
}

/// One ranked endpoint or pair.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Talker {
    /// An address, or `source -> destination` for pairs.
    pub key: String,
    /// For pairs: the source and destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// `internal` or `external` (pairs: `internal -> external`, …).
    pub scope: String,
    /// `--labels` name(s), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub tuples: u64,
    pub allowed: u64,
    pub denied: u64,
    pub bytes: crate::aggregate::rules::Sum,
}

/// One destination port.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PortRow {
    /// `443/tcp`.
    pub port: String,
    pub tuples: u64,
    pub allowed: u64,
    pub denied: u64,
    pub bytes: crate::aggregate::rules::Sum,
}

/// One time bin.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HourRow {
    /// Bin start, RFC 3339.
    pub start: String,
    pub allowed: u64,
    pub denied: u64,
    /// Bytes (both ways) of inbound tuples.
    pub bytes_in: crate::aggregate::rules::Sum,
    /// Bytes (both ways) of outbound tuples.
    pub bytes_out: crate::aggregate::rules::Sum,
    /// NICs with an hour of this bin missing (no blob, inside the run's span): a drop here
    /// may be missing logs, not missing traffic. The charts shade such bins.
    pub nics_missing: usize,
    /// NICs with an hour of this bin logged by both NSG and VNet flow logs (a migration):
    /// a rise here may be the same traffic counted twice. The charts shade such bins.
    pub nics_double_logged: usize,
}

/// Stitched connections.
#[derive(Clone, Debug, Serialize, Default)]
pub struct ConnectionsSection {
    pub total: u64,
    /// Per status (`completed`, `open`, `denied`, `stateless`).
    pub by_status: BTreeMap<&'static str, u64>,
    /// Largest by bytes.
    pub top_by_bytes: Vec<ConnectionRow>,
    /// Longest.
    pub top_by_duration: Vec<ConnectionRow>,
}

/// One connection in the report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConnectionRow {
    pub start: String,
    pub duration_ms: i64,
    pub src: String,
    pub dst: String,
    /// `443/tcp`.
    pub service: String,
    pub direction: &'static str,
    pub status: &'static str,
    /// `null` when none of its tuples logged a count (NSG v1, denied attempts).
    pub bytes: Option<crate::aggregate::rules::Sum>,
    pub packets: Option<crate::aggregate::rules::Sum>,
    /// `nsg/rule`.
    pub rule: String,
}

impl ConnectionRow {
    /// Bytes as text: `not logged` when none of its tuples logged a count.
    pub fn bytes_text(&self) -> String {
        self.bytes.map_or_else(
            || crate::aggregate::rules::NOT_LOGGED.into(),
            |b| b.to_string(),
        )
    }
    /// Packets as text, the same way.
    pub fn packets_text(&self) -> String {
        self.packets.map_or_else(
            || crate::aggregate::rules::NOT_LOGGED.into(),
            |b| b.to_string(),
        )
    }
}
