//! The coverage fold: which NIC had a blob for which hour, and of which log kind (NSG or
//! VNet flow logs). It reads the blob's path segments only, never its tuples, so it costs a
//! map update per blob. It gives the report's coverage table (hours present and missing per
//! NIC) and the double-logging warning (a NIC-hour with both kinds: the two can describe the
//! same flows).

use super::Fold;
use crate::discover::{BlobMeta, LogKind};
use crate::parse::{RuleTable, TableSink};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const NSG: u8 = 1;
const VNET: u8 = 2;

fn kind_bit(k: LogKind) -> u8 {
    match k {
        LogKind::Nsg => NSG,
        LogKind::Vnet => VNET,
    }
}

/// What one NIC's blobs cover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSeen {
    /// Hour start (ms) → the log kinds of that hour's blobs (bit 1 NSG, bit 2 VNet).
    pub hours: BTreeMap<i64, u8>,
    /// Log kinds of all the NIC's blobs.
    pub kinds: u8,
}

impl NicSeen {
    /// `nsg`, `vnet`: the kinds seen, in that order.
    pub fn kind_names(&self) -> Vec<&'static str> {
        [(NSG, "nsg"), (VNET, "vnet")]
            .iter()
            .filter(|(b, _)| self.kinds & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// Blobs read by NIC and hour. Mergeable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// The hour of every blob read whose path names one (with a MAC or not).
    pub hours: BTreeSet<i64>,
    /// MAC (normalised) → what its blobs cover.
    pub nics: BTreeMap<String, NicSeen>,
}

impl TableSink for Coverage {
    #[inline]
    fn table(&mut self, _table: &RuleTable<'_>) {}
}

impl Coverage {
    /// Count one blob by its path segments.
    pub fn add(&mut self, b: &BlobMeta) {
        if let Some(h) = b.hour_ms {
            self.hours.insert(h);
        }
        if let Some(mac) = &b.mac {
            let n = match self.nics.get_mut(mac) {
                Some(n) => n,
                None => self.nics.entry(mac.clone()).or_default(),
            };
            let bit = b.kind.map(kind_bit).unwrap_or(0);
            n.kinds |= bit;
            if let Some(h) = b.hour_ms {
                *n.hours.entry(h).or_default() |= bit;
            }
        }
    }

    /// Every hour from the first blob hour to the last (empty without blob hours).
    pub fn span(&self) -> Vec<i64> {
        let (Some(lo), Some(hi)) = (self.hours.first(), self.hours.last()) else {
            return Vec::new();
        };
        (0..)
            .map(|i| lo + i * crate::aggregate::traffic::HOUR_MS)
            .take_while(|h| h <= hi)
            .collect()
    }

    /// NICs (MAC) with hours of the run's span (its first to its last blob hour) that have
    /// no blob of theirs, with those hours, sorted: a NIC that stopped logging, or blobs
    /// not downloaded. NICs first seen late or last seen early count too (from the span's
    /// view, those hours are missing).
    pub fn missing(&self) -> Vec<(String, Vec<i64>)> {
        let span = self.span();
        self.nics
            .iter()
            .filter_map(|(mac, n)| {
                let gone: Vec<i64> = span
                    .iter()
                    .copied()
                    .filter(|h| !n.hours.contains_key(h))
                    .collect();
                (!gone.is_empty()).then(|| (mac.clone(), gone))
            })
            .collect()
    }

    /// NICs (MAC) and hours that have both NSG and VNet blobs, sorted.
    pub fn double_logged(&self) -> Vec<(String, i64)> {
        self.nics
            .iter()
            .flat_map(|(mac, n)| {
                n.hours
                    .iter()
                    .filter(|(_, k)| **k == NSG | VNET)
                    .map(move |(h, _)| (mac.clone(), *h))
            })
            .collect()
    }
}

impl Fold for Coverage {
    fn begin_blob(&mut self, blob: &BlobMeta) {
        self.add(blob);
    }

    fn merge(&mut self, o: Coverage) {
        self.hours.extend(o.hours);
        for (mac, n) in o.nics {
            let mine = self.nics.entry(mac).or_default();
            mine.kinds |= n.kinds;
            for (h, k) in n.hours {
                *mine.hours.entry(h).or_default() |= k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn blob(path: &str) -> BlobMeta {
        BlobMeta::from_path(Path::new(path))
    }

    #[test]
    fn a_nic_hour_with_both_kinds_is_double_logged_whatever_the_merge_order() {
        let nsg = "c/insights-logs-networksecuritygroupflowevent/resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/N/y=2026/m=01/d=05/h=01/m=00/macAddress=001122334455/PT1H.json";
        let vnet = "c/insights-logs-flowlogflowevent/flowLogResourceID=/S/RG/NETWORKWATCHER_EASTUS/FL/y=2026/m=01/d=05/h=01/m=00/macAddress=001122334455/PT1H.json";
        let other = "c/insights-logs-flowlogflowevent/flowLogResourceID=/S/RG/NETWORKWATCHER_EASTUS/FL/y=2026/m=01/d=05/h=02/m=00/macAddress=001122334455/PT1H.json";
        let (mut a, mut b) = (Coverage::default(), Coverage::default());
        a.add(&blob(nsg));
        b.add(&blob(vnet));
        b.add(&blob(other));
        let mut ab = a.clone();
        ab.merge(b.clone());
        let mut ba = b;
        ba.merge(a);
        assert_eq!(ab, ba);
        assert_eq!(
            ab.double_logged(),
            vec![("001122334455".to_string(), 1_767_574_800_000)]
        );
        assert_eq!(ab.nics["001122334455"].kind_names(), vec!["nsg", "vnet"]);
        assert_eq!(ab.hours.len(), 2);
    }
}
