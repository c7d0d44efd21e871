//! Running the stages over many blobs: read each blob into a per-thread buffer, parse it,
//! fold its tables into the thread's summary, drop it. rayon `fold` + `reduce`, no locks.
//! Memory is one buffer per thread (the largest blob it read) plus the summaries.

use crate::aggregate::Summary;
use crate::discover::BlobMeta;
use crate::filter::Filter;
use crate::filter::Filtered;
use crate::parse::{
    parse_blob, BlobProblem, BlobProblemKind, Ledger, ParseOptions, PathDefaults, Scratch,
    TableSink,
};
use rayon::prelude::*;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// Options for a run over blobs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub parse: ParseOptions,
    pub filter: Filter,
    /// Stop reading further blobs after the first rejected tuple or failed blob.
    pub strict: bool,
}

/// Per-thread state: a reusable read buffer and parse scratch.
#[derive(Default)]
pub struct Worker {
    buf: Vec<u8>,
    scratch: Scratch,
}

impl Worker {
    /// Read one blob and parse it into `sink`; returns the blob's ledger.
    pub fn process<S: TableSink>(
        &mut self,
        blob: &BlobMeta,
        opts: &ParseOptions,
        sink: &mut S,
    ) -> Ledger {
        let label = blob.path.display().to_string();
        self.buf.clear();
        let read = std::fs::File::open(&blob.path).and_then(|mut f| {
            if let Ok(md) = f.metadata() {
                self.buf.reserve(md.len() as usize);
            }
            f.read_to_end(&mut self.buf)
        });
        if let Err(e) = read {
            return Ledger {
                blobs: 1,
                blobs_failed: 1,
                problems: vec![BlobProblem {
                    path: label,
                    kind: BlobProblemKind::Failed,
                    message: format!("cannot read: {e}"),
                    byte_offset: None,
                }],
                ..Ledger::default()
            };
        }
        let defaults = PathDefaults {
            nsg: blob
                .nsg
                .as_deref()
                .or(blob.flow_log.as_deref())
                .unwrap_or(""),
            subscription: blob.subscription.as_deref().unwrap_or(""),
            mac: blob.mac.as_deref().unwrap_or(""),
        };
        parse_blob(&label, &self.buf, &defaults, opts, &mut self.scratch, sink).ledger
    }
}

/// An aggregate that rule tables fold into and that merges (associative, commutative).
pub trait Fold: TableSink + Send {
    fn merge(&mut self, other: Self);
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
    ledger
}

/// Fold blobs in parallel into one aggregate and one ledger. The result does not depend on
/// thread count or order. With `strict`, blobs after the first loss are skipped.
pub fn fold_blobs<A: Fold>(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    make: impl Fn() -> A + Sync,
) -> (A, Ledger) {
    // Largest first: better load balance across threads; the merge is order-independent.
    let mut order: Vec<&BlobMeta> = blobs.iter().collect();
    order.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let stop = AtomicBool::new(false);
    order
        .par_iter()
        .with_max_len(1)
        .fold(
            || (make(), Ledger::default(), Worker::default()),
            |(mut acc, mut ledger, mut w), blob| {
                if opts.strict && stop.load(Ordering::Relaxed) {
                    return (acc, ledger, w);
                }
                let l = process_blob(&mut w, blob, opts, &mut acc);
                if opts.strict && l.has_losses() {
                    stop.store(true, Ordering::Relaxed);
                }
                ledger.merge(l);
                (acc, ledger, w)
            },
        )
        .map(|(a, l, _)| (a, l))
        .reduce(
            || (make(), Ledger::default()),
            |(mut a, mut la), (b, lb)| {
                a.merge(b);
                la.merge(lb);
                (a, la)
            },
        )
}

/// Summarise blobs in parallel.
pub fn summarize(blobs: &[BlobMeta], opts: &RunOptions) -> Summary {
    let (mut s, ledger) = fold_blobs(blobs, opts, Summary::default);
    s.ledger = ledger;
    s
}
