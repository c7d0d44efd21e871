//! The analyst toolkit: `top`, `timeline`, `connections`, and the streaming `flows` export.
//! Each analysis is a [`crate::pipeline::Fold`] or an ordered stream; all see only what the
//! run's filters keep.

pub mod connections;
pub mod export;
pub mod timeline;
pub mod top;

use crate::discover::BlobMeta;
use crate::parse::Ledger;
use crate::pipeline::{process_blob, RunOptions, Worker};
use connections::{Connection, Stitcher};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Blobs grouped by NIC (MAC from the path; blobs without one stand alone), each group in
/// time order, groups sorted by their key: the unit of connection stitching.
pub fn nic_groups(blobs: &[BlobMeta]) -> Vec<Vec<&BlobMeta>> {
    let mut groups: BTreeMap<String, Vec<&BlobMeta>> = BTreeMap::new();
    for b in blobs {
        let key = match &b.mac {
            Some(m) => format!("mac:{m}"),
            None => format!("path:{}", b.path.display()),
        };
        groups.entry(key).or_default().push(b);
    }
    groups
        .into_values()
        .map(|mut v| {
            v.sort_by(|a, b| a.hour_ms.cmp(&b.hour_ms).then_with(|| a.path.cmp(&b.path)));
            v
        })
        .collect()
}

/// Stitch the connections of a set of NIC groups, in parallel across groups. Each group's
/// connections (sorted by start) go through `map` on the worker thread (render them, or keep
/// the top few), and the results reach `out` in group order, `batch` groups at a time, so
/// the output is deterministic and memory holds one batch.
pub fn stitch_connections<T: Send>(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    batch: usize,
    map: impl Fn(Vec<Connection>) -> T + Sync,
    mut out: impl FnMut(T) -> std::io::Result<()>,
) -> std::io::Result<Ledger> {
    let groups = nic_groups(blobs);
    let mut ledger = Ledger::default();
    for chunk in groups.chunks(batch.max(1)) {
        let results: Vec<(T, Ledger)> = chunk
            .par_iter()
            .map_init(Worker::default, |w, group| {
                let mut st = Stitcher::default();
                let mut l = Ledger::default();
                for blob in group {
                    l.merge(process_blob(w, blob, opts, &mut st));
                }
                st.finish();
                (map(st.take_sorted()), l)
            })
            .collect();
        for (t, l) in results {
            ledger.merge(l);
            out(t)?;
        }
    }
    Ok(ledger)
}

/// The `n` best connections by `value` (largest first, ties by [`connections::conn_key`]),
/// keeping only the best few while stitching: memory is the open connections plus `n`.
pub fn top_connections(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    n: usize,
    value: impl Fn(&Connection) -> u64 + Sync,
) -> (Vec<Connection>, Ledger) {
    let order = |a: &Connection, b: &Connection| {
        value(b)
            .cmp(&value(a))
            .then_with(|| connections::conn_key(a).cmp(&connections::conn_key(b)))
    };
    let keep = |v: &mut Vec<Connection>| {
        if n > 0 && v.len() > n {
            v.select_nth_unstable_by(n - 1, order);
            v.truncate(n);
        }
    };
    let groups = nic_groups(blobs);
    let (mut best, ledger) = groups
        .par_iter()
        .map_init(Worker::default, |w, group| {
            let mut st = Stitcher::default();
            let mut best = Vec::new();
            let mut l = Ledger::default();
            for blob in group {
                l.merge(process_blob(w, blob, opts, &mut st));
                best.append(&mut st.done);
                keep(&mut best);
            }
            st.finish();
            best.append(&mut st.done);
            keep(&mut best);
            (best, l)
        })
        .reduce(
            || (Vec::new(), Ledger::default()),
            |(mut a, mut la), (b, lb)| {
                a.extend(b);
                keep(&mut a);
                la.merge(lb);
                (a, la)
            },
        );
    best.sort_by(order);
    best.truncate(n);
    (best, ledger)
}

/// Neutralise a CSV cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`,
/// tab, CR): prefix it with `'`, as OWASP's "CSV Injection" guidance recommends. Numbers
/// written by nsgflow itself never pass through here.
pub fn csv_safe(s: &str) -> std::borrow::Cow<'_, str> {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => std::borrow::Cow::Owned(format!("'{s}")),
        _ => std::borrow::Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_safe("UserRule_Web"), "UserRule_Web");
        assert_eq!(csv_safe(""), "");
    }
}
