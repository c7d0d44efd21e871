//! Record- and tuple-level filters shared by every command, and [`Filtered`], the sink
//! wrapper that applies them so each analysis only sees what passed. Path-level filtering
//! happens earlier, in `discover`; these apply to what the content says (content wins).

use crate::discover::LogKind;
use crate::model::{Decision, Direction, Family, FlowState, FlowTuple, GroupContext, Protocol};
use crate::parse::{RuleTable, TableSink};
use ipnet::IpNet;
use std::net::IpAddr;

/// A filter over rule tables and tuples. Empty lists and `None` mean "no restriction";
/// several values of one list mean "any of them".
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
    /// Rule name patterns (`*`, `?`, `[…]`), case-sensitive as rule names are.
    pub rules: Vec<glob::Pattern>,
    /// Source address within any of these networks.
    pub src: Vec<IpNet>,
    /// Destination address within any of these networks.
    pub dst: Vec<IpNet>,
    /// Destination port is one of these.
    pub dports: Vec<u16>,
    /// Source port is one of these.
    pub sports: Vec<u16>,
    pub protocols: Vec<Protocol>,
    pub decision: Option<Decision>,
    pub direction: Option<Direction>,
    /// Flow state is one of these (v1 tuples, which have none, never match).
    pub states: Vec<FlowState>,
}

fn in_any(nets: &[IpNet], ip: &IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(ip))
}

impl Filter {
    /// The same filter without `--since`/`--until`.
    pub fn without_window(&self) -> Filter {
        Filter {
            since_ms: None,
            until_ms: None,
            ..self.clone()
        }
    }

    /// Whether any tuple-level condition is set (beyond whole rule tables).
    pub fn has_tuple_filters(&self) -> bool {
        self.since_ms.is_some()
            || self.until_ms.is_some()
            || !self.src.is_empty()
            || !self.dst.is_empty()
            || !self.dports.is_empty()
            || !self.sports.is_empty()
            || !self.protocols.is_empty()
            || self.decision.is_some()
            || self.direction.is_some()
            || !self.states.is_empty()
    }

    /// Whether a whole rule table passes (NSG, subscription, family, rule).
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
        if !self.rules.is_empty() && !self.rules.iter().any(|p| p.matches(ctx.rule)) {
            return false;
        }
        true
    }

    /// Whether one tuple passes.
    #[inline]
    pub fn keeps_tuple(&self, t: &FlowTuple) -> bool {
        if self.since_ms.is_some_and(|s| t.time_ms < s)
            || self.until_ms.is_some_and(|u| t.time_ms >= u)
        {
            return false;
        }
        if self.decision.is_some_and(|d| d != t.decision)
            || self.direction.is_some_and(|d| d != t.direction)
        {
            return false;
        }
        if !self.dports.is_empty() && !self.dports.contains(&t.dport) {
            return false;
        }
        if !self.sports.is_empty() && !self.sports.contains(&t.sport) {
            return false;
        }
        if !self.protocols.is_empty() && !self.protocols.contains(&t.protocol) {
            return false;
        }
        if !self.states.is_empty() && !t.state.is_some_and(|s| self.states.contains(&s)) {
            return false;
        }
        in_any(&self.src, &t.src) && in_any(&self.dst, &t.dst)
    }
}

/// A sink wrapper that passes on only what the filter keeps, counting the rest.
pub struct Filtered<'a, S: TableSink> {
    pub inner: &'a mut S,
    pub filter: &'a Filter,
    /// Tuples dropped by the filter so far.
    pub filtered: u64,
    tuples: Vec<FlowTuple>,
    indices: Vec<u32>,
}

impl<'a, S: TableSink> Filtered<'a, S> {
    pub fn new(inner: &'a mut S, filter: &'a Filter) -> Self {
        Filtered {
            inner,
            filter,
            filtered: 0,
            tuples: Vec::new(),
            indices: Vec::new(),
        }
    }
}

impl<S: TableSink> TableSink for Filtered<'_, S> {
    fn table(&mut self, table: &RuleTable<'_>) {
        if !self.filter.keeps_group(&table.ctx) {
            self.filtered += table.tuples.len() as u64;
            return;
        }
        if !self.filter.has_tuple_filters() {
            self.inner.table(table);
            return;
        }
        self.tuples.clear();
        self.indices.clear();
        for (t, i) in table.tuples.iter().zip(table.indices) {
            if self.filter.keeps_tuple(t) {
                self.tuples.push(*t);
                self.indices.push(*i);
            }
        }
        self.filtered += (table.tuples.len() - self.tuples.len()) as u64;
        self.inner.table(&RuleTable {
            ctx: table.ctx,
            tuples: &self.tuples,
            indices: &self.indices,
        });
    }
}

/// Parse `--proto`: `tcp`, `udp` or an IANA number.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" | "t" => Ok(Protocol::Tcp),
        "udp" | "u" => Ok(Protocol::Udp),
        n => match n.parse::<u8>() {
            Ok(6) => Ok(Protocol::Tcp),
            Ok(17) => Ok(Protocol::Udp),
            Ok(n) => Ok(Protocol::Number(n)),
            Err(_) => Err(format!(
                "{s:?} is not a protocol: use tcp, udp or a number 0-255"
            )),
        },
    }
}

/// Parse a CIDR or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| unmap(n).trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8, 2001:db8::/32) or an address"))
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it is
/// (`10.0.0.0/8`): tuples carry such addresses as IPv4.
fn unmap(n: IpNet) -> IpNet {
    match n {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(n),
            None => n,
        },
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple() -> FlowTuple {
        crate::parse::parse_tuple(
            "1542110379,10.5.16.4,203.0.113.115,44931,443,T,O,A,C,30,16978,24,14008",
            Family::NsgV2,
        )
        .unwrap()
    }

    #[test]
    fn ipv4_mapped_networks_are_ipv4() {
        assert_eq!(
            parse_net("::ffff:10.0.0.0/104"),
            Ok("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_net("::ffff:10.0.0.4"),
            Ok("10.0.0.4/32".parse().unwrap())
        );
        assert_eq!(
            parse_net("2001:db8::/32"),
            Ok("2001:db8::/32".parse().unwrap())
        );
    }

    #[test]
    fn tuple_conditions() {
        let t = tuple();
        let f = |g: &dyn Fn(&mut Filter)| {
            let mut x = Filter::default();
            g(&mut x);
            x.keeps_tuple(&t)
        };
        assert!(f(&|_| {}));
        assert!(f(&|x| x.src = vec![parse_net("10.5.0.0/16").unwrap()]));
        assert!(!f(&|x| x.src = vec![parse_net("10.6.0.0/16").unwrap()]));
        assert!(f(&|x| x.dst = vec![parse_net("203.0.113.115").unwrap()]));
        assert!(f(&|x| x.dports = vec![22, 443]));
        assert!(!f(&|x| x.sports = vec![443]));
        assert!(f(&|x| x.protocols = vec![parse_protocol("tcp").unwrap()]));
        assert!(!f(&|x| x.protocols = vec![parse_protocol("17").unwrap()]));
        assert!(!f(&|x| x.decision = Some(Decision::Deny)));
        assert!(f(&|x| x.direction = Some(Direction::Outbound)));
        assert!(f(&|x| x.states = vec![FlowState::Continuing]));
        assert!(!f(&|x| x.since_ms = Some(1_542_110_380_000)));
        assert!(f(&|x| x.until_ms = Some(1_542_110_380_000)));
    }

    #[test]
    fn nets_and_protocols_parse() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(parse_net("10.0.0.0/33").is_err());
        assert_eq!(parse_protocol("UDP"), Ok(Protocol::Udp));
        assert_eq!(parse_protocol("1"), Ok(Protocol::Number(1)));
        assert!(parse_protocol("icmpx").is_err());
    }
}
