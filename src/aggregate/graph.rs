//! Ingress and egress graphs. The ingress graph is built from inbound tuples, the egress
//! graph from outbound ones (direction is the NIC's view). Nodes are endpoints grouped by
//! `--group` (address, label, or prefix); edges carry protocols, destination ports, the
//! rules that decided the flows, allowed and denied tuples, and bytes.
//!
//! Edges fold into a mergeable map; the petgraph `DiGraph` is built once at the end, from
//! which DOT and JSON are written and fan-in / fan-out (distinct neighbours) are ranked.
//!
//! [`PairTally`] is the light form of the same edges at `--group ip` (tuples, denied tuples
//! and bytes per address pair), tallied per closed connection by the stitcher in `report`;
//! the report's talkers and flow pictures are its [`PairTally::top_ends`] and
//! [`PairTally::top_edges`], ranked like every other top list ([`busiest_first`]).

use super::connections::Tally;
use super::Fold;
use crate::addr::{AddressBook, Grouping, Node};
use crate::aggregate::rules::Sum;
use crate::hash::HMap;
use crate::model::{Decision, Direction, Protocol};
use crate::parse::{RuleTable, TableSink};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Deserialize;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Most destination ports listed per edge (the busiest; the rest are counted).
pub const PORTS_PER_EDGE: usize = 10;

#[derive(Clone, Debug, Default)]
struct EdgeStats {
    tuples: u64,
    allowed: u64,
    denied: u64,
    bytes: Sum,
    protocols: BTreeSet<Protocol>,
    dports: HMap<u16, u64>,
    rules: BTreeSet<String>,
}

/// The mergeable aggregate behind `graph`.
pub struct GraphAgg<'a> {
    direction: Direction,
    group: Grouping,
    book: &'a AddressBook,
    edges: HMap<(Node, Node), EdgeStats>,
}

impl<'a> GraphAgg<'a> {
    pub fn new(direction: Direction, group: Grouping, book: &'a AddressBook) -> GraphAgg<'a> {
        GraphAgg {
            direction,
            group,
            book,
            edges: HMap::default(),
        }
    }
}

impl TableSink for GraphAgg<'_> {
    fn table(&mut self, table: &RuleTable<'_>) {
        let rule = format!("{}/{}", table.ctx.nsg, table.ctx.rule);
        for t in table.tuples {
            if t.direction != self.direction {
                continue;
            }
            let k = (
                self.book.node(&t.src, self.group),
                self.book.node(&t.dst, self.group),
            );
            let e = self.edges.entry(k).or_default();
            e.tuples += 1;
            if t.decision == Decision::Deny {
                e.denied += 1;
            } else {
                e.allowed += 1;
            }
            e.bytes += t.bytes_s2d.unwrap_or(0) as Sum + t.bytes_d2s.unwrap_or(0) as Sum;
            e.protocols.insert(t.protocol);
            *e.dports.entry(t.dport).or_default() += 1;
            if !e.rules.contains(&rule) {
                e.rules.insert(rule.clone());
            }
        }
    }
}

/// [`EdgeStats`] as a state keeps it.
#[derive(Serialize, Deserialize)]
struct EdgeWire {
    tuples: u64,
    allowed: u64,
    denied: u64,
    bytes: Sum,
    protocols: Vec<Protocol>,
    dports: Vec<(u16, u64)>,
    rules: Vec<String>,
}

type GraphWire = Vec<(crate::addr::NodeWire, crate::addr::NodeWire, EdgeWire)>;

impl crate::state::incremental::Persist for GraphAgg<'_> {
    fn save(&self) -> Vec<u8> {
        let edges: GraphWire = self
            .edges
            .iter()
            .map(|((a, b), e)| {
                (
                    (*a).into(),
                    (*b).into(),
                    EdgeWire {
                        tuples: e.tuples,
                        allowed: e.allowed,
                        denied: e.denied,
                        bytes: e.bytes,
                        protocols: e.protocols.iter().copied().collect(),
                        dports: e.dports.iter().map(|(p, n)| (*p, *n)).collect(),
                        rules: e.rules.iter().cloned().collect(),
                    },
                )
            })
            .collect();
        crate::state::incremental::save_cbor(&edges)
    }

    fn load_into(&mut self, bytes: &[u8]) -> Result<(), String> {
        let edges: GraphWire = crate::state::incremental::load_cbor(bytes)?;
        let mut o = GraphAgg::new(self.direction, self.group, self.book);
        for (a, b, e) in edges {
            o.edges.insert(
                (a.try_into()?, b.try_into()?),
                EdgeStats {
                    tuples: e.tuples,
                    allowed: e.allowed,
                    denied: e.denied,
                    bytes: e.bytes,
                    protocols: e.protocols.into_iter().collect(),
                    dports: e.dports.into_iter().collect(),
                    rules: e.rules.into_iter().collect(),
                },
            );
        }
        self.merge(o);
        Ok(())
    }
}

impl Fold for GraphAgg<'_> {
    fn merge(&mut self, other: Self) {
        for (k, o) in other.edges {
            let e = self.edges.entry(k).or_default();
            e.tuples += o.tuples;
            e.allowed += o.allowed;
            e.denied += o.denied;
            e.bytes += o.bytes;
            e.protocols.extend(o.protocols);
            for (p, n) in o.dports {
                *e.dports.entry(p).or_default() += n;
            }
            e.rules.extend(o.rules);
        }
    }
}

/// Traffic by (source, destination) pair. IPv4 pairs, the common case, are packed into one
/// `u64` (source high, destination low: 32-byte entries); a pair with an IPv6 end is in `v6`.
#[derive(Default, Serialize, Deserialize)]
pub struct PairTally {
    pub v4: HMap<u64, Tally>,
    pub v6: HMap<(IpAddr, IpAddr), Tally>,
}

impl PairTally {
    pub fn merge(&mut self, mut o: PairTally) {
        self.drain_from(&mut o);
    }

    /// Merge `o` in and leave it empty, its memory kept (the stitcher's tallies of recent
    /// closes, reused blob after blob).
    pub fn drain_from(&mut self, o: &mut PairTally) {
        for (k, v) in o.v4.drain() {
            self.v4.entry(k).or_default().merge(&v);
        }
        for (k, v) in o.v6.drain() {
            self.v6.entry(k).or_default().merge(&v);
        }
    }

    /// The (source, destination) of a packed IPv4 pair key.
    pub fn unpack4(k: u64) -> (IpAddr, IpAddr) {
        let (s, d) = ((k >> 32) as u32, k as u32);
        (IpAddr::from(s.to_be_bytes()), IpAddr::from(d.to_be_bytes()))
    }

    /// Every pair with its tally, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = ((IpAddr, IpAddr), &Tally)> {
        let v4 = self.v4.iter().map(|(k, t)| (Self::unpack4(*k), t));
        v4.chain(self.v6.iter().map(|(k, t)| (*k, t)))
    }
}

impl PairTally {
    /// The busiest sources and destinations (at most `n` each), in [`busiest_first`] order.
    /// IPv4 totals are folded by `u32` (whose order is `IpAddr`'s among IPv4 addresses), IPv6
    /// ones by address; the two tops are then combined.
    #[allow(clippy::type_complexity)]
    pub fn top_ends(&self, n: usize) -> (Vec<(IpAddr, Tally)>, Vec<(IpAddr, Tally)>) {
        // Sources (`dst` false) or destinations; the two are folded at once.
        let end = |dst: bool| {
            let mut m4: HMap<u32, Tally> = HMap::default();
            for (k, st) in &self.v4 {
                let ip = if dst { *k as u32 } else { (k >> 32) as u32 };
                m4.entry(ip).or_default().merge(st);
            }
            let mut m6: HMap<IpAddr, Tally> = HMap::default();
            for ((a, b), st) in &self.v6 {
                m6.entry(if dst { *b } else { *a }).or_default().merge(st);
            }
            let mut v: Vec<(IpAddr, Tally)> = top_tallies(&m4, n)
                .into_iter()
                .map(|(ip, st)| (IpAddr::from(ip.to_be_bytes()), st))
                .collect();
            v.extend(top_tallies(&m6, n));
            v.sort_by(busiest_first);
            v.truncate(n);
            v
        };
        rayon::join(|| end(false), || end(true))
    }

    /// The busiest edges (both maps), in [`busiest_first`] order: the report's flow pictures.
    pub fn top_edges(&self, n: usize) -> Vec<((IpAddr, IpAddr), Tally)> {
        let mut v: Vec<((IpAddr, IpAddr), Tally)> = top_tallies(&self.v4, n)
            .into_iter()
            .map(|(k, st)| (PairTally::unpack4(k), st))
            .collect();
        v.extend(top_tallies(&self.v6, n));
        v.sort_by(busiest_first);
        v.truncate(n);
        v
    }
}

/// The `n` busiest keys of a tally map in [`busiest_first`] order.
pub fn top_tallies<K: Ord + Copy>(m: &HMap<K, Tally>, n: usize) -> Vec<(K, Tally)> {
    let mut v: Vec<(K, Tally)> = m.iter().map(|(k, s)| (*k, *s)).collect();
    if n > 0 && v.len() > n {
        v.select_nth_unstable_by(n - 1, busiest_first);
        v.truncate(n);
    }
    v.sort_by(busiest_first);
    v
}

/// [`crate::aggregate::top::ranking`] with tuples as the ranked value.
pub fn busiest_first<K: Ord>(a: &(K, Tally), b: &(K, Tally)) -> std::cmp::Ordering {
    crate::aggregate::top::ranking(
        (a.1.tuples, a.1.tuples, a.1.bytes, &a.0),
        (b.1.tuples, b.1.tuples, b.1.bytes, &b.0),
    )
}

/// Edge weight used to pick the top edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    Tuples,
    Bytes,
}

/// A node in the output.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GraphNode {
    pub id: usize,
    pub name: String,
    /// `internal`, `external` or `label`.
    pub scope: String,
}

/// An edge in the output.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GraphEdge {
    pub source: usize,
    pub target: usize,
    pub tuples: u64,
    pub allowed: u64,
    pub denied: u64,
    pub bytes: Sum,
    pub protocols: Vec<String>,
    /// The busiest destination ports, `port: tuples`, at most [`PORTS_PER_EDGE`].
    pub dports: BTreeMap<u16, u64>,
    /// Distinct destination ports on the edge (including those not listed).
    pub distinct_dports: usize,
    /// `nsg/rule` that decided the flows.
    pub rules: Vec<String>,
}

/// A fan-in or fan-out ranking entry.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Fan {
    pub name: String,
    /// Distinct neighbours (sources for fan-in, destinations for fan-out).
    pub neighbours: usize,
    pub tuples: u64,
}

/// The graph as written by `--format json`.
#[derive(Clone, Debug, Serialize)]
pub struct GraphReport {
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// Edges in the whole graph before `--top`.
    pub edges_total: usize,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Nodes by distinct sources (over all edges), most first.
    pub fan_in: Vec<Fan>,
    /// Nodes by distinct destinations (over all edges), most first.
    pub fan_out: Vec<Fan>,
}

impl GraphAgg<'_> {
    /// Build the petgraph graph of the top `n` edges by `weight` (ties by names) and the
    /// report. Fan-in and fan-out are ranked over all edges, and cut to `n`.
    pub fn report(&self, n: usize, weight: Weight) -> GraphReport {
        let book = self.book;
        let mut all: Vec<(&(Node, Node), &EdgeStats)> = self.edges.iter().collect();
        let w = |e: &EdgeStats| match weight {
            Weight::Tuples => e.tuples as Sum,
            Weight::Bytes => e.bytes,
        };
        all.sort_by(|a, b| {
            crate::aggregate::top::ranking(
                (w(a.1), a.1.tuples, a.1.bytes, a.0),
                (w(b.1), b.1.tuples, b.1.bytes, b.0),
            )
        });
        let total = all.len();

        // Fan-in / fan-out over every edge.
        let mut fin: BTreeMap<Node, (usize, u64)> = BTreeMap::new();
        let mut fout: BTreeMap<Node, (usize, u64)> = BTreeMap::new();
        for ((s, d), e) in &all {
            let x = fin.entry(*d).or_default();
            x.0 += 1;
            x.1 += e.tuples;
            let y = fout.entry(*s).or_default();
            y.0 += 1;
            y.1 += e.tuples;
        }
        let rank = |m: BTreeMap<Node, (usize, u64)>| {
            let mut v: Vec<(Node, (usize, u64))> = m.into_iter().collect();
            v.sort_by(|a, b| {
                b.1 .0
                    .cmp(&a.1 .0)
                    .then(b.1 .1.cmp(&a.1 .1))
                    .then(a.0.cmp(&b.0))
            });
            v.into_iter()
                .take(n)
                .map(|(node, (k, t))| Fan {
                    name: book.node_name(&node),
                    neighbours: k,
                    tuples: t,
                })
                .collect::<Vec<_>>()
        };

        let mut g: DiGraph<Node, &EdgeStats> = DiGraph::new();
        let mut index: BTreeMap<Node, NodeIndex> = BTreeMap::new();
        for ((s, d), e) in all.iter().take(n) {
            let si = *index.entry(*s).or_insert_with(|| g.add_node(*s));
            let di = *index.entry(*d).or_insert_with(|| g.add_node(*d));
            g.add_edge(si, di, e);
        }
        let nodes = g
            .node_indices()
            .map(|i| GraphNode {
                id: i.index(),
                name: book.node_name(&g[i]),
                scope: book.node_scope(&g[i]).to_string(),
            })
            .collect();
        let edges = g
            .edge_references()
            .map(|er| {
                let e = er.weight();
                let mut ports: Vec<(u16, u64)> = e.dports.iter().map(|(p, n)| (*p, *n)).collect();
                ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                GraphEdge {
                    source: er.source().index(),
                    target: er.target().index(),
                    tuples: e.tuples,
                    allowed: e.allowed,
                    denied: e.denied,
                    bytes: e.bytes,
                    protocols: e.protocols.iter().map(|p| p.to_string()).collect(),
                    dports: ports.iter().take(PORTS_PER_EDGE).copied().collect(),
                    distinct_dports: ports.len(),
                    rules: e.rules.iter().cloned().collect(),
                }
            })
            .collect();
        GraphReport {
            direction: match self.direction {
                Direction::Inbound => "ingress",
                Direction::Outbound => "egress",
            },
            edges_total: total,
            nodes,
            edges,
            fan_in: rank(fin),
            fan_out: rank(fout),
        }
    }
}

/// A DOT string literal: quotes, backslashes and line breaks escaped, control characters
/// dropped, so any name from a log stays one label.
pub fn dot_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    // Control and invisible characters (bidi overrides, zero-width) shown as escapes.
    for c in crate::text::term_safe(s).chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' | '\r' => o.push_str("\\n"),
            c if c.is_control() => {}
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl GraphReport {
    /// Graphviz DOT: sources on the left, destinations on the right; edge width by weight,
    /// red when any tuple was denied.
    pub fn to_dot(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "digraph {} {{",
            dot_quote(&format!("nsgflow {}", self.direction))
        );
        let _ = writeln!(
            o,
            "  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];"
        );
        for n in &self.nodes {
            let colour = match n.scope.as_str() {
                "internal" => "#dbeafe",
                "label" => "#dcfce7",
                _ => "#fee2e2",
            };
            let _ = writeln!(
                o,
                "  n{} [label={}, style=filled, fillcolor=\"{colour}\"];",
                n.id,
                dot_quote(&n.name)
            );
        }
        let max = self
            .edges
            .iter()
            .map(|e| e.tuples)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for e in &self.edges {
            let ports: Vec<String> = e.dports.keys().map(|p| p.to_string()).collect();
            let more = if e.distinct_dports > e.dports.len() {
                ",…"
            } else {
                ""
            };
            let label = format!(
                "{} {}{}\n{} tuples ({} denied), {} bytes\n{}",
                e.protocols.join("/"),
                ports.join(","),
                more,
                e.tuples,
                e.denied,
                e.bytes,
                e.rules.join("\n")
            );
            let width = 1.0 + 4.0 * (e.tuples as f64 / max);
            let colour = if e.denied > 0 { "#dc2626" } else { "#2563eb" };
            let _ = writeln!(
                o,
                "  n{} -> n{} [label={}, penwidth={width:.2}, color=\"{colour}\"];",
                e.source,
                e.target,
                dot_quote(&label)
            );
        }
        o.push_str("}\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_labels_are_escaped() {
        assert_eq!(dot_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        // Control and bidi characters are shown as escapes (whose backslash DOT escapes).
        assert_eq!(
            dot_quote("x\ny\u{1b}\u{202e}"),
            r#""x\\ny\\u{1b}\\u{202e}""#
        );
        assert_eq!(dot_quote("}; digraph evil {"), "\"}; digraph evil {\"");
    }
}
