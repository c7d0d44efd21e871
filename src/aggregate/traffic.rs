//! The report's traffic fold: allowed and denied tuples and bytes in and out per hour, and
//! tuples, denied tuples and bytes per destination port for each direction.
//!
//! Tuples of one rule mostly share a few ports (443 under an HTTPS rule, a handful of
//! scanned ports under a deny rule), so port tallies go through a small direct-mapped cache
//! and a per-blob map, folded into the run's maps when the blob ends: the run's map of
//! scanned ports (about 100k entries on a 1 GB container) stays out of the hot loop.

use super::connections::Tally;
use super::Fold;
use crate::aggregate::rules::Sum;
use crate::hash::HMap;
use crate::model::{Decision, Direction, Protocol};
use crate::parse::{RuleTable, TableSink};
use serde::{Deserialize, Serialize};

pub const HOUR_MS: i64 = 3_600_000;

/// One hour's decisions and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hour {
    pub allowed: u64,
    pub denied: u64,
    pub bytes_in: Sum,
    pub bytes_out: Sum,
}

impl Hour {
    pub fn add(&mut self, o: &Hour) {
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// (direction, protocol, port) packed: port bits 0-15, `Protocol::code` 16-25, inbound 26.
fn port_key(inbound: bool, p: Protocol, port: u16) -> u32 {
    (inbound as u32) << 26 | (p.code() as u32) << 16 | port as u32
}
const PORT_MASK: u32 = (1 << 26) - 1;
/// An empty [`PortCache`] slot (`port_key` never gives it).
const NO_PORT: u32 = u32::MAX;

/// A direct-mapped write-back cache of port tallies in front of the port maps, 256 slots by
/// a multiplicative hash of `port_key` (8 KiB, stays in L1); a map update happens only when
/// a slot changes hands or when the blob ends.
struct PortCache(Box<[(u32, Tally); 256]>);

impl Default for PortCache {
    fn default() -> Self {
        PortCache(Box::new([(NO_PORT, Tally::default()); 256]))
    }
}

fn port_slot(key: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B1) >> 24) as usize
}

/// Add a tally to its direction's map (by `port_key` without the direction bit).
fn add_port(maps: &mut [HMap<u32, Tally>; 2], key: u32, st: &Tally) {
    if key != NO_PORT {
        maps[(key >> 26) as usize]
            .entry(key & PORT_MASK)
            .or_default()
            .merge(st);
    }
}

/// Hours and destination ports (see the module docs). Mergeable.
#[derive(Default, Serialize, Deserialize)]
pub struct Traffic {
    /// Hour start (ms) → counts.
    pub hours: HMap<i64, Hour>,
    /// Destination ports by direction, indexed by `direction == Inbound` (`[egress,
    /// ingress]`). Complete after `end_blob`.
    pub ports: [HMap<(Protocol, u16), Tally>; 2],
    /// Port tallies of the current blob (see the module docs).
    #[serde(skip)]
    recent: [HMap<u32, Tally>; 2],
    #[serde(skip)]
    cache: PortCache,
}

impl TableSink for Traffic {
    fn table(&mut self, table: &RuleTable<'_>) {
        // Tables rarely cross an hour: accumulate the hour [cur_hour, hour_end) locally,
        // flush when a tuple falls outside it.
        let (mut cur_hour, mut hour_end) = (i64::MIN, i64::MIN);
        let mut cur = Hour::default();
        let cache = &mut self.cache.0;
        for t in table.tuples {
            let deny = t.decision == Decision::Deny;
            let bytes = t.bytes_s2d.unwrap_or(0) as Sum + t.bytes_d2s.unwrap_or(0) as Sum;
            let inbound = t.direction == Direction::Inbound;
            let port = port_key(inbound, t.protocol, t.dport);
            let slot = &mut cache[port_slot(port)];
            if slot.0 != port {
                let (old, st) = std::mem::replace(slot, (port, Tally::default()));
                add_port(&mut self.recent, old, &st);
            }
            slot.1.add(deny, bytes);
            if t.time_ms < cur_hour || t.time_ms >= hour_end {
                if cur_hour != i64::MIN {
                    self.hours.entry(cur_hour).or_default().add(&cur);
                }
                cur = Hour::default();
                cur_hour = t.time_ms - t.time_ms.rem_euclid(HOUR_MS);
                hour_end = cur_hour + HOUR_MS;
            }
            if deny {
                cur.denied += 1;
            } else {
                cur.allowed += 1;
            }
            if inbound {
                cur.bytes_in += bytes;
            } else {
                cur.bytes_out += bytes;
            }
        }
        if cur_hour != i64::MIN {
            self.hours.entry(cur_hour).or_default().add(&cur);
        }
    }
}

impl Fold for Traffic {
    /// Add the port tallies of the blob's tables to the totals.
    fn end_blob(&mut self) {
        for slot in self.cache.0.iter_mut() {
            let (key, st) = std::mem::replace(slot, (NO_PORT, Tally::default()));
            add_port(&mut self.recent, key, &st);
        }
        for (d, g) in self.ports.iter_mut().zip(&mut self.recent) {
            for (k, v) in g.drain() {
                let key = (Protocol::from_code((k >> 16) as u16), k as u16);
                d.entry(key).or_default().merge(&v);
            }
        }
    }

    fn merge(&mut self, mut o: Traffic) {
        self.end_blob();
        o.end_blob();
        for (k, v) in o.hours {
            self.hours.entry(k).or_default().add(&v);
        }
        for (a, b) in self.ports.iter_mut().zip(o.ports) {
            for (k, v) in b {
                a.entry(k).or_default().merge(&v);
            }
        }
    }
}

impl Traffic {
    /// Destination ports of both directions together.
    pub fn all_ports(&self) -> HMap<(Protocol, u16), Tally> {
        let mut all = self.ports[1].clone();
        for (k, v) in &self.ports[0] {
            all.entry(*k).or_default().merge(v);
        }
        all
    }
}
