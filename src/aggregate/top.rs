//! `top`: the N biggest keys (sources, destinations, pairs, ports, rules, NSGs, NICs, flow
//! classes) by a metric, like SiLK's rwstats / rwuniq with distinct counts. Folds into a
//! mergeable map; distinct sets are kept only when the metric asks for them.

use super::Fold;
use crate::addr::{AddressBook, FlowClass, Grouping, Node};
use crate::aggregate::rules::{NsgRules, Sum};
use crate::hash::{HMap, HSet};
use crate::model::{Decision, FlowTuple, Protocol};
use crate::parse::{RuleTable, TableSink};
use serde::Serialize;
use std::net::IpAddr;

/// What to rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopBy {
    Src,
    Dst,
    Pair,
    Dport,
    Rule,
    Nsg,
    Mac,
    Class,
}

/// By what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Tuples,
    Bytes,
    Packets,
    Denied,
    Allowed,
    DistinctDst,
    DistinctSrc,
    DistinctDport,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Tuples => "tuples",
            Metric::Bytes => "bytes",
            Metric::Packets => "packets",
            Metric::Denied => "denied",
            Metric::Allowed => "allowed",
            Metric::DistinctDst => "distinct_dst",
            Metric::DistinctSrc => "distinct_src",
            Metric::DistinctDport => "distinct_dport",
        }
    }
}

/// A `top` question.
#[derive(Clone, Copy, Debug)]
pub struct TopSpec {
    pub by: TopBy,
    pub metric: Metric,
    pub group: Grouping,
    pub n: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Node(Node),
    Pair(Node, Node),
    Port(Protocol, u16),
    Class(FlowClass),
}

/// Counters of one key.
#[derive(Clone, Debug, Default)]
struct Stats {
    tuples: u64,
    allowed: u64,
    denied: u64,
    packets: Sum,
    bytes: Sum,
    distinct: HSet<u128>,
}

impl Stats {
    #[inline]
    fn add(&mut self, t: &FlowTuple, distinct: Option<u128>) {
        self.tuples += 1;
        let deny = (t.decision == Decision::Deny) as u64;
        self.denied += deny;
        self.allowed += 1 - deny;
        self.packets += t.packets_s2d.unwrap_or(0) as Sum + t.packets_d2s.unwrap_or(0) as Sum;
        self.bytes += t.bytes_s2d.unwrap_or(0) as Sum + t.bytes_d2s.unwrap_or(0) as Sum;
        if let Some(d) = distinct {
            self.distinct.insert(d);
        }
    }
    fn merge(&mut self, o: Stats) {
        self.tuples += o.tuples;
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.packets += o.packets;
        self.bytes += o.bytes;
        if self.distinct.len() < o.distinct.len() {
            let mine = std::mem::replace(&mut self.distinct, o.distinct);
            self.distinct.extend(mine);
        } else {
            self.distinct.extend(o.distinct);
        }
    }
    fn value(&self, m: Metric) -> Sum {
        match m {
            Metric::Tuples => self.tuples as Sum,
            Metric::Bytes => self.bytes,
            Metric::Packets => self.packets,
            Metric::Denied => self.denied as Sum,
            Metric::Allowed => self.allowed as Sum,
            Metric::DistinctDst | Metric::DistinctSrc | Metric::DistinctDport => {
                self.distinct.len() as Sum
            }
        }
    }
}

fn ip_bits(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(*v) as u128 | 1 << 127,
        IpAddr::V6(v) => u128::from(*v),
    }
}

/// The mergeable aggregate behind `top`.
pub struct TopAgg<'a> {
    spec: TopSpec,
    book: &'a AddressBook,
    keyed: HMap<Key, Stats>,
    /// Rule (NSG identity key, `/`, rule), NSG (identity key) and MAC keys.
    named: HMap<String, Stats>,
    /// NSGs by identity key ([`crate::model::NsgIdentity`]), with the spelling shown.
    nsgs: HMap<String, NsgRules>,
    /// The last table's NSG as written and its identity key: built once a blob, not once a
    /// table (the lower-cased identity is most of a table's cost otherwise).
    last: Option<(crate::model::WrittenNsg, String)>,
}

impl<'a> TopAgg<'a> {
    pub fn new(spec: TopSpec, book: &'a AddressBook) -> TopAgg<'a> {
        TopAgg {
            spec,
            book,
            keyed: HMap::default(),
            named: HMap::default(),
            nsgs: HMap::default(),
            last: None,
        }
    }

    #[inline]
    fn distinct(&self, t: &FlowTuple) -> Option<u128> {
        match self.spec.metric {
            Metric::DistinctDst => Some(ip_bits(&t.dst)),
            Metric::DistinctSrc => Some(ip_bits(&t.src)),
            Metric::DistinctDport => Some(t.dport as u128),
            _ => None,
        }
    }
}

impl TableSink for TopAgg<'_> {
    fn table(&mut self, table: &RuleTable<'_>) {
        if table.tuples.is_empty() {
            return;
        }
        let ctx = &table.ctx;
        let g = self.spec.group;
        // NSG and rule keys hold the NSG's identity; the spelling shown is kept beside.
        let nsg = matches!(self.spec.by, TopBy::Rule | TopBy::Nsg).then(|| {
            let written = ctx.nsg_written();
            match &self.last {
                Some((w, key)) if crate::model::same_written(w, written) => key.clone(),
                _ => {
                    // A new text: its identity, and its spelling offered (the same text
                    // again changes nothing).
                    let id = ctx.nsg_identity();
                    let key = id.key();
                    NsgRules::entry(&mut self.nsgs, key.clone(), &id);
                    self.last = Some((written.map(Box::from), key.clone()));
                    key
                }
            }
        });
        let name = match self.spec.by {
            TopBy::Rule => nsg.map(|k| format!("{k}/{}", ctx.rule)),
            TopBy::Nsg => nsg,
            TopBy::Mac => Some(ctx.mac_normalized().into_owned()),
            _ => None,
        };
        if let Some(name) = name {
            let mut st = Stats::default();
            for t in table.tuples {
                let d = self.distinct(t);
                st.add(t, d);
            }
            self.named.entry(name).or_default().merge(st);
            return;
        }
        for t in table.tuples {
            let key = match self.spec.by {
                TopBy::Src => Key::Node(self.book.node(&t.src, g)),
                TopBy::Dst => Key::Node(self.book.node(&t.dst, g)),
                TopBy::Pair => Key::Pair(self.book.node(&t.src, g), self.book.node(&t.dst, g)),
                TopBy::Dport => Key::Port(t.protocol, t.dport),
                TopBy::Class => Key::Class(self.book.class(&t.src, &t.dst)),
                TopBy::Rule | TopBy::Nsg | TopBy::Mac => unreachable!("named keys handled above"),
            };
            let d = self.distinct(t);
            self.keyed.entry(key).or_default().add(t, d);
        }
    }
}

/// [`Key`] as a state keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
enum KeyWire {
    Node(crate::addr::NodeWire),
    Pair(crate::addr::NodeWire, crate::addr::NodeWire),
    Port(Protocol, u16),
    Class(FlowClass),
}

/// [`Stats`] as a state keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StatsWire {
    tuples: u64,
    allowed: u64,
    denied: u64,
    packets: Sum,
    bytes: Sum,
    distinct: Vec<u128>,
}

impl From<&Stats> for StatsWire {
    fn from(s: &Stats) -> StatsWire {
        StatsWire {
            tuples: s.tuples,
            allowed: s.allowed,
            denied: s.denied,
            packets: s.packets,
            bytes: s.bytes,
            distinct: s.distinct.iter().copied().collect(),
        }
    }
}

impl From<StatsWire> for Stats {
    fn from(s: StatsWire) -> Stats {
        Stats {
            tuples: s.tuples,
            allowed: s.allowed,
            denied: s.denied,
            packets: s.packets,
            bytes: s.bytes,
            distinct: s.distinct.into_iter().collect(),
        }
    }
}

type TopWire = (
    Vec<(KeyWire, StatsWire)>,
    Vec<(String, StatsWire)>,
    Vec<(String, NsgRules)>,
);

impl crate::state::incremental::Persist for TopAgg<'_> {
    fn save(&self) -> Vec<u8> {
        let keyed = self
            .keyed
            .iter()
            .map(|(k, v)| {
                let k = match *k {
                    Key::Node(n) => KeyWire::Node(n.into()),
                    Key::Pair(a, b) => KeyWire::Pair(a.into(), b.into()),
                    Key::Port(p, n) => KeyWire::Port(p, n),
                    Key::Class(c) => KeyWire::Class(c),
                };
                (k, StatsWire::from(v))
            })
            .collect();
        let named = self
            .named
            .iter()
            .map(|(k, v)| (k.clone(), v.into()))
            .collect();
        let nsgs = self
            .nsgs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        crate::state::incremental::save_cbor(&(keyed, named, nsgs) as &TopWire)
    }

    fn load_into(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (keyed, named, nsgs): TopWire = crate::state::incremental::load_cbor(bytes)?;
        let mut o = TopAgg::new(self.spec, self.book);
        for (k, v) in keyed {
            let k = match k {
                KeyWire::Node(n) => Key::Node(n.try_into()?),
                KeyWire::Pair(a, b) => Key::Pair(a.try_into()?, b.try_into()?),
                KeyWire::Port(p, n) => Key::Port(p, n),
                KeyWire::Class(c) => Key::Class(c),
            };
            o.keyed.insert(k, v.into());
        }
        o.named = named.into_iter().map(|(k, v)| (k, v.into())).collect();
        o.nsgs = nsgs.into_iter().collect();
        self.merge(o);
        Ok(())
    }
}

impl Fold for TopAgg<'_> {
    fn merge(&mut self, other: Self) {
        for (k, v) in other.keyed {
            self.keyed.entry(k).or_default().merge(v);
        }
        for (k, v) in other.named {
            self.named.entry(k).or_default().merge(v);
        }
        super::rules::merge_nsgs(&mut self.nsgs, other.nsgs);
    }
}

/// The one order of every top list (`top`, `graph`, the report): the ranked value, then
/// tuples, then bytes, each largest first, then the key ascending. A total order, so the
/// same question gets the same rows in the same order wherever it is asked.
pub fn ranking<V: Ord, T: Ord, B: Ord, K: Ord>(
    a: (V, T, B, K),
    b: (V, T, B, K),
) -> std::cmp::Ordering {
    b.0.cmp(&a.0)
        .then(b.1.cmp(&a.1))
        .then(b.2.cmp(&a.2))
        .then_with(|| a.3.cmp(&b.3))
}

/// One ranked row.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopRow {
    pub rank: usize,
    /// The key as text: an address, network, label, `src -> dst`, `443/tcp`, `nsg/rule`, …
    pub key: String,
    /// For address keys: `internal`, `external` or `label` (pairs: both, `a -> b`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// For single addresses: the `--labels` name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The metric ranked by.
    pub value: Sum,
    pub tuples: u64,
    pub allowed: u64,
    pub denied: u64,
    pub packets: Sum,
    pub bytes: Sum,
}

fn port_name(p: Protocol, port: u16) -> String {
    format!("{port}/{p}")
}

impl TopAgg<'_> {
    /// The top N rows in [`ranking`] order.
    pub fn rows(&self) -> Vec<TopRow> {
        let m = self.spec.metric;
        let book = self.book;
        let mut all: Vec<(Sum, Key, &Stats)> = self
            .keyed
            .iter()
            .map(|(k, s)| (s.value(m), *k, s))
            .collect();
        all.sort_by(|a, b| {
            ranking(
                (a.0, a.2.tuples, a.2.bytes, &a.1),
                (b.0, b.2.tuples, b.2.bytes, &b.1),
            )
        });
        let mut rows: Vec<TopRow> = Vec::new();
        let row = |key: String, scope, label, s: &Stats, v| TopRow {
            rank: 0,
            key,
            scope,
            label,
            value: v,
            tuples: s.tuples,
            allowed: s.allowed,
            denied: s.denied,
            packets: s.packets,
            bytes: s.bytes,
        };
        if self.named.is_empty() {
            for (v, k, s) in all.into_iter().take(self.spec.n) {
                let (key, scope, label) = match k {
                    Key::Node(n) => {
                        let label = match n {
                            Node::Ip(ip) => book.label(&ip).map(|(l, _)| l.to_string()),
                            _ => None,
                        };
                        (
                            book.node_name(&n),
                            Some(book.node_scope(&n).to_string()),
                            label,
                        )
                    }
                    Key::Pair(a, b) => (
                        format!("{} -> {}", book.node_name(&a), book.node_name(&b)),
                        Some(format!(
                            "{} -> {}",
                            book.node_scope(&a),
                            book.node_scope(&b)
                        )),
                        None,
                    ),
                    Key::Port(p, port) => (port_name(p, port), None, None),
                    Key::Class(c) => (c.name().to_string(), None, None),
                };
                rows.push(row(key, scope, label, s, v));
            }
        } else {
            // NSG keys are identities: shown by name (with the resource group where two
            // share a name), rule keys as `nsg/rule`.
            let labels = super::rules::nsg_labels(self.nsgs.iter().map(|(k, n)| (k.as_str(), n)));
            let shown = |k: &str| -> String {
                match self.spec.by {
                    TopBy::Nsg => labels.get(k).cloned().unwrap_or_else(|| k.to_string()),
                    TopBy::Rule => {
                        // The identity key holds two `/`: the rule follows the third.
                        let cut = k.match_indices('/').nth(2).map_or(k.len(), |(i, _)| i);
                        let (id, rule) = k.split_at(cut);
                        match labels.get(id) {
                            Some(l) => format!("{l}{rule}"),
                            None => k.to_string(),
                        }
                    }
                    _ => k.to_string(),
                }
            };
            let mut named: Vec<(Sum, String, &Stats)> = self
                .named
                .iter()
                .map(|(k, s)| (s.value(m), shown(k), s))
                .collect();
            named.sort_by(|a, b| {
                ranking(
                    (a.0, a.2.tuples, a.2.bytes, &a.1),
                    (b.0, b.2.tuples, b.2.bytes, &b.1),
                )
            });
            for (v, k, s) in named.into_iter().take(self.spec.n) {
                rows.push(row(k, None, None, s, v));
            }
        }
        for (i, r) in rows.iter_mut().enumerate() {
            r.rank = i + 1;
        }
        rows
    }
}
