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

/// An allowed connection with no tuple for this long is closed as `open` (no E logged):
/// flow logs write a C tuple about every 5 minutes while a flow lives (FORMATS.md), so three
/// missed intervals mean it is gone. Keeps memory to the connections really in flight.
pub const IDLE_CLOSE_MS: i64 = 15 * 60_000;

/// How often (in log time) idle connections are swept: a sweep walks every open connection,
/// so it runs every few minutes of data, not on every table.
const SWEEP_EVERY_MS: i64 = 3 * 60_000;

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

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    mac: u32,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    protocol: Protocol,
    direction: Direction,
}

/// Three word writes instead of the derived field-by-field hash (the stitcher does a map
/// operation per tuple); equality stays exact.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        fn ip(a: &IpAddr) -> u64 {
            match a {
                IpAddr::V4(v) => u32::from(*v) as u64,
                IpAddr::V6(v) => {
                    let x = u128::from(*v);
                    (x as u64) ^ ((x >> 64) as u64).rotate_left(29) ^ (1 << 63)
                }
            }
        }
        let proto = match self.protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Number(n) => 0x100 | n as u64,
            Protocol::Letter(l) => 0x200 | l as u64,
        };
        h.write_u64(ip(&self.src) << 32 ^ ip(&self.dst));
        h.write_u64(
            (self.sport as u64) << 48
                | (self.dport as u64) << 32
                | proto << 20
                | (self.direction as u64) << 19
                | (self.mac as u64 & 0x7FFFF),
        );
    }
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

/// Connections summarised instead of kept: counts per status and the top few by bytes and
/// by duration. Used by `report`, which needs no full list.
pub struct ConnSummary {
    pub by_status: [u64; 4],
    pub top_bytes: TopConns,
    pub top_duration: TopConns,
}

impl Default for ConnSummary {
    fn default() -> Self {
        ConnSummary {
            by_status: [0; 4],
            top_bytes: TopConns::new(order_by_bytes),
            top_duration: TopConns::new(order_by_duration),
        }
    }
}

impl ConnSummary {
    pub fn merge(&mut self, o: ConnSummary) {
        for (a, b) in self.by_status.iter_mut().zip(o.by_status) {
            *a += b;
        }
        self.top_bytes.merge(o.top_bytes);
        self.top_duration.merge(o.top_duration);
    }
}

/// How many top connections [`TopConns`] keeps.
pub const TOP_CONNECTIONS: usize = 15;

/// An order of connections (best first).
pub type ConnOrder = fn(&Connection, &Connection) -> std::cmp::Ordering;

/// A total order on connections, for deterministic ties.
#[allow(clippy::type_complexity)]
pub fn conn_key(
    c: &Connection,
) -> (
    i64,
    &str,
    IpAddr,
    IpAddr,
    u16,
    u16,
    Protocol,
    &str,
    i64,
    &str,
    &str,
    &str,
) {
    (
        c.start_ms,
        &c.mac,
        c.src,
        c.dst,
        c.sport,
        c.dport,
        c.protocol,
        c.direction,
        c.end_ms,
        &c.nsg,
        &c.rule,
        c.family,
    )
}

/// Most bytes first, ties by [`conn_key`].
pub fn order_by_bytes(a: &Connection, b: &Connection) -> std::cmp::Ordering {
    b.bytes()
        .cmp(&a.bytes())
        .then_with(|| conn_key(a).cmp(&conn_key(b)))
}

/// Longest first, ties by [`conn_key`].
pub fn order_by_duration(a: &Connection, b: &Connection) -> std::cmp::Ordering {
    b.duration_ms()
        .cmp(&a.duration_ms())
        .then_with(|| conn_key(a).cmp(&conn_key(b)))
}

/// The best [`TOP_CONNECTIONS`] connections under an order, kept without sorting every
/// arrival: a connection is copied only when it can beat the current N-th best.
pub struct TopConns {
    order: ConnOrder,
    v: Vec<Connection>,
    /// The N-th best so far, once there are N.
    bar: Option<Connection>,
}

impl TopConns {
    pub fn new(order: ConnOrder) -> TopConns {
        TopConns {
            order,
            v: Vec::new(),
            bar: None,
        }
    }

    /// The current N-th best, if there are N.
    pub fn bar(&self) -> Option<&Connection> {
        self.bar.as_ref()
    }

    pub fn offer(&mut self, c: &Connection) {
        if let Some(bar) = &self.bar {
            if !(self.order)(c, bar).is_lt() {
                return;
            }
        }
        self.v.push(c.clone());
        if self.v.len() >= 4 * TOP_CONNECTIONS
            || (self.bar.is_none() && self.v.len() >= TOP_CONNECTIONS)
        {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let order = self.order;
        if self.v.len() > TOP_CONNECTIONS {
            self.v.select_nth_unstable_by(TOP_CONNECTIONS - 1, order);
            self.v.truncate(TOP_CONNECTIONS);
        }
        if self.v.len() == TOP_CONNECTIONS {
            self.bar = self.v.iter().max_by(|a, b| order(a, b)).cloned();
        }
    }

    pub fn merge(&mut self, o: TopConns) {
        for c in &o.v {
            self.offer(c);
        }
    }

    /// Best first.
    pub fn sorted(&self) -> Vec<Connection> {
        let mut v = self.v.clone();
        v.sort_by(self.order);
        v.truncate(TOP_CONNECTIONS);
        v
    }
}

/// Stitches one NIC's (or several NICs') tuples in time order.
#[derive(Default)]
pub struct Stitcher {
    names: Vec<Arc<str>>,
    ids: FxHashMap<String, u32>,
    open: FxHashMap<Key, Open>,
    /// Connections closed so far, in closing order (unless summarising).
    pub done: Vec<Connection>,
    /// When set, closed connections are summarised here instead of kept in `done`.
    pub summary: Option<ConnSummary>,
    sorted: Vec<FlowTuple>,
    /// Latest tuple time seen, and when idle connections were last swept.
    now_ms: i64,
    swept_ms: i64,
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
        if let Some(sum) = &mut self.summary {
            sum.by_status[status as usize] += 1;
            // Build the connection only if it can enter a top list.
            let bytes = o.c[1] + o.c[3];
            let dur = o.end_ms - o.start_ms;
            let may_b = sum.top_bytes.bar().is_none_or(|b| bytes >= b.bytes());
            let may_d = sum
                .top_duration
                .bar()
                .is_none_or(|b| dur >= b.duration_ms());
            if !(may_b || may_d) {
                return;
            }
            let c = self.build(k, o, status);
            let sum = self.summary.as_mut().expect("summary mode");
            sum.top_bytes.offer(&c);
            sum.top_duration.offer(&c);
            return;
        }
        let c = self.build(k, o, status);
        self.done.push(c);
    }

    fn build(&self, k: Key, o: Open, status: Status) -> Connection {
        Connection {
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
        }
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

    /// Close connections that can no longer continue: denied ones past the retry window and
    /// allowed ones idle for [`IDLE_CLOSE_MS`]. Their status is what `finish` would give.
    fn sweep(&mut self) {
        let now = self.now_ms;
        let expired: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, o)| {
                let idle = now - o.end_ms;
                (o.denied && idle > RETRY_WINDOW_MS) || idle > IDLE_CLOSE_MS
            })
            .map(|(k, _)| *k)
            .collect();
        // Closing order does not matter: summaries are order-free and `take_sorted` sorts.
        for k in expired {
            let o = self.open.remove(&k).expect("present");
            let st = Self::status_at_end(&o);
            self.close(k, o, st);
        }
        self.swept_ms = now;
    }

    /// Close everything still open (end of the NIC's data).
    pub fn finish(&mut self) {
        self.now_ms = 0;
        self.swept_ms = 0;
        let rest: Vec<(Key, Open)> = self.open.drain().collect();
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
        // Tables are time-ordered already; only tuples sharing a timestamp need E before C
        // before B. Use the table as it is when it is in that order (the usual case), else a
        // reordered copy: sorted by time, each same-time run partitioned by rank.
        let in_order = table
            .tuples
            .windows(2)
            .all(|w| (w[0].time_ms, rank(&w[0])) <= (w[1].time_ms, rank(&w[1])));
        let mut sorted = std::mem::take(&mut self.sorted);
        sorted.clear();
        if !in_order {
            sorted.extend_from_slice(table.tuples);
            if !sorted.is_sorted_by_key(|t| t.time_ms) {
                sorted.sort_by_key(|t| t.time_ms);
            }
            let mut i = 0;
            while i < sorted.len() {
                let mut j = i + 1;
                while j < sorted.len() && sorted[j].time_ms == sorted[i].time_ms {
                    j += 1;
                }
                if j - i > 1 && !sorted[i..j].is_sorted_by_key(rank) {
                    // A stable three-way partition (E, C, B/D) of the run: no comparison sort.
                    let run: Vec<FlowTuple> = sorted[i..j].to_vec();
                    let mut at = i;
                    for r in 0..3 {
                        for t in run.iter().filter(|t| rank(t) == r) {
                            sorted[at] = *t;
                            at += 1;
                        }
                    }
                }
                i = j;
            }
        }
        let ordered: &[FlowTuple] = if in_order { table.tuples } else { &sorted };
        for t in ordered {
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
                // A retry within the window joins the series; anything else starts anew.
                let mut closed = None;
                match self.open.entry(k) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        let o = e.get_mut();
                        if o.denied && t.time_ms - o.end_ms <= RETRY_WINDOW_MS {
                            add(o, t);
                        } else {
                            let mut n = fresh(t);
                            add(&mut n, t);
                            closed = Some(std::mem::replace(o, n));
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let mut n = fresh(t);
                        add(&mut n, t);
                        v.insert(n);
                    }
                }
                if let Some(old) = closed {
                    let st = Self::status_at_end(&old);
                    self.close(k, old, st);
                }
                continue;
            }
            // An allowed tuple never joins a denied series or a connection idle past
            // IDLE_CLOSE_MS: the same rule the sweep applies, so results do not depend on
            // when a sweep ran. One map operation per tuple in the common cases.
            let stale = |o: &Open| o.denied || t.time_ms - o.end_ms > IDLE_CLOSE_MS;
            match t.state {
                // NSG v1: no state; each allowed tuple stands alone.
                None => {
                    let mut o = fresh(t);
                    add(&mut o, t);
                    self.close(k, o, Status::Stateless);
                }
                Some(FlowState::Begin) => {
                    let mut o = fresh(t);
                    add(&mut o, t);
                    let replaced = match self.open.entry(k) {
                        std::collections::hash_map::Entry::Occupied(mut e) => {
                            Some(std::mem::replace(e.get_mut(), o))
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(o);
                            None
                        }
                    };
                    if let Some(old) = replaced {
                        let st = Self::status_at_end(&old);
                        self.close(k, old, st);
                    }
                }
                Some(FlowState::Continuing) => {
                    let mut closed = None;
                    match self.open.entry(k) {
                        std::collections::hash_map::Entry::Occupied(mut e) => {
                            if stale(e.get()) {
                                let mut o = fresh(t);
                                add(&mut o, t);
                                closed = Some(std::mem::replace(e.get_mut(), o));
                            } else {
                                add(e.get_mut(), t);
                            }
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            let mut o = fresh(t);
                            add(&mut o, t);
                            v.insert(o);
                        }
                    }
                    if let Some(old) = closed {
                        let st = Self::status_at_end(&old);
                        self.close(k, old, st);
                    }
                }
                Some(FlowState::End) => {
                    let mut o = match self.open.remove(&k) {
                        Some(o) if !stale(&o) => o,
                        Some(old) => {
                            let st = Self::status_at_end(&old);
                            self.close(k, old, st);
                            fresh(t)
                        }
                        None => fresh(t),
                    };
                    add(&mut o, t);
                    self.close(k, o, Status::Completed);
                }
                Some(FlowState::Denied) => unreachable!("VNet D is a deny decision"),
            }
        }
        if let Some(last) = ordered.last() {
            self.now_ms = self.now_ms.max(last.time_ms);
        }
        self.sorted = sorted;
        if self.now_ms - self.swept_ms > SWEEP_EVERY_MS {
            self.sweep();
        }
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
