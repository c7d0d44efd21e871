//! `exfiltration`: an internal host sending far more to one external address than it sends
//! to its other destinations, and than hosts send to destinations across the estate.
//!
//! Method: the bytes an internal host sent (source-to-destination bytes of its outbound
//! allowed tuples) to each external address; two robust z-scores (Iglewicz and Hoaglin 1993,
//! 0.6745 (x - median) / MAD, see [`super::robust_z`]) of a pair's bytes, against the host's
//! own pairs (its baseline; the population stands in for a host with fewer than 3 external
//! destinations) and against every internal-to-external pair (the population). The score is
//! the smaller of the two, times `rare_weight` (1.5) when no other internal host talked to
//! the destination: an upload that stands out for the host and for the estate, to a place
//! nobody else uses. It fires at `min_bytes` (default 100 MiB, below which an upload is not
//! worth a ticket) and a score of `z_low` (3.5, Iglewicz and Hoaglin's outlier limit) for
//! low, `z_medium` (10) for medium; high from `high_bytes` (1 GiB) at medium's score.

use super::{ip_key, ip_of, robust_z, Context, Finding, Ip, Loc, Seen, Severity, Window};
use crate::addr::builtin_internal;
use crate::hash::HMap;
use crate::text::fmt_ms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[exfiltration]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub min_bytes: u64,
    pub high_bytes: u64,
    pub z_low: f64,
    pub z_medium: f64,
    pub rare_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_bytes: 100 << 20,
            high_bytes: 1 << 30,
            z_low: 3.5,
            z_medium: 10.0,
            rare_weight: 1.5,
        }
    }
}

/// Bytes a host sent to one address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Upload {
    pub bytes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub loc: Loc,
}

/// (internal source, non-private destination) → bytes sent. Mergeable.
#[derive(Default, Serialize, Deserialize)]
pub struct Uploads {
    pub map: HMap<(Ip, Ip), Upload>,
}

impl Uploads {
    #[inline]
    pub fn see(&mut self, s: &Seen<'_>) {
        let t = s.t;
        if s.inbound || builtin_internal(&t.dst) {
            return;
        }
        let bytes = t.bytes_s2d.unwrap_or(0);
        let u = self
            .map
            .entry((ip_key(&t.src), ip_key(&t.dst)))
            .or_insert_with(|| Upload {
                bytes: 0,
                first_ms: t.time_ms,
                last_ms: t.time_ms,
                loc: s.loc(),
            });
        u.bytes = u.bytes.saturating_add(bytes);
        if t.time_ms < u.first_ms {
            u.first_ms = t.time_ms;
            u.loc = s.loc();
        }
        u.last_ms = u.last_ms.max(t.time_ms);
    }

    pub fn merge(&mut self, mut o: Uploads) {
        self.drain_from(&mut o);
    }

    /// Merge `o` in and leave it empty, its memory kept for the next blob.
    pub fn drain_from(&mut self, o: &mut Uploads) {
        for (k, v) in o.map.drain() {
            match self.map.entry(k) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let m = e.get_mut();
                    m.bytes = m.bytes.saturating_add(v.bytes);
                    if (v.first_ms, &v.loc) < (m.first_ms, &m.loc) {
                        m.first_ms = v.first_ms;
                        m.loc = v.loc;
                    }
                    m.last_ms = m.last_ms.max(v.last_ms);
                }
            }
        }
    }
}

pub fn finish(up: &Uploads, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.exfiltration;
    let pairs: Vec<(&(Ip, Ip), &Upload)> = {
        let mut v: Vec<_> = up
            .map
            .iter()
            .filter(|((s, d), _)| {
                let (s, d) = (ip_of(*s), ip_of(*d));
                cx.internal(&s) && cx.external(&d)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    };
    let population: Vec<f64> = pairs.iter().map(|(_, u)| u.bytes as f64).collect();
    let mut by_host: BTreeMap<Ip, Vec<f64>> = BTreeMap::new();
    let mut hosts_of_dst: BTreeMap<Ip, usize> = BTreeMap::new();
    for ((s, d), u) in &pairs {
        by_host.entry(*s).or_default().push(u.bytes as f64);
        *hosts_of_dst.entry(*d).or_default() += 1;
    }
    let mut out = Vec::new();
    for ((s, d), u) in &pairs {
        if u.bytes < c.min_bytes {
            continue;
        }
        let (src, dst) = (ip_of(*s), ip_of(*d));
        if cx.allowed(&src) || cx.allowed(&dst) {
            continue;
        }
        let x = u.bytes as f64;
        let z_pop = robust_z(x, &population);
        let own = &by_host[s];
        let z_host = if own.len() >= 3 {
            robust_z(x, own)
        } else {
            z_pop
        };
        let rare = hosts_of_dst[d] == 1;
        let score = z_pop.min(z_host) * if rare { c.rare_weight } else { 1.0 };
        if score < c.z_low {
            continue;
        }
        let severity = if score >= c.z_medium && u.bytes >= c.high_bytes {
            Severity::High
        } else if score >= c.z_medium {
            Severity::Medium
        } else {
            Severity::Low
        };
        let mib = u.bytes as f64 / (1u64 << 20) as f64;
        out.push(
            Finding::new(
                "exfiltration",
                severity,
                score,
                format!("{src} sent {mib:.1} MiB to {dst}{}", if rare { " (no other host talks to it)" } else { "" }),
                BTreeMap::from([("src", src.to_string()), ("dst", dst.to_string())]),
                Window::new(u.first_ms, u.last_ms),
            )
            .metric("bytes", u.bytes)
            .metric("z_population", (z_pop * 100.0).round() / 100.0)
            .metric("z_host", (z_host * 100.0).round() / 100.0)
            .metric("host_destinations", own.len())
            .metric("rare_destination", rare)
            .threshold(format!(
                "score min(z_host {z_host:.1}, z_population {z_pop:.1}){} = {score:.1} >= {} ({} from {}), bytes {} >= min_bytes {}",
                if rare { format!(" x rare_weight {}", c.rare_weight) } else { String::new() },
                c.z_low, "medium", c.z_medium, u.bytes, c.min_bytes
            ))
            .baseline(format!(
                "the host's {} external destinations and {} internal-to-external pairs in the window ({} .. {})",
                own.len(),
                population.len(),
                fmt_ms(cx.first_ms),
                fmt_ms(cx.last_ms)
            ))
            .evidence([&u.loc]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads(big: u64) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let mut t = Vec::new();
        // Ten hosts, three destinations each, 1-5 MB each: the population.
        for h in 1..=10u64 {
            for d in 1..=3u64 {
                let (src, dst) = (format!("10.0.3.{h}"), format!("198.51.100.{d}"));
                let bytes = (h * 3 + d) * 400_000;
                t.push((
                    "APP-NSG",
                    "AllowInternetOutBound",
                    answered(h as f64, &src, &dst, 443, false, bytes),
                ));
            }
        }
        t.push((
            "APP-NSG",
            "AllowInternetOutBound",
            answered(50.0, "10.0.3.1", "203.0.113.77", 443, false, big),
        ));
        run(&t, Some(60))
    }

    #[test]
    fn two_gib_to_a_rare_destination_is_high() {
        use crate::detect::testkit::*;
        let v = uploads(2 << 30);
        let f = of(&v, "exfiltration");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.subjects["src"], "10.0.3.1");
        assert_eq!(f.subjects["dst"], "203.0.113.77");
        assert_eq!(f.window.first, "2026-01-05T00:50:00.000Z");
        assert_eq!(f.metrics["bytes"], 2u64 << 30);
        assert_eq!(f.metrics["rare_destination"], true);
        assert_eq!(f.metrics["host_destinations"], 4);
    }

    #[test]
    fn an_upload_under_min_bytes_does_not_fire_however_unusual() {
        use crate::detect::testkit::*;
        assert!(of(&uploads(90 << 20), "exfiltration").is_empty());
    }
}
