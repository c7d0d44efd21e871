//! Connections: the B/C/E tuples (and VNet `D`) of one 5-tuple and direction on one NIC
//! stitched into one connection with start, end, duration, and packets and bytes each way
//! (the sum of the C and E deltas, see FORMATS.md "Counters of C and E are deltas").
//!
//! A NIC's blobs are read in time order by one thread, so connections that span records,
//! blobs and hours are whole; NICs are spread over threads. Within one timestamp, `E` is
//! applied before `C` and `B`, so a reused source port (E of the old and B of the new flow in
//! the same millisecond) closes the old connection and opens a new one, whatever order the
//! log wrote them in.
//!
//! Status:
//! - `completed`: an `E` was logged;
//! - `open`: no `E` by the end of the data (or before the next `B` of the same 5-tuple);
//! - `denied`: denied tuples; retries of the same 5-tuple within [`RETRY_WINDOW_MS`] are one
//!   denied connection with several attempts;
//! - `stateless`: allowed, only `B` and no counts — what non-default inbound allow rules log
//!   unless the VNet sets `FlowTimeoutInMinutes` (FORMATS.md), and every NSG v1 allow.

use crate::model::{Decision, Direction, Family, FlowState, FlowTuple, Protocol};
use crate::parse::{RuleTable, TableSink};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

fn display<S: serde::Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// Denied retries of one 5-tuple closer than this are one attempt series. TCP SYN retries
/// back off 1, 2, 4, 8, 16, 32 s (Linux `tcp_syn_retries` = 6: about 63 s in all); two
/// minutes covers that with room for clock granularity.
pub const RETRY_WINDOW_MS: i64 = 120_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    Open,
    Denied,
    Stateless,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Open => "open",
            Status::Denied => "denied",
            Status::Stateless => "stateless",
        }
    }
}

/// One stitched connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub start_ms: i64,
    pub end_ms: i64,
    pub nsg: Arc<str>,
    pub rule: Arc<str>,
    /// NIC MAC, normalised.
    pub mac: Arc<str>,
    pub family: &'static str,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    #[serde(serialize_with = "display")]
    pub protocol: Protocol,
    pub direction: &'static str,
    pub status: Status,
    /// Tuples stitched (for denied connections: attempts).
    pub tuples: u64,
    pub packets_src_to_dst: u64,
    pub bytes_src_to_dst: u64,
    pub packets_dst_to_src: u64,
    pub bytes_dst_to_src: u64,
}

impl Connection {
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
    pub fn bytes(&self) -> u64 {
        self.bytes_src_to_dst + self.bytes_dst_to_src
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    mac: u32,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    protocol: Protocol,
    direction: Direction,
}

struct Open {
    start_ms: i64,
    end_ms: i64,
    nsg: u32,
    rule: u32,
    family: Family,
    denied: bool,
    counted: bool,
    tuples: u64,
    c: [u64; 4],
}

/// Stitches one NIC's (or several NICs') tuples in time order.
#[derive(Default)]
pub struct Stitcher {
    names: Vec<Arc<str>>,
    ids: FxHashMap<String, u32>,
    open: FxHashMap<Key, Open>,
    /// Connections closed so far, in closing order.
    pub done: Vec<Connection>,
    sorted: Vec<FlowTuple>,
}

fn rank(t: &FlowTuple) -> u8 {
    match t.state {
        Some(FlowState::End) => 0,
        Some(FlowState::Continuing) => 1,
        _ => 2,
    }
}

impl Stitcher {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(i) = self.ids.get(s) {
            return *i;
        }
        self.names.push(Arc::from(s));
        let i = (self.names.len() - 1) as u32;
        self.ids.insert(s.to_string(), i);
        i
    }

    fn close(&mut self, k: Key, o: Open, status: Status) {
        self.done.push(Connection {
            start_ms: o.start_ms,
            end_ms: o.end_ms,
            nsg: self.names[o.nsg as usize].clone(),
            rule: self.names[o.rule as usize].clone(),
            mac: self.names[k.mac as usize].clone(),
            family: o.family.name(),
            src: k.src,
            sport: k.sport,
            dst: k.dst,
            dport: k.dport,
            protocol: k.protocol,
            direction: match k.direction {
                Direction::Inbound => "in",
                Direction::Outbound => "out",
            },
            status,
            tuples: o.tuples,
            packets_src_to_dst: o.c[0],
            bytes_src_to_dst: o.c[1],
            packets_dst_to_src: o.c[2],
            bytes_dst_to_src: o.c[3],
        });
    }

    fn status_at_end(o: &Open) -> Status {
        if o.denied {
            Status::Denied
        } else if o.counted {
            Status::Open
        } else {
            Status::Stateless
        }
    }

    /// Close everything still open (end of the NIC's data).
    pub fn finish(&mut self) {
        let mut rest: Vec<(Key, Open)> = self.open.drain().collect();
        rest.sort_by_key(|(k, o)| (o.start_ms, k.src, k.dst, k.sport, k.dport));
        for (k, o) in rest {
            let st = Self::status_at_end(&o);
            self.close(k, o, st);
        }
    }

    /// Closed connections in a deterministic order (start, then the 5-tuple).
    pub fn take_sorted(&mut self) -> Vec<Connection> {
        let mut v = std::mem::take(&mut self.done);
        v.sort_by(|a, b| {
            (
                a.start_ms,
                &a.mac,
                a.src,
                a.dst,
                a.sport,
                a.dport,
                &a.protocol,
                a.direction,
                a.end_ms,
            )
                .cmp(&(
                    b.start_ms,
                    &b.mac,
                    b.src,
                    b.dst,
                    b.sport,
                    b.dport,
                    &b.protocol,
                    b.direction,
                    b.end_ms,
                ))
        });
        v
    }
}

impl TableSink for Stitcher {
    fn table(&mut self, table: &RuleTable<'_>) {
        if table.tuples.is_empty() {
            return;
        }
        let ctx = &table.ctx;
        let mac = self.id(&ctx.mac_normalized());
        let nsg = self.id(ctx.nsg);
        let rule = self.id(ctx.rule);
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.clear();
        sorted.extend_from_slice(table.tuples);
        sorted.sort_by_key(|t| (t.time_ms, rank(t)));
        for t in &sorted {
            let k = Key {
                mac,
                src: t.src,
                dst: t.dst,
                sport: t.sport,
                dport: t.dport,
                protocol: t.protocol,
                direction: t.direction,
            };
            let fresh = |t: &FlowTuple| Open {
                start_ms: t.time_ms,
                end_ms: t.time_ms,
                nsg,
                rule,
                family: ctx.family,
                denied: t.decision == Decision::Deny,
                counted: false,
                tuples: 0,
                c: [0; 4],
            };
            let add = |o: &mut Open, t: &FlowTuple| {
                o.tuples += 1;
                o.end_ms = o.end_ms.max(t.time_ms);
                let c = [t.packets_s2d, t.bytes_s2d, t.packets_d2s, t.bytes_d2s];
                if c.iter().any(|x| x.is_some()) {
                    o.counted = true;
                }
                for (a, b) in o.c.iter_mut().zip(c) {
                    *a += b.unwrap_or(0);
                }
            };
            if t.decision == Decision::Deny {
                if let Some(o) = self.open.get_mut(&k) {
                    if o.denied && t.time_ms - o.end_ms <= RETRY_WINDOW_MS {
                        add(o, t);
                        continue;
                    }
                }
                if let Some(old) = self.open.remove(&k) {
                    let st = Self::status_at_end(&old);
                    self.close(k, old, st);
                }
                let mut o = fresh(t);
                add(&mut o, t);
                self.open.insert(k, o);
                continue;
            }
            match t.state {
                // NSG v1: no state; each allowed tuple stands alone.
                None => {
                    let mut o = fresh(t);
                    add(&mut o, t);
                    self.close(k, o, Status::Stateless);
                }
                Some(FlowState::Begin) => {
                    if let Some(old) = self.open.remove(&k) {
                        let st = Self::status_at_end(&old);
                        self.close(k, old, st);
                    }
                    let mut o = fresh(t);
                    add(&mut o, t);
                    self.open.insert(k, o);
                }
                Some(FlowState::Continuing) => {
                    let o = self.open.entry(k).or_insert_with(|| fresh(t));
                    add(o, t);
                }
                Some(FlowState::End) => {
                    let mut o = self.open.remove(&k).unwrap_or_else(|| fresh(t));
                    add(&mut o, t);
                    self.close(k, o, Status::Completed);
                }
                Some(FlowState::Denied) => unreachable!("VNet D is a deny decision"),
            }
        }
        self.sorted = sorted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupContext;
    use crate::parse::parse_tuple;

    fn feed(s: &mut Stitcher, family: Family, rule: &str, tuples: &[&str]) {
        let ts: Vec<FlowTuple> = tuples
            .iter()
            .map(|t| parse_tuple(t, family).unwrap())
            .collect();
        let idx: Vec<u32> = (0..ts.len() as u32).collect();
        s.table(&RuleTable {
            ctx: GroupContext {
                family,
                nsg: "NSG",
                rule,
                mac: "000d3a000001",
                subscription: "",
                resource_id: "",
                target_resource_id: "",
                flow_log_resource_id: "",
                record_index: 0,
            },
            tuples: &ts,
            indices: &idx,
        });
    }

    #[test]
    fn begin_continue_end_sums_deltas_across_tables() {
        let mut s = Stitcher::default();
        let v2 = Family::NsgV2;
        feed(
            &mut s,
            v2,
            "R",
            &["1000,10.0.0.4,52.1.1.1,40000,443,T,O,A,B,,,,"],
        );
        feed(
            &mut s,
            v2,
            "R",
            &["1300,10.0.0.4,52.1.1.1,40000,443,T,O,A,C,1021,500,52,600"],
        );
        feed(
            &mut s,
            v2,
            "R",
            &["1400,10.0.0.4,52.1.1.1,40000,443,T,O,A,E,8005,700,47,800"],
        );
        s.finish();
        let c = s.take_sorted();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Completed);
        assert_eq!(
            c[0].packets_src_to_dst + c[0].packets_dst_to_src,
            1021 + 52 + 8005 + 47
        );
        assert_eq!(c[0].duration_ms(), 400_000);
        assert_eq!(&*c[0].mac, "000D3A000001");
    }

    #[test]
    fn reused_source_port_in_one_millisecond_is_two_connections() {
        let mut s = Stitcher::default();
        feed(
            &mut s,
            Family::Vnet,
            "R",
            &[
                "1735636357000,10.1.0.4,20.10.127.193,56354,443,6,O,B,NX,0,0,0,0",
                "1735636357995,10.1.0.4,20.10.127.193,56354,443,6,O,B,NX,0,0,0,0",
                "1735636357995,10.1.0.4,20.10.127.193,56354,443,6,O,E,NX,8,5183,9,6707",
                "1735636363510,10.1.0.4,20.10.127.193,56354,443,6,O,E,NX,10,5291,10,6809",
            ],
        );
        s.finish();
        let c = s.take_sorted();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].status, c[0].bytes()),
            (Status::Completed, 5183 + 6707)
        );
        assert_eq!(
            (c[1].status, c[1].bytes()),
            (Status::Completed, 5291 + 6809)
        );
        assert_eq!(c[1].start_ms, 1_735_636_357_995);
    }

    #[test]
    fn denied_retries_stateless_and_open() {
        let mut s = Stitcher::default();
        let v2 = Family::NsgV2;
        feed(
            &mut s,
            v2,
            "DefaultRule_DenyAllInBound",
            &[
                "1000,185.1.1.1,10.0.0.4,5000,22,T,I,D,B,,,,",
                "1003,185.1.1.1,10.0.0.4,5000,22,T,I,D,B,,,,",
                "1009,185.1.1.1,10.0.0.4,5000,22,T,I,D,B,,,,",
                "2000,185.1.1.1,10.0.0.4,5000,22,T,I,D,B,,,,",
            ],
        );
        feed(
            &mut s,
            v2,
            "UserRule_AllowSsh",
            &["1000,10.255.0.4,10.0.0.4,6000,22,T,I,A,B,,,,"],
        );
        feed(
            &mut s,
            v2,
            "R",
            &["1500,10.0.0.4,52.1.1.1,40000,443,T,O,A,C,1,2,3,4"],
        );
        s.finish();
        let c = s.take_sorted();
        let st: Vec<(Status, u64)> = c.iter().map(|c| (c.status, c.tuples)).collect();
        assert_eq!(
            st,
            // The first two both start at 1000 s: 10.255.0.4 sorts before 185.1.1.1.
            vec![
                (Status::Stateless, 1),
                (Status::Denied, 3),
                (Status::Open, 1),
                (Status::Denied, 1)
            ]
        );
    }
}
