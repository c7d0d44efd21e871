//! The connection folds: the stitcher and what it feeds ([`ConnFold`] for the report,
//! [`TopConnections`] for `top --by connection`, [`ConnRows`] for `connections`).
//!
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
//!   denied connection with several attempts, kept apart from any allowed connection of the
//!   same 5-tuple (a denied attempt does not end it);
//! - `stateless`: allowed, only `B` and no counts — what non-default inbound allow rules log
//!   unless the VNet sets `FlowTimeoutInMinutes` (FORMATS.md), and every NSG v1 allow.

use crate::aggregate::rules::Sum;
use crate::hash::HMap;
use crate::model::{Decision, Direction, Family, FlowState, FlowTuple, Protocol};
use crate::parse::{RuleTable, TableSink};
use hashbrown::hash_table::Entry;
use serde::Serialize;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;

fn display<S: serde::Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// An allowed connection with no tuple for this long is closed as `open` (no E logged):
/// flow logs write a C tuple about every 5 minutes while a flow lives (FORMATS.md), so three
/// missed intervals mean it is gone. Keeps memory to the connections really in flight.
pub const IDLE_CLOSE_MS: i64 = 15 * 60_000;

/// How often (in log time) idle allowed connections are swept: a sweep walks every open
/// connection, so it runs every few minutes of data, not on every table.
const SWEEP_EVERY_MS: i64 = 5 * 60_000;

/// How often denied series past the retry window are swept. They are kept apart from the
/// allowed connections, in a map this keeps small (about a retry window of scans), so that
/// the scanner traffic that dominates internet-facing NSGs stays in cache.
const SWEEP_DENIED_EVERY_MS: i64 = 60_000;

/// Denied retries of one 5-tuple closer than this are one attempt series. TCP SYN retries
/// back off 1, 2, 4, 8, 16, 32 s (Linux `tcp_syn_retries` = 6: about 63 s in all); two
/// minutes covers that with room for clock granularity.
pub const RETRY_WINDOW_MS: i64 = 120_000;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
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

/// One stitched connection. In JSON its packet and byte counts are `null` when none of its
/// tuples logged one (NSG v1, denied attempts, `B`-only flows): "not logged", never 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "ConnectionJson")]
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
    /// Some tuple of it logged a packet or byte count.
    pub counters_logged: bool,
}

/// [`Connection`] as JSON writes it.
#[derive(Serialize)]
struct ConnectionJson {
    start_ms: i64,
    end_ms: i64,
    nsg: Arc<str>,
    rule: Arc<str>,
    mac: Arc<str>,
    family: &'static str,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    #[serde(serialize_with = "display")]
    protocol: Protocol,
    direction: &'static str,
    status: Status,
    tuples: u64,
    packets_src_to_dst: Option<u64>,
    bytes_src_to_dst: Option<u64>,
    packets_dst_to_src: Option<u64>,
    bytes_dst_to_src: Option<u64>,
    counters_logged: bool,
}

impl From<Connection> for ConnectionJson {
    fn from(c: Connection) -> ConnectionJson {
        let n = |v: u64| c.counters_logged.then_some(v);
        ConnectionJson {
            packets_src_to_dst: n(c.packets_src_to_dst),
            bytes_src_to_dst: n(c.bytes_src_to_dst),
            packets_dst_to_src: n(c.packets_dst_to_src),
            bytes_dst_to_src: n(c.bytes_dst_to_src),
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            nsg: c.nsg,
            rule: c.rule,
            mac: c.mac,
            family: c.family,
            src: c.src,
            sport: c.sport,
            dst: c.dst,
            dport: c.dport,
            protocol: c.protocol,
            direction: c.direction,
            status: c.status,
            tuples: c.tuples,
            counters_logged: c.counters_logged,
        }
    }
}

impl Connection {
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
    pub fn bytes(&self) -> Sum {
        self.bytes_src_to_dst as Sum + self.bytes_dst_to_src as Sum
    }
}

/// The map key of an open connection, packed into two words so the per-tuple map operation
/// hashes two words and compares two: `ips` is the source (high half) and destination (low
/// half) — IPv4 addresses as they are or, when either side is IPv6, both as ids into the
/// stitcher's address table with [`META_V6`] set — and `meta` holds the ports, protocol,
/// direction and NIC id. Equality is exact: the packing is one-to-one within a NIC group.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    ips: u64,
    meta: u64,
}

/// Bits of [`Key::meta`]: source port 0–15, destination port 16–31, protocol 32–41,
/// direction 42, IPv6 flag 43, NIC id 44–63.
const PROTO_SHIFT: u32 = 32;
const DIR_SHIFT: u32 = 42;
const META_V6: u64 = 1 << 43;
const MAC_SHIFT: u32 = 44;
/// NIC ids one stitcher can hold between two `finish` calls (a NIC group has one MAC; only
/// a blob outside the azcopy layout could carry more).
const MAC_IDS: usize = 1 << 20;

/// The state of one open connection in 48 bytes, so that with its key a map entry is one
/// 64-byte cache line (see [`Slot`]): the stitcher's time goes to cache misses on its maps.
/// Packet counts are kept in 32 bits; a connection whose count outgrows them moves its packet
/// counts to [`Names::wide`] as 64-bit numbers (flag [`WIDE`]), so no count is ever capped.
#[derive(Clone, Copy)]
struct Open {
    start_ms: i64,
    end_ms: i64,
    /// Bytes source to destination, destination to source.
    bytes: [u64; 2],
    /// Packets each way; with [`WIDE`], the index of the connection's counts in `Names::wide`
    /// (low half first).
    packets: [u32; 2],
    /// Tuples stitched: one per logged minute at most, so u32 lasts 8,000 years.
    tuples: u32,
    /// The (NSG, rule, family) id in `Names::ctxs`, below [`CTX_IDS`], with the flags
    /// [`DENIED`], [`COUNTED`] and [`WIDE`] above it.
    ctx: u32,
}

/// The tuple logged counters (NSG v2 `B` and v1 tuples leave them empty).
#[inline]
fn has_counters(t: &FlowTuple) -> bool {
    t.packets_s2d.is_some()
        | t.bytes_s2d.is_some()
        | t.packets_d2s.is_some()
        | t.bytes_d2s.is_some()
}

/// A denied series.
const DENIED: u32 = 1 << 31;
/// Some tuple carried counters (an allowed connection with none is stateless).
const COUNTED: u32 = 1 << 30;
/// Packet counts are in `Names::wide`.
const WIDE: u32 = 1 << 29;
/// (NSG, rule, family) ids one stitcher can hold between two `finish` calls.
const CTX_IDS: usize = 1 << 29;

impl Open {
    #[inline]
    fn new(t: &FlowTuple, ctx: u32, wide: &RefCell<Vec<[u64; 2]>>) -> Open {
        // Every field computed first and the state written once: building it in place and
        // then adding the tuple made the copy into the map read back stores it could not
        // forward (a stall that was a quarter of the stitcher's time).
        let p = [t.packets_s2d.unwrap_or(0), t.packets_d2s.unwrap_or(0)];
        let mut flags = if t.decision == Decision::Deny {
            DENIED
        } else {
            0
        };
        if has_counters(t) {
            flags |= COUNTED;
        }
        let packets = if (p[0] | p[1]) >> 32 == 0 {
            [p[0] as u32, p[1] as u32]
        } else {
            flags |= WIDE;
            Self::spill(p, wide)
        };
        Open {
            start_ms: t.time_ms,
            end_ms: t.time_ms,
            bytes: [t.bytes_s2d.unwrap_or(0), t.bytes_d2s.unwrap_or(0)],
            packets,
            tuples: 1,
            ctx: ctx | flags,
        }
    }

    /// Keep packet counts in `wide`; returns their index as the `packets` of a [`WIDE`] state.
    #[cold]
    #[inline(never)]
    fn spill(p: [u64; 2], wide: &RefCell<Vec<[u64; 2]>>) -> [u32; 2] {
        let mut w = wide.borrow_mut();
        let i = w.len() as u64;
        w.push(p);
        [i as u32, (i >> 32) as u32]
    }

    #[inline]
    fn add(&mut self, t: &FlowTuple, wide: &RefCell<Vec<[u64; 2]>>) {
        self.tuples = self.tuples.saturating_add(1);
        self.end_ms = self.end_ms.max(t.time_ms);
        if has_counters(t) {
            self.ctx |= COUNTED;
        }
        // A connection's own counts saturate (2^64 bytes is 16 EiB: only a malformed blob
        // gets there); the run's totals are `Sum`s and never wrap.
        self.bytes[0] = self.bytes[0].saturating_add(t.bytes_s2d.unwrap_or(0));
        self.bytes[1] = self.bytes[1].saturating_add(t.bytes_d2s.unwrap_or(0));
        let p = [t.packets_s2d.unwrap_or(0), t.packets_d2s.unwrap_or(0)];
        if self.ctx & WIDE == 0 && (p[0] | p[1]) >> 32 == 0 {
            if let (Some(a), Some(b)) = (
                self.packets[0].checked_add(p[0] as u32),
                self.packets[1].checked_add(p[1] as u32),
            ) {
                self.packets = [a, b];
                return;
            }
        }
        self.add_wide(p, wide);
    }

    /// Add packets past 32 bits: move the counts to `wide` (once), add them there.
    #[cold]
    #[inline(never)]
    fn add_wide(&mut self, p: [u64; 2], wide: &RefCell<Vec<[u64; 2]>>) {
        if self.ctx & WIDE == 0 {
            self.packets = Self::spill([self.packets[0] as u64, self.packets[1] as u64], wide);
            self.ctx |= WIDE;
        }
        let mut w = wide.borrow_mut();
        let c = &mut w[self.wide_index()];
        c[0] = c[0].saturating_add(p[0]);
        c[1] = c[1].saturating_add(p[1]);
    }

    fn wide_index(&self) -> usize {
        (self.packets[0] as u64 | (self.packets[1] as u64) << 32) as usize
    }

    /// Packets source to destination, destination to source.
    fn packets(&self, wide: &RefCell<Vec<[u64; 2]>>) -> [u64; 2] {
        if self.ctx & WIDE != 0 {
            wide.borrow()[self.wide_index()]
        } else {
            [self.packets[0] as u64, self.packets[1] as u64]
        }
    }

    fn denied(&self) -> bool {
        self.ctx & DENIED != 0
    }

    fn ctx_id(&self) -> usize {
        (self.ctx & (WIDE - 1)) as usize
    }

    fn status_at_end(&self) -> Status {
        if self.denied() {
            Status::Denied
        } else if self.ctx & COUNTED != 0 {
            Status::Open
        } else {
            Status::Stateless
        }
    }

    /// Past its life: a denied series beyond the retry window, or idle beyond
    /// [`IDLE_CLOSE_MS`]. The sweep and the per-tuple lookup apply this same rule, so results
    /// do not depend on when a sweep ran.
    fn expired(&self, now_ms: i64) -> bool {
        let idle = now_ms - self.end_ms;
        (self.denied() && idle > RETRY_WINDOW_MS) || idle > IDLE_CLOSE_MS
    }
}

/// Tuples, denied tuples and bytes (both ways).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub tuples: u64,
    pub denied: u64,
    pub bytes: Sum,
}

impl Tally {
    #[inline]
    pub fn add(&mut self, deny: bool, bytes: Sum) {
        self.tuples += 1;
        self.denied += deny as u64;
        self.bytes += bytes;
    }

    pub fn merge(&mut self, o: &Tally) {
        self.tuples += o.tuples;
        self.denied += o.denied;
        self.bytes += o.bytes;
    }
}

pub use super::graph::PairTally;

/// Connections summarised instead of kept: counts per status, the top few by bytes and by
/// duration, and the traffic of each direction by address pair. Used by `report`, which
/// needs no full list.
///
/// The pair tallies are added per closed connection, not per tuple: each tuple is stitched
/// into exactly one connection, and a connection's tuples are all denied or all allowed, so
/// the sums are the per-tuple sums with one map update per connection. They go to a map of
/// recent closes first, which stays small enough for the cache (the whole run's map of
/// scanned and scanning addresses does not), added to `pairs` by [`Stitcher::fold_recent`]
/// (a reader calls it after each blob) and when the NIC group ends.
pub struct ConnSummary {
    pub by_status: [u64; 4],
    pub top_bytes: TopConns,
    pub top_duration: TopConns,
    /// Indexed by `direction == Inbound`: `[egress, ingress]`. Complete once
    /// [`Stitcher::finish`] has run.
    pub pairs: [PairTally; 2],
    recent: [PairTally; 2],
    /// Outbound allowed connections by (source, destination, port), for beacon detection.
    pub beacons: crate::detect::beacon::Beacons,
    /// Whether `beacons` is collected.
    pub collect_beacons: bool,
    /// Whether the top lists and pair tallies are kept (the report's; `anomalies` counts
    /// and collects beacons only).
    pub tallies: bool,
}

impl Default for ConnSummary {
    fn default() -> Self {
        ConnSummary {
            by_status: [0; 4],
            top_bytes: TopConns::new(order_by_bytes),
            top_duration: TopConns::new(order_by_duration),
            pairs: Default::default(),
            recent: Default::default(),
            beacons: Default::default(),
            collect_beacons: true,
            tallies: true,
        }
    }
}

impl ConnSummary {
    pub fn merge(&mut self, mut o: ConnSummary) {
        self.fold_recent();
        o.fold_recent();
        for (a, b) in self.by_status.iter_mut().zip(o.by_status) {
            *a += b;
        }
        self.top_bytes.merge(o.top_bytes);
        self.top_duration.merge(o.top_duration);
        let [e, i] = o.pairs;
        self.pairs[0].merge(e);
        self.pairs[1].merge(i);
        self.beacons.merge(o.beacons);
    }

    /// Add the recent pair tallies to the totals.
    fn fold_recent(&mut self) {
        for (total, g) in self.pairs.iter_mut().zip(&mut self.recent) {
            if total.v4.is_empty() && total.v6.is_empty() {
                std::mem::swap(total, g);
            } else {
                total.drain_from(g);
            }
        }
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

/// What a [`Key`] and an [`Open`] refer to: NSG and rule names (for the stitcher's life), and
/// the NIC MACs and IPv6 addresses of the current NIC group (cleared by `finish`).
#[derive(Default)]
struct Names {
    names: Vec<Arc<str>>,
    ids: HMap<Arc<str>, u32>,
    macs: Vec<Arc<str>>,
    mac_ids: HMap<Arc<str>, u32>,
    ip6: Vec<IpAddr>,
    ip6_ids: HMap<IpAddr, u32>,
    /// (NSG name id, rule name id, family) of each context id of [`Open::ctx`].
    ctxs: Vec<(u32, u32, Family)>,
    ctx_ids: HMap<(u32, u32, Family), u32>,
    /// 64-bit packet counts of the open connections that outgrew 32 bits ([`WIDE`]).
    wide: RefCell<Vec<[u64; 2]>>,
}

fn intern(names: &mut Vec<Arc<str>>, ids: &mut HMap<Arc<str>, u32>, s: &str) -> u32 {
    if let Some(i) = ids.get(s) {
        return *i;
    }
    let a: Arc<str> = Arc::from(s);
    let i = names.len() as u32;
    names.push(a.clone());
    ids.insert(a, i);
    i
}

impl Names {
    fn ip_id(&mut self, ip: IpAddr) -> u64 {
        if let Some(i) = self.ip6_ids.get(&ip) {
            return *i as u64;
        }
        // Ids stay below 2^32: four billion distinct addresses in one NIC group would
        // exhaust memory long before.
        let i = self.ip6.len() as u32;
        self.ip6.push(ip);
        self.ip6_ids.insert(ip, i);
        i as u64
    }

    #[inline]
    fn key(&mut self, mac: u32, t: &FlowTuple) -> Key {
        self.pack(
            mac,
            t.src,
            t.dst,
            [t.sport, t.dport, t.protocol.code()],
            t.direction,
        )
    }

    /// The key of a 5-tuple and direction on NIC id `mac`: source port, destination port
    /// and protocol code in that order.
    #[inline]
    fn pack(
        &mut self,
        mac: u32,
        src: IpAddr,
        dst: IpAddr,
        [sport, dport, proto]: [u16; 3],
        direction: Direction,
    ) -> Key {
        let meta = sport as u64
            | (dport as u64) << 16
            | ((proto & 0x3FF) as u64) << PROTO_SHIFT
            | (direction as u64) << DIR_SHIFT
            | (mac as u64) << MAC_SHIFT;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Key {
                ips: (u32::from(s) as u64) << 32 | u32::from(d) as u64,
                meta,
            },
            (s, d) => Key {
                ips: self.ip_id(s) << 32 | self.ip_id(d),
                meta: meta | META_V6,
            },
        }
    }

    fn ips(&self, k: Key) -> (IpAddr, IpAddr) {
        if k.meta & META_V6 != 0 {
            (
                self.ip6[(k.ips >> 32) as usize],
                self.ip6[k.ips as u32 as usize],
            )
        } else {
            PairTally::unpack4(k.ips)
        }
    }

    fn ctx_id(&mut self, nsg: u32, rule: u32, family: Family) -> u32 {
        let c = (nsg, rule, family);
        if let Some(i) = self.ctx_ids.get(&c) {
            return *i;
        }
        let i = self.ctxs.len() as u32;
        self.ctxs.push(c);
        self.ctx_ids.insert(c, i);
        i
    }

    fn build(&self, k: Key, o: &Open, status: Status) -> Connection {
        let (src, dst) = self.ips(k);
        let (nsg, rule, family) = self.ctxs[o.ctx_id()];
        let packets = o.packets(&self.wide);
        Connection {
            start_ms: o.start_ms,
            end_ms: o.end_ms,
            nsg: self.names[nsg as usize].clone(),
            rule: self.names[rule as usize].clone(),
            mac: self.macs[(k.meta >> MAC_SHIFT) as usize].clone(),
            family: family.name(),
            src,
            sport: k.meta as u16,
            dst,
            dport: (k.meta >> 16) as u16,
            protocol: Protocol::from_code(((k.meta >> PROTO_SHIFT) & 0x3FF) as u16),
            direction: if (k.meta >> DIR_SHIFT) & 1 == Direction::Inbound as u64 {
                "in"
            } else {
                "out"
            },
            status,
            tuples: o.tuples as u64,
            packets_src_to_dst: packets[0],
            bytes_src_to_dst: o.bytes[0],
            packets_dst_to_src: packets[1],
            bytes_dst_to_src: o.bytes[1],
            counters_logged: o.ctx & COUNTED != 0,
        }
    }
}

/// Where closed connections go: kept in `done`, or summarised.
struct Out<'a> {
    names: &'a Names,
    done: &'a mut Vec<Connection>,
    summary: &'a mut Option<ConnSummary>,
}

impl Out<'_> {
    fn close(&mut self, k: Key, o: &Open, status: Status) {
        let Some(sum) = self.summary.as_mut() else {
            self.done.push(self.names.build(k, o, status));
            return;
        };
        sum.by_status[status as usize] += 1;
        let bytes = o.bytes[0] as Sum + o.bytes[1] as Sum;
        let inbound = (k.meta >> DIR_SHIFT) & 1 == Direction::Inbound as u64;
        if sum.collect_beacons && !inbound && !o.denied() && k.meta & META_V6 == 0 {
            let dport = (k.meta >> 16) as u16;
            sum.beacons.add(
                (k.ips >> 32) as u32,
                k.ips as u32,
                dport,
                o.start_ms,
                bytes.min(u64::MAX as Sum) as u64,
            );
        }
        if !sum.tallies {
            return;
        }
        let tally = Tally {
            tuples: o.tuples as u64,
            denied: if o.denied() { o.tuples as u64 } else { 0 },
            bytes,
        };
        let pairs = &mut sum.recent[inbound as usize];
        if k.meta & META_V6 == 0 {
            pairs.v4.entry(k.ips).or_default().merge(&tally);
        } else {
            pairs.v6.entry(self.names.ips(k)).or_default().merge(&tally);
        }
        // Build the connection only if it can enter a top list.
        let dur = o.end_ms - o.start_ms;
        let may_b = sum.top_bytes.bar().is_none_or(|b| bytes >= b.bytes());
        let may_d = sum
            .top_duration
            .bar()
            .is_none_or(|b| dur >= b.duration_ms());
        if may_b || may_d {
            let c = self.names.build(k, o, status);
            sum.top_bytes.offer(&c);
            sum.top_duration.offer(&c);
        }
    }
}

/// A map entry: a key and its open state in one 64-byte cache line. The alignment makes the
/// table's allocation line-aligned too (the allocator's default 16-byte alignment would split
/// every entry across two lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    k: Key,
    o: Open,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

#[inline]
fn hash_key(b: &crate::hash::Build, k: &Key) -> u64 {
    use std::hash::BuildHasher;
    b.hash_one(k)
}

/// Open connections by key: a `hashbrown` table of [`Slot`]s (std's map cannot align its
/// entries to cache lines).
#[derive(Default)]
struct OpenMap {
    t: hashbrown::HashTable<Slot>,
    /// The table's seeded hasher ([`crate::hash`]).
    build: crate::hash::Build,
}

impl OpenMap {
    #[inline]
    fn entry(&mut self, k: Key) -> Entry<'_, Slot> {
        let b = &self.build;
        self.t
            .entry(hash_key(b, &k), |s| s.k == k, |s| hash_key(b, &s.k))
    }

    #[inline]
    fn remove(&mut self, k: &Key) -> Option<Open> {
        match self.t.find_entry(hash_key(&self.build, k), |s| s.k == *k) {
            Ok(e) => Some(e.remove().0.o),
            Err(_) => None,
        }
    }

    fn retain(&mut self, mut f: impl FnMut(&Key, &mut Open) -> bool) {
        self.t.retain(|s| f(&s.k, &mut s.o))
    }

    fn drain(&mut self) -> impl Iterator<Item = (Key, Open)> + '_ {
        self.t.drain().map(|s| (s.k, s.o))
    }
}

/// Stitches one NIC's (or several NICs') tuples in time order.
#[derive(Default)]
pub struct Stitcher {
    names: Names,
    /// Allowed connections in flight.
    open: OpenMap,
    /// Denied series within their retry window.
    denied: OpenMap,
    /// Connections closed so far, in closing order (unless summarising).
    pub done: Vec<Connection>,
    /// When set, closed connections are summarised here instead of kept in `done`.
    pub summary: Option<ConnSummary>,
    sorted: Vec<FlowTuple>,
    /// Indices of a timestamp's C and B/D tuples, stitched after its E tuples.
    wait_c: Vec<u32>,
    wait_b: Vec<u32>,
    /// Latest tuple time seen, and when idle connections were last swept.
    now_ms: i64,
    swept_ms: i64,
    swept_denied_ms: i64,
    /// Stitch only what beacon detection reads (allowed outbound tuples to a possible
    /// beacon destination, [`crate::detect::beacon::candidate`]), ignoring the rest.
    pub beacon_candidates_only: bool,
}

/// Not a tuple beacon detection reads.
#[inline]
fn not_beacon_candidate(t: &FlowTuple) -> bool {
    t.direction == Direction::Inbound
        || t.decision == Decision::Deny
        || !crate::detect::beacon::candidate(&t.dst)
}

fn rank(t: &FlowTuple) -> u8 {
    match t.state {
        Some(FlowState::End) => 0,
        Some(FlowState::Continuing) => 1,
        _ => 2,
    }
}

impl Stitcher {
    /// Close connections that can no longer continue (see [`Open::expired`]), with the
    /// status `finish` would give them.
    fn sweep(&mut self) {
        let now = self.now_ms;
        let mut out = Out {
            names: &self.names,
            done: &mut self.done,
            summary: &mut self.summary,
        };
        // Closing order does not matter: summaries are order-free and `take_sorted` sorts.
        let mut expire = |k: &Key, o: &mut Open| {
            if o.expired(now) {
                out.close(*k, o, o.status_at_end());
                false
            } else {
                true
            }
        };
        if now - self.swept_denied_ms > SWEEP_DENIED_EVERY_MS {
            self.denied.retain(&mut expire);
            self.swept_denied_ms = now;
        }
        if now - self.swept_ms > SWEEP_EVERY_MS {
            self.open.retain(&mut expire);
            self.swept_ms = now;
        }
    }

    /// In summary mode, add the pair tallies of recently closed connections to
    /// [`ConnSummary::pairs`] (see there); `finish` does it too.
    pub fn fold_recent(&mut self) {
        if let Some(s) = &mut self.summary {
            s.fold_recent();
        }
    }

    /// Close everything still open (end of the NIC's data).
    pub fn finish(&mut self) {
        let mut out = Out {
            names: &self.names,
            done: &mut self.done,
            summary: &mut self.summary,
        };
        for (k, o) in self.open.drain().chain(self.denied.drain()) {
            out.close(k, &o, o.status_at_end());
        }
        self.fold_recent();
        self.now_ms = 0;
        self.swept_ms = 0;
        self.swept_denied_ms = 0;
        let n = &mut self.names;
        n.macs.clear();
        n.mac_ids.clear();
        n.ip6.clear();
        n.ip6_ids.clear();
        n.ctxs.clear();
        n.ctx_ids.clear();
        n.wide.get_mut().clear();
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

/// One open connection or denied series as [`OpenState`] keeps it: names and addresses in
/// full, so that a state read back does not depend on the stitcher's ids.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct OpenWire {
    mac: String,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    protocol: u16,
    inbound: bool,
    denied_map: bool,
    nsg: String,
    rule: String,
    /// 0 NSG v1, 1 NSG v2, 2 VNet.
    family: u8,
    start_ms: i64,
    end_ms: i64,
    bytes: [u64; 2],
    packets: [u64; 2],
    tuples: u32,
    denied: bool,
    counted: bool,
}

/// What a stitcher holds between two blobs of a NIC: its open connections and denied series,
/// and the clocks of its sweeps. Saved at the end of a `--state-dir` unit (a NIC's day), it
/// lets the next unit be stitched later exactly as if the NIC had been read in one go.
/// Entries are sorted, so equal states serialise to equal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenState {
    now_ms: i64,
    swept_ms: i64,
    swept_denied_ms: i64,
    entries: Vec<OpenWire>,
}

fn family_code(f: Family) -> u8 {
    match f {
        Family::NsgV1 => 0,
        Family::NsgV2 => 1,
        Family::Vnet => 2,
    }
}

fn family_of(c: u8) -> Option<Family> {
    match c {
        0 => Some(Family::NsgV1),
        1 => Some(Family::NsgV2),
        2 => Some(Family::Vnet),
        _ => None,
    }
}

impl Stitcher {
    /// The open connections and clocks (see [`OpenState`]); the stitcher is unchanged.
    pub fn open_state(&self) -> OpenState {
        let n = &self.names;
        let mut entries = Vec::with_capacity(self.open.t.len() + self.denied.t.len());
        for (map, denied_map) in [(&self.open, false), (&self.denied, true)] {
            for s in map.t.iter() {
                let (k, o) = (s.k, s.o);
                let (src, dst) = n.ips(k);
                let (nsg, rule, family) = n.ctxs[o.ctx_id()];
                entries.push(OpenWire {
                    mac: n.macs[(k.meta >> MAC_SHIFT) as usize].to_string(),
                    src,
                    dst,
                    sport: k.meta as u16,
                    dport: (k.meta >> 16) as u16,
                    protocol: ((k.meta >> PROTO_SHIFT) & 0x3FF) as u16,
                    inbound: (k.meta >> DIR_SHIFT) & 1 == Direction::Inbound as u64,
                    denied_map,
                    nsg: n.names[nsg as usize].to_string(),
                    rule: n.names[rule as usize].to_string(),
                    family: family_code(family),
                    start_ms: o.start_ms,
                    end_ms: o.end_ms,
                    bytes: o.bytes,
                    packets: o.packets(&n.wide),
                    tuples: o.tuples,
                    denied: o.denied(),
                    counted: o.ctx & COUNTED != 0,
                });
            }
        }
        entries.sort();
        OpenState {
            now_ms: self.now_ms,
            swept_ms: self.swept_ms,
            swept_denied_ms: self.swept_denied_ms,
            entries,
        }
    }

    /// Take up `state` (from [`Stitcher::open_state`]) in a stitcher that holds nothing open.
    pub fn restore(&mut self, state: &OpenState) -> Result<(), String> {
        if !self.open.t.is_empty() || !self.denied.t.is_empty() {
            return Err("the stitcher is not empty".to_string());
        }
        self.now_ms = state.now_ms;
        self.swept_ms = state.swept_ms;
        self.swept_denied_ms = state.swept_denied_ms;
        for e in &state.entries {
            let family = family_of(e.family).ok_or("unknown log family")?;
            let n = &mut self.names;
            let mac = intern(&mut n.macs, &mut n.mac_ids, &e.mac);
            let nsg = intern(&mut n.names, &mut n.ids, &e.nsg);
            let rule = intern(&mut n.names, &mut n.ids, &e.rule);
            let cx = n.ctx_id(nsg, rule, family);
            let dir = if e.inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let k = n.pack(mac, e.src, e.dst, [e.sport, e.dport, e.protocol], dir);
            let mut ctx = cx;
            if e.denied {
                ctx |= DENIED;
            }
            if e.counted {
                ctx |= COUNTED;
            }
            let packets = if (e.packets[0] | e.packets[1]) >> 32 == 0 {
                [e.packets[0] as u32, e.packets[1] as u32]
            } else {
                ctx |= WIDE;
                Open::spill(e.packets, &n.wide)
            };
            let o = Open {
                start_ms: e.start_ms,
                end_ms: e.end_ms,
                bytes: e.bytes,
                packets,
                tuples: e.tuples,
                ctx,
            };
            let map = if e.denied_map {
                &mut self.denied
            } else {
                &mut self.open
            };
            match map.entry(k) {
                Entry::Occupied(_) => return Err("the same connection twice".to_string()),
                Entry::Vacant(v) => {
                    v.insert(Slot { k, o });
                }
            }
        }
        Ok(())
    }
}

/// One table's view of the stitcher: stitches its tuples one at a time.
struct Step<'a> {
    names: &'a mut Names,
    open: &'a mut OpenMap,
    denied: &'a mut OpenMap,
    done: &'a mut Vec<Connection>,
    summary: &'a mut Option<ConnSummary>,
    mac: u32,
    ctx: u32,
}

impl Step<'_> {
    #[inline(always)]
    fn tuple(&mut self, t: &FlowTuple) {
        let k = self.names.key(self.mac, t);
        let mut out = Out {
            names: self.names,
            done: self.done,
            summary: self.summary,
        };
        let wide = &self.names.wide;
        let fresh = || Open::new(t, self.ctx, wide);
        if t.decision == Decision::Deny {
            // A retry within the window joins the series; a later one starts anew. Denied
            // series and allowed connections are kept apart: a denied attempt does not end
            // an allowed connection of the same 5-tuple, nor an allowed tuple a series.
            match self.denied.entry(k) {
                Entry::Occupied(mut e) => {
                    let o = &mut e.get_mut().o;
                    if t.time_ms - o.end_ms <= RETRY_WINDOW_MS {
                        o.add(t, wide);
                    } else {
                        let old = std::mem::replace(o, fresh());
                        out.close(k, &old, old.status_at_end());
                    }
                }
                Entry::Vacant(v) => {
                    v.insert(Slot { k, o: fresh() });
                }
            }
            return;
        }
        // An allowed tuple never joins a connection idle past IDLE_CLOSE_MS (the rule of
        // `Open::expired`). One map operation per tuple in the common cases.
        let stale = |o: &Open| t.time_ms - o.end_ms > IDLE_CLOSE_MS;
        match t.state {
            // NSG v1: no state; each allowed tuple stands alone.
            None => out.close(k, &fresh(), Status::Stateless),
            Some(FlowState::Begin) => match self.open.entry(k) {
                Entry::Occupied(mut e) => {
                    let old = std::mem::replace(&mut e.get_mut().o, fresh());
                    out.close(k, &old, old.status_at_end());
                }
                Entry::Vacant(v) => {
                    v.insert(Slot { k, o: fresh() });
                }
            },
            Some(FlowState::Continuing) => match self.open.entry(k) {
                Entry::Occupied(mut e) => {
                    let o = &mut e.get_mut().o;
                    if stale(o) {
                        let old = std::mem::replace(o, fresh());
                        out.close(k, &old, old.status_at_end());
                    } else {
                        o.add(t, wide);
                    }
                }
                Entry::Vacant(v) => {
                    v.insert(Slot { k, o: fresh() });
                }
            },
            // (A close in each arm: one shared `o` made every E copy its state once more.)
            Some(FlowState::End) => match self.open.remove(&k) {
                Some(mut o) if !stale(&o) => {
                    o.add(t, wide);
                    out.close(k, &o, Status::Completed);
                }
                Some(old) => {
                    out.close(k, &old, old.status_at_end());
                    out.close(k, &fresh(), Status::Completed);
                }
                None => out.close(k, &fresh(), Status::Completed),
            },
            Some(FlowState::Denied) => unreachable!("VNet D is a deny decision"),
        }
    }
}

impl TableSink for Stitcher {
    fn table(&mut self, table: &RuleTable<'_>) {
        let only_out = self.beacon_candidates_only;
        if table.tuples.is_empty() || (only_out && table.tuples.iter().all(not_beacon_candidate)) {
            return;
        }
        let ctx = &table.ctx;
        let mac_name = ctx.mac_normalized();
        let n = &self.names;
        if (n.macs.len() >= MAC_IDS && !n.mac_ids.contains_key(&*mac_name))
            || n.ctxs.len() >= CTX_IDS
        {
            // More NICs (or rule contexts) than a key (or an open state) can name, which only
            // a blob outside the azcopy layout can carry: close what is open, as at the end
            // of the data, and start the tables afresh.
            self.finish();
        }
        let n = &mut self.names;
        let mac = intern(&mut n.macs, &mut n.mac_ids, &mac_name);
        let nsg = intern(&mut n.names, &mut n.ids, ctx.nsg);
        let rule = intern(&mut n.names, &mut n.ids, ctx.rule);
        let cx = n.ctx_id(nsg, rule, ctx.family);
        // Tables are time-ordered already (else a time-sorted copy is used). Tuples sharing
        // a timestamp go E first, then C, then B/D, each kind in log order: E tuples are
        // stitched as they come and the others wait for the end of their timestamp.
        let mut sorted = std::mem::take(&mut self.sorted);
        let mut wait_c = std::mem::take(&mut self.wait_c);
        let mut wait_b = std::mem::take(&mut self.wait_b);
        let ts: &[FlowTuple] = if table.tuples.is_sorted_by_key(|t| t.time_ms) {
            table.tuples
        } else {
            sorted.clear();
            sorted.extend_from_slice(table.tuples);
            sorted.sort_by_key(|t| t.time_ms);
            &sorted
        };
        let mut step = Step {
            names: &mut self.names,
            open: &mut self.open,
            denied: &mut self.denied,
            done: &mut self.done,
            summary: &mut self.summary,
            mac,
            ctx: cx,
        };
        let mut i = 0;
        while i < ts.len() {
            let time = ts[i].time_ms;
            let mut j = i;
            while j < ts.len() && ts[j].time_ms == time {
                if !(only_out && not_beacon_candidate(&ts[j])) {
                    match rank(&ts[j]) {
                        0 => step.tuple(&ts[j]),
                        1 => wait_c.push(j as u32),
                        _ => wait_b.push(j as u32),
                    }
                }
                j += 1;
            }
            for &x in wait_c.iter().chain(&wait_b) {
                step.tuple(&ts[x as usize]);
            }
            wait_c.clear();
            wait_b.clear();
            i = j;
        }
        self.now_ms = self.now_ms.max(ts[ts.len() - 1].time_ms);
        self.sorted = sorted;
        self.wait_c = wait_c;
        self.wait_b = wait_b;
        if self.now_ms - self.swept_denied_ms > SWEEP_DENIED_EVERY_MS {
            self.sweep();
        }
    }
}

/// The report's connection fold: a [`Stitcher`] in summary mode. Each NIC group's closed
/// connections are counted by status, offered to the top lists and tallied by address pair
/// (the report's talkers and flow pictures), nothing else is kept.
pub struct ConnFold {
    stitch: Stitcher,
}

impl Default for ConnFold {
    fn default() -> Self {
        ConnFold::new(true)
    }
}

impl ConnFold {
    /// With `beacons`, outbound connections are kept for beacon detection too.
    pub fn new(beacons: bool) -> ConnFold {
        ConnFold {
            stitch: Stitcher {
                summary: Some(ConnSummary {
                    collect_beacons: beacons,
                    ..ConnSummary::default()
                }),
                ..Stitcher::default()
            },
        }
    }

    /// What `anomalies` needs of the connections: the beacon tally only. Only allowed
    /// outbound tuples to possible beacon destinations are stitched (the counts by status
    /// are of those), and there are no top lists or pair tallies.
    pub fn beacons_only() -> ConnFold {
        ConnFold {
            stitch: Stitcher {
                summary: Some(ConnSummary {
                    tallies: false,
                    ..ConnSummary::default()
                }),
                beacon_candidates_only: true,
                ..Stitcher::default()
            },
        }
    }

    /// What the groups read so far summarise to.
    pub fn summary(&self) -> &ConnSummary {
        self.stitch.summary.as_ref().expect("summary mode")
    }

    /// The summary, once every group has ended.
    pub fn into_summary(mut self) -> ConnSummary {
        self.stitch.summary.take().expect("summary mode")
    }

    /// A fold holding a summary read back from a partial file.
    pub fn from_summary(summary: ConnSummary) -> ConnFold {
        ConnFold {
            stitch: Stitcher {
                summary: Some(summary),
                ..Stitcher::default()
            },
        }
    }
}

impl TableSink for ConnFold {
    #[inline]
    fn table(&mut self, table: &RuleTable<'_>) {
        self.stitch.table(table)
    }
}

impl crate::aggregate::NicFold for ConnFold {
    type Out = ();
    fn end_blob(&mut self) {
        self.stitch.fold_recent();
    }
    fn end_group(&mut self) {
        self.stitch.finish();
    }
    fn merge(&mut self, mut o: Self) {
        let theirs = o.stitch.summary.take().expect("summary mode");
        self.stitch
            .summary
            .as_mut()
            .expect("summary mode")
            .merge(theirs);
    }
}

impl ConnFold {
    /// What the connections closed so far add up to, taken out: the fold goes on with what is
    /// open and an empty summary of the same kind (a `--state-dir` unit's share).
    pub fn take_part(&mut self) -> ConnSummary {
        let s = self.stitch.summary.as_mut().expect("summary mode");
        s.fold_recent();
        let fresh = ConnSummary {
            collect_beacons: s.collect_beacons,
            tallies: s.tallies,
            ..ConnSummary::default()
        };
        std::mem::replace(s, fresh)
    }

    /// The open connections (see [`OpenState`]).
    pub fn open_state(&self) -> OpenState {
        self.stitch.open_state()
    }

    /// Take up an [`OpenState`]: the fold must hold nothing open.
    pub fn restore(&mut self, state: &OpenState) -> Result<(), String> {
        self.stitch.restore(state)
    }
}

/// What `top --by connection` ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnMetric {
    Bytes,
    Packets,
    Duration,
    Tuples,
}

impl ConnMetric {
    pub fn value(self, c: &Connection) -> Sum {
        match self {
            ConnMetric::Bytes => c.bytes(),
            ConnMetric::Packets => c.packets_src_to_dst as Sum + c.packets_dst_to_src as Sum,
            ConnMetric::Duration => c.duration_ms().max(0) as Sum,
            ConnMetric::Tuples => c.tuples as Sum,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConnMetric::Bytes => "bytes",
            ConnMetric::Packets => "packets",
            ConnMetric::Duration => "duration",
            ConnMetric::Tuples => "tuples",
        }
    }

    /// Largest first, ties by [`conn_key`]: a total order.
    pub fn order(self, a: &Connection, b: &Connection) -> std::cmp::Ordering {
        self.value(b)
            .cmp(&self.value(a))
            .then_with(|| conn_key(a).cmp(&conn_key(b)))
    }
}

/// The `n` best connections by a metric, kept while stitching: memory is the open
/// connections plus `n` (and one blob's closes).
pub struct TopConnections {
    stitch: Stitcher,
    metric: ConnMetric,
    n: usize,
    best: Vec<Connection>,
}

impl TopConnections {
    pub fn new(metric: ConnMetric, n: usize) -> TopConnections {
        TopConnections {
            stitch: Stitcher::default(),
            metric,
            n,
            best: Vec::new(),
        }
    }

    fn keep(&mut self) {
        self.best.append(&mut self.stitch.done);
        let (n, m) = (self.n, self.metric);
        if n > 0 && self.best.len() > n {
            self.best
                .select_nth_unstable_by(n - 1, |a, b| m.order(a, b));
            self.best.truncate(n);
        }
    }

    /// Best first.
    pub fn finish(mut self) -> Vec<Connection> {
        self.keep();
        let m = self.metric;
        self.best.sort_by(|a, b| m.order(a, b));
        self.best.truncate(self.n);
        self.best
    }
}

impl TableSink for TopConnections {
    #[inline]
    fn table(&mut self, table: &RuleTable<'_>) {
        self.stitch.table(table)
    }
}

impl crate::aggregate::NicFold for TopConnections {
    type Out = ();
    fn end_blob(&mut self) {
        self.keep();
    }
    fn end_group(&mut self) {
        self.stitch.finish();
        self.keep();
    }
    fn merge(&mut self, mut o: Self) {
        self.best.append(&mut o.best);
        self.keep();
    }
}

/// Connections a `--state-dir` unit of `top --by connection` keeps: its best ones so far.
#[derive(Clone, Debug, Default)]
pub struct ConnList(pub Vec<Connection>);

impl serde::Serialize for ConnList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ConnWire::from))
    }
}

impl<'de> serde::Deserialize<'de> for ConnList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConnList, D::Error> {
        let wire = Vec::<ConnWire>::deserialize(d)?;
        wire.into_iter()
            .map(|w| w.into_connection())
            .collect::<Result<Vec<_>, _>>()
            .map(ConnList)
    }
}

impl TopConnections {
    /// The best connections closed so far, taken out (the open ones stay).
    pub fn take_best(&mut self) -> ConnList {
        self.keep();
        ConnList(std::mem::take(&mut self.best))
    }

    /// Close what is open and take the best.
    pub fn close(&mut self) -> ConnList {
        self.stitch.finish();
        self.take_best()
    }

    pub fn open_state(&self) -> OpenState {
        self.stitch.open_state()
    }

    pub fn restore(&mut self, state: &OpenState) -> Result<(), String> {
        self.stitch.restore(state)
    }

    /// The ranking of `list` (the parts of a `--state-dir` run put together).
    pub fn from_list(metric: ConnMetric, n: usize, list: ConnList) -> TopConnections {
        let mut t = TopConnections::new(metric, n);
        t.best = list.0;
        t.keep();
        t
    }
}

/// Every connection of each NIC group, sorted (start, then the 5-tuple), rendered by `render`
/// when the group ends: the rows of `connections`, which the pipeline writes in group order.
pub struct ConnRows<R> {
    stitch: Stitcher,
    render: R,
}

impl<R> ConnRows<R> {
    pub fn new(render: R) -> ConnRows<R> {
        ConnRows {
            stitch: Stitcher::default(),
            render,
        }
    }
}

impl<R> TableSink for ConnRows<R> {
    #[inline]
    fn table(&mut self, table: &RuleTable<'_>) {
        self.stitch.table(table)
    }
}

impl<R: Fn(&[Connection]) -> Vec<u8> + Send> crate::aggregate::NicFold for ConnRows<R> {
    type Out = Vec<u8>;
    fn end_group(&mut self) -> Vec<u8> {
        self.stitch.finish();
        (self.render)(&self.stitch.take_sorted())
    }
    fn merge(&mut self, _o: Self) {}
}

/// A connection as a partial file keeps it (names owned, protocol as itself).
#[derive(serde::Serialize, serde::Deserialize)]
struct ConnWire {
    start_ms: i64,
    end_ms: i64,
    nsg: String,
    rule: String,
    mac: String,
    family: String,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    protocol: Protocol,
    inbound: bool,
    status: Status,
    tuples: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    #[serde(default)]
    counters_logged: bool,
}

impl From<&Connection> for ConnWire {
    fn from(c: &Connection) -> ConnWire {
        ConnWire {
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            nsg: c.nsg.to_string(),
            rule: c.rule.to_string(),
            mac: c.mac.to_string(),
            family: c.family.to_string(),
            src: c.src,
            sport: c.sport,
            dst: c.dst,
            dport: c.dport,
            protocol: c.protocol,
            inbound: c.direction == "in",
            status: c.status,
            tuples: c.tuples,
            packets: [c.packets_src_to_dst, c.packets_dst_to_src],
            bytes: [c.bytes_src_to_dst, c.bytes_dst_to_src],
            counters_logged: c.counters_logged,
        }
    }
}

impl ConnWire {
    fn into_connection<E: serde::de::Error>(self) -> Result<Connection, E> {
        let family = Family::ALL
            .iter()
            .find(|f| f.name() == self.family)
            .ok_or_else(|| E::custom(format!("unknown family {:?}", self.family)))?;
        Ok(Connection {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            nsg: self.nsg.into(),
            rule: self.rule.into(),
            mac: self.mac.into(),
            family: family.name(),
            src: self.src,
            sport: self.sport,
            dst: self.dst,
            dport: self.dport,
            protocol: self.protocol,
            direction: if self.inbound { "in" } else { "out" },
            status: self.status,
            tuples: self.tuples,
            packets_src_to_dst: self.packets[0],
            bytes_src_to_dst: self.bytes[0],
            packets_dst_to_src: self.packets[1],
            bytes_dst_to_src: self.bytes[1],
            counters_logged: self.counters_logged,
        })
    }
}

/// [`ConnSummary`] in a partial file: the top lists as their best [`TOP_CONNECTIONS`] (the
/// best of a merge is among the best of each part, so nothing is lost).
#[derive(serde::Serialize)]
struct ConnSummaryOut<'a> {
    by_status: &'a [u64; 4],
    top_bytes: Vec<ConnWire>,
    top_duration: Vec<ConnWire>,
    pairs: &'a [PairTally; 2],
    beacons: &'a crate::detect::beacon::Beacons,
}

#[derive(serde::Deserialize)]
struct ConnSummaryIn {
    by_status: [u64; 4],
    top_bytes: Vec<ConnWire>,
    top_duration: Vec<ConnWire>,
    pairs: [PairTally; 2],
    beacons: crate::detect::beacon::Beacons,
}

impl serde::Serialize for ConnSummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Complete only once every group has ended (recent closes folded in).
        debug_assert!(self
            .recent
            .iter()
            .all(|r| r.v4.is_empty() && r.v6.is_empty()));
        let wire = |t: &TopConns| t.sorted().iter().map(ConnWire::from).collect();
        ConnSummaryOut {
            by_status: &self.by_status,
            top_bytes: wire(&self.top_bytes),
            top_duration: wire(&self.top_duration),
            pairs: &self.pairs,
            beacons: &self.beacons,
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ConnSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConnSummary, D::Error> {
        let w = ConnSummaryIn::deserialize(d)?;
        let mut c = ConnSummary {
            by_status: w.by_status,
            pairs: w.pairs,
            beacons: w.beacons,
            ..ConnSummary::default()
        };
        for x in w.top_bytes {
            c.top_bytes.offer(&x.into_connection()?);
        }
        for x in w.top_duration {
            c.top_duration.offer(&x.into_connection()?);
        }
        Ok(c)
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

    /// A stitcher saved between two tables ([`Stitcher::open_state`]) and taken up by a fresh
    /// one gives the connections one stitcher gives: allowed, denied, IPv6 and wide counters
    /// open across the cut, and one that idles out after it.
    #[test]
    fn a_saved_open_state_stitches_on_as_if_never_cut() {
        let v2 = Family::NsgV2;
        let first: &[(&str, &str)] = &[
            ("R", "1000,10.0.0.4,52.1.1.1,40000,443,T,O,A,B,,,,"),
            (
                "R",
                "1000,10.0.0.4,52.1.1.2,40001,443,T,O,A,C,5000000000,10,1,20",
            ),
            ("D", "1010,203.0.113.9,10.0.0.4,5555,22,T,I,D,B,,,,"),
            ("R", "1020,fd00::4,2001:db8::1,40002,443,T,O,A,B,,,,"),
            ("R", "1030,10.0.0.4,52.1.1.3,40003,80,T,O,A,C,1,1,1,1"),
        ];
        let second: &[(&str, &str)] = &[
            ("D", "1040,203.0.113.9,10.0.0.4,5555,22,T,I,D,B,,,,"),
            (
                "R",
                "1300,10.0.0.4,52.1.1.1,40000,443,T,O,A,E,8005,700,47,800",
            ),
            (
                "R",
                "1310,10.0.0.4,52.1.1.2,40001,443,T,O,A,E,4000000000,1,1,1",
            ),
            ("R", "1320,fd00::4,2001:db8::1,40002,443,T,O,A,E,3,4,5,6"),
            ("R", "3000,10.0.0.9,52.1.1.9,40009,443,T,O,A,B,,,,"),
        ];
        let run = |cut: bool| {
            let mut s = Stitcher::default();
            for (rule, t) in first {
                feed(&mut s, v2, rule, &[t]);
            }
            if cut {
                let state = s.open_state();
                let done = std::mem::take(&mut s.done);
                s = Stitcher::default();
                s.restore(&state).unwrap();
                assert_eq!(s.open_state(), state);
                s.done = done;
            }
            for (rule, t) in second {
                feed(&mut s, v2, rule, &[t]);
            }
            s.finish();
            s.take_sorted()
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
        };
        let whole = run(false);
        assert_eq!(whole.len(), 6, "{whole:#?}");
        assert_eq!(run(true), whole);
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
    fn packet_counts_past_32_bits_are_exact() {
        // The open state keeps packets in 32 bits until a count outgrows them: a first tuple
        // past 2^32 (s2d of port 40000), a later one past it alone (d2s), and a neighbour
        // that never overflows, under another rule, stitched alongside. One table each.
        let mut s = Stitcher::default();
        for (rule, t) in [
            (
                "R",
                "1000,10.0.0.4,52.1.1.1,40000,443,T,O,A,C,5000000000,10,1,20",
            ),
            ("Other", "1000,10.0.0.4,52.1.1.1,40001,443,T,O,A,B,,,,"),
            (
                "R",
                "1060,10.0.0.4,52.1.1.1,40000,443,T,O,A,C,4000000000,10,7000000000,20",
            ),
            ("Other", "1060,10.0.0.4,52.1.1.1,40001,443,T,O,A,E,5,6,7,8"),
            ("R", "1120,10.0.0.4,52.1.1.1,40000,443,T,O,A,E,1,1,1,1"),
        ] {
            feed(&mut s, Family::NsgV2, rule, &[t]);
        }
        s.finish();
        let c = s.take_sorted();
        let row = |c: &Connection| {
            (
                c.sport,
                c.rule.to_string(),
                c.status,
                c.tuples,
                c.packets_src_to_dst,
                c.bytes_src_to_dst,
                c.packets_dst_to_src,
                c.bytes_dst_to_src,
            )
        };
        let rows: Vec<_> = c.iter().map(row).collect();
        assert_eq!(
            rows,
            [
                (
                    40000,
                    "R".into(),
                    Status::Completed,
                    3,
                    9_000_000_001,
                    21,
                    7_000_000_002,
                    41
                ),
                (40001, "Other".into(), Status::Completed, 2, 5, 6, 7, 8),
            ]
        );
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
    fn packed_keys_keep_ipv6_protocols_and_ports() {
        let mut s = Stitcher::default();
        feed(
            &mut s,
            Family::Vnet,
            "R",
            &[
                "1735636357000,2001:db8::4,2001:db8:ff::1,65535,443,6,O,B,NX,0,0,0,0",
                "1735636357000,2001:db8::4,10.0.0.9,1,0,1,I,B,NX,0,0,0,0",
                "1735636357000,10.0.0.4,10.0.0.9,0,65535,0,O,B,NX,0,0,0,0",
                "1735636417000,2001:db8::4,2001:db8:ff::1,65535,443,6,O,E,NX,1,100,2,200",
                "1735636417000,2001:db8::4,10.0.0.9,1,0,1,I,E,NX,3,30,0,0",
                "1735636417000,10.0.0.4,10.0.0.9,0,65535,0,O,E,NX,1,1,1,1",
            ],
        );
        feed(
            &mut s,
            Family::NsgV2,
            "R",
            &["3,10.0.0.4,10.0.0.9,7,8,I,I,A,E,1,2,3,4"],
        );
        s.finish();
        let got: Vec<String> = s
            .take_sorted()
            .iter()
            .map(|c| {
                format!(
                    "{} {}:{} {}:{} {} {} {:?} {} {}",
                    c.start_ms,
                    c.src,
                    c.sport,
                    c.dst,
                    c.dport,
                    c.protocol,
                    c.direction,
                    c.status,
                    c.tuples,
                    c.bytes()
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                "3000 10.0.0.4:7 10.0.0.9:8 I in Completed 1 6",
                "1735636357000 10.0.0.4:0 10.0.0.9:65535 0 out Completed 2 2",
                "1735636357000 2001:db8::4:1 10.0.0.9:0 1 in Completed 2 30",
                "1735636357000 2001:db8::4:65535 2001:db8:ff::1:443 tcp out Completed 2 300",
            ]
        );
    }

    #[test]
    fn summary_mode_tallies_pairs_per_tuple() {
        let mut s = Stitcher {
            summary: Some(ConnSummary::default()),
            ..Default::default()
        };
        feed(
            &mut s,
            Family::NsgV2,
            "R",
            &[
                "1000,185.1.1.1,10.0.0.4,5000,22,T,I,D,B,,,,",
                "1003,185.1.1.1,10.0.0.4,5000,22,T,I,D,B,,,,",
                "1000,10.0.0.4,52.1.1.1,40000,443,T,O,A,B,,,,",
                "1100,10.0.0.4,52.1.1.1,40000,443,T,O,A,E,1,10,2,20",
                "1200,10.0.0.4,52.1.1.1,40001,443,T,O,A,B,,,,",
                "1200,2001:db8::4,2001:db8::5,1,2,U,O,A,B,,,,",
            ],
        );
        s.finish();
        let sum = s.summary.take().unwrap();
        assert_eq!(sum.by_status, [1, 0, 1, 2]);
        let pairs = |i: usize| {
            let mut v: Vec<String> = sum.pairs[i]
                .iter()
                .map(|((a, b), t)| format!("{a}>{b} {} {} {}", t.tuples, t.denied, t.bytes))
                .collect();
            v.sort();
            v
        };
        assert_eq!(pairs(1), vec!["185.1.1.1>10.0.0.4 2 2 0"]);
        assert_eq!(
            pairs(0),
            vec!["10.0.0.4>52.1.1.1 3 0 30", "2001:db8::4>2001:db8::5 1 0 0"]
        );
    }

    #[test]
    fn a_denied_attempt_does_not_end_an_allowed_connection() {
        // The same 5-tuple allowed (B, C, E) and denied in between: two connections, the
        // allowed one whole, the denied series on its own.
        let mut s = Stitcher::default();
        let v2 = Family::NsgV2;
        feed(
            &mut s,
            v2,
            "Allow",
            &["1000,10.0.0.4,52.1.1.1,40000,443,T,O,A,B,,,,"],
        );
        feed(
            &mut s,
            v2,
            "Deny",
            &[
                "1010,10.0.0.4,52.1.1.1,40000,443,T,O,D,B,,,,",
                "1011,10.0.0.4,52.1.1.1,40000,443,T,O,D,B,,,,",
            ],
        );
        feed(
            &mut s,
            v2,
            "Allow",
            &[
                "1060,10.0.0.4,52.1.1.1,40000,443,T,O,A,C,1,10,1,20",
                "1120,10.0.0.4,52.1.1.1,40000,443,T,O,A,E,2,30,3,40",
            ],
        );
        s.finish();
        let got: Vec<(i64, Status, u64, Sum, &str)> = s
            .take_sorted()
            .iter()
            .map(|c| {
                let rule: &'static str = if &*c.rule == "Allow" { "Allow" } else { "Deny" };
                (c.start_ms, c.status, c.tuples, c.bytes(), rule)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1_000_000, Status::Completed, 3, 100, "Allow"),
                (1_010_000, Status::Denied, 2, 0, "Deny"),
            ]
        );
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
