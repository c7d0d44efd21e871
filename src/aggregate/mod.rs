//! The folds: every aggregate a command can ask of one read of the input, one file each.
//!
//! A fold takes rule tables as the parser yields them ([`TableSink`]), is told when a blob
//! ends (to fold its per-blob caches into its totals), merges with another fold of its kind
//! ([`Fold::merge`]: associative and commutative, so the answer never depends on blob order,
//! thread count or shard split) and finishes into a plain output model. Folds that need each
//! NIC's tables in time order ([`NicFold`]: the connection stitcher and what it feeds) are
//! told when a NIC group ends as well. [`crate::pipeline`] is the only driver; commands
//! compose folds as tuples (`(Summary, Traffic)` is a fold).
//!
//! | file | fold | finishes into |
//! |---|---|---|
//! | [`rules`] | [`Summary`]: counters per NSG rule, family, encryption and in total | `summary`, the report's rule table |
//! | [`traffic`] | [`traffic::Traffic`]: hourly decisions and bytes, destination ports per direction | the report's series and port lists |
//! | [`timeline`] | [`timeline::Timeline`]: counters and distinct ends per time bin | `timeline` |
//! | [`top`] | [`top::TopAgg`]: one `top` question | `top` |
//! | [`graph`] | [`graph::GraphAgg`]: ingress or egress edges | `graph`, and the report's flow pictures |
//! | [`connections`] | the stitcher and [`connections::ConnFold`] (status counts, top connections, address-pair edges) | `connections`, `top --by connection`, the report |
//! | [`coverage`] | [`coverage::Coverage`]: blobs read per NIC and hour, log kinds | the report's coverage, double-logging warnings |

pub mod connections;
pub mod coverage;
pub mod graph;
pub mod rules;
pub mod timeline;
pub mod top;
pub mod traffic;

pub use rules::{Counters, NsgRules, RuleStats, Summary};

use crate::discover::BlobMeta;
use crate::parse::{Ledger, RuleTable, TableSink};
use crate::pipeline::{run, run_nics, Progress, RunOptions};

/// `summary`'s folds: rule counters, and coverage for its warnings.
pub type SummaryFolds = (Summary, coverage::Coverage);

/// The one pass behind `summary`: the ledger, the rule counters and coverage.
pub fn summary_pass(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
) -> (SummaryFolds, Ledger) {
    run(blobs, opts, progress, SummaryFolds::default)
}

/// [`summary_pass`] without progress, its ledger set in the summary (tests, benches).
pub fn summarize(blobs: &[BlobMeta], opts: &RunOptions) -> Summary {
    let ((mut s, _), ledger) = summary_pass(blobs, opts, &|| {});
    s.ledger = ledger;
    s
}

/// The report's folds, finished: what one pass over the input (or a merge of partials)
/// yields and [`crate::report::build::assemble`] reads.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct ReportData {
    pub summary: Summary,
    pub traffic: traffic::Traffic,
    pub coverage: coverage::Coverage,
    /// Connections by status, the top connections, the address-pair edges and the
    /// connections beacon detection reads.
    pub conns: connections::ConnSummary,
    /// The tuple-level detectors.
    pub detect: crate::detect::Detect,
    /// The rule audit's hits (off without `report --rules`).
    pub audit: crate::audit::Hits,
    /// The run's ledger (a partial file keeps it beside the folds, not in them).
    #[serde(skip)]
    pub ledger: Ledger,
}

/// The one pass behind `report`: every fold at once. The order-free folds (rules, traffic,
/// coverage, the detectors) and the stitcher see the same tables; NIC groups are read in
/// time order. `detect` runs the detectors as well (off with `report --no-findings`).
pub fn report_pass(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
    detect: bool,
) -> ReportData {
    report_pass_with(blobs, opts, progress, detect, None)
}

/// [`report_pass`], with the rule audit's fold too when `audit` gives its watches
/// (`report --rules`).
pub fn report_pass_with(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
    detect: bool,
    audit: Option<std::sync::Arc<Vec<crate::audit::Watch>>>,
) -> ReportData {
    let (folds, conns, ledger) = run_nics(
        blobs,
        opts,
        progress,
        || report_folds(detect, &audit),
        || connections::ConnFold::new(detect),
    );
    ReportData::from_folds(folds, conns.into_summary(), ledger)
}

/// The report's order-free folds: rules, traffic, coverage, the detectors, the audit's hits.
pub type ReportFolds = (
    (Summary, traffic::Traffic),
    coverage::Coverage,
    (crate::detect::Detect, crate::audit::Hits),
);

/// The report's order-free folds, empty: the detectors on with `detect`, the audit's hits
/// with `audit`'s watches (`report --rules`).
pub fn report_folds(
    detect: bool,
    audit: &Option<std::sync::Arc<Vec<crate::audit::Watch>>>,
) -> ReportFolds {
    (
        <(Summary, traffic::Traffic)>::default(),
        coverage::Coverage::default(),
        (
            crate::detect::Detect::new(detect),
            match audit {
                Some(w) => crate::audit::Hits::new(w.clone()),
                None => crate::audit::Hits::off(),
            },
        ),
    )
}

impl ReportData {
    /// The report's data from its finished folds.
    pub fn from_folds(
        ((summary, traffic), coverage, (detect, audit)): ReportFolds,
        conns: connections::ConnSummary,
        ledger: Ledger,
    ) -> ReportData {
        ReportData {
            summary,
            traffic,
            coverage,
            detect,
            audit,
            conns,
            ledger,
        }
    }
}

/// What the detectors read of a pass: [`detect_pass`] yields it, a report's
/// [`ReportData`] holds it.
pub struct DetectData<'a> {
    pub summary: &'a Summary,
    pub detect: &'a crate::detect::Detect,
    pub beacons: &'a crate::detect::beacon::Beacons,
}

impl ReportData {
    pub fn detect_data(&self) -> DetectData<'_> {
        DetectData {
            summary: &self.summary,
            detect: &self.detect,
            beacons: &self.conns.beacons,
        }
    }
}

/// The pass behind `anomalies` (and `--baseline` folders): the rule counters (the run's
/// window and ledger), the detectors, and the stitcher counting connections and collecting
/// beacons, without the report's traffic, coverage, top lists and pair tallies.
pub fn detect_pass(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
) -> (
    Summary,
    crate::detect::Detect,
    connections::ConnSummary,
    Ledger,
) {
    let ((summary, detect), conns, ledger) = run_nics(
        blobs,
        opts,
        progress,
        || (Summary::default(), crate::detect::Detect::new(true)),
        connections::ConnFold::beacons_only,
    );
    (summary, detect, conns.into_summary(), ledger)
}

/// An order-free aggregate: rule tables fold into it in any order, and two of its kind merge.
pub trait Fold: TableSink + Send {
    /// A blob begins (its tables follow). Most folds need not know.
    fn begin_blob(&mut self, _blob: &BlobMeta) {}
    /// The blob's tables have all been given: fold per-blob caches into the totals.
    fn end_blob(&mut self) {}
    /// Merge another fold of the same kind (associative, commutative).
    fn merge(&mut self, other: Self);
}

/// A fold that needs each NIC's tables in time order (connection stitching). The pipeline
/// gives it one NIC group at a time, each group's blobs in time order, and ends each group
/// with [`NicFold::end_group`], whose output it hands on in group order.
pub trait NicFold: TableSink + Send {
    /// What a finished group yields (rows to write, or `()` when the fold keeps it all).
    type Out: Send;
    fn begin_blob(&mut self, _blob: &BlobMeta) {}
    fn end_blob(&mut self) {}
    /// The group's data is over: close what is open.
    fn end_group(&mut self) -> Self::Out;
    /// Merge another fold of the same kind (associative, commutative).
    fn merge(&mut self, other: Self);
}

/// No aggregate: for commands whose only consumer is ordered.
impl TableSink for () {
    fn table(&mut self, _table: &RuleTable<'_>) {}
}

impl Fold for () {
    fn merge(&mut self, _other: Self) {}
}

impl<A: TableSink, B: TableSink> TableSink for (A, B) {
    #[inline]
    fn table(&mut self, t: &RuleTable<'_>) {
        self.0.table(t);
        self.1.table(t);
    }
}

impl<A: Fold, B: Fold> Fold for (A, B) {
    fn begin_blob(&mut self, blob: &BlobMeta) {
        self.0.begin_blob(blob);
        self.1.begin_blob(blob);
    }
    fn end_blob(&mut self) {
        self.0.end_blob();
        self.1.end_blob();
    }
    fn merge(&mut self, o: Self) {
        self.0.merge(o.0);
        self.1.merge(o.1);
    }
}

impl<A: TableSink, B: TableSink, C: TableSink> TableSink for (A, B, C) {
    #[inline]
    fn table(&mut self, t: &RuleTable<'_>) {
        self.0.table(t);
        self.1.table(t);
        self.2.table(t);
    }
}

impl<A: Fold, B: Fold, C: Fold> Fold for (A, B, C) {
    fn begin_blob(&mut self, blob: &BlobMeta) {
        self.0.begin_blob(blob);
        self.1.begin_blob(blob);
        self.2.begin_blob(blob);
    }
    fn end_blob(&mut self) {
        self.0.end_blob();
        self.1.end_blob();
        self.2.end_blob();
    }
    fn merge(&mut self, o: Self) {
        self.0.merge(o.0);
        self.1.merge(o.1);
        self.2.merge(o.2);
    }
}
