//! Building a [`Report`]: the one-pass aggregate and its assembly into the model.

use super::*;
use crate::addr::AddressBook;
use crate::aggregate::Summary;
use crate::analyze::connections::{
    ConnSummary, Connection, PairTally, Status, Stitcher, Tally as Stat,
};
use crate::analyze::nic_groups;
use crate::discover::{Discovered, LogKind};
use crate::model::{Decision, Direction, Protocol};
use crate::parse::{Ledger, RuleTable, TableSink};
use crate::pipeline::{process_blob, RunOptions, Worker};
use crate::text::fmt_ms;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Rows per top list.
pub const TOP_N: usize = 15;
const HOUR_MS: i64 = 3_600_000;
/// Missing hours listed per NIC (the count is always given).
const MISSING_LISTED: usize = 48;

/// One direction's traffic by (source, destination) pair (tallied by the stitcher, see
/// [`ConnSummary`]) and by destination port; the per-source and per-destination totals are
/// folded from the pairs at the end.
#[derive(Default)]
struct DirAgg {
    pairs: PairTally,
    port: FxHashMap<(Protocol, u16), Stat>,
}

fn merge_map<K: std::hash::Hash + Eq>(a: &mut FxHashMap<K, Stat>, b: FxHashMap<K, Stat>) {
    for (k, v) in b {
        a.entry(k).or_default().merge(&v);
    }
}

impl DirAgg {
    fn merge(&mut self, o: DirAgg) {
        self.pairs.merge(o.pairs);
        merge_map(&mut self.port, o.port);
    }

    /// Per-source and per-destination totals.
    fn ends(&self) -> (FxHashMap<IpAddr, Stat>, FxHashMap<IpAddr, Stat>) {
        let mut src: FxHashMap<IpAddr, Stat> = FxHashMap::default();
        let mut dst: FxHashMap<IpAddr, Stat> = FxHashMap::default();
        for ((a, b), st) in self.pairs.iter() {
            src.entry(a).or_default().merge(st);
            dst.entry(b).or_default().merge(st);
        }
        (src, dst)
    }

    /// The busiest pairs (both maps), in [`top`] order.
    fn top_pairs(&self, n: usize) -> Vec<((IpAddr, IpAddr), Stat)> {
        let mut v: Vec<((IpAddr, IpAddr), Stat)> = top(&self.pairs.v4, n)
            .into_iter()
            .map(|(k, st)| (PairTally::unpack4(k), st))
            .collect();
        v.extend(top(&self.pairs.v6, n));
        v.sort_by(busiest_first);
        v.truncate(n);
        v
    }
}

#[derive(Clone, Copy, Default)]
struct Hour {
    allowed: u64,
    denied: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Hour {
    fn add(&mut self, o: &Hour) {
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// Everything one pass folds; merges across NIC groups.
#[derive(Default)]
pub struct ReportAgg {
    summary: Summary,
    dir: [DirAgg; 2],
    hours: FxHashMap<i64, Hour>,
    conns: ConnSummary,
}

impl TableSink for ReportAgg {
    fn table(&mut self, table: &RuleTable<'_>) {
        self.summary.table(table);
        // Tables rarely cross an hour: accumulate the hour locally, flush when it changes.
        let mut cur_hour = i64::MIN;
        let mut cur = Hour::default();
        // A rule's tuples often share a destination port (all 443 under an HTTPS rule):
        // count a run of one port locally, one map update per run.
        let mut port_run: Option<(bool, Protocol, u16)> = None;
        let mut port_stat = Stat::default();
        for t in table.tuples {
            let deny = t.decision == Decision::Deny;
            let bytes = t.bytes_s2d.unwrap_or(0) + t.bytes_d2s.unwrap_or(0);
            let inbound = t.direction == Direction::Inbound;
            let port = Some((inbound, t.protocol, t.dport));
            if port != port_run {
                self.flush_port(port_run, &port_stat);
                port_run = port;
                port_stat = Stat::default();
            }
            port_stat.add(deny, bytes);
            let hour = t.time_ms - t.time_ms.rem_euclid(HOUR_MS);
            if hour != cur_hour {
                if cur_hour != i64::MIN {
                    self.hours.entry(cur_hour).or_default().add(&cur);
                }
                cur = Hour::default();
                cur_hour = hour;
            }
            if deny {
                cur.denied += 1;
            } else {
                cur.allowed += 1;
            }
            if inbound {
                cur.bytes_in += bytes;
            } else {
                cur.bytes_out += bytes;
            }
        }
        if cur_hour != i64::MIN {
            self.hours.entry(cur_hour).or_default().add(&cur);
        }
        self.flush_port(port_run, &port_stat);
    }
}

impl ReportAgg {
    /// Add a run of one (direction, protocol, port) to its direction's port table.
    fn flush_port(&mut self, run: Option<(bool, Protocol, u16)>, st: &Stat) {
        if let Some((inbound, p, n)) = run {
            self.dir[inbound as usize]
                .port
                .entry((p, n))
                .or_default()
                .merge(st);
        }
    }
}

impl ReportAgg {
    fn merge(&mut self, o: ReportAgg) {
        self.summary.merge(o.summary);
        let [a, b] = o.dir;
        self.dir[0].merge(a);
        self.dir[1].merge(b);
        for (k, v) in o.hours {
            self.hours.entry(k).or_default().add(&v);
        }
        self.conns.merge(o.conns);
    }
}

/// Both sinks see every table.
struct Tee<'a> {
    agg: &'a mut ReportAgg,
    stitch: &'a mut Stitcher,
}

impl TableSink for Tee<'_> {
    fn table(&mut self, t: &RuleTable<'_>) {
        self.agg.table(t);
        self.stitch.table(t);
    }
}

/// One pass over the blobs: NIC groups in parallel, each read in time order. `tick` is
/// called once per blob read (for a progress bar).
pub fn aggregate(
    blobs: &[crate::discover::BlobMeta],
    opts: &RunOptions,
    tick: &(dyn Fn() + Sync),
) -> (ReportAgg, Ledger) {
    let groups = nic_groups(blobs);
    // Exactly one accumulator per thread (a rayon fold would make one per split, each as
    // large as the full maps). Each thread takes the next NIC group, largest first, from a
    // shared counter, so a thread that runs slower simply takes fewer groups. The stitcher
    // is finished after each group, so no connection state crosses NICs; every merge below
    // is order-free, so the result does not depend on which thread took which group.
    let threads = rayon::current_num_threads().max(1);
    let mut order: Vec<(u64, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.iter().map(|b| b.size).sum::<u64>(), i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (mut agg, mut stitch, ledger) = (0..threads)
        .into_par_iter()
        .map(|_| {
            let mut agg = ReportAgg::default();
            let mut stitch = Stitcher::default();
            stitch.summary = Some(ConnSummary::default());
            let mut ledger = Ledger::default();
            let mut w = Worker::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(_, gi)) = order.get(i) else { break };
                for blob in &groups[gi] {
                    let mut tee = Tee {
                        agg: &mut agg,
                        stitch: &mut stitch,
                    };
                    ledger.merge(process_blob(&mut w, blob, opts, &mut tee));
                    tick();
                }
                stitch.finish();
            }
            (agg, stitch, ledger)
        })
        .reduce(
            || {
                let mut st = Stitcher::default();
                st.summary = Some(ConnSummary::default());
                (ReportAgg::default(), st, Ledger::default())
            },
            |(mut a, mut sa, mut la), (b, sb, lb)| {
                a.merge(b);
                if let (Some(x), Some(y)) = (sa.summary.as_mut(), sb.summary) {
                    x.merge(y);
                }
                la.merge(lb);
                (a, sa, la)
            },
        );
    agg.conns = stitch.summary.take().expect("summary mode");
    for (d, p) in agg.dir.iter_mut().zip(&mut agg.conns.pairs) {
        d.pairs = std::mem::take(p);
    }
    (agg, ledger)
}

fn talker(book: &AddressBook, ip: &IpAddr, s: &Stat) -> Talker {
    Talker {
        key: ip.to_string(),
        src: None,
        dst: None,
        scope: book.scope_name(ip).to_string(),
        label: book.label(ip).map(|(l, _)| l.to_string()),
        tuples: s.tuples,
        allowed: s.tuples - s.denied,
        denied: s.denied,
        bytes: s.bytes,
    }
}

/// Busiest first (tuples, then bytes), ties by key: deterministic.
fn top<K: Ord + Copy>(m: &FxHashMap<K, Stat>, n: usize) -> Vec<(K, Stat)> {
    let mut v: Vec<(K, Stat)> = m.iter().map(|(k, s)| (*k, *s)).collect();
    if n > 0 && v.len() > n {
        v.select_nth_unstable_by(n - 1, busiest_first);
        v.truncate(n);
    }
    v.sort_by(busiest_first);
    v
}

fn busiest_first<K: Ord>(a: &(K, Stat), b: &(K, Stat)) -> std::cmp::Ordering {
    b.1.tuples
        .cmp(&a.1.tuples)
        .then(b.1.bytes.cmp(&a.1.bytes))
        .then(a.0.cmp(&b.0))
}

fn port_rows(m: &FxHashMap<(Protocol, u16), Stat>, n: usize) -> Vec<PortRow> {
    top(m, n)
        .into_iter()
        .map(|((p, port), s)| PortRow {
            port: format!("{port}/{p}"),
            tuples: s.tuples,
            allowed: s.tuples - s.denied,
            denied: s.denied,
            bytes: s.bytes,
        })
        .collect()
}

fn talkers(book: &AddressBook, d: &DirAgg) -> Talkers {
    let (src, dst) = d.ends();
    Talkers {
        sources: top(&src, TOP_N)
            .iter()
            .map(|(ip, s)| talker(book, ip, s))
            .collect(),
        destinations: top(&dst, TOP_N)
            .iter()
            .map(|(ip, s)| talker(book, ip, s))
            .collect(),
        pairs: d
            .top_pairs(TOP_N)
            .iter()
            .map(|((a, b), s)| {
                let la = book.label(a).map(|(l, _)| l);
                let lb = book.label(b).map(|(l, _)| l);
                Talker {
                    key: format!("{a} -> {b}"),
                    src: Some(a.to_string()),
                    dst: Some(b.to_string()),
                    scope: format!("{} -> {}", book.scope_name(a), book.scope_name(b)),
                    label: (la.is_some() || lb.is_some())
                        .then(|| format!("{} -> {}", la.unwrap_or("-"), lb.unwrap_or("-"))),
                    tuples: s.tuples,
                    allowed: s.tuples - s.denied,
                    denied: s.denied,
                    bytes: s.bytes,
                }
            })
            .collect(),
        ports: port_rows(&d.port, TOP_N),
    }
}

fn conn_row(c: &Connection) -> ConnectionRow {
    ConnectionRow {
        start: fmt_ms(c.start_ms),
        duration_ms: c.duration_ms(),
        src: format!("{}:{}", c.src, c.sport),
        dst: format!("{}:{}", c.dst, c.dport),
        service: format!("{}/{}", c.dport, c.protocol),
        direction: c.direction,
        status: c.status.name(),
        bytes: c.bytes(),
        packets: c.packets_src_to_dst + c.packets_dst_to_src,
        rule: format!("{}/{}", c.nsg, c.rule),
    }
}

fn coverage(agg: &ReportAgg, d: &Discovered) -> Coverage {
    let s = &agg.summary;
    let hours: Vec<i64> = d.blobs.iter().filter_map(|b| b.hour_ms).collect();
    let (lo, hi) = (hours.iter().min().copied(), hours.iter().max().copied());
    let span: Vec<i64> = match (lo, hi) {
        (Some(lo), Some(hi)) => (0..)
            .map(|i| lo + i * HOUR_MS)
            .take_while(|h| *h <= hi)
            .collect(),
        _ => Vec::new(),
    };
    let mut nics: BTreeMap<&str, (BTreeSet<i64>, BTreeSet<&'static str>)> = BTreeMap::new();
    for b in &d.blobs {
        if let Some(mac) = &b.mac {
            let e = nics.entry(mac.as_str()).or_default();
            if let Some(h) = b.hour_ms {
                e.0.insert(h);
            }
            if let Some(k) = b.kind {
                e.1.insert(match k {
                    LogKind::Nsg => "nsg",
                    LogKind::Vnet => "vnet",
                });
            }
        }
    }
    let mut families = BTreeMap::new();
    for (f, c) in s.family_counters() {
        if c.tuples > 0 {
            families.insert(f.name(), c.tuples);
        }
    }
    let mut nsgs: Vec<String> = s.rules.keys().cloned().collect();
    nsgs.sort();
    Coverage {
        first: s.first_ms.map(fmt_ms),
        last: s.last_ms.map(fmt_ms),
        families,
        nsgs,
        hours_spanned: span.len(),
        nics: nics
            .into_iter()
            .map(|(mac, (present, kinds))| {
                let missing: Vec<i64> = span
                    .iter()
                    .copied()
                    .filter(|h| !present.contains(h))
                    .collect();
                NicCoverage {
                    mac: mac.to_string(),
                    kinds: kinds.into_iter().collect(),
                    hours_present: present.len(),
                    hours_missing_count: missing.len(),
                    hours_missing: missing
                        .iter()
                        .take(MISSING_LISTED)
                        .map(|h| fmt_ms(*h))
                        .collect(),
                }
            })
            .collect(),
    }
}

/// Most bins in the time series: the bin width grows (1 h, 2 h, 3 h, 6 h, 12 h, 1 d, 7 d,
/// 30 d, …) until the span fits, so a report over years stays readable and small.
const MAX_BINS: i64 = 400;

/// The hourly counts regrouped into at most [`MAX_BINS`] bins aligned to the epoch, dense
/// from the first to the last bin (empty bins as zeros). Returns (bin width ms, rows).
fn series(hours: &FxHashMap<i64, Hour>) -> (i64, Vec<HourRow>) {
    let (Some(lo), Some(hi)) = (hours.keys().min().copied(), hours.keys().max().copied()) else {
        return (HOUR_MS, Vec::new());
    };
    let span_h = (hi - lo) / HOUR_MS + 1;
    let mut bin_h: i64 = 1;
    for b in [1, 2, 3, 6, 12, 24, 7 * 24, 30 * 24] {
        bin_h = b;
        if span_h / b < MAX_BINS {
            break;
        }
    }
    while span_h / bin_h >= MAX_BINS {
        bin_h *= 2;
    }
    let bin = bin_h * HOUR_MS;
    let mut bins: BTreeMap<i64, Hour> = BTreeMap::new();
    for (h, v) in hours {
        bins.entry(h - h.rem_euclid(bin)).or_default().add(v);
    }
    let (first, last) = (lo - lo.rem_euclid(bin), hi - hi.rem_euclid(bin));
    let mut rows = Vec::new();
    let mut at = first;
    while at <= last {
        let v = bins.get(&at).copied().unwrap_or_default();
        rows.push(HourRow {
            start: fmt_ms(at),
            allowed: v.allowed,
            denied: v.denied,
            bytes_in: v.bytes_in,
            bytes_out: v.bytes_out,
        });
        at += bin;
    }
    (bin, rows)
}

/// Context the model records besides the data.
pub struct ReportContext<'a> {
    pub inputs: Vec<String>,
    pub filters: Vec<String>,
    pub generated_at: Option<String>,
    pub book: &'a AddressBook,
}

/// Assemble the model from the pass's aggregate and ledger.
pub fn assemble(
    agg: &ReportAgg,
    ledger: &Ledger,
    d: &Discovered,
    cx: &ReportContext<'_>,
) -> Report {
    let s = &agg.summary;
    let (series_bin_ms, series) = series(&agg.hours);
    let mut all_ports = FxHashMap::default();
    for dir in &agg.dir {
        for (k, v) in &dir.port {
            all_ports.entry(*k).or_insert_with(Stat::default).merge(v);
        }
    }
    // The summary's warnings (double logging) are worded once, in `summary`.
    let warnings = crate::summary::SummaryReport::new(s, d).warnings;
    Report {
        schema_version: SCHEMA_VERSION,
        generator: format!("nsgflow {}", env!("CARGO_PKG_VERSION")),
        generated_at: cx.generated_at.clone(),
        inputs: cx.inputs.clone(),
        filters: cx.filters.clone(),
        ledger: LedgerSection::new(ledger, d),
        coverage: coverage(agg, d),
        totals: s.totals,
        rules: crate::summary::rule_rows(s),
        ingress: talkers(cx.book, &agg.dir[1]),
        egress: talkers(cx.book, &agg.dir[0]),
        series_bin_ms,
        series,
        ports: port_rows(&all_ports, 20),
        connections: {
            let c = &agg.conns;
            let by_status: BTreeMap<&'static str, u64> = [
                Status::Completed,
                Status::Open,
                Status::Denied,
                Status::Stateless,
            ]
            .iter()
            .map(|s| (s.name(), c.by_status[*s as usize]))
            .filter(|(_, n)| *n > 0)
            .collect();
            ConnectionsSection {
                total: c.by_status.iter().sum(),
                by_status,
                top_by_bytes: c.top_bytes.sorted().iter().map(conn_row).collect(),
                top_by_duration: c.top_duration.sorted().iter().map(conn_row).collect(),
            }
        },
        warnings,
    }
}
