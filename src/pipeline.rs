//! The only driver: every command's single read of the input goes through here.
//!
//! A run hands each blob's rule tables to the folds a command asked for (see
//! [`crate::aggregate`]), then drops them. Two modes:
//! - [`run`]: blobs in any order, largest first, rayon `fold` + `reduce` of an order-free
//!   [`Fold`], no locks;
//! - [`run_ordered`]: NIC groups ([`nic_groups`]: one NIC's blobs in time order) for a
//!   [`NicFold`] that needs order (the connection stitcher), beside an order-free fold that
//!   sees the same tables. Threads own one group at a time; once no group is left, a thread
//!   parses blobs ahead of the others' owners and hands the parsed tables over, so every
//!   core stays busy to the end.
//!
//! The driver owns threads (rayon's pool), filters, progress (a tick per blob for the
//! caller's bar) and `--strict` (stop at the first rejected tuple or failed blob; the blobs
//! left unread are counted in the ledger). Memory is one read buffer per thread (the largest
//! blob it read) plus the folds.

use crate::aggregate::{Fold, NicFold};
use crate::discover::BlobMeta;
use crate::filter::Filter;
use crate::filter::Filtered;
use crate::parse::{
    parse_blob, BlobProblem, BlobProblemKind, Ledger, ParseOptions, PathDefaults, Scratch,
    TableBuffer, TableSink,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Options for a run over blobs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub parse: ParseOptions,
    pub filter: Filter,
    /// Stop reading further blobs after the first rejected tuple or failed blob.
    pub strict: bool,
    /// `--rejects FILE`: every rejected tuple goes there (with `parse.keep_rejects`).
    pub rejects: Option<std::sync::Arc<crate::rejects::RejectLog>>,
    /// `--download-budget`: bytes of Azure blobs downloading ahead of the readers or waiting
    /// for them, at most (0: no download ahead).
    pub download_budget: u64,
}

/// Blobs of NIC groups in the order `threads` owners taking the groups in `order` ask for
/// them: one blob of each of the first `threads` groups in turn, a finished group's place
/// taken by the next. What a prefetcher downloads ahead.
pub fn owner_order<'a>(
    groups: impl IntoIterator<Item = Vec<&'a BlobMeta>>,
    threads: usize,
) -> Vec<(&'a std::path::Path, u64)> {
    let mut pending = groups.into_iter();
    let mut active: Vec<std::vec::IntoIter<&BlobMeta>> = pending
        .by_ref()
        .take(threads.max(1))
        .map(Vec::into_iter)
        .collect();
    let mut out = Vec::new();
    while !active.is_empty() {
        let mut i = 0;
        while i < active.len() {
            // A finished group's owner takes the next group at once.
            match active[i].next() {
                Some(b) => {
                    out.push((b.path.as_path(), b.size));
                    i += 1;
                }
                None => match pending.next() {
                    Some(g) => active[i] = g.into_iter(),
                    None => {
                        active.remove(i);
                    }
                },
            }
        }
    }
    out
}

impl RunOptions {
    /// The same options without the rejects file (a baseline pass over other input).
    pub fn without_rejects(&self) -> RunOptions {
        let mut o = self.clone();
        o.rejects = None;
        o.parse.keep_rejects = false;
        o
    }
}

/// Called once per blob read (a progress bar's tick); `&|| {}` for none.
pub type Progress<'a> = dyn Fn() + Sync + 'a;

/// Per-thread state: a reusable read buffer and parse scratch.
#[derive(Default)]
pub struct Worker {
    buf: crate::source::BlobBuf,
    /// A compressed blob's decompressed bytes.
    unz: Vec<u8>,
    scratch: Scratch,
}

/// A blob that was not parsed, with its reason.
fn failed(path: String, message: String) -> Ledger {
    Ledger {
        blobs: 1,
        blobs_failed: 1,
        problems: vec![BlobProblem {
            path,
            kind: BlobProblemKind::Failed,
            message,
            byte_offset: None,
        }],
        ..Ledger::default()
    }
}

impl Worker {
    /// The bytes of the blob read last (as stored: compressed blobs compressed).
    pub fn bytes(&self) -> &[u8] {
        self.buf.bytes()
    }

    /// Read one blob and parse it into `sink`; returns the blob's ledger.
    pub fn process<S: TableSink>(
        &mut self,
        blob: &BlobMeta,
        opts: &ParseOptions,
        sink: &mut S,
    ) -> Ledger {
        let label = crate::text::path_text(&blob.path);
        let max = opts.limits.max_bytes;
        let read = self.buf.read_capped(&blob.path, max);
        match read {
            Err(e) => return failed(label, format!("cannot read: {e}")),
            Ok(Some(n)) => {
                return failed(
                    label,
                    format!("{n} bytes or more, over --max-blob-bytes {max}: not read"),
                )
            }
            Ok(None) => {}
        }
        let defaults = PathDefaults {
            nsg: blob
                .nsg
                .as_deref()
                .or(blob.flow_log.as_deref())
                .unwrap_or(""),
            subscription: blob.subscription.as_deref().unwrap_or(""),
            mac: blob.mac.as_deref().unwrap_or(""),
            hour_ms: blob.hour_ms,
        };
        // A panic while parsing one blob (a bug) fails that blob, not the run. What the blob
        // gave the folds before it stays there; its ledger is lost with the panic, so the
        // failure is said with the path.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.parse_read(&label, &defaults, opts, sink)
        }));
        match outcome {
            Ok(l) => l,
            Err(p) => {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                self.scratch = Scratch::default();
                failed(
                    label,
                    format!(
                        "internal error while parsing ({}): a bug in nsgflow, please report it with this blob; the run went on without it",
                        crate::text::term_safe(&what)
                    ),
                )
            }
        }
    }

    /// Parse the blob in `self.buf` (plain, gzip or zip) into `sink`.
    fn parse_read<S: TableSink>(
        &mut self,
        label: &str,
        defaults: &PathDefaults<'_>,
        opts: &ParseOptions,
        sink: &mut S,
    ) -> Ledger {
        #[cfg(debug_assertions)]
        if std::env::var_os("NSGFLOW_TEST_PANIC_ON")
            .is_some_and(|p| label.contains(&*p.to_string_lossy()))
        {
            panic!("NSGFLOW_TEST_PANIC_ON matched {label}");
        }
        use crate::parse::compressed::{gunzip, sniff, unzip, Container};
        match sniff(self.buf.bytes()) {
            Container::Plain => {
                parse_blob(
                    label,
                    self.buf.bytes(),
                    defaults,
                    opts,
                    &mut self.scratch,
                    sink,
                )
                .ledger
            }
            Container::Gzip => {
                let mut unz = std::mem::take(&mut self.unz);
                let l = match gunzip(self.buf.bytes(), &opts.limits, &mut unz) {
                    Ok(()) => {
                        let mut l =
                            parse_blob(label, &unz, defaults, opts, &mut self.scratch, sink).ledger;
                        l.bytes = self.buf.bytes().len() as u64;
                        l.tolerated.gzip += 1;
                        l
                    }
                    Err(e) => failed(label.to_string(), format!("gzip: {e}")),
                };
                unz.clear();
                self.unz = unz;
                l
            }
            Container::Zip => {
                let entries = match unzip(self.buf.bytes(), &opts.limits) {
                    Ok(v) if v.is_empty() => {
                        return failed(
                            label.to_string(),
                            "zip archive with no files in it".to_string(),
                        )
                    }
                    Ok(v) => v,
                    Err(e) => return failed(label.to_string(), e),
                };
                // Each entry is a blob of its own in the ledger, named `archive.zip!entry`.
                let mut total = Ledger::default();
                for (name, bytes) in entries {
                    let path = format!("{label}!{}", crate::text::term_safe(&name));
                    let mut l = match bytes {
                        Ok(b) => {
                            let mut l =
                                parse_blob(&path, &b, defaults, opts, &mut self.scratch, sink)
                                    .ledger;
                            l.tolerated.zip_entries += 1;
                            l
                        }
                        Err(e) => failed(path, format!("zip entry: {e}")),
                    };
                    l.bytes = 0;
                    total.merge(l);
                }
                total.bytes = self.buf.bytes().len() as u64;
                total
            }
        }
    }
}

/// Read, parse and filter one blob into `acc`; returns the blob's ledger (filtered tuples
/// counted in it).
pub fn process_blob<A: TableSink>(
    worker: &mut Worker,
    blob: &BlobMeta,
    opts: &RunOptions,
    acc: &mut A,
) -> Ledger {
    let mut sink = Filtered::new(acc, &opts.filter);
    let mut ledger = worker.process(blob, &opts.parse, &mut sink);
    ledger.tuples_filtered += sink.filtered;
    if let Some(log) = &opts.rejects {
        log.add(
            &crate::text::path_text(&blob.path),
            &std::mem::take(&mut ledger.all_rejects),
        );
    }
    ledger.keep_all = false;
    ledger
}

/// `--strict`: set once a blob loses input; blobs not yet started are then left unread.
struct Stop<'a> {
    strict: bool,
    hit: &'a AtomicBool,
}

impl Stop<'_> {
    fn stopped(&self) -> bool {
        self.strict && self.hit.load(Ordering::Relaxed)
    }
    fn note(&self, l: &Ledger) {
        if self.strict && l.has_losses() {
            self.hit.store(true, Ordering::Relaxed);
        }
    }
}

/// Read one blob into a fold: `begin_blob`, the tables, `end_blob`.
fn read_into<F: Fold>(w: &mut Worker, blob: &BlobMeta, opts: &RunOptions, f: &mut F) -> Ledger {
    f.begin_blob(blob);
    let l = process_blob(w, blob, opts, f);
    f.end_blob();
    l
}

/// Fold blobs in parallel, in any order, into one fold and one ledger. The result does not
/// depend on thread count or order. With `strict`, blobs after the first loss are left
/// unread (counted as `blobs_unread`).
pub fn run<F: Fold>(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
    make: impl Fn() -> F + Sync,
) -> (F, Ledger) {
    // Largest first: better load balance across threads; the merge is order-free. Threads
    // take the next blob from a shared counter, so blobs are asked for in this order (what
    // the prefetcher downloads ahead), and each thread keeps one fold.
    let mut order: Vec<&BlobMeta> = blobs.iter().collect();
    order.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let _ahead = crate::source::prefetch(
        order.iter().map(|b| (b.path.as_path(), b.size)),
        opts.download_budget,
        opts.parse.limits.max_bytes,
    );
    let hit = AtomicBool::new(false);
    let stop = Stop {
        strict: opts.strict,
        hit: &hit,
    };
    let next = AtomicUsize::new(0);
    let work = || {
        let (mut acc, mut ledger, mut w) = (make(), Ledger::default(), Worker::default());
        while let Some(blob) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            if stop.stopped() {
                ledger.blobs_unread += 1;
                continue;
            }
            let l = read_into(&mut w, blob, opts, &mut acc);
            stop.note(&l);
            ledger.merge(l);
            progress();
        }
        (acc, ledger)
    };
    let threads = rayon::current_num_threads().clamp(1, order.len().max(1));
    let parts: Vec<(F, Ledger)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut parts = vec![work()];
        for h in handles {
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    let mut parts = parts.into_iter();
    let (mut acc, mut ledger) = parts.next().expect("one thread at least");
    for (a, l) in parts {
        acc.merge(a);
        ledger.merge(l);
    }
    (acc, ledger)
}

/// Blobs grouped by NIC (MAC from the path; blobs without one stand alone), each group in
/// time order, groups sorted by their key: the unit of connection stitching.
pub fn nic_groups(blobs: &[BlobMeta]) -> Vec<Vec<&BlobMeta>> {
    let mut groups: BTreeMap<String, Vec<&BlobMeta>> = BTreeMap::new();
    for b in blobs {
        groups.entry(nic_key(b)).or_default().push(b);
    }
    groups
        .into_values()
        .map(|mut v| {
            v.sort_by(|a, b| a.hour_ms.cmp(&b.hour_ms).then_with(|| a.path.cmp(&b.path)));
            v
        })
        .collect()
}

/// The NIC a blob belongs to: its MAC, or the blob itself when the path names none.
pub fn nic_key(b: &BlobMeta) -> String {
    match &b.mac {
        Some(m) => format!("mac:{m}"),
        None => format!("path:{}", b.path.display()),
    }
}

/// Which NIC group a thread takes next in [`run_ordered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Largest group first (by bytes): the best balance, for folds that keep what they see.
    LargestFirst,
    /// Groups in the order given: for folds whose group outputs stream out in that order,
    /// so few finished outputs wait for an earlier group.
    InOrder,
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
    /// A helper parsed it: the owner replays these tables when its turn comes.
    Ready(TableBuffer),
}

/// One NIC group's blobs and who reads them.
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

/// Group outputs handed on in group order, whichever thread finished them.
struct Reorder<'e, T> {
    next: usize,
    waiting: BTreeMap<usize, T>,
    emit: &'e mut (dyn FnMut(T) -> std::io::Result<()> + Send),
    error: Option<std::io::Error>,
}

impl<T> Reorder<'_, T> {
    /// Take group `gi`'s output; write every output now in order. Returns false after a
    /// write failed (the run then stops).
    fn put(&mut self, gi: usize, out: T) -> bool {
        self.waiting.insert(gi, out);
        while let Some(out) = self.waiting.remove(&self.next) {
            self.next += 1;
            if self.error.is_none() {
                if let Err(e) = (self.emit)(out) {
                    self.error = Some(e);
                }
            }
        }
        self.error.is_none()
    }
}

/// Both sinks see every table.
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

use crate::parse::RuleTable;

/// What one thread folds: its share of the order-free fold, its ordered fold, its ledger.
struct Part<F, N> {
    fold: F,
    nic: N,
    ledger: Ledger,
    w: Worker,
}

/// What every thread of an ordered run shares.
struct Shared<'s, 'e, N: NicFold> {
    opts: &'s RunOptions,
    progress: &'s Progress<'s>,
    stop: Stop<'s>,
    out: &'s Mutex<Reorder<'e, N::Out>>,
}

impl<F: Fold, N: NicFold> Part<F, N> {
    /// Read a NIC group as its owner: blobs in time order, each parsed into both folds in
    /// one go, except those a helper parsed, whose tables are replayed here in their turn.
    fn own(&mut self, gi: usize, lane: &Lane, group: &[&BlobMeta], sh: &Shared<'_, '_, N>) {
        loop {
            let mut st = lane.lock();
            let j = st.next;
            if j == group.len() {
                st.done = true;
                break;
            }
            st.next += 1;
            if sh.stop.stopped() {
                if matches!(st.claims[j], Claim::Free) {
                    self.ledger.blobs_unread += 1;
                }
                continue;
            }
            if matches!(st.claims[j], Claim::Free) {
                st.claims[j] = Claim::Owner;
                drop(st);
                let blob = group[j];
                self.fold.begin_blob(blob);
                self.nic.begin_blob(blob);
                let mut tee = Tee {
                    a: &mut self.fold,
                    b: &mut self.nic,
                };
                let l = process_blob(&mut self.w, blob, sh.opts, &mut tee);
                sh.stop.note(&l);
                self.ledger.merge(l);
                self.fold.end_blob();
                self.nic.end_blob();
                (sh.progress)();
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
            self.nic.begin_blob(group[j]);
            buf.replay(&mut self.nic);
            self.nic.end_blob();
        }
        let out = self.nic.end_group();
        let mut o = sh.out.lock().unwrap_or_else(|e| e.into_inner());
        if !o.put(gi, out) {
            sh.stop.hit.store(true, Ordering::Relaxed);
        }
    }

    /// With no group left to own, parse blobs of groups other threads own, ahead of them:
    /// not the blob the owner takes next unless it is the last, at most [`HELP_AHEAD`] per
    /// group. The order-free fold takes the tables here; the owner gets a copy to replay.
    fn help(&mut self, lanes: &[Lane], groups: &[Vec<&BlobMeta>], sh: &Shared<'_, '_, N>) {
        loop {
            if sh.stop.stopped() {
                break;
            }
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
                    let blob = groups[gi][j];
                    let mut buf = TableBuffer::default();
                    self.fold.begin_blob(blob);
                    let mut sink = Tee {
                        a: &mut self.fold,
                        b: &mut buf,
                    };
                    let l = process_blob(&mut self.w, blob, sh.opts, &mut sink);
                    sh.stop.note(&l);
                    self.ledger.merge(l);
                    self.fold.end_blob();
                    (sh.progress)();
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

/// One pass over NIC groups, each read in time order by one owner, in parallel across
/// groups: every table goes to the order-free fold and to the ordered one. Each group's
/// [`NicFold::end_group`] output reaches `emit` in group order (whichever thread finished
/// it); a failed `emit` stops the run and is returned.
///
/// Each thread owns one group at a time, the next one from a shared counter (`schedule`),
/// and keeps one of each fold (a rayon fold would make one per split, each as large as the
/// full maps). Once no group is left to take, a thread helps the others finish: it parses
/// blobs ahead of their owners (folding the order-free fold itself) and hands the parsed
/// tables over for the ordered fold. Every merge is order-free, so the result does not
/// depend on which thread read which blob.
#[allow(clippy::too_many_arguments)]
pub fn run_ordered<F: Fold, N: NicFold>(
    groups: &[Vec<&BlobMeta>],
    schedule: Schedule,
    opts: &RunOptions,
    progress: &Progress<'_>,
    make_fold: impl Fn() -> F + Sync,
    make_nic: impl Fn() -> N + Sync,
    emit: &mut (dyn FnMut(N::Out) -> std::io::Result<()> + Send),
) -> std::io::Result<(F, N, Ledger)> {
    let threads = rayon::current_num_threads().max(1);
    let mut order: Vec<(u64, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.iter().map(|b| b.size).sum::<u64>(), i))
        .collect();
    if schedule == Schedule::LargestFirst {
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    let _ahead = crate::source::prefetch(
        owner_order(order.iter().map(|&(_, gi)| groups[gi].clone()), threads),
        opts.download_budget,
        opts.parse.limits.max_bytes,
    );
    let lanes: Vec<Lane> = groups.iter().map(|g| Lane::new(g.len())).collect();
    let next = AtomicUsize::new(0);
    let hit = AtomicBool::new(false);
    let out = Mutex::new(Reorder {
        next: 0,
        waiting: BTreeMap::new(),
        emit,
        error: None,
    });
    let sh = Shared {
        opts,
        progress,
        stop: Stop {
            strict: opts.strict,
            hit: &hit,
        },
        out: &out,
    };
    let work = || {
        let mut part = Part {
            fold: make_fold(),
            nic: make_nic(),
            ledger: Ledger::default(),
            w: Worker::default(),
        };
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(_, gi)) = order.get(i) else { break };
            part.own(gi, &lanes[gi], &groups[gi], &sh);
        }
        if threads > 1 {
            part.help(&lanes, groups, &sh);
        }
        part
    };
    let parts: Vec<Part<F, N>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut parts = vec![work()];
        for h in handles {
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    if let Some(e) = out.into_inner().unwrap_or_else(|e| e.into_inner()).error {
        return Err(e);
    }
    let mut parts = parts.into_iter();
    let mut total = parts.next().expect("one thread at least");
    for p in parts {
        let (fold, nic) = (&mut total.fold, &mut total.nic);
        rayon::join(|| fold.merge(p.fold), || nic.merge(p.nic));
        total.ledger.merge(p.ledger);
    }
    Ok((total.fold, total.nic, total.ledger))
}

/// [`run_ordered`] for folds that keep what they see (no group output to write).
pub fn run_nics<F: Fold, N: NicFold<Out = ()>>(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
    make_fold: impl Fn() -> F + Sync,
    make_nic: impl Fn() -> N + Sync,
) -> (F, N, Ledger) {
    let groups = nic_groups(blobs);
    run_ordered(
        &groups,
        Schedule::LargestFirst,
        opts,
        progress,
        make_fold,
        make_nic,
        &mut |()| Ok(()),
    )
    .expect("nothing is written")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::connections::ConnFold;
    use crate::aggregate::Summary;
    use crate::discover::{discover, DiscoverOptions};
    use crate::gen::{generate, GenOptions};

    fn numbers(p: &Part<Summary, ConnFold>) -> (String, [u64; 4], Vec<String>, u64) {
        let c = p.nic.summary();
        let mut pairs: Vec<String> = c
            .pairs
            .iter()
            .flat_map(|d| d.iter())
            .map(|(k, v)| format!("{k:?} {v:?}"))
            .collect();
        pairs.sort();
        let l = &p.ledger;
        let ledger = format!("{} {} {}", l.blobs, l.tuples, l.tuples_accepted);
        (ledger, c.by_status, pairs, p.fold.totals.tuples)
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
        let hit = AtomicBool::new(false);
        let mut emit = |()| Ok(());
        let out = Mutex::new(Reorder {
            next: 0,
            waiting: BTreeMap::new(),
            emit: &mut emit,
            error: None,
        });
        let sh = Shared::<ConnFold> {
            opts: &opts,
            progress: &|| {},
            stop: Stop {
                strict: false,
                hit: &hit,
            },
            out: &out,
        };
        let part = || Part {
            fold: Summary::default(),
            nic: ConnFold::default(),
            ledger: Ledger::default(),
            w: Worker::default(),
        };

        let mut alone = part();
        alone.own(0, &Lane::new(6), &groups[0], &sh);
        out.lock().unwrap().next = 0;

        let lanes = [Lane::new(6)];
        let mut owner = part();
        let helper = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut p = part();
                p.help(&lanes, &groups, &sh);
                p
            });
            // The owner starts once the helper has claimed all it may ahead of it.
            while lanes[0].lock().ahead < HELP_AHEAD {
                std::thread::yield_now();
            }
            owner.own(0, &lanes[0], &groups[0], &sh);
            h.join().unwrap()
        });
        // Never the blob the owner takes next: the first is always the owner's.
        assert!(helper.ledger.blobs >= HELP_AHEAD as u64);
        assert!(owner.ledger.blobs >= 1);
        assert!(lanes[0].lock().done);
        assert_eq!(helper.nic.summary().by_status, [0; 4]);
        owner.fold.merge(helper.fold);
        owner.ledger.merge(helper.ledger);
        let a = numbers(&alone);
        assert_eq!(numbers(&owner), a);
        assert_eq!(
            a.0,
            format!("6 {} {}", alone.ledger.tuples, alone.ledger.tuples)
        );
        assert!(a.1.iter().sum::<u64>() > 1000, "{:?}", a.1);
    }

    /// The prefetch order follows the owners: one blob of each active group in turn.
    #[test]
    fn owners_ask_for_blobs_round_robin_over_their_groups() {
        let b = |n: &str| BlobMeta {
            path: n.into(),
            size: 1,
            ..BlobMeta::default()
        };
        let (a1, a2, a3, b1, c1, c2) = (b("a1"), b("a2"), b("a3"), b("b1"), b("c1"), b("c2"));
        let groups = vec![vec![&a1, &a2, &a3], vec![&b1], vec![&c1, &c2]];
        let names: Vec<String> = owner_order(groups, 2)
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(names, ["a1", "b1", "a2", "c1", "a3", "c2"]);
    }

    /// Group outputs reach the writer in group order, whatever order they finish in.
    #[test]
    fn group_outputs_are_written_in_group_order() {
        let mut seen = Vec::new();
        let mut emit = |x: usize| {
            seen.push(x);
            Ok(())
        };
        let mut r = Reorder {
            next: 0,
            waiting: BTreeMap::new(),
            emit: &mut emit,
            error: None,
        };
        for gi in [2, 0, 3, 1, 4] {
            assert!(r.put(gi, gi * 10));
        }
        drop(r);
        assert_eq!(seen, vec![0, 10, 20, 30, 40]);
    }
}
