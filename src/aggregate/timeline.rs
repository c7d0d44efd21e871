//! `timeline`: per time bin (by tuple timestamp, UTC, aligned to the Unix epoch) the tuples
//! allowed and denied, inbound and outbound, packets and bytes each way, and distinct
//! sources and destinations. Bins with no tuple are listed with zeros between the first and
//! the last bin, so a gap in the logs shows as a gap.

use super::{Counters, Fold};
use crate::hash::{HMap, HSet};
use crate::parse::{RuleTable, TableSink};
use crate::text::fmt_ms;
use serde::Serialize;
use std::net::IpAddr;

#[derive(Default)]
struct Bin {
    counters: Counters,
    src: HSet<IpAddr>,
    dst: HSet<IpAddr>,
}

/// The mergeable aggregate behind `timeline`.
pub struct Timeline {
    bin_ms: i64,
    bins: HMap<i64, Bin>,
}

/// Parse a bin width: `Ns`, `Nm`, `Nh`, `Nd` (e.g. 5m, 1h, 1d).
/// The widest time bin: a year (a wider bin is one bin, or an overflow).
pub const MAX_BIN_MS: i64 = 366 * 86_400_000;

pub fn parse_bin(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: use a width like 5m, 1h or 1d"))?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    if n <= 0 {
        return Err(format!("{s:?}: the width must be positive"));
    }
    match n.checked_mul(mult) {
        Some(ms) if ms <= MAX_BIN_MS => Ok(ms),
        _ => Err(format!("{s:?}: the width must be at most 366d")),
    }
}

impl Timeline {
    pub fn new(bin_ms: i64) -> Timeline {
        Timeline {
            bin_ms,
            bins: HMap::default(),
        }
    }
}

impl TableSink for Timeline {
    fn table(&mut self, table: &RuleTable<'_>) {
        for t in table.tuples {
            let start = t.time_ms - t.time_ms.rem_euclid(self.bin_ms);
            let b = self.bins.entry(start).or_default();
            b.counters.add(t);
            b.src.insert(t.src);
            b.dst.insert(t.dst);
        }
    }
}

type BinWire = Vec<(i64, Counters, Vec<IpAddr>, Vec<IpAddr>)>;

impl crate::state::incremental::Persist for Timeline {
    fn save(&self) -> Vec<u8> {
        let bins: BinWire = self
            .bins
            .iter()
            .map(|(k, b)| {
                (
                    *k,
                    b.counters,
                    b.src.iter().copied().collect(),
                    b.dst.iter().copied().collect(),
                )
            })
            .collect();
        crate::state::incremental::save_cbor(&bins)
    }

    fn load_into(&mut self, bytes: &[u8]) -> Result<(), String> {
        let bins: BinWire = crate::state::incremental::load_cbor(bytes)?;
        let mut o = Timeline::new(self.bin_ms);
        for (k, counters, src, dst) in bins {
            o.bins.insert(
                k,
                Bin {
                    counters,
                    src: src.into_iter().collect(),
                    dst: dst.into_iter().collect(),
                },
            );
        }
        self.merge(o);
        Ok(())
    }
}

impl Fold for Timeline {
    fn merge(&mut self, other: Self) {
        for (k, v) in other.bins {
            let b = self.bins.entry(k).or_default();
            b.counters += v.counters;
            b.src.extend(v.src);
            b.dst.extend(v.dst);
        }
    }
}

/// One bin of output.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BinRow {
    /// Bin start, RFC 3339 UTC.
    pub start: String,
    #[serde(flatten)]
    pub counters: Counters,
    pub distinct_src: u64,
    pub distinct_dst: u64,
}

/// Most rows a timeline lists with its empty bins; a wider span lists its non-empty bins
/// only (a week of minutes is 10,080 rows, a year of them half a million).
pub const MAX_GAP_ROWS: i64 = 100_000;

impl Timeline {
    /// Whether [`Timeline::rows`] lists the empty bins between the first and the last.
    pub fn gaps_listed(&self) -> bool {
        match (self.bins.keys().min(), self.bins.keys().max()) {
            (Some(f), Some(l)) => (l - f) / self.bin_ms < MAX_GAP_ROWS,
            _ => true,
        }
    }

    /// Rows from the first to the last non-empty bin, gaps included as zeros, unless there
    /// would be more than [`MAX_GAP_ROWS`]: then the non-empty bins only, in time order.
    pub fn rows(&self) -> Vec<BinRow> {
        let (Some(first), Some(last)) = (self.bins.keys().min(), self.bins.keys().max()) else {
            return Vec::new();
        };
        if !self.gaps_listed() {
            let mut starts: Vec<i64> = self.bins.keys().copied().collect();
            starts.sort_unstable();
            return starts
                .into_iter()
                .map(|at| {
                    let b = &self.bins[&at];
                    BinRow {
                        start: fmt_ms(at),
                        counters: b.counters,
                        distinct_src: b.src.len() as u64,
                        distinct_dst: b.dst.len() as u64,
                    }
                })
                .collect();
        }
        let empty = Bin::default();
        let mut rows = Vec::new();
        let mut at = *first;
        while at <= *last {
            let b = self.bins.get(&at).unwrap_or(&empty);
            rows.push(BinRow {
                start: fmt_ms(at),
                counters: b.counters,
                distinct_src: b.src.len() as u64,
                distinct_dst: b.dst.len() as u64,
            });
            at += self.bin_ms;
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_widths() {
        assert_eq!(parse_bin("5m"), Ok(300_000));
        assert_eq!(parse_bin("1h"), Ok(3_600_000));
        assert_eq!(parse_bin("1d"), Ok(86_400_000));
        assert!(parse_bin("0m").is_err());
        assert!(parse_bin("5x").is_err());
        assert!(parse_bin("m").is_err());
    }
}
