//! Record- and tuple-level filters shared by every command. Path-level filtering happens
//! earlier, in `discover`; these apply to what the content says (content wins over path).

use crate::discover::LogKind;
use crate::model::{Family, FlowTuple, GroupContext};

/// A filter over rule tables and tuples. Empty lists and `None` mean "no restriction".
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep tuples at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Keep tuples before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// NSG names (case-insensitive), matched against the record's NSG / ACL name.
    pub nsgs: Vec<String>,
    /// Subscription ids (case-insensitive), matched against the record's resource id.
    pub subscriptions: Vec<String>,
    /// Only NSG or only VNet records.
    pub kind: Option<LogKind>,
}

impl Filter {
    /// Whether the filter restricts tuples by time at all.
    pub fn has_time(&self) -> bool {
        self.since_ms.is_some() || self.until_ms.is_some()
    }

    /// Whether a whole rule table passes (NSG, subscription, family).
    pub fn keeps_group(&self, ctx: &GroupContext<'_>) -> bool {
        if let Some(kind) = self.kind {
            let k = match ctx.family {
                Family::Vnet => LogKind::Vnet,
                _ => LogKind::Nsg,
            };
            if k != kind {
                return false;
            }
        }
        if !self.nsgs.is_empty() && !self.nsgs.iter().any(|n| n.eq_ignore_ascii_case(ctx.nsg)) {
            return false;
        }
        if !self.subscriptions.is_empty()
            && !self
                .subscriptions
                .iter()
                .any(|s| s.eq_ignore_ascii_case(ctx.subscription))
        {
            return false;
        }
        true
    }

    /// Whether one tuple passes.
    #[inline]
    pub fn keeps_tuple(&self, t: &FlowTuple) -> bool {
        if let Some(s) = self.since_ms {
            if t.time_ms < s {
                return false;
            }
        }
        if let Some(u) = self.until_ms {
            if t.time_ms >= u {
                return false;
            }
        }
        true
    }
}
