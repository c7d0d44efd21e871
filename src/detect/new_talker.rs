//! `new_talker`: an external address absent from the baseline that was allowed in (above all
//! to an admin port), or that an internal host sent data to.
//!
//! Method: first-seen times per external address. The baseline is `--baseline` (a folder or
//! a partial file: every address seen there is known), else the first part of the window
//! (`baseline_fraction`, default 25%): an address first seen after it is new. New addresses
//! allowed in on an admin port (22, 3389, 445, 135, 5985, 5986) are high (a new party has a
//! shell or a share); new destinations an internal host sent `min_bytes` or more to (default
//! 10 MiB: more than a page load or a package check) are medium. The rest — new web clients,
//! new small destinations, the churn of any internet-facing service — are one `info`
//! summary with their counts.

use super::{ip_key, ip_of, Context, Finding, Ip, Loc, Seen, Severity, Window};
use crate::addr::builtin_internal;
use crate::hash::HMap;
use crate::text::counted;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[new_talker]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub min_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_bytes: 10 << 20,
        }
    }
}

/// What is known of one external address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Talker {
    pub first_ms: i64,
    pub last_ms: i64,
    /// Allowed inbound tuples from it.
    pub allowed_in: u64,
    /// Allowed in on an admin port.
    pub admin_in: Option<u16>,
    /// Bytes internal hosts sent to it.
    pub bytes_to: u64,
    /// An internal host it talked to (the first).
    pub host: Ip,
    pub loc: Loc,
}

/// External address → what is known of it. Mergeable.
#[derive(Default, Serialize, Deserialize)]
pub struct Talkers {
    pub map: HMap<Ip, Talker>,
}

impl Talkers {
    #[inline]
    pub fn see(&mut self, s: &Seen<'_>) {
        let t = s.t;
        let (remote, local) = if s.inbound {
            (&t.src, &t.dst)
        } else {
            (&t.dst, &t.src)
        };
        if builtin_internal(remote) {
            return;
        }
        let e = self.map.entry(ip_key(remote)).or_insert_with(|| Talker {
            first_ms: t.time_ms,
            last_ms: t.time_ms,
            allowed_in: 0,
            admin_in: None,
            bytes_to: 0,
            host: ip_key(local),
            loc: s.loc(),
        });
        if t.time_ms < e.first_ms {
            e.first_ms = t.time_ms;
            e.host = ip_key(local);
            e.loc = s.loc();
        }
        e.last_ms = e.last_ms.max(t.time_ms);
        if s.inbound {
            e.allowed_in += 1;
            if e.admin_in.is_none() && super::is_admin_port(t.dport) {
                e.admin_in = Some(t.dport);
            }
        } else {
            e.bytes_to = e.bytes_to.saturating_add(t.bytes_s2d.unwrap_or(0));
        }
    }

    pub fn merge(&mut self, mut o: Talkers) {
        self.drain_from(&mut o);
    }

    /// Merge `o` in and leave it empty, its memory kept for the next blob.
    pub fn drain_from(&mut self, o: &mut Talkers) {
        for (k, v) in o.map.drain() {
            match self.map.entry(k) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let m = e.get_mut();
                    if (v.first_ms, &v.loc) < (m.first_ms, &m.loc) {
                        m.first_ms = v.first_ms;
                        m.host = v.host;
                        m.loc = v.loc;
                    }
                    m.last_ms = m.last_ms.max(v.last_ms);
                    m.allowed_in += v.allowed_in;
                    m.admin_in = match (m.admin_in, v.admin_in) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    m.bytes_to = m.bytes_to.saturating_add(v.bytes_to);
                }
            }
        }
    }
}

pub fn finish(t: &Talkers, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.new_talker;
    let known = |ip: &Ip, x: &Talker| match cx.baseline {
        Some(b) => b.tallies.talkers.map.contains_key(ip),
        None => x.first_ms < cx.baseline_end_ms,
    };
    let mut new: Vec<(&Ip, &Talker)> = t
        .map
        .iter()
        .filter(|(ip, x)| !known(ip, x) && cx.external(&ip_of(**ip)) && !cx.allowed(&ip_of(**ip)))
        .collect();
    new.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    let (mut quiet_in, mut quiet_out, mut first, mut last) = (0usize, 0usize, i64::MAX, i64::MIN);
    let mut quiet_locs = Vec::new();
    let mut admin: BTreeMap<(Ip, u16), Vec<(std::net::IpAddr, &Talker)>> = BTreeMap::new();
    for (ip, x) in new {
        let addr = ip_of(*ip);
        let host = ip_of(x.host);
        let window = Window::new(x.first_ms, x.last_ms);
        let base = format!("absent from {}", cx.baseline_name);
        if let Some(port) = x.admin_in {
            admin.entry((x.host, port)).or_default().push((addr, x));
            continue;
        }
        if x.bytes_to >= c.min_bytes {
            let mib = x.bytes_to as f64 / (1u64 << 20) as f64;
            out.push(
                Finding::new(
                    "new_talker",
                    Severity::Medium,
                    mib,
                    format!("internal hosts sent {mib:.1} MiB to new external address {addr} (first {host})"),
                    BTreeMap::from([("src", host.to_string()), ("dst", addr.to_string())]),
                    window,
                )
                .metric("bytes_to", x.bytes_to)
                .metric("allowed_in_tuples", x.allowed_in)
                .threshold(format!(
                    "first seen {} after the baseline, {} bytes sent >= min_bytes {}",
                    crate::text::fmt_ms(x.first_ms),
                    x.bytes_to,
                    c.min_bytes
                ))
                .baseline(base)
                .evidence([&x.loc]),
            );
        } else {
            if x.allowed_in > 0 {
                quiet_in += 1;
            } else {
                quiet_out += 1;
            }
            first = first.min(x.first_ms);
            last = last.max(x.last_ms);
            if quiet_locs.len() < super::EVIDENCE_PER_FINDING {
                quiet_locs.push(&x.loc);
            }
        }
    }
    for ((host, port), v) in admin {
        let host = ip_of(host);
        let first = v.iter().map(|(_, x)| x.first_ms).min().unwrap_or(0);
        let last = v.iter().map(|(_, x)| x.last_ms).max().unwrap_or(0);
        let mut v = v;
        v.sort_by_key(|(a, x)| (x.first_ms, *a));
        let n = v.len();
        out.push(
            Finding::new(
                "new_talker",
                Severity::High,
                n as f64,
                format!(
                    "{} allowed in to {host} on admin port {port} (first {})",
                    counted(n, "new external address was", "new external addresses were"),
                    v[0].0
                ),
                BTreeMap::from([("dst", host.to_string()), ("dport", port.to_string())]),
                Window::new(first, last),
            )
            .metric("new_sources", n)
            .metric(
                "sources",
                v.iter()
                    .take(20)
                    .map(|(a, _)| a.to_string())
                    .collect::<Vec<_>>(),
            )
            .metric(
                "allowed_in_tuples",
                v.iter().map(|(_, x)| x.allowed_in).sum::<u64>(),
            )
            .threshold(format!(
                "first seen after the baseline (the first at {}), allowed in on an admin port",
                crate::text::fmt_ms(first)
            ))
            .baseline(format!("absent from {}", cx.baseline_name))
            .evidence(v.iter().map(|(_, x)| &x.loc)),
        );
    }
    if quiet_in + quiet_out > 0 {
        out.push(
            Finding::new(
                "new_talker",
                Severity::Info,
                (quiet_in + quiet_out) as f64,
                format!(
                    "{} allowed in on other ports, {} with little data",
                    counted(quiet_in, "new external source", "new external sources"),
                    counted(quiet_out, "new destination", "new destinations")
                ),
                BTreeMap::from([("src", "new external addresses".to_string())]),
                Window::new(first, last),
            )
            .metric("new_sources_allowed_in", quiet_in)
            .metric("new_destinations", quiet_out)
            .threshold(format!(
                "new since the baseline, not on an admin port and under min_bytes {} sent",
                c.min_bytes
            ))
            .baseline(format!("absent from {}", cx.baseline_name))
            .evidence(quiet_locs),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_in(seen_early: bool) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let mut t = vec![
            (
                "APP-NSG",
                "AllowSsh",
                answered(1.0, "10.0.0.9", "10.0.0.4", 22, true, 100),
            ),
            (
                "APP-NSG",
                "AllowSsh",
                answered(40.0, "198.51.100.20", "10.0.0.4", 22, true, 3000),
            ),
        ];
        if seen_early {
            t.push((
                "APP-NSG",
                "AllowSsh",
                answered(5.0, "198.51.100.20", "10.0.0.4", 22, true, 3000),
            ));
        }
        run(&t, Some(60))
    }

    #[test]
    fn a_new_address_allowed_in_on_ssh_is_high() {
        use crate::detect::testkit::*;
        let v = ssh_in(false);
        let f = of(&v, "new_talker");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.subjects["dst"], "10.0.0.4");
        assert_eq!(f.subjects["dport"], "22");
        assert_eq!(f.window.first, "2026-01-05T00:40:00.000Z");
        assert_eq!(f.metrics["sources"], serde_json::json!(["198.51.100.20"]));
        assert!(f
            .baseline
            .as_deref()
            .unwrap()
            .contains("first 25% of the window"));
    }

    #[test]
    fn an_address_already_seen_in_the_baseline_is_not_new() {
        use crate::detect::testkit::*;
        assert!(of(&ssh_in(true), "new_talker").is_empty());
    }
}
