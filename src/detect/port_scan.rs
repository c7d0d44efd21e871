//! `port_scan` (vertical): one source probing many destination ports of one host.
//!
//! Method: Threshold Random Walk (Jung, Paxson, Berger and Balakrishnan, "Fast Portscan
//! Detection Using Sequential Hypothesis Testing", IEEE S&P 2004), as SiLK's `rwscan` applies
//! it, over the source's first contacts with each port of the host in time order. A first
//! contact is a failure when it was denied, or allowed with no reply (a B and nothing back);
//! else a success. Each success multiplies the likelihood ratio by theta1/theta0 and each
//! failure by (1-theta1)/(1-theta0); the source is a scanner once the ratio reaches
//! eta1 = beta/alpha, benign once it falls to eta0 = (1-beta)/(1-alpha). Defaults are the
//! paper's and rwscan's: theta0 0.8 (a benign first contact succeeds 80% of the time), theta1
//! 0.2 (a scanner's 20%), alpha 0.01 (false positive rate), beta 0.99 (detection rate): four
//! failures in a row decide "scanner".
//!
//! TRW alone fires on a source that failed four times, which internet background radiation
//! does all day; a finding also needs `min_ports` distinct ports (default 20: more than the
//! favourite-port lists of common scanners and worms, Mirai's 2 and the ~10 of the usual
//! SSH/RDP/SMB/SQL sweepers). Severity: low from 20 ports, medium from 100 (a tool scan, nmap's
//! default list is 1000), high from 1000 or when a scan of 100 ports or more found ports that
//! answered.
//!
//! This file also owns the first-contacts table that [`super::horizontal_sweep`] and
//! [`super::lateral_movement`] read: one entry per (source, destination, port, protocol), with
//! the first time, whether it ever succeeded, and the first tuple's location.

use super::{ip_key, ip_of, Context, Finding, Ip, Loc, Seen, Severity, Window};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[port_scan]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub theta0: f64,
    pub theta1: f64,
    pub alpha: f64,
    pub beta: f64,
    pub min_ports: usize,
    pub medium_ports: usize,
    pub high_ports: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            theta0: 0.8,
            theta1: 0.2,
            alpha: 0.01,
            beta: 0.99,
            min_ports: 20,
            medium_ports: 100,
            high_ports: 1000,
        }
    }
}

/// One first contact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contact {
    pub first_ms: i64,
    /// Any tuple of it was answered.
    pub success: bool,
    /// Any tuple of it was allowed.
    pub allowed: bool,
    pub loc: Loc,
}

/// (source, destination, destination port, protocol code) → first contact.
pub type ContactKey = (Ip, Ip, u16, u16);

/// An IPv4 contact key in one `u128`: source, destination, port, protocol code.
#[inline]
fn pack4(src: u32, dst: u32, dport: u16, proto: u16) -> u128 {
    (src as u128) << 64 | (dst as u128) << 32 | (dport as u128) << 16 | proto as u128
}

#[inline]
fn unpack4(k: u128) -> ContactKey {
    (
        (k >> 64) as u32 as u128 | 1 << 127,
        (k >> 32) as u32 as u128 | 1 << 127,
        (k >> 16) as u16,
        k as u16,
    )
}

/// Fold `c` into the table's entry `m`: the earliest contact (ties by location) wins,
/// outcomes are or-ed.
#[inline]
fn absorb(m: &mut Contact, c: &Contact) {
    if (c.first_ms, &c.loc) < (m.first_ms, &m.loc) {
        m.first_ms = c.first_ms;
        m.loc = c.loc;
    }
    m.success |= c.success;
    m.allowed |= c.allowed;
}

fn absorb_all<K: Eq + std::hash::Hash>(
    map: &mut FxHashMap<K, Contact>,
    from: impl IntoIterator<Item = (K, Contact)>,
) {
    for (k, c) in from {
        match map.entry(k) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(c);
            }
            std::collections::hash_map::Entry::Occupied(mut e) => absorb(e.get_mut(), &c),
        }
    }
}

/// The first-contacts table (see the module docs). Mergeable: the earliest contact wins,
/// outcomes are or-ed.
#[derive(Default, Serialize, Deserialize)]
pub struct Contacts {
    /// IPv4 contacts by [`pack4`] key (64-byte entries, where tuple keys took 96).
    v4: FxHashMap<u128, Contact>,
    /// Contacts with an IPv6 end.
    v6: FxHashMap<ContactKey, Contact>,
    /// The last IPv4 key seen and whether it is already a success and allowed: runs of one
    /// flow's tuples skip the map.
    #[serde(skip)]
    last: Option<(u128, bool, bool)>,
}

impl Contacts {
    #[inline]
    pub fn see(&mut self, s: &Seen<'_>) {
        let t = s.t;
        let allowed = !s.deny;
        let c = match (t.src, t.dst) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                let key = pack4(a.into(), b.into(), t.dport, t.protocol.code());
                if let Some((k, succ, allw)) = self.last {
                    if k == key && (succ || !s.replied) && (allw || !allowed) {
                        return;
                    }
                }
                let c = self.v4.entry(key).or_insert_with(|| Contact {
                    first_ms: t.time_ms,
                    success: false,
                    allowed: false,
                    loc: s.loc(),
                });
                self.last = Some((key, c.success | s.replied, c.allowed | allowed));
                c
            }
            _ => {
                let key = (ip_key(&t.src), ip_key(&t.dst), t.dport, t.protocol.code());
                self.v6.entry(key).or_insert_with(|| Contact {
                    first_ms: t.time_ms,
                    success: false,
                    allowed: false,
                    loc: s.loc(),
                })
            }
        };
        if t.time_ms <= c.first_ms {
            let loc = s.loc();
            if (t.time_ms, &loc) < (c.first_ms, &c.loc) {
                c.first_ms = t.time_ms;
                c.loc = loc;
            }
        }
        c.success |= s.replied;
        c.allowed |= allowed;
    }

    pub fn merge(&mut self, mut o: Contacts) {
        self.last = None;
        if o.v4.len() > self.v4.len() {
            std::mem::swap(&mut self.v4, &mut o.v4);
        }
        absorb_all(&mut self.v4, o.v4);
        absorb_all(&mut self.v6, o.v6);
    }

    /// Every contact, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (ContactKey, &Contact)> + '_ {
        self.v4
            .iter()
            .map(|(k, c)| (unpack4(*k), c))
            .chain(self.v6.iter().map(|(k, c)| (*k, c)))
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Contacts grouped by a key of theirs, groups of `min` contacts or more only (counted
    /// first, so the many small groups are never built), each sorted by (first time, key).
    pub fn grouped<G: Ord + Copy + std::hash::Hash>(
        &self,
        min: usize,
        keep: impl Fn(&ContactKey, &Contact) -> Option<G>,
    ) -> BTreeMap<G, Vec<(ContactKey, &Contact)>> {
        let mut sizes: FxHashMap<G, usize> = FxHashMap::default();
        for (k, c) in self.iter() {
            if let Some(key) = keep(&k, c) {
                *sizes.entry(key).or_default() += 1;
            }
        }
        sizes.retain(|_, n| *n >= min);
        let mut g: BTreeMap<G, Vec<(ContactKey, &Contact)>> = BTreeMap::new();
        if sizes.is_empty() {
            return g;
        }
        for (k, c) in self.iter() {
            if let Some(key) = keep(&k, c) {
                if sizes.contains_key(&key) {
                    g.entry(key).or_default().push((k, c));
                }
            }
        }
        for v in g.values_mut() {
            v.sort_by_key(|a| (a.1.first_ms, a.0));
        }
        g
    }
}

/// The TRW decision over outcomes in order: `Some(n)` when the walk reached "scanner" at the
/// n-th contact, `None` when it decided "benign" first or never decided.
pub fn trw(outcomes: impl IntoIterator<Item = bool>, c: &Config) -> Option<usize> {
    let (eta1, eta0) = (c.beta / c.alpha, (1.0 - c.beta) / (1.0 - c.alpha));
    let (up, down) = ((1.0 - c.theta1) / (1.0 - c.theta0), c.theta1 / c.theta0);
    let mut l = 1.0;
    for (i, success) in outcomes.into_iter().enumerate() {
        l *= if success { down } else { up };
        if l >= eta1 {
            return Some(i + 1);
        }
        if l <= eta0 {
            return None;
        }
    }
    None
}

pub fn finish(contacts: &Contacts, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.port_scan;
    let groups = contacts.grouped(c.min_ports, |k, _| Some((k.0, k.1)));
    let mut out = Vec::new();
    for ((src, dst), v) in groups {
        let (s, d) = (ip_of(src), ip_of(dst));
        if v.len() < c.min_ports || cx.allowed(&s) || cx.allowed(&d) {
            continue;
        }
        let mut ports: Vec<u16> = v.iter().map(|(k, _)| k.2).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() < c.min_ports {
            continue;
        }
        let Some(at) = trw(v.iter().map(|(_, x)| x.success), c) else {
            continue;
        };
        let failures = v.iter().filter(|(_, x)| !x.success).count();
        let open: Vec<u16> = {
            let mut o: Vec<u16> = v
                .iter()
                .filter(|(_, x)| x.success)
                .map(|(k, _)| k.2)
                .collect();
            o.sort_unstable();
            o.dedup();
            o
        };
        let (first, last) = (v[0].1.first_ms, v[v.len() - 1].1.first_ms);
        let n = ports.len();
        let severity = if n >= c.high_ports || (n >= c.medium_ports && !open.is_empty()) {
            Severity::High
        } else if n >= c.medium_ports {
            Severity::Medium
        } else {
            Severity::Low
        };
        let minutes = ((last - first) as f64 / 60_000.0).max(1.0);
        let subjects = BTreeMap::from([("src", s.to_string()), ("dst", d.to_string())]);
        out.push(
            Finding::new(
                "port_scan",
                severity,
                n as f64,
                format!(
                    "{s} probed {n} ports of {d} in {:.0} min ({failures} failed, {} answered)",
                    minutes,
                    open.len()
                ),
                subjects,
                Window::new(first, last),
            )
            .metric("distinct_ports", n)
            .metric("first_contacts", v.len())
            .metric("failures", failures)
            .metric("answered_ports", open.iter().take(20).copied().collect::<Vec<_>>())
            .metric("ports_per_minute", (n as f64 / minutes * 10.0).round() / 10.0)
            .metric("trw_decided_at_contact", at)
            .threshold(format!(
                "Threshold Random Walk (theta0 {}, theta1 {}, alpha {}, beta {}) decided \"scanner\" at first contact {at}, and {n} distinct ports >= min_ports {} (medium from {}, high from {})",
                c.theta0, c.theta1, c.alpha, c.beta, c.min_ports, c.medium_ports, c.high_ports
            ))
            .evidence(v.iter().map(|(_, x)| &x.loc)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trw_decides_scanner_after_four_failures_and_benign_after_successes() {
        let c = Config::default();
        // (1-0.2)/(1-0.8) = 4 per failure: 4^3 = 64 < 99 <= 4^4 = 256.
        assert_eq!(trw([false; 10], &c), Some(4));
        assert_eq!(trw([false, false, false], &c), None);
        // 0.25 per success: two successes reach 0.0625 > 0.0101, four reach 0.0039: benign.
        assert_eq!(
            trw(
                [true, true, true, true, false, false, false, false, false],
                &c
            ),
            None
        );
        // A success between failures delays the decision: 4*4*0.25*4*4 = 64, then 256.
        assert_eq!(trw([false, false, true, false, false, false], &c), Some(6));
    }

    fn scan(ports: u16, answered_too: bool) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let t: Vec<_> = (0..ports)
            .map(|i| {
                let min = i as f64 * 0.1;
                let t = if answered_too {
                    answered(min, "198.51.100.7", "10.0.0.4", 1000 + i, true, 0)
                } else {
                    denied(min, "198.51.100.7", "10.0.0.4", 1000 + i, true)
                };
                ("APP-NSG", "DefaultRule_DenyAllInBound", t)
            })
            .collect();
        run(&t, None)
    }

    #[test]
    fn a_denied_scan_of_26_ports_fires_with_its_subjects_window_and_evidence() {
        use crate::detect::testkit::*;
        let v = scan(26, false);
        let f = of(&v, "port_scan");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Low);
        assert_eq!(f.subjects["src"], "198.51.100.7");
        assert_eq!(f.subjects["dst"], "10.0.0.4");
        assert_eq!(f.window.first, "2026-01-05T00:00:00.000Z");
        assert_eq!(f.window.last, "2026-01-05T00:02:30.000Z");
        assert_eq!(f.metrics["distinct_ports"], 26);
        assert_eq!(f.metrics["failures"], 26);
        assert_eq!(f.metrics["trw_decided_at_contact"], 4);
        assert_eq!(f.evidence.len(), 5);
        assert_eq!(f.evidence[0].path, "test/h=490992/PT1H.json");
        assert_eq!((f.evidence[0].record, f.evidence[0].tuple), (0, 0));
        assert_eq!(f.evidence[0].rule, "DefaultRule_DenyAllInBound");
    }

    #[test]
    fn allowed_first_contacts_that_nothing_answered_are_failures_too() {
        use crate::detect::testkit::*;
        let t: Vec<_> = (0..30)
            .map(|i| {
                let u = unanswered(i as f64 * 0.1, "198.51.100.7", "10.0.0.4", 2000 + i, true);
                ("APP-NSG", "AllowAnyIn", u)
            })
            .collect();
        let v = run(&t, None);
        let f = of(&v, "port_scan");
        assert_eq!(f.len(), 1, "{v:#?}");
        assert_eq!(f[0].metrics["failures"], 30);
        assert_eq!(f[0].metrics["answered_ports"], serde_json::json!([]));
    }

    #[test]
    fn near_misses_19_ports_or_ports_that_answer_do_not_fire() {
        use crate::detect::testkit::*;
        assert!(of(&scan(19, false), "port_scan").is_empty());
        // 26 ports that all answered: the walk decides "benign".
        assert!(of(&scan(26, true), "port_scan").is_empty());
    }
}
