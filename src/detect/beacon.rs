//! `beacon`: regular, repeated outbound connections from one internal host to one external
//! address and port — the call-home of implants and command-and-control.
//!
//! Method: RITA's beacon analysis (Active Countermeasures, "RITA: Real Intelligence Threat
//! Analytics", `pkg/beacon`), over stitched connections: for the intervals between
//! connection starts and for the connection sizes (bytes both ways), a skew score 1 - |Bowley
//! skewness| ((Q1 + Q3 - 2 Q2) / (Q3 - Q1); 0 when Q3 = Q1) and a dispersion score
//! 1 - MAD / median (clamped to 0..1); for the intervals a count score, the share of the
//! connections a perfect beacon at the median interval would have made over the span; for
//! the sizes a smallness score 1 - median / 64 KiB (beacons are small). The time score is the
//! mean of its three, the size score of its three, and the beacon score their mean, 0..1.
//! Random (Poisson) connections score about 0.55; RITA calls 0.8 and above likely beacons.
//! Defaults: `min_connections` 20 (RITA's minimum is 20 connections a pair), medium from
//! score 0.8, high from 0.9 with 100 connections or more.
//!
//! Azure platform addresses (168.63.129.16, 169.254.169.254) and the config's `allow` list are
//! never beacons. Up to [`MAX_STARTS`] connections are kept per pair (five hours at one a
//! minute), so memory stays bounded by the pairs.

use super::{Context, Finding, Severity, Window};
use crate::addr::builtin_internal;
use crate::hash::HMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// Connections kept per (source, destination, port).
pub const MAX_STARTS: usize = 300;

const AZURE_DNS: u32 = u32::from_be_bytes([168, 63, 129, 16]);

/// `[beacon]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub min_connections: usize,
    pub medium_score: f64,
    pub high_score: f64,
    pub high_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_connections: 20,
            medium_score: 0.8,
            high_score: 0.9,
            high_connections: 100,
        }
    }
}

/// A destination beacon detection reads: IPv4, not private, loopback, link-local or shared
/// (RFC 6598), not Azure's DNS and health address.
#[inline]
pub fn candidate(dst: &IpAddr) -> bool {
    match dst {
        IpAddr::V4(v) => u32::from(*v) != AZURE_DNS && !builtin_internal(dst),
        IpAddr::V6(_) => false,
    }
}

/// (source, destination, destination port) of outbound allowed IPv4 connections to
/// non-private addresses → (start ms, bytes) of each. Fed by the stitcher. Mergeable.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Beacons {
    pub map: HMap<(u32, u32, u16), Vec<(i64, u64)>>,
}

impl Beacons {
    /// A closed connection (the stitcher calls this for outbound allowed IPv4 connections).
    #[inline]
    pub fn add(&mut self, src: u32, dst: u32, dport: u16, start_ms: i64, bytes: u64) {
        if !candidate(&IpAddr::V4(Ipv4Addr::from(dst))) {
            return;
        }
        let v = self.map.entry((src, dst, dport)).or_default();
        v.push((start_ms, bytes));
        // The earliest MAX_STARTS by (start, bytes), whatever order connections close in
        // (a long one closes after shorter later ones): the same set a merge keeps, so the
        // result does not depend on how the NICs' blobs were split. Kept to 2 x MAX_STARTS
        // between cuts.
        if v.len() >= 2 * MAX_STARTS {
            earliest(v);
        }
    }

    pub fn merge(&mut self, o: Beacons) {
        for (k, mut v) in o.map {
            let e = self.map.entry(k).or_default();
            e.append(&mut v);
            if e.len() > MAX_STARTS {
                earliest(e);
            }
        }
    }
}

/// Keep the earliest [`MAX_STARTS`] connections, sorted.
fn earliest(v: &mut Vec<(i64, u64)>) {
    v.sort_unstable();
    v.truncate(MAX_STARTS);
}

fn quartiles(sorted: &[f64]) -> (f64, f64, f64) {
    let q = |p: f64| {
        let i = p * (sorted.len() - 1) as f64;
        let (lo, hi) = (i.floor() as usize, i.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (i - lo as f64)
    };
    (q(0.25), q(0.5), q(0.75))
}

/// (skew score, dispersion score, median) of values.
fn regularity(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let (q1, q2, q3) = quartiles(&v);
    let bowley = if q3 > q1 {
        (q1 + q3 - 2.0 * q2) / (q3 - q1)
    } else {
        0.0
    };
    let (m, mad) = super::median_mad_sorted(&v);
    let disp = if m > 0.0 {
        (1.0 - mad / m).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (1.0 - bowley.abs().min(1.0), disp, m)
}

/// The beacon score of connections (start ms, bytes) sorted by start, and its parts.
pub fn score(conns: &[(i64, u64)]) -> (f64, f64, f64) {
    let intervals: Vec<f64> = conns.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect();
    let sizes: Vec<f64> = conns.iter().map(|c| c.1 as f64).collect();
    let (ts_skew, ts_disp, ts_median) = regularity(&intervals);
    let span = (conns[conns.len() - 1].0 - conns[0].0) as f64;
    let expected = if ts_median > 0.0 {
        span / ts_median + 1.0
    } else {
        conns.len() as f64
    };
    let ts_count = (conns.len() as f64 / expected).min(1.0);
    let (ds_skew, ds_disp, ds_median) = regularity(&sizes);
    let ds_small = (1.0 - ds_median / 65536.0).clamp(0.0, 1.0);
    let ts = (ts_skew + ts_disp + ts_count) / 3.0;
    let ds = (ds_skew + ds_disp + ds_small) / 3.0;
    ((ts + ds) / 2.0, ts, ds)
}

/// `uploads` gives each pair's first outbound tuple as evidence.
pub fn finish(
    b: &Beacons,
    uploads: &super::exfiltration::Uploads,
    cx: &Context<'_>,
) -> Vec<Finding> {
    let c = &cx.config.beacon;
    let mut keys: Vec<_> = b.map.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let (src, dst, port) = (
            IpAddr::V4(Ipv4Addr::from(k.0)),
            IpAddr::V4(Ipv4Addr::from(k.1)),
            k.2,
        );
        let mut conns = b.map[k].clone();
        earliest(&mut conns);
        if conns.len() < c.min_connections
            || !cx.internal(&src)
            || !cx.external(&dst)
            || cx.allowed(&dst)
            || cx.allowed(&src)
        {
            continue;
        }
        conns.sort_unstable();
        let (s, ts, ds) = score(&conns);
        if s < c.medium_score {
            continue;
        }
        let severity = if s >= c.high_score && conns.len() >= c.high_connections {
            Severity::High
        } else {
            Severity::Medium
        };
        let intervals: Vec<f64> = conns.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect();
        let (mi, _) = super::median_mad(&intervals);
        let (first, last) = (conns[0].0, conns[conns.len() - 1].0);
        out.push(
            Finding::new(
                "beacon",
                severity,
                s,
                format!("{src} called {dst}:{port} {} times, every {:.0} s (beacon score {s:.2})", conns.len(), mi / 1000.0),
                BTreeMap::from([("src", src.to_string()), ("dst", dst.to_string()), ("dport", port.to_string())]),
                Window::new(first, last),
            )
            .metric("connections", conns.len())
            .metric("median_interval_s", (mi / 10.0).round() / 100.0)
            .metric("time_score", (ts * 1000.0).round() / 1000.0)
            .metric("size_score", (ds * 1000.0).round() / 1000.0)
            .threshold(format!(
                "RITA-style beacon score {s:.3} (time {ts:.3}, size {ds:.3}) >= {} over {} connections >= min_connections {}",
                c.medium_score, conns.len(), c.min_connections
            ))
            .evidence(uploads.map.get(&(super::ip_key(&src), super::ip_key(&dst))).map(|u| &u.loc)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past MAX_STARTS, the connections kept are the earliest whatever order they closed in
    /// and however the pairs' connections were split into parts before merging.
    #[test]
    fn the_connections_kept_do_not_depend_on_closing_order_or_split() {
        let dst = u32::from_be_bytes([198, 51, 100, 7]);
        let starts: Vec<i64> = (0..1_000).map(|i| (i * 7_919) % 1_000 * 60_000).collect();
        let mut one = Beacons::default();
        for &s in &starts {
            one.add(1, dst, 443, s, 100);
        }
        let (mut a, mut b) = (Beacons::default(), Beacons::default());
        for (i, &s) in starts.iter().rev().enumerate() {
            if i % 3 == 0 { &mut a } else { &mut b }.add(1, dst, 443, s, 100);
        }
        a.merge(b);
        let kept = |x: &Beacons| {
            let mut v = x.map[&(1, dst, 443)].clone();
            earliest(&mut v);
            v
        };
        let want: Vec<(i64, u64)> = (0..MAX_STARTS as i64).map(|i| (i * 60_000, 100)).collect();
        assert_eq!(kept(&one), want);
        assert_eq!(kept(&a), want);
    }

    #[test]
    fn a_steady_beacon_scores_high_and_random_traffic_does_not() {
        let beacon: Vec<(i64, u64)> = (0..200)
            .map(|i| {
                (
                    i * 60_000 + (i * 7919 % 5) * 400,
                    1200 + (i as u64 * 31 % 40),
                )
            })
            .collect();
        let (s, _, _) = score(&beacon);
        assert!(s > 0.9, "{s}");
        let mut rng = fastrand::Rng::with_seed(9);
        let mut t = 0;
        let random: Vec<(i64, u64)> = (0..200)
            .map(|_| {
                t += (-(rng.f64().max(1e-9)).ln() * 60_000.0) as i64;
                (t, rng.u64(500..200_000))
            })
            .collect();
        let (r, _, _) = score(&random);
        assert!(r < 0.7, "{r}");
    }
}
