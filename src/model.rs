//! The shared vocabulary of every stage: one flow tuple, the rule it was logged under,
//! and the small enums of its letters.
//!
//! A [`FlowTuple`] is `Copy` and holds no borrowed data, so stages can keep, sort and
//! compare tuples freely; the strings it came from (rule, NSG, MAC) travel beside it in a
//! [`GroupContext`], once per rule table rather than once per tuple.

use std::fmt;
use std::net::IpAddr;

/// Which log family (and version) a record belongs to. Decided per record, never per blob:
/// `properties.Version` changes inside real blobs, and NSG and VNet records can share a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// NSG flow log version 1: 8 fields per tuple, no flow state, no counters.
    NsgV1,
    /// NSG flow log version 2: 13 fields, flow state and counters (empty on `B`).
    NsgV2,
    /// VNet flow log (`flowLogVersion` 4): 13 fields, millisecond timestamps, IANA protocol
    /// numbers, encryption status, state `D` for denied.
    Vnet,
}

impl Family {
    /// Stable snake_case name used in JSON output and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Family::NsgV1 => "nsg_v1",
            Family::NsgV2 => "nsg_v2",
            Family::Vnet => "vnet",
        }
    }

    /// Number of comma-separated fields a tuple of this family has.
    pub fn field_count(self) -> usize {
        match self {
            Family::NsgV1 => 8,
            Family::NsgV2 | Family::Vnet => 13,
        }
    }

    /// All families, in output order.
    pub const ALL: [Family; 3] = [Family::NsgV1, Family::NsgV2, Family::Vnet];

    /// Index into per-family arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Transport protocol as logged. NSG logs write letters (`T`, `U`), VNet logs IANA numbers.
/// Anything else is kept, never rejected: ICMP and friends are not logged today, but the
/// format does not promise that.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Protocol {
    Tcp,
    Udp,
    /// An IANA protocol number other than 6 and 17 (VNet logs).
    Number(u8),
    /// A protocol letter other than `T` and `U` (NSG logs), kept as its ASCII byte.
    Letter(u8),
}

impl Protocol {
    /// A 10-bit code, one-to-one and in the same order as `Protocol`'s: `Tcp` 0, `Udp` 1,
    /// numbers `0x100 | n`, letters `0x200 | l`. For packed keys.
    pub fn code(self) -> u16 {
        match self {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
            Protocol::Number(n) => 0x100 | n as u16,
            Protocol::Letter(l) => 0x200 | l as u16,
        }
    }

    /// The protocol of a [`Protocol::code`].
    pub fn from_code(c: u16) -> Protocol {
        match c >> 8 {
            0 if c == 0 => Protocol::Tcp,
            0 => Protocol::Udp,
            1 => Protocol::Number(c as u8),
            _ => Protocol::Letter(c as u8),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Number(n) => write!(f, "{n}"),
            Protocol::Letter(l) => write!(f, "{}", *l as char),
        }
    }
}

/// Direction from the NIC's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `I`: inbound to the NIC.
    Inbound,
    /// `O`: outbound from the NIC.
    Outbound,
}

/// What the rule decided. VNet logs have no decision field: state `D` means denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    Allow,
    Deny,
}

/// Flow state (NSG v2 and VNet). NSG v1 tuples have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowState {
    /// `B`: the flow began.
    Begin,
    /// `C`: the flow continues (about every 5 minutes); counters are deltas.
    Continuing,
    /// `E`: the flow ended; counters are deltas since the previous tuple.
    End,
    /// `D`: denied (VNet logs only).
    Denied,
}

/// VNet encryption status codes as documented; an unknown code is kept, not rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encryption {
    Encrypted,
    NotEncrypted,
    HwNotSupported,
    SwNotReady,
    NotAccepted,
    NotSupported,
    LocalDst,
    Fallback,
    /// A code not in the documented list (counted under `other` in output).
    Other,
}

impl Encryption {
    /// Parse a documented code; unknown codes map to [`Encryption::Other`].
    pub fn parse(s: &str) -> Encryption {
        match s {
            "X" => Encryption::Encrypted,
            "NX" => Encryption::NotEncrypted,
            "NX_HW_NOT_SUPPORTED" => Encryption::HwNotSupported,
            "NX_SW_NOT_READY" => Encryption::SwNotReady,
            "NX_NOT_ACCEPTED" => Encryption::NotAccepted,
            "NX_NOT_SUPPORTED" => Encryption::NotSupported,
            "NX_LOCAL_DST" => Encryption::LocalDst,
            "NX_FALLBACK" => Encryption::Fallback,
            _ => Encryption::Other,
        }
    }

    /// The code as Azure writes it (`other` for unknown codes).
    pub fn code(self) -> &'static str {
        match self {
            Encryption::Encrypted => "X",
            Encryption::NotEncrypted => "NX",
            Encryption::HwNotSupported => "NX_HW_NOT_SUPPORTED",
            Encryption::SwNotReady => "NX_SW_NOT_READY",
            Encryption::NotAccepted => "NX_NOT_ACCEPTED",
            Encryption::NotSupported => "NX_NOT_SUPPORTED",
            Encryption::LocalDst => "NX_LOCAL_DST",
            Encryption::Fallback => "NX_FALLBACK",
            Encryption::Other => "other",
        }
    }

    pub const COUNT: usize = 9;

    pub fn index(self) -> usize {
        self as usize
    }

    pub const ALL: [Encryption; 9] = [
        Encryption::Encrypted,
        Encryption::NotEncrypted,
        Encryption::HwNotSupported,
        Encryption::SwNotReady,
        Encryption::NotAccepted,
        Encryption::NotSupported,
        Encryption::LocalDst,
        Encryption::Fallback,
        Encryption::Other,
    ];
}

/// One flow tuple, validated. Small and `Copy`; no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    /// Tuple time in Unix milliseconds, UTC (NSG seconds are scaled by 1000).
    pub time_ms: i64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: Protocol,
    pub direction: Direction,
    pub decision: Decision,
    /// `None` for NSG v1 tuples, which carry no state.
    pub state: Option<FlowState>,
    /// `None` outside VNet logs.
    pub encryption: Option<Encryption>,
    /// Counters as logged; `None` means "not logged" (NSG v1, or empty on NSG v2 `B`),
    /// which is different from a logged 0.
    pub packets_s2d: Option<u64>,
    pub bytes_s2d: Option<u64>,
    pub packets_d2s: Option<u64>,
    pub bytes_d2s: Option<u64>,
}

/// What is shared by all tuples of one rule table: which log, NSG/ACL, rule and NIC.
/// Borrowed from the blob; lives as long as one record.
#[derive(Clone, Copy, Debug)]
pub struct GroupContext<'a> {
    pub family: Family,
    /// NSG name as written in the log: last segment of `resourceId` (NSG logs) or of
    /// `aclID` (VNet logs).
    pub nsg: &'a str,
    /// Rule name as written.
    pub rule: &'a str,
    /// NIC MAC address as written (not normalised); empty when absent.
    pub mac: &'a str,
    /// Subscription id from the record's resource id, when present (as written).
    pub subscription: &'a str,
    /// The NSG's ARM id (`resourceId`, NSG logs) or the `aclID` (VNet logs: an NSG ARM id,
    /// the all-zero GUID for platform rules, or an AVNM admin configuration), as written.
    pub resource_id: &'a str,
    /// VNet logs: the VNet, subnet or NIC the flow log is set on (`targetResourceID`).
    pub target_resource_id: &'a str,
    /// VNet logs: the flow log's ARM id (`flowLogResourceID`).
    pub flow_log_resource_id: &'a str,
    /// Index of the record within the blob (0-based).
    pub record_index: usize,
}

impl GroupContext<'_> {
    /// The NIC MAC as 12 upper-case hex digits (logs write it in mixed case, sometimes
    /// with separators). Borrowed when already normal.
    pub fn mac_normalized(&self) -> std::borrow::Cow<'_, str> {
        let m = self.mac;
        if m.len() == 12
            && m.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            std::borrow::Cow::Borrowed(m)
        } else {
            std::borrow::Cow::Owned(normalize_mac(m))
        }
    }

    /// What [`GroupContext::nsg_identity`] is made of, as written (resource id, name,
    /// subscription): equal texts are one identity, so a fold can keep the identity of the
    /// last table's texts instead of building it (lower-cased) for every table.
    pub fn nsg_written(&self) -> [&str; 3] {
        [self.resource_id, self.nsg, self.subscription]
    }

    /// The NSG this table's rule belongs to: subscription and resource group from its ARM id
    /// (`resourceId` or `aclID`; the path's subscription when the record names no id; none
    /// for an `aclID` that is no ARM id, as AVNM's), and the name. Azure's platform rules (the all-zero `aclID`) belong to no subscription.
    pub fn nsg_identity(&self) -> NsgIdentity<'_> {
        if self.resource_id == crate::parse::PLATFORM_ACL_ID {
            return NsgIdentity {
                subscription: "",
                resource_group: "",
                name: self.nsg,
            };
        }
        NsgIdentity {
            subscription: if self.resource_id.is_empty() {
                self.subscription
            } else {
                subscription_of(self.resource_id)
            },
            resource_group: resource_group_in(self.resource_id),
            name: self.nsg,
        }
    }
}

/// [`GroupContext::nsg_written`] kept by a fold, beside what it computed of it.
pub type WrittenNsg = [Box<str>; 3];

/// The kept texts are the table's.
pub fn same_written(kept: &WrittenNsg, now: [&str; 3]) -> bool {
    kept.iter().zip(now).all(|(a, b)| **a == *b)
}

/// An NSG's identity: subscription, resource group and name, compared case-insensitively as
/// Azure compares resource names. NSG flow logs write the ARM id upper-cased
/// (`…/NETWORKSECURITYGROUPS/APP-NSG`) where VNet logs keep ARM's spelling (`app-nsg`): the
/// two are one NSG; two `app-nsg` in two resource groups are two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsgIdentity<'a> {
    pub subscription: &'a str,
    pub resource_group: &'a str,
    pub name: &'a str,
}

impl NsgIdentity<'_> {
    /// The identity as one map key: the three parts lower-cased, `/`-joined (ARM names
    /// hold no `/`).
    pub fn key(&self) -> String {
        let mut k = String::with_capacity(
            self.subscription.len() + self.resource_group.len() + self.name.len() + 2,
        );
        for (i, part) in [self.subscription, self.resource_group, self.name]
            .iter()
            .enumerate()
        {
            if i > 0 {
                k.push('/');
            }
            k.extend(part.chars().flat_map(char::to_lowercase));
        }
        k
    }
}

/// Of two spellings of one name, whether `candidate` is the one to show instead of
/// `current`: ARM's own spelling (with lower-case letters) over the upper-cased copy NSG
/// flow logs write, then the first in byte order, so the choice does not depend on which
/// blob was read first.
pub fn better_spelling(candidate: &str, current: &str) -> bool {
    let upper = |s: &str| !s.chars().any(char::is_lowercase);
    (upper(candidate), candidate) < (upper(current), current)
}

/// `…/resourceGroups/<rg>/…` of an ARM id (any case), as written; empty when absent.
pub fn resource_group_in(id: &str) -> &str {
    let mut parts = id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("resourceGroups") {
            return parts.next().unwrap_or("");
        }
    }
    ""
}

/// Last non-empty `/`-separated segment of an ARM id, as written.
pub fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// The subscription id inside an ARM id (`/SUBSCRIPTIONS/<id>/…`, any case), as written.
pub fn subscription_of(id: &str) -> &str {
    let mut parts = id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("subscriptions") {
            return parts.next().unwrap_or("");
        }
    }
    ""
}

/// Normalise a MAC address to 12 upper-case hex digits without separators; input that is
/// not a MAC is returned upper-cased as is.
pub fn normalize_mac(mac: &str) -> String {
    let hex: String = mac
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if hex.len() == 12 {
        hex
    } else {
        mac.to_ascii_uppercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsg_identity_ignores_case_and_keeps_resource_groups_apart() {
        let ctx = |rid: &'static str, nsg: &'static str| GroupContext {
            family: Family::NsgV2,
            nsg,
            rule: "r",
            mac: "",
            subscription: "",
            resource_id: rid,
            target_resource_id: "",
            flow_log_resource_id: "",
            record_index: 0,
        };
        let upper = ctx(
            "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG-A/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/APP-NSG",
            "APP-NSG",
        );
        let arm = ctx(
            "/subscriptions/s1/resourceGroups/rg-a/providers/Microsoft.Network/networkSecurityGroups/app-nsg",
            "app-nsg",
        );
        let other = ctx(
            "/subscriptions/s1/resourceGroups/rg-b/providers/Microsoft.Network/networkSecurityGroups/app-nsg",
            "app-nsg",
        );
        assert_eq!(upper.nsg_identity().key(), "s1/rg-a/app-nsg");
        assert_eq!(upper.nsg_identity().key(), arm.nsg_identity().key());
        assert_ne!(arm.nsg_identity().key(), other.nsg_identity().key());
        assert_eq!(arm.nsg_identity().resource_group, "rg-a");
        let platform = ctx(
            crate::parse::PLATFORM_ACL_ID,
            crate::parse::PLATFORM_ACL_NAME,
        );
        assert_eq!(platform.nsg_identity().key(), "//azure platform");
        // ARM's spelling wins over the upper-cased copy, whichever comes first.
        assert!(better_spelling("app-nsg", "APP-NSG"));
        assert!(!better_spelling("APP-NSG", "app-nsg"));
        assert!(better_spelling("App-Nsg", "app-nsg"));
        assert!(!better_spelling("app-nsg", "app-nsg"));
    }

    #[test]
    fn last_segment_of_arm_ids() {
        assert_eq!(
            last_segment("/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WEB-NSG"),
            "WEB-NSG"
        );
        assert_eq!(
            last_segment("00000000-1234-abcd-ef00-c1c2c3c4c5c6"),
            "00000000-1234-abcd-ef00-c1c2c3c4c5c6"
        );
        assert_eq!(last_segment("/a/b/"), "b");
    }

    #[test]
    fn subscription_from_any_case() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/x"),
            "abc"
        );
        assert_eq!(
            subscription_of("/SUBSCRIPTIONS/ABC/RESOURCEGROUPS/x"),
            "ABC"
        );
        assert_eq!(subscription_of("no-sub"), "");
    }

    #[test]
    fn macs_are_normalised() {
        assert_eq!(normalize_mac("00-0d-3a-0a-f5-19"), "000D3A0AF519");
        assert_eq!(normalize_mac("000d3a0af519"), "000D3A0AF519");
        assert_eq!(normalize_mac("junk"), "JUNK");
    }
}
