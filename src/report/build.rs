//! Building a [`Report`]: the one-pass aggregate and its assembly into the model.

use super::*;
use crate::addr::AddressBook;
use crate::aggregate::Summary;
use crate::analyze::connections::{
    ConnSummary, Connection, PairTally, Status, Stitcher, Tally as Stat,
};
use crate::analyze::nic_groups;
use crate::discover::BlobMeta;
use crate::discover::{Discovered, LogKind};
use crate::model::{Decision, Direction, Protocol};
use crate::parse::{Ledger, RuleTable, TableBuffer, TableSink};
use crate::pipeline::{process_blob, RunOptions, Worker};
use crate::text::fmt_ms;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

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

    /// The busiest sources and destinations (at most `n` each), in [`top`] order. IPv4
    /// totals are folded by `u32` (whose order is `IpAddr`'s among IPv4 addresses), IPv6
    /// ones by address; the two tops are then combined.
    #[allow(clippy::type_complexity)]
    fn top_ends(&self, n: usize) -> (Vec<(IpAddr, Stat)>, Vec<(IpAddr, Stat)>) {
        // Sources (`dst` false) or destinations; the two are folded at once.
        let end = |dst: bool| {
            let mut m4: FxHashMap<u32, Stat> = FxHashMap::default();
            for (k, st) in &self.pairs.v4 {
                let ip = if dst { *k as u32 } else { (k >> 32) as u32 };
                m4.entry(ip).or_default().merge(st);
            }
            let mut m6: FxHashMap<IpAddr, Stat> = FxHashMap::default();
            for ((a, b), st) in &self.pairs.v6 {
                m6.entry(if dst { *b } else { *a }).or_default().merge(st);
            }
            let mut v: Vec<(IpAddr, Stat)> = top(&m4, n)
                .into_iter()
                .map(|(ip, st)| (IpAddr::from(ip.to_be_bytes()), st))
                .collect();
            v.extend(top(&m6, n));
            v.sort_by(busiest_first);
            v.truncate(n);
            v
        };
        rayon::join(|| end(false), || end(true))
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

/// (direction, protocol, port) packed: port bits 0-15, `Protocol::code` 16-25, inbound 26.
fn port_key(inbound: bool, p: Protocol, port: u16) -> u32 {
    (inbound as u32) << 26 | (p.code() as u32) << 16 | port as u32
}
const PORT_MASK: u32 = (1 << 26) - 1;
/// An empty [`PortCache`] slot (`port_key` never gives it).
const NO_PORT: u32 = u32::MAX;

/// A direct-mapped write-back cache of port tallies in front of the port maps, 256 slots by
/// a multiplicative hash of `port_key` (8 KiB, stays in L1). A rule's tuples mostly share a
/// few ports (443 under an HTTPS rule, a handful of scanned ports under a deny rule), which
/// are counted here; a map update happens only when a slot changes hands or at `fold_recent`.
struct PortCache(Box<[(u32, Stat); 256]>);

impl Default for PortCache {
    fn default() -> Self {
        PortCache(Box::new([(NO_PORT, Stat::default()); 256]))
    }
}

fn port_slot(key: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B1) >> 24) as usize
}

/// Add a tally to its direction's map (by `port_key` without the direction bit).
fn add_port(maps: &mut [FxHashMap<u32, Stat>; 2], key: u32, st: &Stat) {
    if key != NO_PORT {
        maps[(key >> 26) as usize]
            .entry(key & PORT_MASK)
            .or_default()
            .merge(st);
    }
}

/// Everything one pass folds; merges across NIC groups.
#[derive(Default)]
pub struct ReportAgg {
    summary: Summary,
    dir: [DirAgg; 2],
    /// Port tallies of the current blob by `port_key` without the direction bit, added to
    /// `dir` by `fold_recent`: a small map stays in cache, the run's map of scanned ports
    /// does not.
    port_recent: [FxHashMap<u32, Stat>; 2],
    port_cache: PortCache,
    hours: FxHashMap<i64, Hour>,
    conns: ConnSummary,
}

impl TableSink for ReportAgg {
    fn table(&mut self, table: &RuleTable<'_>) {
        self.summary.table(table);
        // Tables rarely cross an hour: accumulate the hour [cur_hour, hour_end) locally,
        // flush when a tuple falls outside it.
        let (mut cur_hour, mut hour_end) = (i64::MIN, i64::MIN);
        let mut cur = Hour::default();
        let cache = &mut self.port_cache.0;
        for t in table.tuples {
            let deny = t.decision == Decision::Deny;
            let bytes = t.bytes_s2d.unwrap_or(0) + t.bytes_d2s.unwrap_or(0);
            let inbound = t.direction == Direction::Inbound;
            let port = port_key(inbound, t.protocol, t.dport);
            let slot = &mut cache[port_slot(port)];
            if slot.0 != port {
                let (old, st) = std::mem::replace(slot, (port, Stat::default()));
                add_port(&mut self.port_recent, old, &st);
            }
            slot.1.add(deny, bytes);
            if t.time_ms < cur_hour || t.time_ms >= hour_end {
                if cur_hour != i64::MIN {
                    self.hours.entry(cur_hour).or_default().add(&cur);
                }
                cur = Hour::default();
                cur_hour = t.time_ms - t.time_ms.rem_euclid(HOUR_MS);
                hour_end = cur_hour + HOUR_MS;
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
    }
}

impl ReportAgg {
    /// Add the port tallies of the tables since the last call to the totals.
    fn fold_recent(&mut self) {
        for slot in self.port_cache.0.iter_mut() {
            let (key, st) = std::mem::replace(slot, (NO_PORT, Stat::default()));
            add_port(&mut self.port_recent, key, &st);
        }
        for (d, g) in self.dir.iter_mut().zip(&mut self.port_recent) {
            for (k, v) in g.drain() {
                let key = (Protocol::from_code((k >> 16) as u16), k as u16);
                d.port.entry(key).or_default().merge(&v);
            }
        }
    }
}

impl ReportAgg {
    fn merge(&mut self, mut o: ReportAgg) {
        self.fold_recent();
        o.fold_recent();
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

/// Both sinks see every table: the aggregate and the stitcher (an owner), or the aggregate
/// and a buffer of tables for the owner's stitcher (a helper).
struct Tee<'a, A, B> {
    a: &'a mut A,
    b: &'a mut B,
}

impl<A: TableSink, B: TableSink> TableSink for Tee<'_, A, B> {
    fn table(&mut self, t: &RuleTable<'_>) {
        self.a.table(t);
        self.b.table(t);
    }
}

/// Blobs a helper may have parsed ahead for one NIC group and not yet handed over: bounds
/// the memory of parsed tables kept (a parsed blob is about twice its JSON size).
const HELP_AHEAD: usize = 1;

/// Who reads each blob of a NIC group.
enum Claim {
    Free,
    /// The group's owner reads it (parses and stitches in one go).
    Owner,
    /// A helper is parsing it.
    Helper,
    /// A helper parsed it: the owner stitches these tables when its turn comes.
    Ready(TableBuffer),
}

/// One NIC group's blobs and who reads them (see [`aggregate`]).
struct Lane {
    st: Mutex<LaneState>,
    cv: Condvar,
}

struct LaneState {
    /// The owner has read the whole group. Helpers only run once every group has been
    /// taken, so an unfinished group always has an owner (perhaps not started yet).
    done: bool,
    /// The blob the owner takes next.
    next: usize,
    claims: Vec<Claim>,
    /// Blobs claimed by helpers and not yet taken by the owner.
    ahead: usize,
}

impl Lane {
    fn new(blobs: usize) -> Lane {
        Lane {
            st: Mutex::new(LaneState {
                done: false,
                next: 0,
                claims: (0..blobs).map(|_| Claim::Free).collect(),
                ahead: 0,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        // A panic elsewhere is re-raised by the thread scope; the state stays usable.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one thread folds: its share of the aggregate, its stitcher, its ledger.
struct Part {
    agg: ReportAgg,
    stitch: Stitcher,
    ledger: Ledger,
    w: Worker,
}

impl Part {
    fn new() -> Part {
        let mut stitch = Stitcher::default();
        stitch.summary = Some(ConnSummary::default());
        Part {
            agg: ReportAgg::default(),
            stitch,
            ledger: Ledger::default(),
            w: Worker::default(),
        }
    }

    /// Read a NIC group as its owner: blobs in time order, each parsed and stitched in one
    /// go, except those a helper parsed, whose tables are stitched here in their turn.
    fn own(&mut self, lane: &Lane, group: &[&BlobMeta], opts: &RunOptions, tick: &Tick<'_>) {
        loop {
            let mut st = lane.lock();
            let j = st.next;
            if j == group.len() {
                st.done = true;
                break;
            }
            st.next += 1;
            if matches!(st.claims[j], Claim::Free) {
                st.claims[j] = Claim::Owner;
                drop(st);
                let mut tee = Tee {
                    a: &mut self.agg,
                    b: &mut self.stitch,
                };
                self.ledger
                    .merge(process_blob(&mut self.w, group[j], opts, &mut tee));
                self.end_blob();
                tick();
                continue;
            }
            while !matches!(st.claims[j], Claim::Ready(_)) {
                st = lane.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let Claim::Ready(buf) = std::mem::replace(&mut st.claims[j], Claim::Owner) else {
                unreachable!("checked above")
            };
            st.ahead -= 1;
            drop(st);
            lane.cv.notify_all();
            buf.replay(&mut self.stitch);
            self.end_blob();
        }
        self.stitch.finish();
    }

    /// Fold the blob's port and pair tallies into the totals: per-blob maps stay in cache.
    fn end_blob(&mut self) {
        self.agg.fold_recent();
        self.stitch.fold_recent();
    }

    /// With no group left to own, parse blobs of groups other threads own, ahead of them:
    /// not the blob the owner takes next unless it is the last, at most [`HELP_AHEAD`] per
    /// group.
    fn help(
        &mut self,
        lanes: &[Lane],
        groups: &[Vec<&BlobMeta>],
        opts: &RunOptions,
        tick: &Tick<'_>,
    ) {
        loop {
            let mut claimed = None;
            let mut full = None;
            for (gi, lane) in lanes.iter().enumerate() {
                let mut st = lane.lock();
                if st.done {
                    continue;
                }
                // Not the blob the owner takes next (it would wait for it), unless it is the
                // group's last: then taking it is quicker, as the owner is still busy.
                let free = |j: &usize| matches!(st.claims[*j], Claim::Free);
                let n = st.claims.len();
                let Some(j) = (st.next + 1..n)
                    .find(free)
                    .or((st.next + 1 == n).then_some(st.next).filter(free))
                else {
                    continue;
                };
                if st.ahead >= HELP_AHEAD {
                    full = Some(gi);
                    continue;
                }
                st.claims[j] = Claim::Helper;
                st.ahead += 1;
                claimed = Some((gi, j));
                break;
            }
            match (claimed, full) {
                (Some((gi, j)), _) => {
                    let mut buf = TableBuffer::default();
                    let mut sink = Tee {
                        a: &mut self.agg,
                        b: &mut buf,
                    };
                    self.ledger
                        .merge(process_blob(&mut self.w, groups[gi][j], opts, &mut sink));
                    self.agg.fold_recent();
                    tick();
                    lanes[gi].lock().claims[j] = Claim::Ready(buf);
                    lanes[gi].cv.notify_all();
                }
                (None, Some(gi)) => {
                    // Wait for the owner to take a parsed blob (or finish), then look again.
                    let st = lanes[gi].lock();
                    if !st.done && st.ahead >= HELP_AHEAD {
                        let wait = std::time::Duration::from_millis(20);
                        drop(lanes[gi].cv.wait_timeout(st, wait));
                    }
                }
                (None, None) => break,
            }
        }
    }
}

type Tick<'a> = dyn Fn() + Sync + 'a;

/// One pass over the blobs: NIC groups in parallel, each read in time order. `tick` is
/// called once per blob read (for a progress bar).
///
/// Each thread owns one NIC group at a time, the next one largest first from a shared
/// counter, and keeps one accumulator (a rayon fold would make one per split, each as large
/// as the full maps). A NIC group's tables must reach its stitcher in time order, so a group
/// cannot be split the way `summary` splits blobs; instead, once no group is left to take, a
/// thread helps the others finish: it parses blobs ahead of their owners (folding the
/// order-free aggregate itself) and hands the parsed tables over for stitching in order.
/// Without this the run ended with one core idle for up to a whole group. Every merge is
/// order-free, so the result does not depend on which thread read which blob.
pub fn aggregate(blobs: &[BlobMeta], opts: &RunOptions, tick: &Tick<'_>) -> (ReportAgg, Ledger) {
    let groups = nic_groups(blobs);
    let threads = rayon::current_num_threads().max(1);
    let mut order: Vec<(u64, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.iter().map(|b| b.size).sum::<u64>(), i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let lanes: Vec<Lane> = groups.iter().map(|g| Lane::new(g.len())).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut part = Part::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(_, gi)) = order.get(i) else { break };
            part.own(&lanes[gi], &groups[gi], opts, tick);
        }
        if threads > 1 {
            part.help(&lanes, &groups, opts, tick);
        }
        part
    };
    let parts: Vec<Part> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut parts = vec![work()];
        for h in handles {
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    let mut parts = parts.into_iter();
    let mut total = parts.next().expect("one thread at least");
    for p in parts {
        let (conns, agg) = (&mut total.stitch.summary, &mut total.agg);
        rayon::join(
            || agg.merge(p.agg),
            || {
                if let (Some(x), Some(y)) = (conns.as_mut(), p.stitch.summary) {
                    x.merge(y);
                }
            },
        );
        total.ledger.merge(p.ledger);
    }
    let mut agg = total.agg;
    agg.conns = total.stitch.summary.take().expect("summary mode");
    for (d, p) in agg.dir.iter_mut().zip(&mut agg.conns.pairs) {
        d.pairs = std::mem::take(p);
    }
    (agg, total.ledger)
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
    let (src, dst) = d.top_ends(TOP_N);
    Talkers {
        sources: src.iter().map(|(ip, s)| talker(book, ip, s)).collect(),
        destinations: dst.iter().map(|(ip, s)| talker(book, ip, s)).collect(),
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
    // The two directions' top lists (the slowest part of assembling) are built at once.
    let (ingress, (egress, all_ports)) = rayon::join(
        || talkers(cx.book, &agg.dir[1]),
        || {
            let mut all_ports = agg.dir[1].port.clone();
            for (k, v) in &agg.dir[0].port {
                all_ports.entry(*k).or_default().merge(v);
            }
            (talkers(cx.book, &agg.dir[0]), all_ports)
        },
    );
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
        ingress,
        egress,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{discover, DiscoverOptions};
    use crate::gen::{generate, GenOptions};

    fn numbers(p: &Part) -> (String, [u64; 4], Vec<(u64, Stat)>, usize) {
        let c = p.stitch.summary.as_ref().expect("summary mode");
        let mut pairs: Vec<(u64, Stat)> = c.pairs[0]
            .v4
            .iter()
            .chain(&c.pairs[1].v4)
            .map(|(k, v)| (*k, *v))
            .collect();
        pairs.sort_by_key(|(k, v)| (*k, v.tuples, v.bytes));
        let l = &p.ledger;
        let ledger = format!("{} {} {}", l.blobs, l.tuples, l.tuples_accepted);
        (ledger, c.by_status, pairs, c.top_bytes.sorted().len())
    }

    /// A helper thread parses blobs ahead of a group's owner, which stitches the handed-over
    /// tables in turn: together they give exactly what the owner alone gives.
    #[test]
    fn a_helped_group_gives_the_owner_alone_result() {
        let dir = tempfile::tempdir().unwrap();
        generate(&GenOptions {
            out: dir.path().into(),
            nsgs: 1,
            nics_per_nsg: 1,
            hours: 6,
            flows_per_minute: 4.0,
            ..GenOptions::default()
        })
        .unwrap();
        let d = discover(&[dir.path().into()], &DiscoverOptions::default());
        let groups = nic_groups(&d.blobs);
        assert_eq!((groups.len(), groups[0].len()), (1, 6));
        let opts = RunOptions::default();

        let mut alone = Part::new();
        alone.own(&Lane::new(6), &groups[0], &opts, &|| {});

        let lanes = [Lane::new(6)];
        let mut owner = Part::new();
        let helper = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut p = Part::new();
                p.help(&lanes, &groups, &opts, &|| {});
                p
            });
            // The owner starts once the helper has claimed all it may ahead of it.
            while lanes[0].lock().ahead < HELP_AHEAD {
                std::thread::yield_now();
            }
            owner.own(&lanes[0], &groups[0], &opts, &|| {});
            h.join().unwrap()
        });
        // Never the blob the owner takes next: the first is always the owner's.
        assert!(helper.ledger.blobs >= HELP_AHEAD as u64);
        assert!(owner.ledger.blobs >= 1);
        assert!(lanes[0].lock().done);
        assert_eq!(helper.stitch.summary.as_ref().unwrap().by_status, [0; 4]);
        owner.agg.merge(helper.agg);
        owner.ledger.merge(helper.ledger);
        let a = numbers(&alone);
        assert_eq!(numbers(&owner), a);
        assert_eq!(
            a.0,
            format!("6 {} {}", alone.ledger.tuples, alone.ledger.tuples)
        );
        assert!(a.1.iter().sum::<u64>() > 1000, "{:?}", a.1);
        assert_eq!(
            owner.agg.summary.totals.tuples,
            alone.agg.summary.totals.tuples
        );
    }
}
