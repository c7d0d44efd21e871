//! Anomaly detection: folds in the same single read of the input whose finish yields
//! [`Finding`]s, each with its method, the measured value, the threshold that fired, and
//! evidence a user can open (path, record, rule, tuple).
//!
//! [`Detect`] is one fold holding every tuple-level detector's state, so a table's tuples are
//! walked once for all of them; each detector owns its state, its merge and its finish in a
//! file of its own: [`port_scan`] (vertical scans and, from the same first contacts,
//! [`horizontal_sweep`] and [`lateral_movement`]), [`exfiltration`], [`new_talker`],
//! [`denied_spike`], [`exposure`]. [`beacon`] reads stitched connections (its tally is fed by
//! the stitcher in the pipeline's ordered mode). Addresses are classified (internal,
//! external, Azure platform) at finish, with the run's `--internal` networks, so the folds
//! hold no reference and merge and save like every other fold.
//!
//! Thresholds live in [`DetectConfig`] (`--config FILE`, TOML, one section per detector);
//! each detector's docs say where its defaults come from.

pub mod beacon;
pub mod denied_spike;
pub mod exfiltration;
pub mod exposure;
pub mod horizontal_sweep;
pub mod lateral_movement;
pub mod new_talker;
pub mod port_scan;

use crate::addr::AddressBook;
use crate::aggregate::Fold;
use crate::discover::BlobMeta;
use crate::hash::HMap;
use crate::model::{Decision, Direction, FlowState, FlowTuple};
use crate::parse::{RuleTable, TableSink};
use crate::text::fmt_ms;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// How much a finding needs attention.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|v| v.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("{s:?}: use info, low, medium, high or critical"))
    }
}

/// Where a tuple is: a user can open the blob and find it. The blob path and rule name are
/// kept as 64-bit FxHash values of the strings (the same in every thread, run and shard, so
/// locations merge without renumbering), resolved through [`Detect`]'s name table at finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Loc {
    pub blob: u64,
    pub rule: u64,
    /// 0-based record index in the blob.
    pub record: u32,
    /// 0-based index in the rule's `flowTuples` array.
    pub tuple: u32,
}

/// The name-table key of a string (see [`Loc`]).
pub fn name_hash(s: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(s.as_bytes());
    h.finish()
}

/// One piece of evidence in a finding (`path: record R, rule X, tuple K`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub path: String,
    pub record: u32,
    pub rule: String,
    pub tuple: u32,
}

impl Evidence {
    fn of(l: &Loc, names: &HMap<u64, Arc<str>>) -> Evidence {
        let name = |h: &u64| names.get(h).map(|s| s.to_string()).unwrap_or_default();
        Evidence {
            path: name(&l.blob),
            record: l.record,
            rule: name(&l.rule),
            tuple: l.tuple,
        }
    }
}

/// First and last time of what a finding covers (RFC 3339 UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub first: String,
    pub last: String,
}

impl Window {
    pub fn new(first_ms: i64, last_ms: i64) -> Window {
        Window {
            first: fmt_ms(first_ms),
            last: fmt_ms(last_ms),
        }
    }
}

/// Most evidence entries listed per finding.
pub const EVIDENCE_PER_FINDING: usize = 5;

/// One finding (the `anomalies --format json` contract; names are stable).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable across runs: the kind and the subjects.
    pub id: String,
    /// `port_scan`, `horizontal_sweep`, `exfiltration`, `beacon`, `new_talker`,
    /// `denied_spike`, `lateral_movement` or `exposure`.
    pub kind: &'static str,
    pub severity: Severity,
    /// The detector's measure of how strongly it fired (comparable within a kind).
    pub score: f64,
    /// One line: what happened, who, to whom.
    pub title: String,
    /// Who: `src`, `dst`, `dport`, `protocol`, `nsg`, `rule`, `mac`, `hour`, … as strings.
    pub subjects: BTreeMap<&'static str, String>,
    pub window: Window,
    /// What was measured, by name.
    pub metrics: BTreeMap<&'static str, serde_json::Value>,
    /// What fired: the method, the measured value and the limit.
    pub threshold: String,
    /// The first few tuples behind the finding.
    pub evidence: Vec<Evidence>,
    /// The same, as locations, until [`findings`] resolves them.
    #[serde(skip)]
    locs: Vec<Loc>,
    /// What it was compared with, when it has a baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

impl Finding {
    /// A finding with its id made of the kind and the subjects.
    pub fn new(
        kind: &'static str,
        severity: Severity,
        score: f64,
        title: String,
        subjects: BTreeMap<&'static str, String>,
        window: Window,
    ) -> Finding {
        let id = std::iter::once(kind.to_string())
            .chain(subjects.iter().map(|(k, v)| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(":");
        Finding {
            id,
            kind,
            severity,
            score: (score * 1000.0).round() / 1000.0,
            title,
            subjects,
            window,
            metrics: BTreeMap::new(),
            threshold: String::new(),
            evidence: Vec::new(),
            locs: Vec::new(),
            baseline: None,
        }
    }

    pub fn metric(mut self, name: &'static str, v: impl Into<serde_json::Value>) -> Finding {
        self.metrics.insert(name, v.into());
        self
    }

    pub fn threshold(mut self, t: String) -> Finding {
        self.threshold = t;
        self
    }

    /// The first few locations, in the order given (earliest first, as callers give them).
    pub fn evidence<'a>(mut self, locs: impl IntoIterator<Item = &'a Loc>) -> Finding {
        for l in locs {
            if self.locs.len() == EVIDENCE_PER_FINDING {
                break;
            }
            if !self.locs.contains(l) {
                self.locs.push(*l);
            }
        }
        self
    }

    pub fn baseline(mut self, b: String) -> Finding {
        self.baseline = Some(b);
        self
    }
}

/// Severity first (highest first), then score, then id: one order for every listing.
pub fn sort_findings(v: &mut [Finding]) {
    v.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.score.total_cmp(&a.score))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Admin ports (lateral movement, exposure, new talkers): SSH, RDP, SMB, RPC, WinRM.
pub const ADMIN_PORTS: [u16; 6] = [22, 3389, 445, 135, 5985, 5986];
/// Database and cache ports often exposed by mistake (MSSQL, MySQL, PostgreSQL, Redis,
/// Elasticsearch, MongoDB, Cassandra, Memcached).
pub const DATABASE_PORTS: [u16; 8] = [1433, 3306, 5432, 6379, 9200, 27017, 9042, 11211];

/// Whether a port is in [`ADMIN_PORTS`] (a `match` the compiler turns into a few compares:
/// this runs on every inbound tuple).
#[inline]
pub fn is_admin_port(p: u16) -> bool {
    matches!(p, 22 | 3389 | 445 | 135 | 5985 | 5986)
}

/// Whether a port is in [`ADMIN_PORTS`] or [`DATABASE_PORTS`].
#[inline]
pub fn is_exposure_port(p: u16) -> bool {
    is_admin_port(p) || matches!(p, 1433 | 3306 | 5432 | 6379 | 9200 | 27017 | 9042 | 11211)
}

/// Thresholds and allow-lists of every detector (`--config FILE`, TOML; every key optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Addresses or networks no detector reports as a subject (scanners you run, backup
    /// targets, monitoring).
    pub allow: Vec<String>,
    /// The share of the window (from its start) used as the baseline when `--baseline` is
    /// not given (new talkers, lateral movement).
    pub baseline_fraction: Option<f64>,
    pub port_scan: port_scan::Config,
    pub horizontal_sweep: horizontal_sweep::Config,
    pub exfiltration: exfiltration::Config,
    pub beacon: beacon::Config,
    pub new_talker: new_talker::Config,
    pub denied_spike: denied_spike::Config,
    pub lateral_movement: lateral_movement::Config,
    pub exposure: exposure::Config,
}

impl DetectConfig {
    /// Read a TOML config; unknown keys are an error naming them.
    pub fn load(path: &std::path::Path) -> Result<DetectConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: DetectConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        c.allowed()
            .map_err(|e| format!("{}: allow: {e}", path.display()))?;
        Ok(c)
    }

    /// The allow-list as networks.
    pub fn allowed(&self) -> Result<Vec<IpNet>, String> {
        self.allow
            .iter()
            .map(|s| crate::filter::parse_net(s))
            .collect()
    }
}

/// What the detectors' finish needs besides their state.
pub struct Context<'a> {
    pub book: &'a AddressBook,
    pub config: &'a DetectConfig,
    /// Allow-listed networks (config `allow`), plus the Azure platform addresses.
    pub allow: Vec<IpNet>,
    /// First and last tuple time of the run.
    pub first_ms: i64,
    pub last_ms: i64,
    /// The baseline: a second fold (from `--baseline`), or `None` for the first part of
    /// the window ending at `baseline_end_ms`.
    pub baseline: Option<&'a Detect>,
    pub baseline_end_ms: i64,
    /// How the baseline reads in a finding.
    pub baseline_name: String,
}

impl Context<'_> {
    pub fn new<'a>(
        book: &'a AddressBook,
        config: &'a DetectConfig,
        first_ms: i64,
        last_ms: i64,
        baseline: Option<(&'a Detect, String)>,
    ) -> Context<'a> {
        let mut allow = config.allowed().unwrap_or_default();
        for p in ["168.63.129.16/32", "169.254.169.254/32"] {
            allow.push(p.parse().expect("valid"));
        }
        let frac = config.baseline_fraction.unwrap_or(0.25).clamp(0.0, 0.9);
        let baseline_end_ms = first_ms + ((last_ms - first_ms) as f64 * frac) as i64;
        let (baseline, baseline_name) = match baseline {
            Some((b, name)) => (Some(b), format!("the baseline {name}")),
            None => (
                None,
                format!(
                    "the first {:.0}% of the window ({} .. {})",
                    frac * 100.0,
                    fmt_ms(first_ms),
                    fmt_ms(baseline_end_ms)
                ),
            ),
        };
        Context {
            book,
            config,
            allow,
            first_ms,
            last_ms,
            baseline,
            baseline_end_ms,
            baseline_name,
        }
    }

    pub fn allowed(&self, ip: &IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(ip))
    }

    pub fn internal(&self, ip: &IpAddr) -> bool {
        self.book.is_internal(ip)
    }

    /// External: neither internal nor an Azure platform address.
    pub fn external(&self, ip: &IpAddr) -> bool {
        !self.book.is_internal(ip)
            && !matches!(
                self.book.class(ip, ip),
                crate::addr::FlowClass::AzurePlatform
            )
    }
}

/// Addresses as map keys: IPv4 in the low 32 bits with bit 127 set, IPv6 as is.
pub type Ip = u128;

pub fn ip_key(ip: &IpAddr) -> Ip {
    match ip {
        IpAddr::V4(v) => u32::from(*v) as u128 | 1 << 127,
        IpAddr::V6(v) => u128::from(*v),
    }
}

pub fn ip_of(k: Ip) -> IpAddr {
    if k >> 127 == 1 && (k >> 32) & ((1u128 << 95) - 1) == 0 {
        IpAddr::from((k as u32).to_be_bytes())
    } else {
        IpAddr::from(k.to_be_bytes())
    }
}

/// The tuple-level detectors' tables, each mergeable.
#[derive(Default, Serialize, Deserialize)]
pub struct Tallies {
    pub contacts: port_scan::Contacts,
    pub exfil: exfiltration::Uploads,
    pub talkers: new_talker::Talkers,
    pub denied: denied_spike::Denied,
    pub exposure: exposure::Exposed,
}

impl Tallies {
    /// Merge another whole run's tables in (another thread's, a partial's). The first
    /// contacts keep the other table's runs as they are ([`port_scan::Contacts::merge`]);
    /// the rest merge as a blob's do.
    pub fn merge(&mut self, mut o: Tallies) {
        self.contacts.merge(std::mem::take(&mut o.contacts));
        self.drain_from(&mut o);
    }

    /// Merge `o` in and leave it empty with its memory: a blob's tables, reused by the next
    /// blob instead of grown again from nothing.
    pub fn drain_from(&mut self, o: &mut Tallies) {
        self.contacts.drain_from(&mut o.contacts);
        self.exfil.drain_from(&mut o.exfil);
        self.talkers.drain_from(&mut o.talkers);
        self.denied.drain_from(&mut o.denied);
        self.exposure.drain_from(&mut o.exposure);
    }
}

/// Every tuple-level detector's state: one fold, one walk over each table.
///
/// Two levels: a blob's tuples go to tables of its own (`blob_tallies`), merged into the
/// run's (`tallies`) when it ends. A blob is one NIC's hour and repeats each key many
/// times (17 M tuples, 0.7 M first contacts on the 1 GB generated container): the blob's
/// tables stay small enough for the cache where the run's do not, so the run's tables are
/// touched once per key per blob instead of once per tuple.
#[derive(Default, Serialize, Deserialize)]
pub struct Detect {
    pub tallies: Tallies,
    /// Blob paths, rule and NSG names by [`name_hash`].
    pub names: HMap<u64, Arc<str>>,
    /// The blob being read.
    #[serde(skip)]
    blob: u64,
    /// The last table's rule name and its hash (tables of one record take turns).
    #[serde(skip)]
    last_rule: Option<(Box<str>, u64)>,
    /// The last table's NSG as written (resource id, name, subscription: what its
    /// identity is made of) and the identity's hash: the same for every table of a blob,
    /// so the identity (lower-cased) is built once a blob, not once a table.
    #[serde(skip)]
    last_nsg: Option<(crate::model::WrittenNsg, u64)>,
    /// Not run: tables pass through untouched.
    #[serde(skip)]
    off: bool,
    /// The current blob's tables.
    #[serde(skip)]
    blob_tallies: Tallies,
}

impl Detect {
    /// Detectors that run (`true`) or a fold that ignores every table.
    pub fn new(on: bool) -> Detect {
        Detect {
            off: !on,
            ..Detect::default()
        }
    }

    fn name(&mut self, s: &str) -> u64 {
        let h = name_hash(s);
        self.names.entry(h).or_insert_with(|| Arc::from(s));
        h
    }

    /// The NSG's hash: of its identity ([`crate::model::NsgIdentity`]), so that one NSG
    /// spelled two ways (NSG and VNet logs) is one series; shown by its best spelling.
    fn nsg_name(&mut self, ctx: &crate::model::GroupContext<'_>) -> u64 {
        let id = ctx.nsg_identity();
        let h = name_hash(&id.key());
        match self.names.get(&h) {
            Some(n) if !crate::model::better_spelling(id.name, n) => {}
            _ => {
                self.names.insert(h, Arc::from(id.name));
            }
        }
        h
    }

    /// Resolve locations into evidence.
    pub fn resolve(&self, f: &mut Finding) {
        f.evidence = f
            .locs
            .iter()
            .map(|l| Evidence::of(l, &self.names))
            .collect();
    }
}

/// What the detectors see of one tuple besides its fields.
pub struct Seen<'a> {
    pub t: &'a FlowTuple,
    /// [`name_hash`] of the NSG name.
    pub nsg: u64,
    pub record: u32,
    pub tuple: u32,
    pub blob: u64,
    pub rule: u64,
    pub inbound: bool,
    pub deny: bool,
    /// The tuple shows the other side answered (packets back), or a later state of an
    /// allowed flow (C or E).
    pub replied: bool,
}

impl Seen<'_> {
    #[inline]
    pub fn loc(&self) -> Loc {
        Loc {
            blob: self.blob,
            rule: self.rule,
            record: self.record,
            tuple: self.tuple,
        }
    }
}

impl TableSink for Detect {
    fn table(&mut self, table: &RuleTable<'_>) {
        if self.off || table.tuples.is_empty() {
            return;
        }
        let ctx = &table.ctx;
        let rule = match &self.last_rule {
            Some((r, h)) if **r == *ctx.rule => *h,
            _ => {
                let h = self.name(ctx.rule);
                self.last_rule = Some((ctx.rule.into(), h));
                h
            }
        };
        // Keyed by all the identity is made of: one NSG name in two resource groups (or,
        // without a resource id, two subscriptions) is two NSGs.
        let written = ctx.nsg_written();
        let nsg = match &self.last_nsg {
            Some((w, h)) if crate::model::same_written(w, written) => *h,
            _ => {
                let h = self.nsg_name(ctx);
                self.last_nsg = Some((written.map(Box::from), h));
                h
            }
        };
        let blob = self.blob;
        for (t, i) in table.tuples.iter().zip(table.indices) {
            let deny = t.decision == Decision::Deny;
            let replied = !deny
                && (t.packets_d2s.unwrap_or(0) > 0
                    || matches!(t.state, Some(FlowState::Continuing | FlowState::End)));
            let s = Seen {
                t,
                nsg,
                record: table.ctx.record_index as u32,
                tuple: *i,
                blob,
                rule,
                inbound: t.direction == Direction::Inbound,
                deny,
                replied,
            };
            let b = &mut self.blob_tallies;
            b.contacts.see(&s);
            b.denied.see(&s);
            if !deny {
                b.exfil.see(&s);
                b.talkers.see(&s);
                b.exposure.see(&s);
            }
        }
        self.blob_tallies.denied.flush();
    }
}

impl Fold for Detect {
    fn begin_blob(&mut self, blob: &BlobMeta) {
        if !self.off {
            self.blob = self.name(&crate::text::path_text(&blob.path));
        }
    }

    fn end_blob(&mut self) {
        self.tallies.drain_from(&mut self.blob_tallies);
    }

    fn merge(&mut self, mut o: Detect) {
        self.end_blob();
        o.end_blob();
        for (k, v) in o.names {
            match self.names.get(&k) {
                // An NSG's spellings: the better one; other names are one text per hash.
                Some(n) if !crate::model::better_spelling(&v, n) => {}
                _ => {
                    self.names.insert(k, v);
                }
            }
        }
        self.tallies.merge(o.tallies);
    }
}

/// Every finding of a finished run, sorted, at or above `min`.
pub fn findings(
    d: &Detect,
    beacons: &beacon::Beacons,
    cx: &Context<'_>,
    min: Severity,
) -> Vec<Finding> {
    // The detectors finish side by side (their finishes are a serial tail after the pass);
    // the sort below makes the result independent of which ends first.
    type Job<'a> = &'a (dyn Fn() -> Vec<Finding> + Sync);
    let jobs: [Job<'_>; 8] = [
        &|| port_scan::finish(&d.tallies.contacts, cx),
        &|| horizontal_sweep::finish(&d.tallies.contacts, cx),
        &|| lateral_movement::finish(&d.tallies.contacts, cx),
        &|| exfiltration::finish(&d.tallies.exfil, cx),
        &|| beacon::finish(beacons, &d.tallies.exfil, cx),
        &|| new_talker::finish(&d.tallies.talkers, cx),
        &|| denied_spike::finish(&d.tallies.denied, &d.names, cx),
        &|| exposure::finish(&d.tallies.exposure, &d.names, cx),
    ];
    use rayon::prelude::*;
    let mut v: Vec<Finding> = jobs.par_iter().flat_map_iter(|job| job()).collect();
    v.retain(|f| f.severity >= min);
    for f in &mut v {
        d.resolve(f);
    }
    sort_findings(&mut v);
    v
}

/// Median of a sorted slice (0 when empty).
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Median and median absolute deviation of the values (Hampel 1974; the robust centre and
/// spread behind every robust z-score here).
pub fn median_mad(values: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    median_mad_sorted(&v)
}

/// [`median_mad`] of values already in ascending order: no sort of the values, and the
/// deviations' median by selection instead of a sort (the same order statistics, so the
/// same numbers). The beacon finish scores every candidate series this way.
pub fn median_mad_sorted(sorted: &[f64]) -> (f64, f64) {
    let m = median(sorted);
    let mut dev: Vec<f64> = sorted.iter().map(|x| (x - m).abs()).collect();
    (m, median_unsorted(&mut dev))
}

/// Median of values in any order (0 when empty), found by selection; reorders them.
fn median_unsorted(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let (below, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *mid;
    if n % 2 == 1 {
        return hi;
    }
    // The (n/2 - 1)-th value is the largest of the n/2 below.
    let lo = below
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .expect("an even count of 2 or more");
    (lo + hi) / 2.0
}

/// Robust z-score (Iglewicz and Hoaglin 1993): 0.6745 (x - median) / MAD. With a MAD of 0
/// (most values equal), the mean absolute deviation times 1.2533 stands in (their
/// recommendation), and failing that a spread of 1.
pub fn robust_z(x: f64, values: &[f64]) -> f64 {
    let (m, mad) = median_mad(values);
    if mad > 0.0 {
        return 0.6745 * (x - m) / mad;
    }
    let mean_ad = values.iter().map(|v| (v - m).abs()).sum::<f64>() / values.len().max(1) as f64;
    if mean_ad > 0.0 {
        (x - m) / (1.2533 * mean_ad)
    } else {
        x - m
    }
}

/// `a -> b` with the protocol's port, for titles.
pub fn endpoint(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
        IpAddr::V4(_) => format!("{ip}:{port}"),
    }
}

/// Tuples in, findings out: what the detectors' unit tests are written with. Each tuple goes
/// through the fold as a table of its own (NSG `nsg`, rule `rule`, one blob per hour), the
/// findings come from [`findings`] with the default config and built-in internal ranges.
#[cfg(test)]
pub(crate) mod testkit {
    use super::*;
    use crate::model::{Family, GroupContext, Protocol};

    /// 2026-01-05T00:00:00Z, the start of every test's window.
    pub const T0: i64 = 1_767_571_200_000;

    fn tuple(min: f64, src: &str, dst: &str, dport: u16, inbound: bool) -> FlowTuple {
        FlowTuple {
            time_ms: T0 + (min * 60_000.0) as i64,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 40_000,
            dport,
            protocol: Protocol::Tcp,
            direction: if inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            decision: Decision::Allow,
            state: Some(FlowState::Begin),
            encryption: None,
            packets_s2d: None,
            bytes_s2d: None,
            packets_d2s: None,
            bytes_d2s: None,
        }
    }

    /// A denied attempt `min` minutes into the window.
    pub fn denied(min: f64, src: &str, dst: &str, dport: u16, inbound: bool) -> FlowTuple {
        FlowTuple {
            decision: Decision::Deny,
            ..tuple(min, src, dst, dport, inbound)
        }
    }

    /// An allowed flow's begin tuple that nothing answered (yet).
    pub fn unanswered(min: f64, src: &str, dst: &str, dport: u16, inbound: bool) -> FlowTuple {
        tuple(min, src, dst, dport, inbound)
    }

    /// An allowed flow's end tuple: answered, `bytes` sent source to destination.
    pub fn answered(
        min: f64,
        src: &str,
        dst: &str,
        dport: u16,
        inbound: bool,
        bytes: u64,
    ) -> FlowTuple {
        FlowTuple {
            state: Some(FlowState::End),
            packets_s2d: Some(1 + bytes / 1400),
            bytes_s2d: Some(bytes),
            packets_d2s: Some(1),
            bytes_d2s: Some(60),
            ..tuple(min, src, dst, dport, inbound)
        }
    }

    /// Fold `(nsg, rule, tuple)`s, in the order given.
    pub fn fold(tuples: &[(&str, &str, FlowTuple)]) -> Detect {
        let with_ids: Vec<(&str, &str, &str, FlowTuple)> =
            tuples.iter().map(|(n, r, t)| ("", *n, *r, *t)).collect();
        fold_ids(&with_ids)
    }

    /// Fold `(resource id, nsg, rule, tuple)`s, in the order given.
    pub fn fold_ids(tuples: &[(&str, &str, &str, FlowTuple)]) -> Detect {
        let mut d = Detect::new(true);
        let mut hour = None;
        for (record, (resource_id, nsg, rule, t)) in tuples.iter().enumerate() {
            let h = t.time_ms.div_euclid(3_600_000);
            if hour != Some(h) {
                if hour.is_some() {
                    d.end_blob();
                }
                hour = Some(h);
                d.begin_blob(&BlobMeta {
                    path: format!("test/h={h}/PT1H.json").into(),
                    ..BlobMeta::default()
                });
            }
            d.table(&RuleTable {
                ctx: GroupContext {
                    family: Family::NsgV2,
                    nsg,
                    rule,
                    mac: "000D3A000001",
                    subscription: "",
                    resource_id,
                    target_resource_id: "",
                    flow_log_resource_id: "",
                    record_index: record,
                },
                tuples: std::slice::from_ref(t),
                indices: &[0],
            });
        }
        d.end_blob();
        d
    }

    /// The findings of `tuples` over the window they span (or `window_min` minutes from
    /// [`T0`] when given), with `config` and no `--baseline`.
    pub fn run_with(
        tuples: &[(&str, &str, FlowTuple)],
        window_min: Option<i64>,
        config: &DetectConfig,
    ) -> Vec<Finding> {
        let d = fold(tuples);
        let book = AddressBook::default();
        let first = tuples.iter().map(|x| x.2.time_ms).min().unwrap_or(T0);
        let last = match window_min {
            Some(m) => T0 + m * 60_000 - 1,
            None => tuples.iter().map(|x| x.2.time_ms).max().unwrap_or(T0),
        };
        let cx = Context::new(&book, config, first.min(T0), last, None);
        findings(&d, &beacon::Beacons::default(), &cx, Severity::Info)
    }

    pub fn run(tuples: &[(&str, &str, FlowTuple)], window_min: Option<i64>) -> Vec<Finding> {
        run_with(tuples, window_min, &DetectConfig::default())
    }

    /// The findings of one kind.
    pub fn of<'a>(v: &'a [Finding], kind: &str) -> Vec<&'a Finding> {
        v.iter().filter(|f| f.kind == kind).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_matches_equal_the_port_lists() {
        for p in 0..=u16::MAX {
            assert_eq!(is_admin_port(p), ADMIN_PORTS.contains(&p), "{p}");
            assert_eq!(
                is_exposure_port(p),
                ADMIN_PORTS.contains(&p) || DATABASE_PORTS.contains(&p),
                "{p}"
            );
        }
    }

    #[test]
    fn one_nsg_name_in_two_resource_groups_is_two_denied_series() {
        // Regression: the NSG's hash was cached by its name and the rule alone, so a table
        // of rg-b's app-nsg right after one of rg-a's (same rule) was counted as rg-a's.
        use testkit::{denied, fold_ids, T0};
        let rid = |rg: &str| {
            format!("/SUBSCRIPTIONS/S1/RESOURCEGROUPS/{rg}/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/APP-NSG")
        };
        let (a, b) = (rid("RG-A"), rid("RG-B"));
        let rule = "DefaultRule_DenyAllInBound";
        let d = fold_ids(&[
            (
                &a,
                "APP-NSG",
                rule,
                denied(1.0, "203.0.113.9", "10.0.0.4", 22, true),
            ),
            (
                &b,
                "APP-NSG",
                rule,
                denied(2.0, "203.0.113.9", "10.1.0.4", 22, true),
            ),
            (
                &b,
                "APP-NSG",
                rule,
                denied(3.0, "203.0.113.9", "10.1.0.4", 23, true),
            ),
        ]);
        let hour = T0 - T0.rem_euclid(3_600_000);
        let count = |key: &str| {
            d.tallies
                .denied
                .hours
                .get(&(name_hash(key), hour))
                .map(|h| h.0)
        };
        assert_eq!(count("s1/rg-a/app-nsg"), Some(1));
        assert_eq!(count("s1/rg-b/app-nsg"), Some(2));
        assert_eq!(d.tallies.denied.hours.len(), 2);
    }

    #[test]
    fn ip_keys_round_trip_both_families() {
        for s in [
            "10.0.0.4",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::1",
            "::",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(ip_of(ip_key(&ip)), ip, "{s}");
        }
    }

    #[test]
    fn the_mad_by_selection_equals_the_mad_by_sorting() {
        let mut rng = fastrand::Rng::with_seed(5);
        for n in 0..60 {
            // Few distinct values (ties), both parities of count, any order.
            let v: Vec<f64> = (0..n).map(|_| rng.u32(0..12) as f64 * 7.5).collect();
            let mut s = v.clone();
            s.sort_unstable_by(f64::total_cmp);
            let m = median(&s);
            let mut dev: Vec<f64> = s.iter().map(|x| (x - m).abs()).collect();
            dev.sort_unstable_by(f64::total_cmp);
            assert_eq!(median_mad(&v), (m, median(&dev)), "{v:?}");
            assert_eq!(median_mad_sorted(&s), (m, median(&dev)), "{v:?}");
        }
    }

    #[test]
    fn robust_z_follows_iglewicz_and_hoaglin() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        // median 3, MAD 1: z(100) = 0.6745 * 97.
        assert!((robust_z(100.0, &v) - 65.4265).abs() < 1e-3);
        assert_eq!(median_mad(&v), (3.0, 1.0));
        // Equal values: the mean absolute deviation stands in.
        let flat = [5.0, 5.0, 5.0, 9.0];
        assert!(robust_z(9.0, &flat) > 3.0);
    }

    #[test]
    fn findings_sort_by_severity_then_score_then_id() {
        let f = |sev, score, id: &str| {
            let mut x = Finding::new(
                "exposure",
                sev,
                score,
                id.into(),
                BTreeMap::new(),
                Window::new(0, 0),
            );
            x.id = id.into();
            x
        };
        let mut v = vec![
            f(Severity::Low, 9.0, "a"),
            f(Severity::High, 1.0, "b"),
            f(Severity::High, 2.0, "c"),
            f(Severity::High, 2.0, "a"),
        ];
        sort_findings(&mut v);
        let ids: Vec<&str> = v.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b", "a"]);
        assert_eq!(v[3].severity, Severity::Low);
    }
}
