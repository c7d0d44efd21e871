//! `denied_spike`: hours whose denied tuples stand far above the robust level of the series,
//! per NSG and over all NSGs.
//!
//! Method: the hourly series of denied tuples (dense from the first to the last hour, empty
//! hours as zeros), its median and MAD scaled by 1.4826 to estimate a standard deviation
//! (Rousseeuw and Croux 1993; Leys et al. 2013 recommend a cut of 2.5 to 3 such deviations,
//! `k` = 5 here because a denied series is bursty by nature and a false spike costs a
//! reader's time). An hour fires when it is above median + k * sigma, and at least `ratio`
//! (3) times the median, and at least `min_denied` (200) tuples; with a MAD of 0 the Poisson
//! deviation sqrt(median) stands in. It needs `min_hours` (3) hours of series. Severity:
//! medium; high from 10 times the median. The finding names the hour and the top
//! contributing sources of that NSG in that hour. The series over all NSGs is there for
//! spikes spread over several NSGs: an hour of it is not reported when the NSG findings of
//! that hour explain half or more of its excess over its median (one spike, one finding).

use super::{ip_key, ip_of, median_mad, Context, Finding, Ip, Loc, Seen, Severity, Window};
use crate::hash::HMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;
/// Most bins of a series: the rest of a longer window is not scanned for spikes.
const MAX_HOURS: i64 = 24 * 400;

/// `[denied_spike]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub k: f64,
    pub ratio: f64,
    pub min_denied: u64,
    pub min_hours: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 5.0,
            ratio: 3.0,
            min_denied: 200,
            min_hours: 3,
        }
    }
}

/// Denied tuples by (NSG, hour) and by (NSG, hour, source), each with its least location
/// (the evidence a finding shows: for a source, one of its own tuples of that hour); NSGs by
/// [`super::name_hash`]. Mergeable: counts add, the least location wins.
#[derive(Default, Serialize, Deserialize)]
pub struct Denied {
    pub hours: HMap<(u64, i64), (u64, Option<Loc>)>,
    pub sources: HMap<(u64, i64, Ip), (u64, Loc)>,
    /// The current (NSG, hour) run: counted here, added to `hours` when it changes.
    #[serde(skip)]
    cur: Option<((u64, i64), u64, Loc)>,
    /// The current (NSG, hour, source) run.
    #[serde(skip)]
    cur_src: Option<((u64, i64, Ip), u64, Loc)>,
}

/// Add `n` tuples first seen at `loc` to a source's count and least location.
fn add_to(e: &mut (u64, Loc), n: u64, loc: Loc) {
    e.0 += n;
    e.1 = e.1.min(loc);
}

/// Add `n` tuples first seen at `loc` to a source's entry.
fn add_source(m: &mut HMap<(u64, i64, Ip), (u64, Loc)>, k: (u64, i64, Ip), n: u64, loc: Loc) {
    add_to(m.entry(k).or_insert((0, loc)), n, loc);
}

impl Denied {
    #[inline]
    pub fn see(&mut self, s: &Seen<'_>) {
        if !s.deny {
            return;
        }
        let hour = s.t.time_ms - s.t.time_ms.rem_euclid(HOUR_MS);
        let key = (s.nsg, hour);
        match &mut self.cur {
            Some((k, n, _)) if *k == key => *n += 1,
            _ => {
                self.flush_hour();
                self.cur = Some((key, 1, s.loc()));
            }
        }
        let skey = (s.nsg, hour, ip_key(&s.t.src));
        match &mut self.cur_src {
            Some((k, n, _)) if *k == skey => *n += 1,
            _ => {
                if let Some((k, n, loc)) = self.cur_src.take() {
                    add_source(&mut self.sources, k, n, loc);
                }
                self.cur_src = Some((skey, 1, s.loc()));
            }
        }
    }

    fn flush_hour(&mut self) {
        if let Some((k, n, loc)) = self.cur.take() {
            let e = self.hours.entry(k).or_insert((0, None));
            e.0 += n;
            if e.1.is_none_or(|l| loc < l) {
                e.1 = Some(loc);
            }
        }
    }

    /// Add the current runs to the maps (end of a table).
    pub fn flush(&mut self) {
        self.flush_hour();
        if let Some((k, n, loc)) = self.cur_src.take() {
            add_source(&mut self.sources, k, n, loc);
        }
    }

    pub fn merge(&mut self, mut o: Denied) {
        self.drain_from(&mut o);
    }

    /// Merge `o` in and leave it empty, its memory kept for the next blob.
    pub fn drain_from(&mut self, o: &mut Denied) {
        self.flush();
        o.flush();
        for (k, (n, loc)) in o.hours.drain() {
            let e = self.hours.entry(k).or_insert((0, None));
            e.0 += n;
            e.1 = match (e.1.take(), loc) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for (k, (n, loc)) in o.sources.drain() {
            add_source(&mut self.sources, k, n, loc);
        }
    }
}

pub fn finish(d: &Denied, names: &HMap<u64, Arc<str>>, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.denied_spike;
    // Series per NSG and over all ("" stands for all NSGs).
    let mut series: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut locs: BTreeMap<(&str, i64), &Loc> = BTreeMap::new();
    let name = |h: &u64| names.get(h).map(|s| &**s).unwrap_or("?");
    for ((nsg, h), (n, loc)) in &d.hours {
        let nsg = name(nsg);
        *series.entry(nsg).or_default().entry(*h).or_default() += n;
        *series.entry("").or_default().entry(*h).or_default() += n;
        if let Some(l) = loc {
            for key in [(nsg, *h), ("", *h)] {
                let e = locs.entry(key).or_insert(l);
                if l < *e {
                    *e = l;
                }
            }
        }
    }
    let (lo, hi) = (
        cx.first_ms - cx.first_ms.rem_euclid(HOUR_MS),
        cx.last_ms - cx.last_ms.rem_euclid(HOUR_MS),
    );
    let hours: Vec<i64> = (0..MAX_HOURS)
        .map(|i| lo + i * HOUR_MS)
        .take_while(|h| *h <= hi)
        .collect();
    let mut out = Vec::new();
    if hours.len() < c.min_hours {
        return out;
    }
    // Excess over the median that NSG findings explain, by hour; the series over all NSGs
    // ("") comes last so that it can be checked against them.
    let mut explained: BTreeMap<i64, f64> = BTreeMap::new();
    let order = series
        .iter()
        .filter(|(n, _)| !n.is_empty())
        .chain(series.iter().filter(|(n, _)| n.is_empty()));
    for (nsg, s) in order {
        let values: Vec<f64> = hours
            .iter()
            .map(|h| *s.get(h).unwrap_or(&0) as f64)
            .collect();
        let (m, mad) = median_mad(&values);
        let sigma = if mad > 0.0 {
            1.4826 * mad
        } else {
            m.sqrt().max(1.0)
        };
        let limit = (m + c.k * sigma).max(c.ratio * m).max(c.min_denied as f64);
        for (h, v) in hours.iter().zip(&values) {
            if *v <= limit {
                continue;
            }
            if nsg.is_empty() {
                if explained.get(h).is_some_and(|e| *e >= 0.5 * (v - m)) {
                    continue;
                }
            } else {
                *explained.entry(*h).or_default() += v - m;
            }
            // Each source's count in the hour (over the NSGs in scope) and its least location.
            let mut top: Vec<(Ip, (u64, Loc))> = d
                .sources
                .iter()
                .filter(|((n, hh, _), _)| *hh == *h && (nsg.is_empty() || name(n) == *nsg))
                .fold(
                    BTreeMap::new(),
                    |mut acc: BTreeMap<Ip, (u64, Loc)>, ((_, _, ip), (k, loc))| {
                        add_to(acc.entry(*ip).or_insert((0, *loc)), *k, *loc);
                        acc
                    },
                )
                .into_iter()
                .collect();
            top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
            let top_list: Vec<String> = top
                .iter()
                .take(5)
                .map(|(ip, (k, _))| format!("{} ({k})", ip_of(*ip)))
                .collect();
            let times = v / m.max(1.0);
            let severity = if *v >= 10.0 * m.max(1.0) {
                Severity::High
            } else {
                Severity::Medium
            };
            let scope = if nsg.is_empty() {
                "all NSGs".to_string()
            } else {
                nsg.to_string()
            };
            let hour = crate::text::fmt_ms(*h);
            let mut subjects = BTreeMap::from([("hour", hour.clone())]);
            subjects.insert("nsg", scope.clone());
            out.push(
                Finding::new(
                    "denied_spike",
                    severity,
                    times,
                    format!("{v:.0} denied tuples in the hour {hour} at {scope} ({times:.1}x the hourly median {m:.0}); top source {}", top_list.first().cloned().unwrap_or_default()),
                    subjects,
                    Window::new(*h, *h + HOUR_MS - 1),
                )
                .metric("denied", *v as u64)
                .metric("median", m)
                .metric("mad", mad)
                .metric("limit", limit.round())
                .metric("top_sources", top_list)
                .threshold(format!(
                    "{v:.0} > max(median {m:.0} + k {} x 1.4826 MAD ({sigma:.1}), ratio {} x median, min_denied {}) = {limit:.0}",
                    c.k, c.ratio, c.min_denied
                ))
                .baseline(format!("the hourly series of {} hours ({} .. {})", hours.len(), crate::text::fmt_ms(lo), crate::text::fmt_ms(hi)))
                // A tuple of each top source in that hour, then the hour's first.
                .evidence(
                    top.iter()
                        .take(5)
                        .map(|(_, (_, l))| l)
                        .chain(locs.get(&(*nsg, *h)).copied()),
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NSGs of 50 denied tuples an hour for six hours; in hour 3 each has `spike`, the 51st
    /// on from another source.
    fn series(nsgs: &[&'static str], spike: u32) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let mut t = Vec::new();
        for nsg in nsgs {
            for h in 0..6u32 {
                let n = if h == 3 { spike } else { 50 };
                for i in 0..n {
                    let min = h as f64 * 60.0 + (i % 60) as f64;
                    let src = if h == 3 && i >= 50 {
                        "203.0.113.50"
                    } else {
                        "198.51.100.8"
                    };
                    t.push((*nsg, "DenyAll", denied(min, src, "10.0.0.4", 23, true)));
                }
            }
        }
        t.sort_by_key(|x| x.2.time_ms);
        run(&t, None)
    }

    fn hours(spike: u32) -> Vec<crate::detect::Finding> {
        series(&["EDGE-NSG"], spike)
    }

    #[test]
    fn six_hundred_denied_in_one_hour_of_fifty_is_high_at_the_nsg_alone() {
        use crate::detect::testkit::*;
        let v = hours(600);
        let f = of(&v, "denied_spike");
        // The series over all NSGs is the NSG's own here: its spike is said once.
        assert_eq!(f.len(), 1, "{v:#?}");
        let x = f[0];
        assert_eq!(x.subjects["nsg"], "EDGE-NSG");
        assert_eq!(x.severity, Severity::High);
        assert_eq!(x.subjects["hour"], "2026-01-05T03:00:00.000Z");
        assert_eq!(x.window.first, "2026-01-05T03:00:00.000Z");
        assert_eq!(x.window.last, "2026-01-05T03:59:59.999Z");
        assert_eq!(x.metrics["denied"], 600);
        assert_eq!(x.metrics["top_sources"][0], "203.0.113.50 (550)");
    }

    fn two_nsgs(spike: u32) -> Vec<crate::detect::Finding> {
        series(&["EDGE-NSG", "DB-NSG"], spike)
    }

    #[test]
    fn a_spike_spread_over_nsgs_is_found_over_all_of_them() {
        use crate::detect::testkit::*;
        // 190 an hour in each NSG is under min_denied (200); 380 over both is above
        // max(3 x 100, 200).
        let v = two_nsgs(190);
        let f = of(&v, "denied_spike");
        assert_eq!(f.len(), 1, "{v:#?}");
        assert_eq!(f[0].subjects["nsg"], "all NSGs");
        assert_eq!(f[0].metrics["denied"], 380);
        // Each NSG over its own limit: two NSG findings explain the hour, no third.
        let v = two_nsgs(400);
        let mut nsgs: Vec<&str> = of(&v, "denied_spike")
            .iter()
            .map(|x| x.subjects["nsg"].as_str())
            .collect();
        nsgs.sort();
        assert_eq!(nsgs, ["DB-NSG", "EDGE-NSG"]);
    }

    #[test]
    fn an_hour_under_min_denied_is_no_spike() {
        use crate::detect::testkit::*;
        assert!(of(&hours(190), "denied_spike").is_empty());
    }
}
