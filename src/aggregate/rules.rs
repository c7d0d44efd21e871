//! The rule-counters fold. Folding rule tables into summaries that merge. A [`Summary`] holds counters per NSG and
//! rule, per family and in total, plus the ledger; [`Summary::merge`] is associative and
//! commutative, so rayon's `fold`/`reduce` and sharded runs give the same answer.

use crate::hash::HMap;
use crate::model::{
    better_spelling, Decision, Direction, Encryption, Family, FlowTuple, NsgIdentity,
};
use crate::parse::{Ledger, RuleTable, TableSink};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::AddAssign;

/// A sum of logged packet or byte counts. One tuple's count is a `u64`; their sums are
/// `u128`, so no input can make a total wrap (2^64 bytes is 16 EiB, which two tuples of a
/// malformed or hostile blob reach). JSON and CSV write the exact value.
pub type Sum = u128;

/// Tuple counters. Counts sum the tuple fields as logged; a missing count adds nothing.
/// `counted` says how many tuples logged any packet or byte count: when none did (NSG v1,
/// or only `B` and denied tuples of v2), the packet and byte sums are "not logged", never
/// 0 — JSON writes them as `null`, tables and CSV as `not logged`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Counters {
    pub tuples: u64,
    pub allowed: u64,
    pub denied: u64,
    pub inbound: u64,
    pub outbound: u64,
    #[serde(default, deserialize_with = "zero_if_null")]
    pub packets_src_to_dst: Sum,
    #[serde(default, deserialize_with = "zero_if_null")]
    pub bytes_src_to_dst: Sum,
    #[serde(default, deserialize_with = "zero_if_null")]
    pub packets_dst_to_src: Sum,
    #[serde(default, deserialize_with = "zero_if_null")]
    pub bytes_dst_to_src: Sum,
    /// Tuples that logged a packet or byte count.
    #[serde(default, rename = "counters_logged")]
    pub counted: u64,
}

fn zero_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sum, D::Error> {
    Ok(Option::<Sum>::deserialize(d)?.unwrap_or(0))
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let sum = |v: Sum| (!self.not_logged()).then_some(v);
        let mut st = s.serialize_struct("Counters", 10)?;
        st.serialize_field("tuples", &self.tuples)?;
        st.serialize_field("allowed", &self.allowed)?;
        st.serialize_field("denied", &self.denied)?;
        st.serialize_field("inbound", &self.inbound)?;
        st.serialize_field("outbound", &self.outbound)?;
        st.serialize_field("packets_src_to_dst", &sum(self.packets_src_to_dst))?;
        st.serialize_field("bytes_src_to_dst", &sum(self.bytes_src_to_dst))?;
        st.serialize_field("packets_dst_to_src", &sum(self.packets_dst_to_src))?;
        st.serialize_field("bytes_dst_to_src", &sum(self.bytes_dst_to_src))?;
        st.serialize_field("counters_logged", &self.counted)?;
        st.end()
    }
}

/// How a packet or byte sum reads where it was not logged.
pub const NOT_LOGGED: &str = "not logged";

impl Counters {
    /// Count one tuple.
    #[inline]
    pub fn add(&mut self, t: &FlowTuple) {
        self.tuples += 1;
        let deny = (t.decision == Decision::Deny) as u64;
        self.denied += deny;
        self.allowed += 1 - deny;
        let inb = (t.direction == Direction::Inbound) as u64;
        self.inbound += inb;
        self.outbound += 1 - inb;
        self.packets_src_to_dst += t.packets_s2d.unwrap_or(0) as Sum;
        self.bytes_src_to_dst += t.bytes_s2d.unwrap_or(0) as Sum;
        self.packets_dst_to_src += t.packets_d2s.unwrap_or(0) as Sum;
        self.bytes_dst_to_src += t.bytes_d2s.unwrap_or(0) as Sum;
        self.counted += (t.packets_s2d.is_some()
            | t.bytes_s2d.is_some()
            | t.packets_d2s.is_some()
            | t.bytes_d2s.is_some()) as u64;
    }

    /// Tuples were counted but none logged a packet or byte count.
    pub fn not_logged(&self) -> bool {
        self.tuples > 0 && self.counted == 0
    }

    /// Packets both ways as text (`not logged` when none were).
    pub fn packets_text(&self) -> String {
        self.sum_text(self.packets_src_to_dst + self.packets_dst_to_src)
    }

    /// Bytes both ways as text (`not logged` when none were).
    pub fn bytes_text(&self) -> String {
        self.sum_text(self.bytes_src_to_dst + self.bytes_dst_to_src)
    }

    fn sum_text(&self, v: Sum) -> String {
        if self.not_logged() {
            NOT_LOGGED.to_string()
        } else {
            v.to_string()
        }
    }
}

impl Counters {
    /// Column names of [`Counters::cells`], as in the JSON contract.
    pub const COLUMNS: [&'static str; 9] = [
        "tuples",
        "allowed",
        "denied",
        "inbound",
        "outbound",
        "packets_src_to_dst",
        "bytes_src_to_dst",
        "packets_dst_to_src",
        "bytes_dst_to_src",
    ];

    /// The counters as text cells, in [`Counters::COLUMNS`] order (tables and CSV).
    pub fn cells(&self) -> [String; 9] {
        let mut cells = [
            self.tuples as Sum,
            self.allowed as Sum,
            self.denied as Sum,
            self.inbound as Sum,
            self.outbound as Sum,
            self.packets_src_to_dst,
            self.bytes_src_to_dst,
            self.packets_dst_to_src,
            self.bytes_dst_to_src,
        ]
        .map(|n| n.to_string());
        if self.not_logged() {
            for c in &mut cells[5..] {
                *c = NOT_LOGGED.to_string();
            }
        }
        cells
    }
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.tuples += o.tuples;
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.inbound += o.inbound;
        self.outbound += o.outbound;
        self.packets_src_to_dst += o.packets_src_to_dst;
        self.bytes_src_to_dst += o.bytes_src_to_dst;
        self.packets_dst_to_src += o.packets_dst_to_src;
        self.bytes_dst_to_src += o.bytes_dst_to_src;
        self.counted += o.counted;
    }
}

/// One NSG rule's counters and the time range of its tuples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub counters: Counters,
    /// Earliest and latest tuple time (ms), `None` when the rule logged no tuple.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// The earlier of two optional times.
pub fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}
/// The later of two optional times.
pub fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) | (None, x) => x,
    }
}

impl RuleStats {
    fn merge(&mut self, o: &RuleStats) {
        self.counters += o.counters;
        self.first_ms = min_opt(self.first_ms, o.first_ms);
        self.last_ms = max_opt(self.last_ms, o.last_ms);
    }
}

/// Everything `summary` reports; mergeable.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// The run's ledger, once the pipeline has set it (a partial file keeps it beside the
    /// folds, not in them).
    #[serde(skip)]
    pub ledger: Ledger,
    pub totals: Counters,
    /// Per family, indexed by [`Family::index`].
    pub families: [Counters; 3],
    /// VNet tuples per encryption code, indexed by [`Encryption::index`].
    pub encryption: [u64; Encryption::COUNT],
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// NSG identity ([`NsgIdentity::key`]) → the NSG's rules.
    pub rules: HMap<String, NsgRules>,
    /// The last table's NSG as written, and its identity key (tables of one record
    /// share them).
    #[serde(skip)]
    last: Option<(crate::model::WrittenNsg, String)>,
}

/// One NSG's rules under its identity ([`NsgIdentity`]), with the spelling shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NsgRules {
    /// Name, subscription and resource group as shown: of the spellings seen, the one
    /// [`better_spelling`] picks (ARM's own over the upper-cased copy of NSG logs).
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    /// Rule name (as written) → stats.
    pub rules: HMap<String, RuleStats>,
}

/// How each NSG is shown, by identity key: its name, or where two NSGs share a name (case
/// aside), the name with its resource group, and with its subscription too where that is
/// not enough.
pub fn nsg_labels<'a>(
    nsgs: impl IntoIterator<Item = (&'a str, &'a NsgRules)>,
) -> BTreeMap<&'a str, String> {
    let lower = |x: &str| x.to_lowercase();
    let nsgs: Vec<(&str, &NsgRules)> = nsgs.into_iter().collect();
    let mut by_name: BTreeMap<String, Vec<&NsgRules>> = BTreeMap::new();
    for (_, n) in &nsgs {
        by_name.entry(lower(&n.name)).or_default().push(n);
    }
    let mut out = BTreeMap::new();
    for (key, n) in nsgs {
        let group = &by_name[&lower(&n.name)];
        let label = if group.len() == 1 {
            n.name.clone()
        } else {
            let rg = if n.resource_group.is_empty() {
                "no resource group"
            } else {
                &n.resource_group
            };
            let same_rg = group
                .iter()
                .filter(|o| lower(&o.resource_group) == lower(&n.resource_group))
                .count();
            if same_rg > 1 {
                format!("{} ({rg}, subscription {})", n.name, n.subscription)
            } else {
                format!("{} ({rg})", n.name)
            }
        };
        out.insert(key, label);
    }
    out
}

/// Merge NSG entries by identity key ([`NsgRules::merge`]).
pub fn merge_nsgs(mine: &mut HMap<String, NsgRules>, theirs: HMap<String, NsgRules>) {
    for (key, n) in theirs {
        match mine.get_mut(&key) {
            Some(m) => m.merge(n),
            None => {
                mine.insert(key, n);
            }
        }
    }
}

fn nsg_order(n: &NsgRules) -> (&str, &str, &str) {
    (&n.name, &n.resource_group, &n.subscription)
}

impl NsgRules {
    pub fn new(id: &NsgIdentity<'_>) -> NsgRules {
        NsgRules {
            name: id.name.to_string(),
            subscription: id.subscription.to_string(),
            resource_group: id.resource_group.to_string(),
            rules: HMap::default(),
        }
    }

    /// The entry of `key` in `map`: new with `id`'s spelling, or offered it.
    pub fn entry<'m>(
        map: &'m mut HMap<String, NsgRules>,
        key: String,
        id: &NsgIdentity<'_>,
    ) -> &'m mut NsgRules {
        match map.entry(key) {
            std::collections::hash_map::Entry::Vacant(e) => e.insert(NsgRules::new(id)),
            std::collections::hash_map::Entry::Occupied(e) => {
                let n = e.into_mut();
                n.spell(id.name, id.subscription, id.resource_group);
                n
            }
        }
    }

    /// Fold another entry of the same NSG in: the better spelling, every rule's stats.
    pub fn merge(&mut self, o: NsgRules) {
        self.spell(&o.name, &o.subscription, &o.resource_group);
        for (rule, st) in o.rules {
            self.rules.entry(rule).or_default().merge(&st);
        }
    }

    /// Keep the better spelling of each part.
    pub fn spell(&mut self, name: &str, subscription: &str, resource_group: &str) {
        for (mine, theirs) in [
            (&mut self.name, name),
            (&mut self.subscription, subscription),
            (&mut self.resource_group, resource_group),
        ] {
            if better_spelling(theirs, mine) {
                *mine = theirs.to_string();
            }
        }
    }
}

impl Summary {
    /// Merge another summary into this one.
    pub fn merge(&mut self, o: Summary) {
        self.ledger.merge(o.ledger);
        self.totals += o.totals;
        for (a, b) in self.families.iter_mut().zip(o.families) {
            *a += b;
        }
        for (a, b) in self.encryption.iter_mut().zip(o.encryption) {
            *a += b;
        }
        self.first_ms = min_opt(self.first_ms, o.first_ms);
        self.last_ms = max_opt(self.last_ms, o.last_ms);
        merge_nsgs(&mut self.rules, o.rules);
    }

    /// `merge` by value, for `reduce`.
    pub fn merged(mut self, o: Summary) -> Summary {
        self.merge(o);
        self
    }

    /// Rules sorted by NSG (name as shown, resource group, subscription), then rule name,
    /// each with its NSG's identity key.
    pub fn sorted_rules(&self) -> Vec<(&str, &NsgRules, &str, &RuleStats)> {
        let mut v: Vec<_> = self
            .sorted_nsgs()
            .into_iter()
            .flat_map(|(k, n)| n.rules.iter().map(move |(r, s)| (k, n, r.as_str(), s)))
            .collect();
        v.sort_by(|a, b| nsg_order(a.1).cmp(&nsg_order(b.1)).then(a.2.cmp(b.2)));
        v
    }

    /// The NSGs seen with their identity keys, sorted by name as shown, resource group,
    /// subscription.
    pub fn sorted_nsgs(&self) -> Vec<(&str, &NsgRules)> {
        let mut v: Vec<(&str, &NsgRules)> =
            self.rules.iter().map(|(k, n)| (k.as_str(), n)).collect();
        v.sort_by(|a, b| nsg_order(a.1).cmp(&nsg_order(b.1)).then(a.0.cmp(b.0)));
        v
    }

    /// Per-family counters with their names.
    pub fn family_counters(&self) -> impl Iterator<Item = (Family, &Counters)> {
        Family::ALL
            .iter()
            .map(move |f| (*f, &self.families[f.index()]))
    }
}

impl TableSink for Summary {
    fn table(&mut self, table: &RuleTable<'_>) {
        let ctx = &table.ctx;
        let written = ctx.nsg_written();
        let same = self
            .last
            .as_ref()
            .is_some_and(|(w, _)| crate::model::same_written(w, written));
        if !same {
            // A new text: its identity, and its spelling offered (the same text again
            // changes nothing, so tables of one record pay for neither).
            let id = ctx.nsg_identity();
            let key = id.key();
            NsgRules::entry(&mut self.rules, key.clone(), &id);
            self.last = Some((written.map(Box::from), key));
        }
        let key = &self.last.as_ref().expect("set above").1;
        let rules = &mut self.rules.get_mut(key).expect("entered above").rules;
        let stats = match rules.get_mut(ctx.rule) {
            Some(st) => st,
            None => rules.entry(ctx.rule.to_string()).or_default(),
        };
        if table.tuples.is_empty() {
            return;
        }
        let mut c = Counters::default();
        let mut first = i64::MAX;
        let mut last = i64::MIN;
        for t in table.tuples {
            c.add(t);
            first = first.min(t.time_ms);
            last = last.max(t.time_ms);
            if let Some(e) = t.encryption {
                self.encryption[e.index()] += 1;
            }
        }
        stats.counters += c;
        stats.first_ms = min_opt(stats.first_ms, Some(first));
        stats.last_ms = max_opt(stats.last_ms, Some(last));
        self.totals += c;
        self.families[ctx.family.index()] += c;
        self.first_ms = min_opt(self.first_ms, Some(first));
        self.last_ms = max_opt(self.last_ms, Some(last));
    }
}

impl super::Fold for Summary {
    fn merge(&mut self, other: Self) {
        Summary::merge(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, GroupContext};

    #[test]
    fn one_nsg_name_in_two_subscriptions_without_resource_ids_is_two_nsgs() {
        // Regression: the identity was cached by resource id and name only; without a
        // resource id it comes from the blob path's subscription, which was not compared.
        let t = crate::parse::parse_tuple(
            "1767571200,203.0.113.9,10.0.0.4,40000,22,T,I,D,B,,,,",
            Family::NsgV2,
        )
        .expect("a valid tuple");
        let mut s = Summary::default();
        for subscription in ["S1", "S2", "S2"] {
            s.table(&RuleTable {
                ctx: GroupContext {
                    family: Family::NsgV2,
                    nsg: "app-nsg",
                    rule: "DefaultRule_DenyAllInBound",
                    mac: "000D3A000001",
                    subscription,
                    resource_id: "",
                    target_resource_id: "",
                    flow_log_resource_id: "",
                    record_index: 0,
                },
                tuples: &[t],
                indices: &[0],
            });
        }
        let mut tuples: Vec<(String, u64)> = s
            .rules
            .iter()
            .map(|(k, v)| (k.clone(), v.rules.values().map(|r| r.counters.tuples).sum()))
            .collect();
        tuples.sort();
        assert_eq!(
            tuples,
            [
                ("s1//app-nsg".to_string(), 1),
                ("s2//app-nsg".to_string(), 2)
            ]
        );
    }
}
