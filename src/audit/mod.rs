//! Rule audit: NSG definitions ([`defs`]) against the traffic the logs show.
//!
//! [`Hits`] is the audit's fold over the one read of the input: tuples per (resource group,
//! NSG, rule as logged), first and last time, distinct sources, and the NIC-hours each NSG
//! logged. [`audit`] then joins them with the definitions and decides, with exact set
//! arithmetic over rule match spaces ([`space`], [`eval`]), which rules are redundant,
//! shadowed or partly shadowed; which are unused (and how sure that is, from coverage);
//! which are open too wide; and which rules or NSGs the two sides disagree on.

pub mod defs;
pub mod eval;
pub mod space;

use crate::aggregate::rules::{max_opt, min_opt, Counters};
use crate::aggregate::Fold;
use crate::detect::Severity;
use crate::discover::BlobMeta;
use crate::hash::HSet;
use crate::parse::{RuleTable, TableSink};
use crate::text::fmt_ms;
use defs::{Access, Dir, NsgDef, RuleDef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Distinct sources counted per rule before the count says "at least".
pub const MAX_SOURCES: usize = 65_536;

/// The NSG of a table, case-folded: (resource group, NSG name). The group is empty when the
/// log does not name it.
pub type NsgKey = (String, String);

/// What the logs show of one rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleSeen {
    pub counters: Counters,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Distinct source addresses, up to [`MAX_SOURCES`].
    pub sources: HSet<u128>,
    /// Destination ports seen (allowed tuples).
    pub ports: BTreeSet<u16>,
}

/// What the logs show of one NSG.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NsgSeen {
    /// The NSG's names as logged (NSG logs upper-case them, VNet logs keep the case).
    pub names: BTreeSet<String>,
    /// Rule name as logged → what it saw.
    pub rules: BTreeMap<String, RuleSeen>,
    /// NIC MAC → hours (start, ms) with logs.
    pub nic_hours: BTreeMap<String, BTreeSet<i64>>,
    /// NIC-hours logged by both NSG and VNet flow logs (the two can describe the same flows).
    pub double_logged: BTreeSet<(String, i64)>,
    /// The log kinds seen per NIC-hour (bit 1 NSG, bit 2 VNet), to find the double logging.
    #[serde(skip)]
    kinds: BTreeMap<String, BTreeMap<i64, u8>>,
}

/// The audit's fold. Mergeable.
#[derive(Default, Serialize, Deserialize)]
pub struct Hits {
    pub nsgs: BTreeMap<NsgKey, NsgSeen>,
    /// Per watch (same order as `watches`): what the pass confirmed.
    pub confirmed: Vec<Confirmed>,
    #[serde(skip)]
    pub watches: std::sync::Arc<Vec<Watch>>,
    #[serde(skip)]
    hour: Option<i64>,
    #[serde(skip)]
    path: std::sync::Arc<str>,
    /// Not run: tables pass through untouched.
    #[serde(skip)]
    off: bool,
    /// The last table's resource id and NSG as logged, and their key (tables of one
    /// record share them).
    #[serde(skip)]
    last: Option<(Box<str>, Box<str>, NsgKey)>,
}

impl Hits {
    /// A fold that also confirms the shadowing of `watches` with the tuples it sees.
    pub fn new(watches: std::sync::Arc<Vec<Watch>>) -> Hits {
        Hits {
            confirmed: vec![Confirmed::default(); watches.len()],
            watches,
            ..Hits::default()
        }
    }

    /// A fold that ignores every table (a report without `--rules`).
    pub fn off() -> Hits {
        Hits {
            off: true,
            ..Hits::default()
        }
    }

    /// Count the table's tuples that confirm a watched shadowing.
    fn confirm(
        watches: &[Watch],
        confirmed: &mut [Confirmed],
        path: &str,
        table: &RuleTable<'_>,
        rg: &str,
    ) {
        let ctx = &table.ctx;
        for (w, c) in watches.iter().zip(confirmed.iter_mut()) {
            if !w.nsg.eq_ignore_ascii_case(ctx.nsg)
                || !(w.resource_group.is_empty()
                    || rg.is_empty()
                    || w.resource_group.eq_ignore_ascii_case(rg))
                || !w.shadowing.iter().any(|s| s.eq_ignore_ascii_case(ctx.rule))
            {
                continue;
            }
            for (t, i) in table.tuples.iter().zip(table.indices) {
                let (s, d) = (space::addr_point(t.src), space::addr_point(t.dst));
                if w.space.contains(s, d, t.dport, tuple_proto(t.protocol)) {
                    c.add((t.time_ms, path.to_string(), ctx.record_index as u32, *i));
                }
            }
        }
    }

    fn see(&mut self, table: &RuleTable<'_>) {
        if self.off {
            return;
        }
        let ctx = &table.ctx;
        // Azure's own rules (`PlatformRule`) belong to no NSG: nothing to audit.
        if ctx.family == crate::model::Family::Vnet
            && ctx.resource_id == crate::parse::PLATFORM_ACL_ID
        {
            return;
        }
        let same = self
            .last
            .as_ref()
            .is_some_and(|(rid, nsg, _)| **rid == *ctx.resource_id && **nsg == *ctx.nsg);
        if !same {
            let rg = defs::resource_group_of(ctx.resource_id)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let key = (rg, ctx.nsg.to_ascii_lowercase());
            self.last = Some((ctx.resource_id.into(), ctx.nsg.into(), key));
        }
        let key = &self.last.as_ref().expect("set above").2;
        if !self.watches.is_empty() {
            Self::confirm(
                &self.watches,
                &mut self.confirmed,
                &self.path,
                table,
                &key.0,
            );
        }
        let n = match self.nsgs.get_mut(key) {
            Some(n) => n,
            None => self.nsgs.entry(key.clone()).or_default(),
        };
        if !n.names.contains(ctx.nsg) {
            n.names.insert(ctx.nsg.to_string());
        }
        if let Some(h) = self.hour {
            let mac = ctx.mac_normalized();
            let bit = match ctx.family {
                crate::model::Family::Vnet => 2u8,
                _ => 1,
            };
            let by_hour = match n.kinds.get_mut(&*mac) {
                Some(m) => m,
                None => n.kinds.entry(mac.to_string()).or_default(),
            };
            let k = by_hour.entry(h).or_default();
            if *k | bit != *k {
                *k |= bit;
                if *k == 3 {
                    n.double_logged.insert((mac.to_string(), h));
                }
            }
            match n.nic_hours.get_mut(&*mac) {
                Some(s) => {
                    s.insert(h);
                }
                None => {
                    n.nic_hours.insert(mac.into_owned(), BTreeSet::from([h]));
                }
            }
        }
        let r = match n.rules.get_mut(ctx.rule) {
            Some(r) => r,
            None => n.rules.entry(ctx.rule.to_string()).or_default(),
        };
        let mut last = None;
        let mut last_port = None;
        for t in table.tuples {
            if t.decision == crate::model::Decision::Allow && last_port != Some(t.dport) {
                r.ports.insert(t.dport);
                last_port = Some(t.dport);
            }
            r.counters.add(t);
            r.first_ms = min_opt(r.first_ms, Some(t.time_ms));
            r.last_ms = max_opt(r.last_ms, Some(t.time_ms));
            let s = space::addr_point(t.src);
            if last != Some(s) && r.sources.len() < MAX_SOURCES {
                r.sources.insert(s);
                last = Some(s);
            }
        }
    }
}

impl TableSink for Hits {
    fn table(&mut self, table: &RuleTable<'_>) {
        self.see(table);
    }
}

impl Fold for Hits {
    fn begin_blob(&mut self, blob: &BlobMeta) {
        self.hour = blob.hour_ms;
        if !self.watches.is_empty() {
            self.path = std::sync::Arc::from(blob.path.display().to_string());
        }
    }

    fn merge(&mut self, o: Hits) {
        if self.watches.is_empty() {
            self.watches = o.watches.clone();
        }
        if self.confirmed.len() < o.confirmed.len() {
            self.confirmed
                .resize(o.confirmed.len(), Confirmed::default());
        }
        for (a, b) in self.confirmed.iter_mut().zip(o.confirmed) {
            a.merge(b);
        }
        for (k, v) in o.nsgs {
            let n = self.nsgs.entry(k).or_default();
            n.names.extend(v.names);
            for (mac, hours) in v.nic_hours {
                n.nic_hours.entry(mac).or_default().extend(hours);
            }
            n.double_logged.extend(v.double_logged);
            for (mac, hours) in v.kinds {
                let m = n.kinds.entry(mac.clone()).or_default();
                for (h, bits) in hours {
                    let e = m.entry(h).or_default();
                    *e |= bits;
                    if *e == 3 {
                        n.double_logged.insert((mac.clone(), h));
                    }
                }
            }
            for (name, r) in v.rules {
                let m = n.rules.entry(name).or_default();
                m.counters += r.counters;
                m.first_ms = min_opt(m.first_ms, r.first_ms);
                m.last_ms = max_opt(m.last_ms, r.last_ms);
                m.ports.extend(r.ports);
                for s in r.sources {
                    if m.sources.len() >= MAX_SOURCES {
                        break;
                    }
                    m.sources.insert(s);
                }
            }
        }
    }
}

/// A default allow rule carrying at least this many tuples...
pub const DEFAULT_RULE_MIN_TUPLES: u64 = 100;
/// ...and this share of its NSG's allowed tuples is reported (`default_rule_traffic`).
pub const DEFAULT_RULE_SHARE: f64 = 0.2;

/// Admin ports (remote shells and management).
pub const ADMIN_PORTS: [u16; 7] = [22, 23, 3389, 5985, 5986, 445, 135];
/// Database and data-store ports.
pub const DATABASE_PORTS: [u16; 9] = [1433, 3306, 5432, 6379, 9200, 27017, 1521, 5984, 11211];
/// An allow to more ports than this from anywhere is "wide".
pub const WIDE_PORTS: u32 = 1024;
/// A rule is "unused" with high confidence only over at least this window...
pub const CONFIDENT_DAYS: i64 = 7;
/// ...and with at least this share of its NICs' hours logged.
pub const CONFIDENT_COVERAGE: f64 = 0.9;

/// One audit finding (the `audit --format json` contract; names are stable).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditFinding {
    pub kind: &'static str,
    pub severity: Severity,
    pub nsg: String,
    pub resource_group: String,
    pub rule: String,
    pub related_rules: Vec<String>,
    pub message: String,
    pub evidence: serde_json::Value,
    pub suggestion: serde_json::Value,
}

/// One rule of the output's rule table.
#[derive(Clone, Debug, Serialize)]
pub struct RuleRow {
    pub nsg: String,
    pub resource_group: String,
    pub rule: String,
    pub log_name: String,
    /// `None` (and empty lists below) when no definitions were given.
    pub priority: Option<u32>,
    pub direction: Option<Dir>,
    pub access: Option<Access>,
    pub protocol: Option<String>,
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    pub ports: Vec<String>,
    pub hits: u64,
    pub allowed: u64,
    pub denied: u64,
    pub bytes: crate::aggregate::rules::Sum,
    pub first: Option<String>,
    pub last: Option<String>,
    pub distinct_sources: usize,
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    /// `false`: only the hit table from the logs; unused, redundant and shadowed rules are
    /// not decided.
    pub definitions_given: bool,
    pub window: serde_json::Value,
    pub coverage: serde_json::Value,
    pub assumptions: serde_json::Value,
    pub rules: Vec<RuleRow>,
    pub findings: Vec<AuditFinding>,
}

/// How an NSG of the definitions is found in the logs: same name (case-insensitive), and
/// the same resource group when both sides name one.
fn matches(def: &NsgDef, key: &NsgKey) -> bool {
    def.name.eq_ignore_ascii_case(&key.1)
        && match def.resource_group.as_deref() {
            Some(rg) if !key.0.is_empty() => rg.eq_ignore_ascii_case(&key.0),
            _ => true,
        }
}

/// A rule's log name matches its definition: `UserRule_X`/`DefaultRule_X` (NSG logs),
/// as written or with a `_<guid>` suffix (VNet logs, security-admin rules).
fn log_matches(r: &RuleDef, logged: &str) -> bool {
    let ln = r.log_name();
    if logged.eq_ignore_ascii_case(&ln) || logged.eq_ignore_ascii_case(&r.name) {
        return true;
    }
    for base in [ln.as_str(), r.name.as_str()] {
        if logged.len() == base.len() + 37
            && logged[..base.len()].eq_ignore_ascii_case(base)
            && logged.as_bytes()[base.len()] == b'_'
        {
            return true;
        }
    }
    false
}

fn sev_order(v: &mut [AuditFinding]) {
    v.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| {
            (&a.resource_group, &a.nsg, a.kind, &a.rule).cmp(&(
                &b.resource_group,
                &b.nsg,
                b.kind,
                &b.rule,
            ))
        })
    });
}

/// Audit the definitions against what the logs showed over `[first_ms, last_ms]`.
pub fn audit(
    defs: &[NsgDef],
    hits: &Hits,
    tags: &eval::Tags,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
) -> Audit {
    let mut findings = Vec::new();
    let mut rows = Vec::new();
    let (lo, hi) = match (first_ms, last_ms) {
        (Some(a), Some(b)) => (a - a.rem_euclid(3_600_000), b - b.rem_euclid(3_600_000)),
        _ => (0, -1),
    };
    let window_hours = if hi >= lo {
        (hi - lo) / 3_600_000 + 1
    } else {
        0
    };
    let window_days = (last_ms.unwrap_or(0) - first_ms.unwrap_or(0)) as f64 / 86_400_000.0;
    let mut coverage = serde_json::Map::new();
    let mut used_keys = BTreeSet::new();
    for def in defs {
        let rg = def.resource_group.clone().unwrap_or_default();
        let seen: Vec<(&NsgKey, &NsgSeen)> =
            hits.nsgs.iter().filter(|(k, _)| matches(def, k)).collect();
        for (k, _) in &seen {
            used_keys.insert((*k).clone());
        }
        // Coverage of the NSG's NICs over the window.
        let mut nic_hours: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for (_, s) in &seen {
            for (mac, h) in &s.nic_hours {
                nic_hours
                    .entry(mac)
                    .or_default()
                    .extend(h.iter().filter(|x| **x >= lo && **x <= hi));
            }
        }
        let logged: usize = nic_hours.values().map(|h| h.len()).sum();
        let double: BTreeSet<&(String, i64)> = seen
            .iter()
            .flat_map(|(_, s)| s.double_logged.iter())
            .collect();
        // The last hour of the window may still be written to (Azure appends to PT1H.json
        // for the hour in progress).
        let now_hour = crate::text::wall_ms().div_euclid(3_600_000) * 3_600_000;
        let possible = nic_hours.len() as i64 * window_hours;
        let share = if possible > 0 {
            logged as f64 / possible as f64
        } else {
            0.0
        };
        coverage.insert(
            format!("{}/{}", rg, def.name),
            json!({
                "nics": nic_hours.len(),
                "hours_logged": logged,
                "hours_in_window": possible,
                "share": (share * 1000.0).round() / 1000.0,
                "missing": nic_hours.iter().map(|(mac, h)| {
                    let missing: Vec<String> = (0..window_hours).map(|i| lo + i * 3_600_000).filter(|x| !h.contains(x)).take(24).map(fmt_ms).collect();
                    json!({"mac": mac, "missing_hours": missing})
                }).filter(|v| !v["missing_hours"].as_array().is_some_and(|a| a.is_empty())).collect::<Vec<_>>(),
                "nics_defined": def.nics.len(),
                "double_logged_nic_hours": double.len(),
                "double_logged": double.iter().take(24).map(|(mac, h)| json!({"mac": mac, "hour": fmt_ms(*h)})).collect::<Vec<_>>(),
                "open_hour": (hi >= lo && hi == now_hour).then(|| fmt_ms(hi)),
            }),
        );
        if def.nics.len() > nic_hours.len() && !seen.is_empty() {
            let (defined, logged_nics) = (def.nics.len(), nic_hours.len());
            findings.push(AuditFinding {
                kind: "no_logs",
                severity: Severity::Low,
                nsg: def.name.clone(),
                resource_group: rg.clone(),
                rule: String::new(),
                related_rules: vec![],
                message: format!("{} lists {defined} NICs but the logs show {logged_nics}: flow logs are missing for {} of them (NIC ids and MACs are not linked in these files, so which ones is not known)", def.name, defined - logged_nics),
                evidence: json!({"nics_defined": defined, "nics_logged": logged_nics, "defined": def.nics.iter().take(20).collect::<Vec<_>>()}),
                suggestion: json!({"action": "check the flow log settings of the NSG's NICs and subnets"}),
            });
        }
        let finding = |kind,
                       severity,
                       rule: &str,
                       related: Vec<String>,
                       message: String,
                       evidence,
                       suggestion| AuditFinding {
            kind,
            severity,
            nsg: def.name.clone(),
            resource_group: rg.clone(),
            rule: rule.to_string(),
            related_rules: related,
            message,
            evidence,
            suggestion,
        };
        if seen.is_empty() {
            findings.push(finding(
                "no_logs",
                Severity::Low,
                "",
                vec![],
                format!("{} has no logs in the window: flow logs off, no NIC or subnet attached, or not in the input", def.name),
                json!({"definitions": def.file.display().to_string(), "nics_defined": def.nics.len()}),
                json!({}),
            ));
        }
        // What each defined rule saw.
        let seen_of = |r: &RuleDef| -> Vec<(&String, &RuleSeen)> {
            seen.iter()
                .flat_map(|(_, s)| s.rules.iter())
                .filter(|(name, _)| log_matches(r, name))
                .collect()
        };
        // Rules logged but not defined.
        for (_, s) in &seen {
            for (name, rs) in &s.rules {
                if !def.rules.iter().any(|r| log_matches(r, name)) {
                    findings.push(finding(
                        "undefined_rule",
                        Severity::Medium,
                        name,
                        vec![],
                        format!("the logs show rule {name} ({} tuples) that the definitions of {} lack: definitions older than the logs, or rules changed during the window", rs.counters.tuples, def.name),
                        json!({"tuples": rs.counters.tuples, "first": rs.first_ms.map(fmt_ms), "last": rs.last_ms.map(fmt_ms)}),
                        json!({}),
                    ));
                }
            }
        }
        let (spaces, order) = spaces_in_order(def, tags);
        for (pos, &i) in order.iter().enumerate() {
            let r = &def.rules[i];
            let mut total = Counters::default();
            let (mut first, mut last) = (None::<i64>, None::<i64>);
            let mut sources: HSet<u128> = HSet::default();
            let mut ports: BTreeSet<u16> = BTreeSet::new();
            for (_, s) in seen_of(r) {
                ports.extend(&s.ports);
                total += s.counters;
                first = min_opt(first, s.first_ms);
                last = max_opt(last, s.last_ms);
                sources.extend(s.sources.iter().take(MAX_SOURCES));
            }
            rows.push(RuleRow {
                nsg: def.name.clone(),
                resource_group: rg.clone(),
                rule: r.name.clone(),
                log_name: r.log_name(),
                priority: Some(r.priority),
                direction: Some(r.direction),
                access: Some(r.access),
                protocol: Some(r.protocol.clone()),
                sources: r.sources.iter().chain(&r.source_asgs).cloned().collect(),
                destinations: r
                    .destinations
                    .iter()
                    .chain(&r.destination_asgs)
                    .cloned()
                    .collect(),
                ports: r.ports.clone(),
                hits: total.tuples,
                allowed: total.allowed,
                denied: total.denied,
                bytes: total
                    .bytes_src_to_dst
                    .saturating_add(total.bytes_dst_to_src),
                first: first.map(fmt_ms),
                last: last.map(fmt_ms),
                distinct_sources: sources.len().min(MAX_SOURCES),
            });
            // Unused.
            // (Default rules are the catch-alls every NSG has: their hits are in the rule
            // table, and they are not reported unused or partly shadowed.)
            if total.tuples == 0 && !seen.is_empty() && !r.default {
                let confident = share >= CONFIDENT_COVERAGE && window_days >= CONFIDENT_DAYS as f64;
                findings.push(finding(
                    "unused",
                    Severity::Low,
                    &r.name,
                    vec![],
                    format!(
                        "{} matched no flow in {:.1} days ({} .. {}), with {:.0}% of its NICs' hours logged; confidence {}",
                        r.name, window_days, first_ms.map(fmt_ms).unwrap_or_default(), last_ms.map(fmt_ms).unwrap_or_default(),
                        share * 100.0, if confident { "high" } else { "low" }
                    ),
                    json!({"window_days": (window_days * 100.0).round() / 100.0, "coverage": (share * 1000.0).round() / 1000.0, "last_seen": null,
                           "confidence": if confident { "high" } else { "low" },
                           "why_low": if confident { None } else { Some(format!("confidence is high only over >= {CONFIDENT_DAYS} days with >= {:.0}% of the NICs' hours logged", CONFIDENT_COVERAGE * 100.0)) }}),
                    json!({"action": "remove the rule after confirming with the owner", "az": format!("az network nsg rule delete --resource-group {} --nsg-name {} --name {}", if rg.is_empty() { "<rg>" } else { &rg }, def.name, r.name)}),
                ));
            }
            // Least privilege: the smallest rule that still admits what was observed.
            if r.access == Access::Allow
                && total.allowed > 0
                && r.source_asgs.is_empty()
                && !r.default
            {
                if let Some(lp) = least_privilege(r, &sources, &ports, tags) {
                    findings.push(finding(
                        "least_privilege",
                        Severity::Low,
                        &r.name,
                        vec![],
                        format!(
                            "{} admits more than its traffic used: {} tuples from {} sources on {} ports fit in sources {} and ports {}",
                            r.name, total.allowed, sources.len(), ports.len(), lp.sources.join(","), lp.ports.join(",")
                        ),
                        json!({"observed_sources": sources.len(), "observed_ports": ports.iter().take(50).collect::<Vec<_>>(), "allowed_tuples": total.allowed,
                               "sources_narrowed": lp.sources_narrowed, "ports_narrowed": lp.ports_narrowed, "note": lp.note}),
                        json!({
                            "source_address_prefixes": lp.sources,
                            "destination_port_ranges": lp.ports,
                            "az": format!(
                                "az network nsg rule update --resource-group {} --nsg-name {} --name {} --source-address-prefixes {} --destination-port-ranges {}",
                                if rg.is_empty() { "<rg>" } else { &rg }, def.name, r.name, lp.sources.join(" "), lp.ports.join(" ")
                            ),
                        }),
                    ));
                }
            }
            // Default-rule traffic: a share of the NSG's allowed traffic no user rule owns.
            if r.default && r.access == Access::Allow && total.allowed >= DEFAULT_RULE_MIN_TUPLES {
                let nsg_allowed: u64 = seen
                    .iter()
                    .flat_map(|(_, s)| s.rules.values())
                    .map(|x| x.counters.allowed)
                    .sum();
                let share = total.allowed as f64 / nsg_allowed.max(1) as f64;
                if share >= DEFAULT_RULE_SHARE {
                    let top_ports: Vec<u16> = ports.iter().take(20).copied().collect();
                    findings.push(finding(
                        "default_rule_traffic",
                        Severity::Info,
                        &r.name,
                        vec![],
                        format!(
                            "{:.0}% of {}'s allowed tuples ({} of {}) were decided by the default rule {}: an explicit user rule would say who owns them",
                            share * 100.0, def.name, total.allowed, nsg_allowed, r.name
                        ),
                        json!({"allowed_tuples": total.allowed, "nsg_allowed_tuples": nsg_allowed, "share": (share * 1000.0).round() / 1000.0,
                               "distinct_sources": sources.len(), "ports": top_ports, "ports_seen": ports.len()}),
                        json!({"action": format!("add user rules for the flows {} carries (see the ports), then consider a deny above it", r.name)}),
                    ));
                }
            }
            // Overly permissive.
            if r.access == Access::Allow && r.direction == Dir::Inbound {
                let from_anywhere = r.sources.iter().any(|s| {
                    let s = s.trim().to_ascii_lowercase();
                    ["*", "any", "internet", "0.0.0.0/0", "::/0"].contains(&s.as_str())
                });
                if from_anywhere {
                    let ranges: Vec<(u16, u16)> = r
                        .ports
                        .iter()
                        .filter_map(|p| space::port_range(p))
                        .collect();
                    let width: u32 = space::disjoint(&ranges)
                        .iter()
                        .map(|(a, b)| (*b - *a) as u32 + 1)
                        .sum();
                    let hit = |ports: &[u16]| -> Vec<u16> {
                        ports
                            .iter()
                            .copied()
                            .filter(|p| ranges.iter().any(|(a, b)| a <= p && p <= b))
                            .collect()
                    };
                    let (admin, db) = (hit(&ADMIN_PORTS), hit(&DATABASE_PORTS));
                    if !admin.is_empty() || !db.is_empty() || width > WIDE_PORTS {
                        let severity = if !admin.is_empty() || !db.is_empty() {
                            if total.tuples > 0 {
                                Severity::Critical
                            } else {
                                Severity::High
                            }
                        } else {
                            Severity::Medium
                        };
                        let score = admin.len() * 10 + db.len() * 5 + (width / WIDE_PORTS) as usize;
                        findings.push(finding(
                            "overly_permissive",
                            severity,
                            &r.name,
                            vec![],
                            format!(
                                "{} allows {} from {} to {}{}",
                                r.name,
                                r.ports.join(","),
                                r.sources.join(","),
                                if !admin.is_empty() { format!("admin ports {admin:?}") } else if !db.is_empty() { format!("database ports {db:?}") } else { format!("{width} ports") },
                                if total.tuples > 0 { format!("; {} tuples from {} sources used it", total.tuples, sources.len()) } else { String::new() }
                            ),
                            json!({"score": score, "admin_ports": admin, "database_ports": db, "ports_open": width, "hits": total.tuples, "distinct_sources": sources.len()}),
                            json!({"action": "restrict the sources to known networks (a bastion, a VPN range) or use Azure Bastion / just-in-time access"}),
                        ));
                    }
                }
            }
            // Coverage by higher-priority rules.
            let Ok(mine) = &spaces[i] else {
                let why = spaces[i].as_ref().err().cloned().unwrap_or_default();
                findings.push(finding(
                    "unresolvable",
                    Severity::Info,
                    &r.name,
                    vec![],
                    format!("{} cannot be evaluated: {}; shadowing is not decided for it, and the observed traffic stands in", r.name, why.join("; ")),
                    json!({"reasons": why, "hits": total.tuples}),
                    json!({"action": "give --service-tags (Microsoft's service-tags JSON) for service tags; ASG membership is not in NSG definitions"}),
                ));
                continue;
            };
            let Some(c) = cover(def, &spaces, &order, pos, mine) else {
                continue;
            };
            let name = |v: &[usize]| -> Vec<String> {
                v.iter().map(|j| def.rules[*j].name.clone()).collect()
            };
            let (same, opposite, rest) = (name(&c.same), name(&c.opposite), c.rest.clone());
            // Which part the rules above take: the destination ports of the overlap.
            let overlap_ports: Vec<(u16, u16)> = c
                .same
                .iter()
                .chain(&c.opposite)
                .filter_map(|j| spaces[*j].as_ref().ok())
                .flat_map(|h| h.cells.iter())
                .flat_map(|hc| mine.cells.iter().filter_map(move |mc| mc.intersect(hc)))
                .map(|x| x.port)
                .collect();
            let fmt_ports = |v: &[(u16, u16)]| -> String {
                space::disjoint(v)
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else if (*a, *b) == (0, u16::MAX) {
                            "*".into()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let part = fmt_ports(&overlap_ports);
            let related: Vec<String> = opposite.iter().chain(&same).cloned().collect();
            if rest.is_empty() {
                let confirmed = hits
                    .watches
                    .iter()
                    .position(|w| w.nsg == def.name && w.resource_group == rg && w.rule == r.name)
                    .and_then(|i| hits.confirmed.get(i));
                if opposite.is_empty() {
                    findings.push(finding(
                        "redundant",
                        if r.default { Severity::Info } else { Severity::Low },
                        &r.name,
                        same.clone(),
                        format!("{} ({:?}, priority {}) is fully covered by higher-priority {:?} rules {}: it never decides anything", r.name, r.access, r.priority, r.access, same.join(", ")),
                        json!({"hits": total.tuples}),
                        json!({"action": "remove the rule (the rules above decide all it matches)"}),
                    ));
                } else {
                    // A deny whose traffic an allow lets through is worse than the reverse.
                    let severity = if r.access == Access::Deny {
                        Severity::High
                    } else {
                        Severity::Medium
                    };
                    findings.push(finding(
                        "shadowed",
                        if r.default { Severity::Info } else { severity },
                        &r.name,
                        related,
                        format!(
                            "{} ({:?}, priority {}) is fully covered by higher-priority rules, {} of the opposite access ({}): its intent never happens{}",
                            r.name, r.access, r.priority, opposite.len(), opposite.join(", "),
                            match confirmed.map(|c| c.tuples).unwrap_or(0) {
                                0 => " (no logged flow it matches was decided by them in the window)".to_string(),
                                n => format!("; {n} logged tuples it matches were {} by them instead", if r.access == Access::Deny { "allowed" } else { "denied" }),
                            }
                        ),
                        json!({"hits": total.tuples, "opposite_access": opposite, "same_access": same,
                               "decided_by_the_shadowing_rules": confirmed.map(|c| c.tuples).unwrap_or(0),
                               "examples": confirmed.map(|c| c.examples.iter().map(|e| json!({"time": fmt_ms(e.0), "path": e.1, "record": e.2, "tuple": e.3})).collect::<Vec<_>>()).unwrap_or_default()}),
                        json!({"action": format!("give {} a priority number below {}'s, or narrow the rules above", r.name, opposite[0])}),
                    ));
                }
            } else if !r.default {
                findings.push(finding(
                    "partially_shadowed",
                    Severity::Info,
                    &r.name,
                    related.clone(),
                    format!(
                        "{} overlaps higher-priority rules {} in part (destination ports {} of its {}): those decide the overlap, {} decides the rest",
                        r.name, related.join(", "), part, r.ports.join(","), r.name
                    ),
                    json!({"hits": total.tuples, "overlap_ports": part, "remaining_boxes": rest.cells.len()}),
                    json!({}),
                ));
            }
        }
    }
    for (k, s) in &hits.nsgs {
        if !used_keys.contains(k) && !defs.is_empty() {
            let tuples: u64 = s.rules.values().map(|r| r.counters.tuples).sum();
            findings.push(AuditFinding {
                kind: "undefined_rule",
                severity: Severity::Low,
                nsg: s.names.iter().next().cloned().unwrap_or_default(),
                resource_group: k.0.clone(),
                rule: String::new(),
                related_rules: s.rules.keys().cloned().collect(),
                message: format!("the logs show NSG {} ({} tuples) that no definitions file describes", s.names.iter().next().cloned().unwrap_or_default(), tuples),
                evidence: json!({"tuples": tuples}),
                suggestion: json!({"action": "add its definitions (az network nsg show) with another --rules"}),
            });
        }
    }
    if defs.is_empty() {
        // The hit table from the logs alone.
        for ((rg, _), s) in &hits.nsgs {
            let nsg = s.names.iter().next().cloned().unwrap_or_default();
            for (name, r) in &s.rules {
                rows.push(RuleRow {
                    nsg: nsg.clone(),
                    resource_group: rg.clone(),
                    rule: name.clone(),
                    log_name: name.clone(),
                    priority: None,
                    direction: None,
                    access: None,
                    protocol: None,
                    sources: vec![],
                    destinations: vec![],
                    ports: vec![],
                    hits: r.counters.tuples,
                    allowed: r.counters.allowed,
                    denied: r.counters.denied,
                    bytes: r
                        .counters
                        .bytes_src_to_dst
                        .saturating_add(r.counters.bytes_dst_to_src),
                    first: r.first_ms.map(fmt_ms),
                    last: r.last_ms.map(fmt_ms),
                    distinct_sources: r.sources.len(),
                });
            }
        }
    }
    sev_order(&mut findings);
    Audit {
        definitions_given: !defs.is_empty(),
        window: json!({"first": first_ms.map(fmt_ms), "last": last_ms.map(fmt_ms)}),
        coverage: serde_json::Value::Object(coverage),
        assumptions: json!({
            "virtual_network": tags.vnet.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "virtual_network_from": tags.vnet_from,
            "internet": "every address outside VirtualNetwork",
            "default_rules_assumed": defs.iter().filter(|d| d.assumed_defaults).map(|d| d.name.clone()).collect::<Vec<_>>(),
            "source_ports": "not modelled: a rule that restricts source ports is never taken to cover another",
        }),
        rules: rows,
        findings,
    }
}

/// `audit.csv` and `audit --format csv`: the findings, then one `rule` row per rule.
pub fn csv_rows(a: &Audit) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header: Vec<&str> = FINDING_COLUMNS.to_vec();
    header.extend(RULE_COLUMNS[3..].iter());
    let blank = vec![String::new(); RULE_COLUMNS.len() - 3];
    let mut rows: Vec<Vec<String>> = a
        .findings
        .iter()
        .map(|f| {
            let mut r = f.cells();
            r.extend(blank.iter().cloned());
            r
        })
        .collect();
    for r in &a.rules {
        let c = r.cells();
        let mut row = vec![
            String::new(),
            "rule".into(),
            c[0].clone(),
            c[1].clone(),
            c[2].clone(),
            String::new(),
            String::new(),
        ];
        row.extend(c[3..].iter().cloned());
        rows.push(row);
    }
    (header, rows)
}

/// The finding table's columns (table and CSV).
pub const FINDING_COLUMNS: [&str; 7] = [
    "severity",
    "kind",
    "resource_group",
    "nsg",
    "rule",
    "related_rules",
    "message",
];
/// The rule table's columns.
pub const RULE_COLUMNS: [&str; 14] = [
    "resource_group",
    "nsg",
    "rule",
    "priority",
    "direction",
    "access",
    "protocol",
    "ports",
    "hits",
    "allowed",
    "denied",
    "bytes",
    "last",
    "distinct_sources",
];

impl AuditFinding {
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.severity.name().to_string(),
            self.kind.to_string(),
            self.resource_group.clone(),
            self.nsg.clone(),
            self.rule.clone(),
            self.related_rules.join(" "),
            self.message.clone(),
        ]
    }
}

impl RuleRow {
    pub fn cells(&self) -> Vec<String> {
        let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        vec![
            self.resource_group.clone(),
            self.nsg.clone(),
            self.rule.clone(),
            o(self.priority.map(|p| p.to_string())),
            o(self.direction.map(|d| format!("{d:?}").to_lowercase())),
            o(self.access.map(|a| format!("{a:?}").to_lowercase())),
            o(self.protocol.clone()),
            self.ports.join(","),
            self.hits.to_string(),
            self.allowed.to_string(),
            self.denied.to_string(),
            self.bytes.to_string(),
            o(self.last.clone()),
            self.distinct_sources.to_string(),
        ]
    }
}

/// Prefixes listed at most in a least-privilege suggestion (more are widened).
pub const MAX_PREFIXES: usize = 16;

/// A tighter rule for what was observed.
pub struct LeastPrivilege {
    pub sources: Vec<String>,
    pub ports: Vec<String>,
    pub sources_narrowed: bool,
    pub ports_narrowed: bool,
    pub note: Option<String>,
}

/// The observed sources as CIDRs (exact aggregates of the addresses, widened to /24 when more
/// than [`MAX_PREFIXES`] remain; sources spread wider than that, a public service's clients,
/// are left as the rule has them), and the observed ports as ranges; `None` when neither is
/// narrower than the rule.
pub fn least_privilege(
    r: &RuleDef,
    sources: &HSet<u128>,
    ports: &BTreeSet<u16>,
    tags: &eval::Tags,
) -> Option<LeastPrivilege> {
    if sources.is_empty() || ports.is_empty() || sources.len() >= MAX_SOURCES {
        return None;
    }
    let v4: Vec<std::net::Ipv4Addr> = sources
        .iter()
        .filter(|p| **p >> 32 == 0xffff)
        .map(|p| std::net::Ipv4Addr::from(*p as u32))
        .collect();
    if v4.len() != sources.len() {
        return None;
    }
    let mut note = None;
    let mut nets: Vec<ipnet::IpNet> = Vec::new();
    let mut fits = false;
    for len in [32u8, 24] {
        let widened: Vec<ipnet::IpNet> = v4
            .iter()
            .map(|a| ipnet::IpNet::V4(ipnet::Ipv4Net::new(*a, len).expect("valid length").trunc()))
            .collect();
        nets = ipnet::IpNet::aggregate(&widened);
        if nets.len() <= MAX_PREFIXES {
            fits = true;
            if len < 32 {
                note = Some(format!("sources widened to /{len} networks to keep the list under {MAX_PREFIXES} prefixes"));
            }
            break;
        }
    }
    // Narrower than the rule's sources? Compare the number of addresses covered.
    let width = |iv: &[(u128, u128)]| -> u128 {
        space::disjoint(iv)
            .iter()
            .map(|(a, b)| (b - a).saturating_add(1))
            .fold(0u128, |x, y| x.saturating_add(y))
    };
    let rule_src: Vec<(u128, u128)> = r
        .sources
        .iter()
        .filter_map(|s| tags.resolve(s).ok())
        .flatten()
        .collect();
    let new_src: Vec<(u128, u128)> = nets.iter().map(space::net_interval).collect();
    let sources_narrowed = fits && width(&new_src) < width(&rule_src);
    if !fits {
        note = Some(format!(
            "{} sources in more than {MAX_PREFIXES} /24 networks: sources left as the rule has them",
            sources.len()
        ));
    }
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match ranges.last_mut() {
            Some(l) if l.1.checked_add(1) == Some(p) => l.1 = p,
            _ => ranges.push((p, p)),
        }
    }
    let rule_ports: Vec<(u16, u16)> = r
        .ports
        .iter()
        .filter_map(|p| space::port_range(p))
        .collect();
    let count = |v: &[(u16, u16)]| -> u32 {
        space::disjoint(v)
            .iter()
            .map(|(a, b)| (*b - *a) as u32 + 1)
            .sum()
    };
    let ports_narrowed = ranges.len() <= MAX_PREFIXES && count(&ranges) < count(&rule_ports);
    if !sources_narrowed && !ports_narrowed {
        return None;
    }
    let fmt_range = |(a, b): &(u16, u16)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    Some(LeastPrivilege {
        sources: if sources_narrowed {
            nets.iter().map(|n| n.to_string()).collect()
        } else {
            r.sources.clone()
        },
        ports: if ports_narrowed {
            ranges.iter().map(fmt_range).collect()
        } else {
            r.ports.clone()
        },
        sources_narrowed,
        ports_narrowed,
        note,
    })
}

/// How the rules above one rule cover it.
pub struct Cover {
    /// Indices (into the NSG's rules) of the higher-priority rules that overlap it, by access.
    pub same: Vec<usize>,
    pub opposite: Vec<usize>,
    /// What is left of its space (empty: fully covered).
    pub rest: space::Space,
}

/// Subtract the higher-priority rules of the same direction from `mine`, in priority order.
/// `None` when none overlaps it, or the remainder grew too fragmented to decide.
fn cover(
    def: &NsgDef,
    spaces: &[Result<space::Space, Vec<String>>],
    order: &[usize],
    pos: usize,
    mine: &space::Space,
) -> Option<Cover> {
    let r = &def.rules[order[pos]];
    let mut rest = mine.clone();
    let (mut same, mut opposite) = (Vec::new(), Vec::new());
    for &j in &order[..pos] {
        let h = &def.rules[j];
        if h.direction != r.direction || h.priority >= r.priority || eval::restricts_source_ports(h)
        {
            continue;
        }
        let Ok(hs) = &spaces[j] else { continue };
        if !hs.cells.iter().any(|c| rest.intersects(c)) {
            continue;
        }
        if h.access == r.access {
            same.push(j)
        } else {
            opposite.push(j)
        }
        if !rest.subtract(hs) {
            return None;
        }
        if rest.is_empty() {
            break;
        }
    }
    if same.is_empty() && opposite.is_empty() {
        return None;
    }
    Some(Cover {
        same,
        opposite,
        rest,
    })
}

/// A shadowed rule whose traffic the pass looks for: tuples its shadowing rules decided that
/// its own space matches.
#[derive(Clone, Debug)]
pub struct Watch {
    pub nsg: String,
    pub resource_group: String,
    /// The shadowed rule (as defined).
    pub rule: String,
    /// Log names of the opposite-access rules that shadow it.
    pub shadowing: Vec<String>,
    pub space: space::Space,
}

/// The shadowed rules of the definitions (decided before the pass, from definitions alone).
/// An NSG's rule spaces (or why a rule has none), and its rule indices in evaluation order:
/// by direction, then priority.
fn spaces_in_order(
    def: &NsgDef,
    tags: &eval::Tags,
) -> (Vec<Result<space::Space, Vec<String>>>, Vec<usize>) {
    let spaces = def
        .rules
        .iter()
        .map(|r| eval::rule_space(r, tags))
        .collect();
    let mut order: Vec<usize> = (0..def.rules.len()).collect();
    order.sort_by_key(|&i| (def.rules[i].direction, def.rules[i].priority, i));
    (spaces, order)
}

pub fn watches(defs: &[NsgDef], tags: &eval::Tags) -> Vec<Watch> {
    let mut out = Vec::new();
    for def in defs {
        let (spaces, order) = spaces_in_order(def, tags);
        for (pos, &i) in order.iter().enumerate() {
            let Ok(mine) = &spaces[i] else { continue };
            if let Some(c) = cover(def, &spaces, &order, pos, mine) {
                if c.rest.is_empty() && !c.opposite.is_empty() {
                    out.push(Watch {
                        nsg: def.name.clone(),
                        resource_group: def.resource_group.clone().unwrap_or_default(),
                        rule: def.rules[i].name.clone(),
                        shadowing: c
                            .opposite
                            .iter()
                            .map(|j| def.rules[*j].log_name())
                            .collect(),
                        space: mine.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Tuples a watched shadowed rule matches that its shadowing rules decided.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Confirmed {
    pub tuples: u64,
    /// The earliest few: (time ms, blob path, record, tuple index).
    pub examples: Vec<(i64, String, u32, u32)>,
}

/// Examples kept per confirmed shadowing.
pub const EXAMPLES: usize = 5;

impl Confirmed {
    fn add(&mut self, e: (i64, String, u32, u32)) {
        self.tuples += 1;
        if self.examples.len() < EXAMPLES || e < *self.examples.last().expect("non-empty") {
            let at = self.examples.partition_point(|x| *x < e);
            self.examples.insert(at, e);
            self.examples.truncate(EXAMPLES);
        }
    }

    fn merge(&mut self, o: Confirmed) {
        let n = self.tuples + o.tuples;
        for e in o.examples {
            self.add(e);
        }
        self.tuples = n;
    }
}

/// The protocol bit of a logged tuple.
fn tuple_proto(p: crate::model::Protocol) -> u8 {
    use crate::model::Protocol;
    match p {
        Protocol::Tcp => space::TCP,
        Protocol::Udp => space::UDP,
        Protocol::Number(1) | Protocol::Number(58) | Protocol::Letter(b'I') => space::ICMP,
        Protocol::Number(50) => space::ESP,
        Protocol::Number(51) => space::AH,
        _ => space::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A rule over a small universe: sources and destinations 10.0.0.0/28 (`a..=b` as the
    /// last octet), ports `p..=q`, TCP or any protocol.
    fn small_rule(
        i: usize,
        prio: u32,
        allow: bool,
        s: (u8, u8),
        d: (u8, u8),
        p: (u16, u16),
        tcp: bool,
    ) -> RuleDef {
        let addr = |(a, b): (u8, u8)| -> Vec<String> {
            (a.min(b)..=a.max(b))
                .map(|x| format!("10.0.0.{x}"))
                .collect()
        };
        RuleDef {
            name: format!("r{i}"),
            default: false,
            priority: prio,
            direction: Dir::Inbound,
            access: if allow { Access::Allow } else { Access::Deny },
            protocol: if tcp { "Tcp".into() } else { "*".into() },
            sources: addr(s),
            destinations: addr(d),
            source_ports: vec!["*".into()],
            ports: vec![format!("{}-{}", p.0.min(p.1), p.0.max(p.1))],
            source_asgs: vec![],
            destination_asgs: vec![],
        }
    }

    /// The naive evaluator: rules in priority order, first match decides.
    fn first_match(rules: &[RuleDef], src: u8, dst: u8, port: u16, tcp: bool) -> Option<usize> {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by_key(|&i| (rules[i].priority, i));
        order.into_iter().find(|&i| {
            let r = &rules[i];
            let (a, b) = space::port_range(&r.ports[0]).unwrap();
            r.sources.contains(&format!("10.0.0.{src}"))
                && r.destinations.contains(&format!("10.0.0.{dst}"))
                && (a..=b).contains(&port)
                && (r.protocol == "*" || tcp)
        })
    }

    proptest! {
        /// What remains of a rule after subtracting the rules above it is exactly the set of
        /// points the naive first-match evaluator lets it decide.
        #[test]
        fn cover_agrees_with_first_match(
            spec in proptest::collection::vec(
                (1u32..6, any::<bool>(), (0u8..6, 0u8..6), (0u8..6, 0u8..6), (0u16..6, 0u16..6), any::<bool>()),
                1..6,
            )
        ) {
            let rules: Vec<RuleDef> = spec
                .iter()
                .enumerate()
                .map(|(i, (pr, al, s, d, p, t))| small_rule(i, *pr * 10 + i as u32, *al, *s, *d, *p, *t))
                .collect();
            let def = NsgDef { name: "N".into(), resource_group: None, id: None, rules: rules.clone(), nics: vec![], assumed_defaults: false, file: Default::default() };
            let tags = eval::Tags::new(vec![], Default::default());
            let spaces: Vec<_> = rules.iter().map(|r| eval::rule_space(r, &tags)).collect();
            let mut order: Vec<usize> = (0..rules.len()).collect();
            order.sort_by_key(|&i| (rules[i].priority, i));
            for (pos, &i) in order.iter().enumerate() {
                let mine = spaces[i].as_ref().unwrap();
                let rest = match cover(&def, &spaces, &order, pos, mine) {
                    Some(c) => c.rest,
                    None => mine.clone(),
                };
                for src in 0..7u8 { for dst in 0..7u8 { for port in 0..7u16 { for tcp in [true, false] {
                    let ip = |x: u8| space::addr_point(std::net::IpAddr::from([10, 0, 0, x]));
                    let proto = if tcp { space::TCP } else { space::UDP };
                    let decides = first_match(&rules, src, dst, port, tcp) == Some(i);
                    prop_assert_eq!(rest.contains(ip(src), ip(dst), port, proto), decides, "rule {} at {} {} {} {}", i, src, dst, port, tcp);
                }}}}
            }
        }
    }
}
