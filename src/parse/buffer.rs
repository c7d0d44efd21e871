//! A blob's rule tables copied out of the blob, to be replayed later, in the same order and
//! with the same contents, into any [`TableSink`].
//!
//! The parser hands out tables that borrow the blob's bytes and live one record. A stage
//! that must see a NIC's tables in time order (the connection stitcher) can still let
//! another thread parse a later blob: that thread parses into a `TableBuffer`, and the
//! stitching thread replays it when its turn comes. One buffer holds all tuples in one
//! vector and all context strings in one string, so a buffer costs a few allocations, not
//! one per table.

use super::{RuleTable, TableSink};
use crate::model::{Family, FlowTuple, GroupContext};
use std::ops::Range;

/// The context of one buffered table: strings as ranges into [`TableBuffer::text`].
struct Ctx {
    family: Family,
    /// nsg, rule, mac, subscription, resource_id, target_resource_id, flow_log_resource_id.
    fields: [Range<u32>; 7],
    record_index: usize,
    tuples: Range<usize>,
}

/// Rule tables kept for replay (see the module docs). Reusable: `clear` keeps capacity.
#[derive(Default)]
pub struct TableBuffer {
    tables: Vec<Ctx>,
    tuples: Vec<FlowTuple>,
    indices: Vec<u32>,
    text: String,
}

impl TableBuffer {
    pub fn clear(&mut self) {
        self.tables.clear();
        self.tuples.clear();
        self.indices.clear();
        self.text.clear();
    }

    /// Tables held.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Tuples held, over all tables.
    pub fn tuples(&self) -> usize {
        self.tuples.len()
    }

    fn push_str(&mut self, s: &str) -> Range<u32> {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        start..self.text.len() as u32
    }

    /// Hand every table to `sink`, in the order they were buffered.
    pub fn replay(&self, sink: &mut impl TableSink) {
        let s = |r: &Range<u32>| &self.text[r.start as usize..r.end as usize];
        for t in &self.tables {
            let [nsg, rule, mac, sub, rid, target, flow_log] = &t.fields;
            sink.table(&RuleTable {
                ctx: GroupContext {
                    family: t.family,
                    nsg: s(nsg),
                    rule: s(rule),
                    mac: s(mac),
                    subscription: s(sub),
                    resource_id: s(rid),
                    target_resource_id: s(target),
                    flow_log_resource_id: s(flow_log),
                    record_index: t.record_index,
                },
                tuples: &self.tuples[t.tuples.clone()],
                indices: &self.indices[t.tuples.clone()],
            });
        }
    }
}

impl TableSink for TableBuffer {
    fn table(&mut self, table: &RuleTable<'_>) {
        let c = &table.ctx;
        let fields = [
            self.push_str(c.nsg),
            self.push_str(c.rule),
            self.push_str(c.mac),
            self.push_str(c.subscription),
            self.push_str(c.resource_id),
            self.push_str(c.target_resource_id),
            self.push_str(c.flow_log_resource_id),
        ];
        let start = self.tuples.len();
        self.tuples.extend_from_slice(table.tuples);
        self.indices.extend_from_slice(table.indices);
        self.tables.push(Ctx {
            family: c.family,
            fields,
            record_index: c.record_index,
            tuples: start..self.tuples.len(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_tuple;

    /// Records each table as text: context and tuples.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl TableSink for Log {
        fn table(&mut self, t: &RuleTable<'_>) {
            let c = &t.ctx;
            self.0.push(format!(
                "{:?} {} {} {} {} {} {} {} #{} {:?} {:?}",
                c.family,
                c.nsg,
                c.rule,
                c.mac,
                c.subscription,
                c.resource_id,
                c.target_resource_id,
                c.flow_log_resource_id,
                c.record_index,
                t.tuples,
                t.indices
            ));
        }
    }

    #[test]
    fn replay_gives_the_tables_as_buffered() {
        let ts: Vec<FlowTuple> = [
            "1000,10.0.0.4,52.1.1.1,40000,443,T,O,A,B,,,,",
            "1060,10.0.0.4,52.1.1.1,40000,443,T,O,A,E,3,400,2,500",
            "1070,203.0.113.9,10.0.0.4,5555,22,T,I,D,B,,,,",
        ]
        .iter()
        .map(|t| parse_tuple(t, Family::NsgV2).unwrap())
        .collect();
        let ctx = |rule: &'static str, rec: usize| GroupContext {
            family: Family::NsgV2,
            nsg: "WEB-NSG",
            rule,
            mac: "000d3a000001",
            subscription: "sub",
            resource_id: "/SUBSCRIPTIONS/sub/NSG/WEB-NSG",
            target_resource_id: "",
            flow_log_resource_id: "fl",
            record_index: rec,
        };
        let tables = [
            RuleTable {
                ctx: ctx("AllowOut", 0),
                tuples: &ts[..2],
                indices: &[0, 3],
            },
            RuleTable {
                ctx: ctx("DenyAllInBound", 1),
                tuples: &ts[2..],
                indices: &[7],
            },
        ];
        let (mut direct, mut buf) = (Log::default(), TableBuffer::default());
        for t in &tables {
            direct.table(t);
            buf.table(t);
        }
        assert_eq!((buf.len(), buf.tuples()), (2, 3));
        let mut replayed = Log::default();
        buf.replay(&mut replayed);
        assert_eq!(replayed.0, direct.0);
        assert!(replayed.0[1].contains("DenyAllInBound") && replayed.0[1].contains("#1"));
        buf.clear();
        assert!(buf.is_empty());
    }
}
