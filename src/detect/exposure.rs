//! `exposure`: allowed inbound traffic from the Internet to admin or database ports — which
//! rule let it in, and how many sources used it.
//!
//! Admin ports (SSH 22, RDP 3389, SMB 445, RPC 135, WinRM 5985/5986) and database or cache
//! ports (1433, 3306, 5432, 6379, 9200, 27017, 9042, 11211) are the services Microsoft's
//! Defender for Cloud recommendation "management ports should be closed" and the CIS Azure
//! benchmark (6.1-6.4) say must not be open to the Internet. Any allowed tuple from an
//! external address to one is a finding; severity grows with the distinct sources: medium
//! for 1-2, high from `high_sources` (3), critical from `critical_sources` (50: the port is
//! being found and used by the Internet at large).

use super::{ip_key, ip_of, Context, Finding, Ip, Loc, Seen, Severity, Window, ADMIN_PORTS};
use crate::addr::builtin_internal;
use crate::hash::HMap;
use crate::text::counted;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Most sources and destinations kept per exposed rule and port (the count goes on).
const KEEP: usize = 10_000;

/// `[exposure]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub high_sources: usize,
    pub critical_sources: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            high_sources: 3,
            critical_sources: 50,
        }
    }
}

/// One rule and port that let external traffic in.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Exposure {
    pub sources: BTreeSet<Ip>,
    pub hosts: BTreeSet<Ip>,
    pub tuples: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub locs: Vec<Loc>,
}

/// (NSG, rule, port, protocol code) → what came in. Mergeable.
#[derive(Default, Serialize, Deserialize)]
pub struct Exposed {
    /// Keyed by NSG and rule [`super::name_hash`].
    pub map: HMap<(u64, u64, u16, u16), Exposure>,
}

impl Exposed {
    #[inline]
    pub fn see(&mut self, s: &Seen<'_>) {
        let t = s.t;
        if !s.inbound || !super::is_exposure_port(t.dport) || builtin_internal(&t.src) {
            return;
        }
        let key = (s.nsg, s.rule, t.dport, t.protocol.code());
        let e = self.map.entry(key).or_insert_with(|| Exposure {
            first_ms: t.time_ms,
            last_ms: t.time_ms,
            ..Exposure::default()
        });
        e.tuples += 1;
        e.first_ms = e.first_ms.min(t.time_ms);
        e.last_ms = e.last_ms.max(t.time_ms);
        if e.sources.len() < KEEP {
            e.sources.insert(ip_key(&t.src));
        }
        if e.hosts.len() < KEEP {
            e.hosts.insert(ip_key(&t.dst));
        }
        if e.locs.len() < super::EVIDENCE_PER_FINDING {
            e.locs.push(s.loc());
        }
    }

    pub fn merge(&mut self, mut o: Exposed) {
        self.drain_from(&mut o);
    }

    /// Merge `o` in and leave it empty, its memory kept for the next blob.
    pub fn drain_from(&mut self, o: &mut Exposed) {
        for (k, v) in o.map.drain() {
            let e = self.map.entry(k).or_insert_with(|| Exposure {
                first_ms: v.first_ms,
                last_ms: v.last_ms,
                ..Exposure::default()
            });
            e.tuples += v.tuples;
            e.first_ms = e.first_ms.min(v.first_ms);
            e.last_ms = e.last_ms.max(v.last_ms);
            e.sources.extend(v.sources);
            e.hosts.extend(v.hosts);
            e.locs.extend(v.locs);
            e.locs.sort();
            e.locs.truncate(super::EVIDENCE_PER_FINDING);
        }
    }
}

pub fn finish(x: &Exposed, names: &HMap<u64, Arc<str>>, cx: &Context<'_>) -> Vec<Finding> {
    let name = |h: &u64| names.get(h).map(|s| s.to_string()).unwrap_or_default();
    let c = &cx.config.exposure;
    let mut out = Vec::new();
    let mut keys: Vec<_> = x.map.keys().collect();
    keys.sort();
    for k in keys {
        let e = &x.map[k];
        let (nsg, rule, port, proto) = (name(&k.0), name(&k.1), &k.2, &k.3);
        let sources: Vec<std::net::IpAddr> = e
            .sources
            .iter()
            .map(|ip| ip_of(*ip))
            .filter(|ip| cx.external(ip) && !cx.allowed(ip))
            .collect();
        if sources.is_empty() {
            continue;
        }
        let n = sources.len();
        let severity = if n >= c.critical_sources {
            Severity::Critical
        } else if n >= c.high_sources {
            Severity::High
        } else {
            Severity::Medium
        };
        let p = crate::model::Protocol::from_code(*proto);
        let kind = if ADMIN_PORTS.contains(port) {
            "admin"
        } else {
            "database"
        };
        out.push(
            Finding::new(
                "exposure",
                severity,
                n as f64,
                format!("{rule} at {nsg} let {} in to {kind} port {port}/{p} on {}", counted(n, "internet source", "internet sources"), counted(e.hosts.len(), "host", "hosts")),
                BTreeMap::from([
                    ("nsg", nsg.to_string()),
                    ("rule", rule.to_string()),
                    ("dport", port.to_string()),
                    ("protocol", p.to_string()),
                ]),
                Window::new(e.first_ms, e.last_ms),
            )
            .metric("sources", n)
            .metric("hosts", e.hosts.len())
            .metric("tuples", e.tuples)
            .metric("first_sources", sources.iter().take(10).map(|s| s.to_string()).collect::<Vec<_>>())
            .threshold(format!(
                "allowed inbound from the Internet to {kind} port {port}: {n} distinct sources (high from {}, critical from {})",
                c.high_sources, c.critical_sources
            ))
            .evidence(&e.locs),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdp(port: u16, sources: &[&str]) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let t: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    "APP-NSG",
                    "AllowRdpLegacy",
                    answered(i as f64, s, "10.0.0.4", port, true, 9000),
                )
            })
            .collect();
        run(&t, Some(60))
    }

    #[test]
    fn rdp_open_to_three_internet_sources_is_high_and_names_the_rule() {
        use crate::detect::testkit::*;
        let v = rdp(3389, &["198.51.100.1", "198.51.100.2", "203.0.113.3"]);
        let f = of(&v, "exposure");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.subjects["nsg"], "APP-NSG");
        assert_eq!(f.subjects["rule"], "AllowRdpLegacy");
        assert_eq!(f.subjects["dport"], "3389");
        assert_eq!(f.metrics["sources"], 3);
        assert_eq!(f.window.last, "2026-01-05T00:02:00.000Z");
        assert_eq!(
            of(&rdp(3389, &["198.51.100.1"]), "exposure")[0].severity,
            Severity::Medium
        );
    }

    #[test]
    fn https_from_the_internet_or_rdp_from_inside_is_no_exposure() {
        use crate::detect::testkit::*;
        assert!(of(
            &rdp(443, &["198.51.100.1", "198.51.100.2", "203.0.113.3"]),
            "exposure"
        )
        .is_empty());
        assert!(of(
            &rdp(3389, &["10.9.0.1", "10.9.0.2", "172.16.0.3"]),
            "exposure"
        )
        .is_empty());
    }
}
