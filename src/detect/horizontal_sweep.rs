//! `horizontal_sweep`: one source probing one port on many of our hosts within a short
//! window.
//!
//! Internet background radiation — thousands of scanners, each trying a few favourite ports
//! on every public address over hours, nearly all denied — is normal for an Azure estate
//! (Durumeric et al., "An Internet-Wide View of Internet-Wide Scanning", USENIX Security
//! 2014; Pang et al., "Characteristics of Internet Background Radiation", IMC 2004). It is
//! summarised as one `info` finding (sources, ports, hosts reached, whether all was denied),
//! and only a sweep that stands out from it is raised on its own:
//! - *anything answered*: a host replied on the swept port (medium; high from `wide_hosts`);
//! - *speed*: `fast_hosts` hosts or more within `window_min` minutes (medium);
//! - *breadth*: `wide_hosts` hosts or more in all (medium).
//!
//! A sweep is a source's first contacts on one port and protocol with `min_hosts` (default 5)
//! or more internal hosts, at least half of which failed (denied, or allowed with no reply):
//! ordinary clients of a service succeed. An internal source's allowed contacts are not
//! failures here: a stateless allow rule logs only `B` tuples with no counts, so a bastion or
//! a configuration tool reaching every host on SSH would read as a sweep of unanswered
//! contacts; internal hosts reaching internal hosts on admin ports are
//! [`super::lateral_movement`]'s, against their baseline. Defaults: `window_min` 10 and `fast_hosts` 5
//! (faster than IBR's slow, spread-out probing, which reaches one estate's few hosts in
//! hours), `wide_hosts` 256 (a /24's worth).

use super::port_scan::{Contact, ContactKey};
use super::{ip_of, Context, Finding, Severity, Window};
use crate::model::Protocol;
use crate::text::counted;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `[horizontal_sweep]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub min_hosts: usize,
    pub window_min: i64,
    pub fast_hosts: usize,
    pub wide_hosts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_hosts: 5,
            window_min: 10,
            fast_hosts: 5,
            wide_hosts: 256,
        }
    }
}

/// Most distinct hosts reached within any window of `window_ms` over sorted times.
pub fn max_in_window(times: &[i64], window_ms: i64) -> (usize, i64, i64) {
    let (mut best, mut at, mut to) = (0, 0, 0);
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] > window_ms {
            lo += 1;
        }
        if hi + 1 - lo > best {
            best = hi + 1 - lo;
            at = times[lo];
            to = times[hi];
        }
    }
    (best, at, to)
}

pub fn finish(contacts: &super::port_scan::Contacts, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.horizontal_sweep;
    let window_ms = c.window_min * 60_000;
    let mut out = Vec::new();
    // The background: sweeps that do not stand out.
    let (mut bg_sources, mut bg_ports, mut bg_hosts) = (0usize, BTreeSet::new(), BTreeSet::new());
    let (mut bg_all_denied, mut bg_first, mut bg_last) = (true, i64::MAX, i64::MIN);
    let mut bg_locs = Vec::new();
    // A (source, port) sweep is a source's contacts with internal hosts, by port: groups of
    // the sources with enough contacts, split by port (each in time order).
    let internal = |k: &ContactKey, _: &Contact| cx.internal(&ip_of(k.1));
    let by_port = |a: &(ContactKey, Contact)| (a.0 .2, a.0 .3, a.1.first_ms);
    contacts.groups(c.min_hosts, |k| k.0, internal, by_port, |src, all| {
    for v in all.chunk_by(|a, b| (a.0 .2, a.0 .3) == (b.0 .2, b.0 .3)) {
        let (port, proto) = (v[0].0 .2, v[0].0 .3);
        if v.len() < c.min_hosts {
            continue;
        }
        let s = ip_of(src);
        if cx.allowed(&s) {
            continue;
        }
        let hosts: BTreeSet<u128> = v.iter().map(|(k, _)| k.1).collect();
        let inside = cx.internal(&s);
        let failed = v
            .iter()
            .filter(|(_, x)| !(x.success || inside && x.allowed))
            .count();
        if hosts.len() < c.min_hosts || failed * 2 < v.len() {
            continue;
        }
        let answered: BTreeSet<u128> = v
            .iter()
            .filter(|(_, x)| x.success)
            .map(|(k, _)| k.1)
            .collect();
        let times: Vec<i64> = v.iter().map(|(_, x)| x.first_ms).collect();
        let (fast, at, to) = max_in_window(&times, window_ms);
        let (first, last) = (times[0], times[times.len() - 1]);
        let p = Protocol::from_code(proto);
        let stands_out =
            !answered.is_empty() || fast >= c.fast_hosts || hosts.len() >= c.wide_hosts;
        if !stands_out {
            bg_sources += 1;
            bg_ports.insert(port);
            bg_hosts.extend(hosts.iter().copied());
            bg_all_denied &= v.iter().all(|(_, x)| !x.allowed);
            bg_first = bg_first.min(first);
            bg_last = bg_last.max(last);
            bg_locs.extend(v.iter().take(1).map(|(_, x)| x.loc));
            continue;
        }
        let severity = if !answered.is_empty() && hosts.len() >= c.wide_hosts {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut why = Vec::new();
        if !answered.is_empty() {
            why.push(format!("{} answered", counted(answered.len(), "host", "hosts")));
        }
        if fast >= c.fast_hosts {
            why.push(format!(
                "{fast} hosts within {} min >= fast_hosts {}",
                c.window_min, c.fast_hosts
            ));
        }
        if hosts.len() >= c.wide_hosts {
            why.push(format!(
                "{} hosts >= wide_hosts {}",
                hosts.len(),
                c.wide_hosts
            ));
        }
        let subjects = BTreeMap::from([
            ("src", s.to_string()),
            ("dport", port.to_string()),
            ("protocol", p.to_string()),
        ]);
        out.push(
            Finding::new(
                "horizontal_sweep",
                severity,
                hosts.len() as f64 + fast as f64,
                format!("{s} swept port {port}/{p} on {} ({fast} within {} min)", counted(hosts.len(), "host", "hosts"), c.window_min),
                subjects,
                Window::new(first, last),
            )
            .metric("hosts", hosts.len())
            .metric("hosts_in_window", fast)
            .metric("window_first", crate::text::fmt_ms(at))
            .metric("window_last", crate::text::fmt_ms(to))
            .metric("failed_contacts", failed)
            .metric("answered_hosts", answered.iter().take(20).map(|h| ip_of(*h).to_string()).collect::<Vec<_>>())
            .threshold(format!(
                "a source's first contacts on one port with >= min_hosts {} internal hosts, most failed; stands out from background radiation because {}",
                c.min_hosts,
                why.join(", ")
            ))
            .evidence(v.iter().map(|(_, x)| &x.loc)),
        );
    }
    });
    if bg_sources > 0 {
        let ports: Vec<String> = bg_ports.iter().take(20).map(|p| p.to_string()).collect();
        out.push(
            Finding::new(
                "horizontal_sweep",
                Severity::Info,
                bg_sources as f64,
                format!(
                    "background scanning: {bg_sources} sources swept {} ports over {} hosts, slowly{}",
                    bg_ports.len(),
                    bg_hosts.len(),
                    if bg_all_denied { ", all denied" } else { "" }
                ),
                BTreeMap::from([("src", "background radiation".to_string())]),
                Window::new(bg_first, bg_last),
            )
            .metric("sources", bg_sources)
            .metric("ports", ports)
            .metric("hosts", bg_hosts.len())
            .metric("all_denied", bg_all_denied)
            .threshold(format!(
                "sweeps of >= {} hosts, none answered, slower than {} hosts in {} min and narrower than {} hosts: internet background radiation, summarised",
                c.min_hosts, c.fast_hosts, c.window_min, c.wide_hosts
            ))
            .evidence(bg_locs.iter()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_found() {
        let t = [0, 1_000, 2_000, 700_000, 701_000, 702_000, 703_000];
        assert_eq!(super::max_in_window(&t, 600_000), (4, 700_000, 703_000));
        assert_eq!(super::max_in_window(&t, 10_000_000).0, 7);
        assert_eq!(super::max_in_window(&[], 1).0, 0);
    }

    fn sweep(every_min: f64) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let t: Vec<_> = (1..=8)
            .map(|h| {
                let dst = format!("10.0.1.{h}");
                let t = denied(h as f64 * every_min, "203.0.113.9", &dst, 445, true);
                ("APP-NSG", "DefaultRule_DenyAllInBound", t)
            })
            .collect();
        run(&t, Some(60))
    }

    #[test]
    fn a_fast_sweep_of_eight_hosts_stands_out() {
        use crate::detect::testkit::*;
        let v = sweep(0.25);
        let f = of(&v, "horizontal_sweep");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.subjects["src"], "203.0.113.9");
        assert_eq!(f.subjects["dport"], "445");
        assert_eq!(f.subjects["protocol"], "tcp");
        assert_eq!(f.window.first, "2026-01-05T00:00:15.000Z");
        assert_eq!(f.window.last, "2026-01-05T00:02:00.000Z");
        assert!(
            f.threshold
                .contains("8 hosts within 10 min >= fast_hosts 5"),
            "{}",
            f.threshold
        );
    }

    #[test]
    fn a_bastion_reaching_every_host_through_a_stateless_allow_rule_is_no_sweep() {
        use crate::detect::testkit::*;
        // Allowed B tuples with no counts from an internal source, 8 hosts in 2 minutes.
        let t: Vec<_> = (1..=8)
            .map(|h| {
                let dst = format!("10.0.1.{h}");
                let u = unanswered(h as f64 * 0.25, "10.255.0.4", &dst, 22, true);
                ("APP-NSG", "UserRule_AllowSshFromBastion", u)
            })
            .collect();
        let v = run(&t, Some(60));
        assert!(of(&v, "horizontal_sweep").is_empty(), "{v:#?}");
        // The same from outside is a sweep.
        let t: Vec<_> = t
            .into_iter()
            .map(|(n, r, mut u)| {
                u.src = "198.51.100.9".parse().unwrap();
                (n, r, u)
            })
            .collect();
        assert_eq!(of(&run(&t, Some(60)), "horizontal_sweep").len(), 1);
    }

    #[test]
    fn a_slow_denied_sweep_is_background_summarised_as_info() {
        use crate::detect::testkit::*;
        // One host every 3 minutes: at most 4 in any 10 minutes, nothing answered.
        let v = sweep(3.0);
        let f = of(&v, "horizontal_sweep");
        assert_eq!(f.len(), 1, "{v:#?}");
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(f[0].metrics["sources"], 1);
    }
}
