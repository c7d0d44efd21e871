//! `report --compare PREVIOUS`: what changed since an earlier run, read from that run's
//! `report.json` (#14 item 9). A weekly job keeps last week's folder and passes its
//! `report.json`: the report then opens its "Changes since …" section with
//!
//! - the totals then and now, with their deltas;
//! - external sources and destinations, destination ports, and rules with traffic that are
//!   new (seen now, not then) or vanished (then, not now): exact over the complete lists in
//!   `report.json`'s `endpoints` and `rules`, never over top-N lists;
//! - the rules whose denied share changed most (rules with traffic in both runs);
//! - findings that are new, gone or still open, by their stable `id` (kind and subjects).
//!
//! The previous report must come from nsgflow ([`Previous::read`] says what is wrong
//! otherwise); one from before `endpoints` existed compares everything but the endpoints,
//! and says so.

use super::Report;
use crate::aggregate::rules::Sum;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// At most this many new or vanished items are listed per kind (the counts are exact).
pub const LISTED: usize = 50;
/// Rules listed by denied-share change.
pub const SHARE_ROWS: usize = 10;

/// What a comparison reads of a previous `report.json` (other fields are ignored).
#[derive(Debug, Deserialize)]
pub struct Previous {
    pub generator: String,
    pub coverage: PrevCoverage,
    pub totals: crate::aggregate::Counters,
    pub rules: Vec<PrevRule>,
    #[serde(default)]
    pub endpoints: Option<Endpoints>,
    pub findings: PrevFindings,
}

#[derive(Debug, Deserialize)]
pub struct PrevCoverage {
    pub first: Option<String>,
    pub last: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PrevRule {
    pub nsg: String,
    #[serde(default)]
    pub subscription: String,
    #[serde(default)]
    pub resource_group: String,
    pub rule: String,
    pub tuples: u64,
    pub denied: u64,
}

#[derive(Debug, Deserialize)]
pub struct PrevFindings {
    #[serde(default)]
    pub ran: bool,
    #[serde(default)]
    pub items: Vec<PrevFinding>,
}

#[derive(Debug, Deserialize)]
pub struct PrevFinding {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
}

/// Every external source and destination and every destination port of a run: complete,
/// sorted, so a later run can say what is new or gone (`report.json`'s `endpoints`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    /// External addresses that sent to an internal one.
    pub external_sources: Vec<String>,
    /// External addresses an internal one sent to.
    pub external_destinations: Vec<String>,
    /// Destination ports with traffic, as `443/tcp`.
    pub dports: Vec<String>,
}

impl Previous {
    /// Read and check a previous `report.json`.
    pub fn read(path: &Path) -> anyhow::Result<Previous> {
        let shown = crate::text::term_safe(&path.display().to_string()).into_owned();
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("--compare {shown}: cannot read: {e}"))?;
        let p: Previous = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "--compare {shown}: not an nsgflow report.json ({e}); give the report.json of an earlier `nsgflow report`"
            )
        })?;
        if !p.generator.starts_with("nsgflow ") {
            anyhow::bail!(
                "--compare {shown}: written by {:?}, not by nsgflow",
                p.generator
            );
        }
        Ok(p)
    }
}

/// A total then and now.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Delta {
    pub name: &'static str,
    pub previous: Sum,
    pub current: Sum,
    /// `current - previous`.
    pub change: i128,
}

/// New and vanished items of one kind: exact counts, the first [`LISTED`] of each.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NewGone {
    pub new_count: usize,
    pub new: Vec<String>,
    pub gone_count: usize,
    pub gone: Vec<String>,
}

impl NewGone {
    fn of<'a>(
        previous: impl IntoIterator<Item = &'a String>,
        current: impl IntoIterator<Item = &'a String>,
    ) -> NewGone {
        let (p, c): (BTreeSet<&String>, BTreeSet<&String>) = (
            previous.into_iter().collect(),
            current.into_iter().collect(),
        );
        let new: Vec<String> = c.difference(&p).map(|s| s.to_string()).collect();
        let gone: Vec<String> = p.difference(&c).map(|s| s.to_string()).collect();
        NewGone {
            new_count: new.len(),
            new: new.into_iter().take(LISTED).collect(),
            gone_count: gone.len(),
            gone: gone.into_iter().take(LISTED).collect(),
        }
    }
}

/// A rule's denied share then and now.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ShareChange {
    pub rule: String,
    pub previous_tuples: u64,
    pub previous_denied_share: f64,
    pub current_tuples: u64,
    pub current_denied_share: f64,
}

/// One finding's state against the previous run.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FindingChange {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
}

/// `report.json`'s `comparison`.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The previous report's file as given, and its window.
    pub previous: String,
    pub previous_first: Option<String>,
    pub previous_last: Option<String>,
    pub totals: Vec<Delta>,
    /// `None` when the previous report predates `endpoints`.
    pub external_sources: Option<NewGone>,
    pub external_destinations: Option<NewGone>,
    pub dports: Option<NewGone>,
    /// Rules with traffic (`nsg/rule`, with the resource group where names collide).
    pub rules_with_traffic: NewGone,
    /// Rules with traffic in both runs, largest change of denied share first.
    pub denied_share: Vec<ShareChange>,
    pub findings_new: Vec<FindingChange>,
    pub findings_gone: Vec<FindingChange>,
    pub findings_open: Vec<FindingChange>,
    /// Whether both runs looked for findings (a `--no-findings` report did not: then the
    /// three lists say nothing and stay empty).
    pub findings_compared: bool,
}

/// A rule's key across runs: its NSG's identity and the rule name (case-insensitive NSG).
fn rule_key(sub: &str, rg: &str, nsg: &str, rule: &str) -> String {
    format!("{sub}/{rg}/{nsg}").to_lowercase() + "/" + rule
}

/// Compare the report being written with a previous one.
pub fn compare(now: &Report, prev: &Previous, prev_name: &str) -> Comparison {
    let t = |c: &crate::aggregate::Counters| {
        [
            ("tuples", c.tuples as Sum),
            ("allowed", c.allowed as Sum),
            ("denied", c.denied as Sum),
            ("inbound", c.inbound as Sum),
            ("outbound", c.outbound as Sum),
            ("bytes", c.bytes_src_to_dst + c.bytes_dst_to_src),
        ]
    };
    let totals = t(&now.totals)
        .into_iter()
        .zip(t(&prev.totals))
        .map(|((name, current), (_, previous))| Delta {
            name,
            previous,
            current,
            change: current as i128 - previous as i128,
        })
        .collect();
    let ends = prev.endpoints.as_ref();
    let e = &now.endpoints;
    // Rules: shown by the current label where the rule exists now, else as it was written.
    let mut label: BTreeMap<String, String> = BTreeMap::new();
    let mut cur: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in &now.rules {
        let k = rule_key(&r.subscription, &r.resource_group, &r.nsg, &r.rule);
        label.insert(k.clone(), format!("{}/{}", r.label, r.rule));
        if r.counters.tuples > 0 {
            cur.insert(k, (r.counters.tuples, r.counters.denied));
        }
    }
    let mut old: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in &prev.rules {
        let k = rule_key(&r.subscription, &r.resource_group, &r.nsg, &r.rule);
        label
            .entry(k.clone())
            .or_insert_with(|| format!("{}/{}", r.nsg, r.rule));
        if r.tuples > 0 {
            old.insert(k, (r.tuples, r.denied));
        }
    }
    let shown: Vec<String> = cur.keys().map(|k| label[k].clone()).collect();
    let was: Vec<String> = old.keys().map(|k| label[k].clone()).collect();
    let rules_with_traffic = NewGone::of(&was, &shown);
    let share = |(t, d): (u64, u64)| d as f64 / t as f64;
    let mut denied_share: Vec<ShareChange> = cur
        .iter()
        .filter_map(|(k, &c)| {
            let &p = old.get(k)?;
            Some(ShareChange {
                rule: label[k].clone(),
                previous_tuples: p.0,
                previous_denied_share: share(p),
                current_tuples: c.0,
                current_denied_share: share(c),
            })
        })
        .filter(|s| s.previous_denied_share != s.current_denied_share)
        .collect();
    denied_share.sort_by(|a, b| {
        let d = |s: &ShareChange| (s.current_denied_share - s.previous_denied_share).abs();
        d(b).total_cmp(&d(a)).then_with(|| a.rule.cmp(&b.rule))
    });
    denied_share.truncate(SHARE_ROWS);
    let change = |id: &str, kind: &str, severity: &str, title: &str| FindingChange {
        id: id.to_string(),
        kind: kind.to_string(),
        severity: severity.to_string(),
        title: title.to_string(),
    };
    let before: BTreeMap<&str, &PrevFinding> = prev
        .findings
        .items
        .iter()
        .map(|f| (f.id.as_str(), f))
        .collect();
    let after: BTreeSet<&str> = now.findings.items.iter().map(|f| f.id.as_str()).collect();
    let (mut findings_new, mut findings_open) = (Vec::new(), Vec::new());
    let compared = prev.findings.ran && now.findings.ran;
    for f in now.findings.items.iter().filter(|_| compared) {
        let c = change(&f.id, f.kind, f.severity.name(), &f.title);
        if before.contains_key(f.id.as_str()) {
            findings_open.push(c);
        } else {
            findings_new.push(c);
        }
    }
    let findings_gone = prev
        .findings
        .items
        .iter()
        .filter(|f| compared && !after.contains(f.id.as_str()))
        .map(|f| change(&f.id, &f.kind, &f.severity, &f.title))
        .collect();
    Comparison {
        previous: prev_name.to_string(),
        previous_first: prev.coverage.first.clone(),
        previous_last: prev.coverage.last.clone(),
        totals,
        external_sources: ends.map(|p| NewGone::of(&p.external_sources, &e.external_sources)),
        external_destinations: ends
            .map(|p| NewGone::of(&p.external_destinations, &e.external_destinations)),
        dports: ends.map(|p| NewGone::of(&p.dports, &e.dports)),
        rules_with_traffic,
        denied_share,
        findings_new,
        findings_gone,
        findings_open,
        findings_compared: prev.findings.ran && now.findings.ran,
    }
}

/// One table of the "Changes since" section, as both the HTML and the Markdown show it.
pub struct ChangeTable {
    pub title: &'static str,
    /// What to say instead of an empty table.
    pub empty: &'static str,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// Examples of a list: the first few, then how many more.
fn examples(v: &[String], count: usize) -> String {
    const SHOWN: usize = 8;
    let mut s = v.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if count > SHOWN.min(v.len()) {
        s.push_str(&format!(", … {} more", count - SHOWN.min(v.len())));
    }
    s
}

impl Comparison {
    /// "Changes since 2026-01-05T00:00:00.000Z .. 2026-01-11T23:59:59.000Z".
    pub fn heading(&self) -> String {
        match (&self.previous_first, &self.previous_last) {
            (Some(a), Some(b)) => format!("Changes since {a} .. {b}"),
            _ => "Changes since the previous report (which counted no tuple)".to_string(),
        }
    }

    /// The section's tables, in reading order.
    pub fn tables(&self) -> Vec<ChangeTable> {
        use crate::text::{human_bytes, human_count};
        let human = |v: Sum, bytes: bool| {
            if bytes {
                human_bytes(v)
            } else {
                human_count(v)
            }
        };
        let signed = |d: i128, bytes: bool| match d.signum() {
            1 => format!("+{}", human(d.unsigned_abs(), bytes)),
            -1 => format!("-{}", human(d.unsigned_abs(), bytes)),
            _ => "0".to_string(),
        };
        let totals = ChangeTable {
            title: "Totals",
            empty: "",
            header: vec!["", "previous", "now", "change"],
            rows: self
                .totals
                .iter()
                .map(|d| {
                    let b = d.name == "bytes";
                    vec![
                        d.name.to_string(),
                        human(d.previous, b),
                        human(d.current, b),
                        signed(d.change, b),
                    ]
                })
                .collect(),
        };
        const NO_ENDPOINTS: &str =
            "not compared: the previous report.json has no endpoints list (an older nsgflow wrote it)";
        let row = |what: &str, ng: Option<&NewGone>| match ng {
            Some(n) => vec![
                what.to_string(),
                n.new_count.to_string(),
                examples(&n.new, n.new_count),
                n.gone_count.to_string(),
                examples(&n.gone, n.gone_count),
            ],
            None => vec![
                what.to_string(),
                "-".into(),
                NO_ENDPOINTS.into(),
                "-".into(),
                String::new(),
            ],
        };
        let new_gone = ChangeTable {
            title: "New and vanished",
            empty: "",
            header: vec!["", "new", "new ones", "vanished", "vanished ones"],
            rows: vec![
                row("external sources", self.external_sources.as_ref()),
                row("external destinations", self.external_destinations.as_ref()),
                row("destination ports", self.dports.as_ref()),
                row("rules with traffic", Some(&self.rules_with_traffic)),
            ],
        };
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let shares = ChangeTable {
            title: "Denied share changed most (rules with traffic in both)",
            empty: "No rule with traffic in both reports changed its share of denied tuples.",
            header: vec!["rule", "previous", "now", "change"],
            rows: self
                .denied_share
                .iter()
                .map(|s| {
                    vec![
                        s.rule.clone(),
                        format!(
                            "{} of {}",
                            pct(s.previous_denied_share),
                            human_count(s.previous_tuples)
                        ),
                        format!(
                            "{} of {}",
                            pct(s.current_denied_share),
                            human_count(s.current_tuples)
                        ),
                        format!(
                            "{:+.1} points",
                            (s.current_denied_share - s.previous_denied_share) * 100.0
                        ),
                    ]
                })
                .collect(),
        };
        let mut findings = ChangeTable {
            title: "Findings",
            empty: "No findings in either report.",
            header: vec!["", "severity", "kind", "finding"],
            rows: Vec::new(),
        };
        for (state, list) in [
            ("new", &self.findings_new),
            ("still open", &self.findings_open),
            ("gone", &self.findings_gone),
        ] {
            for f in list {
                findings.rows.push(vec![
                    state.to_string(),
                    f.severity.clone(),
                    f.kind.clone(),
                    f.title.clone(),
                ]);
            }
        }
        if !self.findings_compared {
            findings.rows.push(vec![
                "not compared".into(),
                String::new(),
                String::new(),
                "one of the two reports was made with --no-findings".into(),
            ]);
        }
        vec![totals, new_gone, shares, findings]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::build::{assemble, ReportContext};

    fn row(nsg: &str, rule: &str, tuples: u64, denied: u64) -> crate::summary::RuleRow {
        crate::summary::RuleRow {
            nsg: nsg.into(),
            subscription: "s1".into(),
            resource_group: "rg".into(),
            label: nsg.into(),
            rule: rule.into(),
            counters: crate::aggregate::Counters {
                tuples,
                denied,
                allowed: tuples - denied,
                ..Default::default()
            },
            first: None,
            last: None,
        }
    }

    /// Rules are matched by NSG identity (case aside) and rule; shares are ranked by change;
    /// rules gone quiet and new ones are listed; findings by id.
    #[test]
    fn rules_and_findings_compare_by_identity_and_id() {
        let book = crate::addr::AddressBook::default();
        let findings =
            crate::report::Findings::new(vec![], crate::detect::Severity::Info, String::new());
        let cx = ReportContext {
            previous: None,
            findings: &findings,
            audit: None,
            inputs: vec![],
            filters: vec![],
            title: None,
            generated_at: None,
            book: &book,
        };
        let mut now = assemble(&Default::default(), &Default::default(), &cx);
        now.rules = vec![
            row("app-nsg", "A", 100, 90),
            row("app-nsg", "B", 10, 0),
            row("app-nsg", "C", 50, 25),
            row("app-nsg", "New", 5, 0),
        ];
        let prev: Previous = serde_json::from_str(
            r#"{"generator": "nsgflow 0.1.0", "coverage": {"first": "2026-01-05T00:00:00.000Z", "last": "2026-01-11T23:00:00.000Z"},
                "totals": {"tuples": 7, "allowed": 7, "denied": 0, "inbound": 0, "outbound": 7, "counters_logged": 0},
                "rules": [
                  {"nsg": "APP-NSG", "subscription": "S1", "resource_group": "RG", "rule": "A", "tuples": 100, "denied": 10},
                  {"nsg": "APP-NSG", "subscription": "S1", "resource_group": "RG", "rule": "B", "tuples": 10, "denied": 0},
                  {"nsg": "APP-NSG", "subscription": "S1", "resource_group": "RG", "rule": "C", "tuples": 40, "denied": 30},
                  {"nsg": "APP-NSG", "subscription": "S1", "resource_group": "RG", "rule": "Quiet", "tuples": 3, "denied": 3}
                ],
                "findings": {"ran": true, "items": [{"id": "beacon:src=10.0.0.4", "kind": "beacon", "severity": "high", "title": "t"}]}}"#,
        )
        .unwrap();
        let c = compare(&now, &prev, "week-1/report.json");
        assert_eq!(
            c.heading(),
            "Changes since 2026-01-05T00:00:00.000Z .. 2026-01-11T23:00:00.000Z"
        );
        assert_eq!(c.rules_with_traffic.new, ["app-nsg/New"]);
        assert_eq!(c.rules_with_traffic.gone, ["APP-NSG/Quiet"]);
        let shares: Vec<(&str, f64, f64)> = c
            .denied_share
            .iter()
            .map(|s| {
                (
                    s.rule.as_str(),
                    s.previous_denied_share,
                    s.current_denied_share,
                )
            })
            .collect();
        // A: 10% -> 90% (+80 points) before C: 75% -> 50% (-25); B did not change.
        assert_eq!(shares, [("app-nsg/A", 0.1, 0.9), ("app-nsg/C", 0.75, 0.5)]);
        assert_eq!(c.totals[0].change, -7);
        // Both ran the detectors; last week's beacon is gone this week.
        assert!(c.findings_compared && c.findings_new.is_empty() && c.findings_open.is_empty());
        let gone: Vec<&str> = c.findings_gone.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(gone, ["beacon:src=10.0.0.4"]);
        assert!(
            c.external_sources.is_none(),
            "the previous file has no endpoints"
        );
        let t = c.tables();
        assert_eq!(t[2].rows[0][3], "+80.0 points");
        assert_eq!(t[3].rows[0][..3], ["gone", "high", "beacon"]);
    }
}
