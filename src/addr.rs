//! Address classes and labels: which addresses are the user's own (internal), what the
//! user calls a network (`--labels`, longest-prefix match), and a Traffic-Analytics-like
//! class for each flow.
//!
//! Internal by default: RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 6598 shared address
//! space (100.64/10), loopback, link-local (169.254/16, fe80::/10) and IPv6 unique local
//! addresses (fc00::/7), plus every `--internal CIDR`. The Azure platform addresses
//! 168.63.129.16 (DNS, health probes, DHCP) and 169.254.169.254 (instance metadata) are their
//! own class, as Microsoft documents them ("What is IP address 168.63.129.16?").

use ipnet::IpNet;
use prefix_trie::joint::JointPrefixMap;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The class of one flow, from its two addresses.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum FlowClass {
    /// Both ends internal (intra- or inter-VNet, on-premises over VPN/ExpressRoute).
    Internal,
    /// Internal source, external destination.
    InternalToInternet,
    /// External source, internal destination.
    InternetToInternal,
    /// Either end is an Azure platform address (168.63.129.16, 169.254.169.254).
    AzurePlatform,
    /// Neither end internal (e.g. a public IP not declared with `--internal`).
    External,
}

impl FlowClass {
    pub fn name(self) -> &'static str {
        match self {
            FlowClass::Internal => "internal",
            FlowClass::InternalToInternet => "internal-to-internet",
            FlowClass::InternetToInternal => "internet-to-internal",
            FlowClass::AzurePlatform => "azure-platform",
            FlowClass::External => "external",
        }
    }
}

const AZURE_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16));
const AZURE_IMDS: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

/// What the run knows about addresses.
#[derive(Default)]
pub struct AddressBook {
    /// Extra internal networks (`--internal`).
    pub internal: Vec<IpNet>,
    labels: JointPrefixMap<IpNet, u32>,
    names: Vec<String>,
    /// Every label as given (network, name), sorted by network: what a partial file records.
    given: Vec<(IpNet, String)>,
}

impl std::fmt::Debug for AddressBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressBook")
            .field("internal", &self.internal)
            .field("labels", &self.names.len())
            .finish()
    }
}

impl AddressBook {
    pub fn new(internal: Vec<IpNet>) -> AddressBook {
        AddressBook {
            internal,
            ..AddressBook::default()
        }
    }

    /// Add one label; a later label for the same network replaces the earlier one.
    pub fn add_label(&mut self, net: IpNet, name: &str) {
        let id = match self.names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                self.names.push(name.to_string());
                (self.names.len() - 1) as u32
            }
        };
        self.labels.insert(net.trunc(), id);
        let at = self.given.partition_point(|(n, _)| *n < net.trunc());
        match self.given.get_mut(at) {
            Some((n, old)) if *n == net.trunc() => *old = name.to_string(),
            _ => self.given.insert(at, (net.trunc(), name.to_string())),
        }
    }

    /// Every label, sorted by network.
    pub fn labels(&self) -> &[(IpNet, String)] {
        &self.given
    }

    /// Load `cidr,name` lines (a header line `cidr,name` is allowed; `#` starts a comment).
    pub fn load_labels(&mut self, path: &Path) -> Result<usize, String> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .comment(Some(b'#'))
            .flexible(true)
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut n = 0;
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
            let (Some(cidr), Some(name)) = (rec.get(0), rec.get(1)) else {
                return Err(format!(
                    "{}: line {}: expected `cidr,name`",
                    path.display(),
                    i + 1
                ));
            };
            if i == 0 && cidr.eq_ignore_ascii_case("cidr") {
                continue;
            }
            let net = crate::filter::parse_net(cidr)
                .map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?;
            if name.is_empty() {
                return Err(format!("{}: line {}: empty name", path.display(), i + 1));
            }
            self.add_label(net, name);
            n += 1;
        }
        Ok(n)
    }

    /// Whether an address is internal.
    pub fn is_internal(&self, ip: &IpAddr) -> bool {
        builtin_internal(ip) || self.internal.iter().any(|n| n.contains(ip))
    }
}

/// Internal by the built-in ranges alone (RFC 1918, RFC 6598, loopback, link-local, IPv6
/// ULA), without `--internal`: what a fold can decide without the run's address book.
pub fn builtin_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_loopback() || (s & 0xFE00) == 0xFC00 || (s & 0xFFC0) == 0xFE80
        }
    }
}

impl AddressBook {
    /// The longest-prefix label of an address, and the network it came from.
    pub fn label(&self, ip: &IpAddr) -> Option<(&str, IpNet)> {
        if self.names.is_empty() {
            return None;
        }
        self.labels
            .get_lpm(&IpNet::from(*ip))
            .map(|(net, id)| (self.names[*id as usize].as_str(), net))
    }

    /// The class of a flow from `src` to `dst`.
    pub fn class(&self, src: &IpAddr, dst: &IpAddr) -> FlowClass {
        if [AZURE_DNS, AZURE_IMDS].iter().any(|p| p == src || p == dst) {
            return FlowClass::AzurePlatform;
        }
        match (self.is_internal(src), self.is_internal(dst)) {
            (true, true) => FlowClass::Internal,
            (true, false) => FlowClass::InternalToInternet,
            (false, true) => FlowClass::InternetToInternal,
            (false, false) => FlowClass::External,
        }
    }

    /// `internal`, `external`, or `azure-platform` for Azure's DNS and metadata addresses
    /// (168.63.129.16, 169.254.169.254): the one classification `top --by class` uses too.
    pub fn scope_name(&self, ip: &IpAddr) -> &'static str {
        if [AZURE_DNS, AZURE_IMDS].iter().any(|p| p == ip) {
            FlowClass::AzurePlatform.name()
        } else if self.is_internal(ip) {
            "internal"
        } else {
            "external"
        }
    }
}

/// How addresses are grouped into nodes (`--group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// One node per address.
    Ip,
    /// One node per label; unlabeled addresses stay addresses.
    Label,
    /// One node per network: IPv4 /first, IPv6 /second.
    Prefix(u8, u8),
}

impl Grouping {
    pub fn parse(s: &str) -> Result<Grouping, String> {
        match s {
            "ip" => Ok(Grouping::Ip),
            "label" => Ok(Grouping::Label),
            p => {
                let bad = || {
                    format!(
                        "{s:?}: use ip, label, prefix/N (N = 0..128: IPv4 /N, IPv6 /4N up to 32, \
                         else IPv4 /32 and IPv6 /N) or prefix/V4,V6 (say prefix/24,64)"
                    )
                };
                let spec = p.strip_prefix("prefix/").ok_or_else(bad)?;
                let num = |t: &str, max: u8| t.parse::<u8>().ok().filter(|n| *n <= max);
                match spec.split_once(',') {
                    Some((a, b)) => match (num(a, 32), num(b, 128)) {
                        (Some(a), Some(b)) => Ok(Grouping::Prefix(a, b)),
                        _ => Err(bad()),
                    },
                    None => match num(spec, 128) {
                        Some(n) if n <= 32 => Ok(Grouping::Prefix(n, n * 4)),
                        Some(n) => Ok(Grouping::Prefix(32, n)),
                        None => Err(bad()),
                    },
                }
            }
        }
    }
}

/// A graph or ranking node: an address, a network, or a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    Ip(IpAddr),
    Prefix(IpNet),
    Label(u32),
}

/// A [`Node`] as a `--state-dir` unit keeps it (a label by its id in the same `--labels`,
/// which the state's options pin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum NodeWire {
    Ip(IpAddr),
    Prefix(IpAddr, u8),
    Label(u32),
}

impl From<Node> for NodeWire {
    fn from(n: Node) -> NodeWire {
        match n {
            Node::Ip(ip) => NodeWire::Ip(ip),
            Node::Prefix(net) => NodeWire::Prefix(net.addr(), net.prefix_len()),
            Node::Label(id) => NodeWire::Label(id),
        }
    }
}

impl TryFrom<NodeWire> for Node {
    type Error = String;
    fn try_from(n: NodeWire) -> Result<Node, String> {
        Ok(match n {
            NodeWire::Ip(ip) => Node::Ip(ip),
            NodeWire::Prefix(ip, len) => {
                Node::Prefix(IpNet::new(ip, len).map_err(|e| e.to_string())?)
            }
            NodeWire::Label(id) => Node::Label(id),
        })
    }
}

impl AddressBook {
    /// The node an address falls in under a grouping.
    #[inline]
    pub fn node(&self, ip: &IpAddr, g: Grouping) -> Node {
        match g {
            Grouping::Ip => Node::Ip(*ip),
            Grouping::Label => match self.label_id(ip) {
                Some(id) => Node::Label(id),
                None => Node::Ip(*ip),
            },
            Grouping::Prefix(v4, v6) => {
                let len = match ip {
                    IpAddr::V4(_) => v4,
                    IpAddr::V6(_) => v6,
                };
                Node::Prefix(IpNet::new(*ip, len).expect("valid prefix length").trunc())
            }
        }
    }

    fn label_id(&self, ip: &IpAddr) -> Option<u32> {
        if self.names.is_empty() {
            return None;
        }
        self.labels.get_lpm(&IpNet::from(*ip)).map(|(_, id)| *id)
    }

    /// A node's display name.
    pub fn node_name(&self, n: &Node) -> String {
        match n {
            Node::Ip(ip) => ip.to_string(),
            Node::Prefix(net) => net.to_string(),
            Node::Label(id) => self.names[*id as usize].clone(),
        }
    }

    /// `internal`, `external` or `label` for a node.
    pub fn node_scope(&self, n: &Node) -> &'static str {
        match n {
            Node::Ip(ip) => self.scope_name(ip),
            Node::Prefix(net) => self.scope_name(&net.network()),
            Node::Label(_) => "label",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges() {
        let b = AddressBook::new(vec!["52.10.0.0/16".parse().unwrap()]);
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
            "52.10.3.4",
        ] {
            assert!(b.is_internal(&ip(a)), "{a}");
        }
        for a in [
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "52.11.0.1",
        ] {
            assert!(!b.is_internal(&ip(a)), "{a}");
        }
    }

    #[test]
    fn classes() {
        let b = AddressBook::default();
        assert_eq!(
            b.class(&ip("10.0.0.4"), &ip("10.0.1.4")),
            FlowClass::Internal
        );
        assert_eq!(
            b.class(&ip("10.0.0.4"), &ip("8.8.8.8")),
            FlowClass::InternalToInternet
        );
        assert_eq!(
            b.class(&ip("8.8.8.8"), &ip("10.0.0.4")),
            FlowClass::InternetToInternal
        );
        assert_eq!(
            b.class(&ip("10.0.0.4"), &ip("168.63.129.16")),
            FlowClass::AzurePlatform
        );
        assert_eq!(b.class(&ip("1.1.1.1"), &ip("8.8.8.8")), FlowClass::External);
    }

    #[test]
    fn longest_prefix_labels_from_csv() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("labels.csv");
        std::fs::write(&f, "cidr,name\n10.0.0.0/8,corp\n10.1.0.0/16,\"vnet-web, prod\"\n# partner\n203.0.113.0/24,partner\n").unwrap();
        let mut b = AddressBook::default();
        assert_eq!(b.load_labels(&f), Ok(3));
        assert_eq!(b.label(&ip("10.1.2.3")).unwrap().0, "vnet-web, prod");
        assert_eq!(b.label(&ip("10.2.2.3")).unwrap().0, "corp");
        assert_eq!(b.label(&ip("203.0.113.9")).unwrap().0, "partner");
        assert!(b.label(&ip("8.8.8.8")).is_none());
        assert_eq!(
            b.node_name(&b.node(&ip("10.1.2.3"), Grouping::Label)),
            "vnet-web, prod"
        );
        assert_eq!(
            b.node_name(&b.node(&ip("8.8.8.8"), Grouping::Label)),
            "8.8.8.8"
        );
        assert_eq!(
            b.node_name(&b.node(&ip("10.1.2.3"), Grouping::Prefix(24, 96))),
            "10.1.2.0/24"
        );
        assert_eq!(Grouping::parse("prefix/24"), Ok(Grouping::Prefix(24, 96)));
        assert_eq!(Grouping::parse("prefix/64"), Ok(Grouping::Prefix(32, 64)));
        assert_eq!(Grouping::parse("prefix/128"), Ok(Grouping::Prefix(32, 128)));
        assert_eq!(
            Grouping::parse("prefix/16,48"),
            Ok(Grouping::Prefix(16, 48))
        );
        assert!(Grouping::parse("prefix/129").is_err());
        assert!(Grouping::parse("prefix/33,64").is_err());
        let g = Grouping::parse("prefix/48").unwrap();
        assert_eq!(
            b.node_name(&b.node(&ip("2001:db8:1:2::5"), g)),
            "2001:db8:1::/48"
        );
        std::fs::write(&f, "10.0.0.0/33,bad\n").unwrap();
        assert!(AddressBook::default()
            .load_labels(&f)
            .unwrap_err()
            .contains("line 1"));
    }
}
