//! `lateral_movement`: one internal host reaching many internal hosts on admin ports (SSH
//! 22, RDP 3389, SMB 445, RPC 135, WinRM 5985/5986) within a short window, unusual against
//! its own baseline — the pattern of MITRE ATT&CK TA0008 (Remote Services, T1021) after a
//! first foothold.
//!
//! From the first contacts (see [`super::port_scan`]): per internal source, the distinct
//! internal hosts first contacted on an admin port, and the most of them within any
//! `window_min` minutes. It fires at `min_hosts` (default 5 within 10 minutes: more than an
//! administrator opens by hand; jump hosts and bastions that do this every day have the same
//! count in their baseline and are not reported) when the source's baseline count (hosts it
//! reached on admin ports in the baseline: `--baseline`, else the first part of the window)
//! is under half of it. Severity: medium; high from twice `min_hosts` or when the source used
//! more than one admin port.

use super::horizontal_sweep::max_in_window;
use super::port_scan::{by_time, Contact, ContactKey};
use super::{ip_of, Context, Finding, Severity, Window, ADMIN_PORTS};
use crate::text::counted;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `[lateral_movement]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub min_hosts: usize,
    pub window_min: i64,
    /// Admin ports (default: 22, 3389, 445, 135, 5985, 5986).
    pub ports: Vec<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_hosts: 5,
            window_min: 10,
            ports: ADMIN_PORTS.to_vec(),
        }
    }
}

/// Internal hosts a source reached on admin ports before `until_ms` (all, with `None`).
fn baseline_hosts(
    contacts: &super::port_scan::Contacts,
    src: u128,
    cfg: &Config,
    cx: &Context<'_>,
    until_ms: Option<i64>,
) -> usize {
    contacts
        .of_src(src)
        .filter(|(k, c)| {
            cfg.ports.contains(&k.2)
                && cx.internal(&ip_of(k.1))
                && until_ms.is_none_or(|u| c.first_ms < u)
        })
        .map(|(k, _)| k.1)
        .collect::<BTreeSet<_>>()
        .len()
}

pub fn finish(contacts: &super::port_scan::Contacts, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.lateral_movement;
    let window_ms = c.window_min * 60_000;
    let keep = |k: &ContactKey, _: &Contact| {
        let (s, d) = (ip_of(k.0), ip_of(k.1));
        c.ports.contains(&k.2)
            && k.0 != k.1
            && cx.internal(&s)
            && cx.internal(&d)
            && !cx.allowed(&s)
    };
    let mut out = Vec::new();
    contacts.groups(c.min_hosts, |k| k.0, keep, by_time, |src, v| {
        // First contact per host.
        let mut seen = BTreeSet::new();
        let firsts: Vec<_> = v.iter().filter(|(k, _)| seen.insert(k.1)).collect();
        let times: Vec<i64> = firsts.iter().map(|(_, x)| x.first_ms).collect();
        let (n, at, to) = max_in_window(&times, window_ms);
        if n < c.min_hosts {
            return;
        }
        let base = match cx.baseline {
            Some(b) => baseline_hosts(&b.tallies.contacts, src, c, cx, None),
            None => baseline_hosts(contacts, src, c, cx, Some(cx.baseline_end_ms)),
        };
        if base * 2 >= n {
            return;
        }
        let ports: BTreeSet<u16> = v.iter().map(|(k, _)| k.2).collect();
        let allowed = firsts.iter().filter(|(_, x)| x.allowed).count();
        let severity = if n >= 2 * c.min_hosts || ports.len() > 1 {
            Severity::High
        } else {
            Severity::Medium
        };
        let s = ip_of(src);
        let in_window: Vec<_> = firsts
            .iter()
            .filter(|(_, x)| x.first_ms >= at && x.first_ms <= to)
            .collect();
        let port_list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        out.push(
            Finding::new(
                "lateral_movement",
                severity,
                n as f64,
                format!(
                    "{s} reached {} on admin {} ({}) within {} min",
                    counted(n, "internal host", "internal hosts"),
                    crate::text::noun(port_list.len(), "port", "ports"),
                    port_list.join(", "),
                    c.window_min
                ),
                BTreeMap::from([("src", s.to_string()), ("dport", port_list.join(","))]),
                Window::new(at, to),
            )
            .metric("hosts_in_window", n)
            .metric("hosts_in_all", firsts.len())
            .metric("allowed", allowed)
            .metric("baseline_hosts", base)
            .metric(
                "hosts",
                in_window.iter().take(20).map(|(k, _)| ip_of(k.1).to_string()).collect::<Vec<_>>(),
            )
            .threshold(format!(
                "{n} internal hosts first reached on admin ports within {} min >= min_hosts {}, and the baseline's {base} is under half of that",
                c.window_min, c.min_hosts
            ))
            .baseline(format!("{base} hosts on admin ports in {}", cx.baseline_name))
            .evidence(in_window.iter().map(|(_, x)| &x.loc)),
        );
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movement(hosts: u8, start_min: f64) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let t: Vec<_> = (1..=hosts)
            .map(|h| {
                let dst = format!("10.0.2.{h}");
                let t = answered(start_min + h as f64, "10.0.0.5", &dst, 445, false, 5000);
                ("APP-NSG", "DefaultRule_AllowVnetOutBound", t)
            })
            .collect();
        run(&t, Some(60))
    }

    #[test]
    fn six_hosts_on_smb_within_ten_minutes_after_the_baseline_fire() {
        use crate::detect::testkit::*;
        let v = movement(6, 30.0);
        let f = of(&v, "lateral_movement");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.subjects["src"], "10.0.0.5");
        assert_eq!(f.subjects["dport"], "445");
        assert_eq!(f.window.first, "2026-01-05T00:31:00.000Z");
        assert_eq!(f.window.last, "2026-01-05T00:36:00.000Z");
        assert_eq!(f.metrics["hosts_in_window"], 6);
        assert_eq!(f.metrics["baseline_hosts"], 0);
    }

    #[test]
    fn near_misses_four_hosts_or_the_same_reach_in_the_baseline_do_not_fire() {
        use crate::detect::testkit::*;
        assert!(of(&movement(4, 30.0), "lateral_movement").is_empty());
        // The same six hosts first reached in the first quarter of the window: usual.
        assert!(of(&movement(6, 0.0), "lateral_movement").is_empty());
    }
}
