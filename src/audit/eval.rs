//! A rule's match space, from its definition: address prefixes and service tags resolved
//! into intervals, port ranges, the protocol. What cannot be resolved (application security
//! groups, service tags without `--service-tags`) is said, not guessed.

use super::defs::RuleDef;
use super::space::{self, complement, net_interval, port_range, Space};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// What the service tags stand for in this audit.
#[derive(Clone, Debug)]
pub struct Tags {
    /// `VirtualNetwork`: the `--vnet` CIDRs, else RFC 1918 + RFC 6598.
    pub vnet: Vec<IpNet>,
    /// Where `vnet` came from, for the output's assumptions.
    pub vnet_from: &'static str,
    /// Further tags (upper-cased name → prefixes), from Microsoft's service-tags JSON.
    pub service: BTreeMap<String, Vec<IpNet>>,
}

/// RFC 1918 and RFC 6598: what `VirtualNetwork` means without `--vnet`.
pub const DEFAULT_VNET: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
];

/// The Azure load balancer's health-probe source (and the platform DNS/DHCP address).
pub const AZURE_LOAD_BALANCER: &str = "168.63.129.16/32";

impl Tags {
    pub fn new(vnet: Vec<IpNet>, service: BTreeMap<String, Vec<IpNet>>) -> Tags {
        if vnet.is_empty() {
            Tags {
                vnet: DEFAULT_VNET
                    .iter()
                    .map(|s| s.parse().expect("valid"))
                    .collect(),
                vnet_from: "RFC 1918 + RFC 6598 (no --vnet given)",
                service,
            }
        } else {
            Tags {
                vnet,
                vnet_from: "--vnet",
                service,
            }
        }
    }

    /// The intervals of one address spec, or why it cannot be resolved.
    pub fn resolve(&self, spec: &str) -> Result<Vec<(u128, u128)>, String> {
        let s = spec.trim();
        if s == "*" || s.eq_ignore_ascii_case("any") {
            return Ok(vec![(0, u128::MAX)]);
        }
        if let Ok(n) = s.parse::<IpNet>() {
            return Ok(vec![net_interval(&n)]);
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            let p = space::addr_point(ip);
            return Ok(vec![(p, p)]);
        }
        let vnet: Vec<(u128, u128)> = self.vnet.iter().map(net_interval).collect();
        match s.to_ascii_lowercase().as_str() {
            "virtualnetwork" => Ok(vnet),
            // Everything outside the virtual network (Azure: "the IP address space outside
            // the virtual network and reachable by the public internet").
            "internet" => Ok(complement(&vnet)),
            "azureloadbalancer" => Ok(vec![net_interval(
                &AZURE_LOAD_BALANCER.parse().expect("valid"),
            )]),
            _ => match self.service.get(&s.to_ascii_uppercase()) {
                Some(nets) => Ok(nets.iter().map(net_interval).collect()),
                None => Err(format!(
                    "service tag {s:?} is not resolvable without --service-tags"
                )),
            },
        }
    }
}

/// A rule's space, or the reasons it cannot be evaluated.
pub fn rule_space(r: &RuleDef, tags: &Tags) -> Result<Space, Vec<String>> {
    let mut why = Vec::new();
    let mut side = |specs: &[String], asgs: &[String], what: &str| -> Vec<(u128, u128)> {
        for a in asgs {
            why.push(format!(
                "{what} application security group {a:?}: its members are not in the definitions"
            ));
        }
        let mut v = Vec::new();
        for s in specs {
            match tags.resolve(s) {
                Ok(iv) => v.extend(iv),
                Err(e) => why.push(format!("{what} {e}")),
            }
        }
        v
    };
    let src = side(&r.sources, &r.source_asgs, "source");
    let dst = side(&r.destinations, &r.destination_asgs, "destination");
    let mut ports = Vec::new();
    for p in &r.ports {
        match port_range(p) {
            Some(x) => ports.push(x),
            None => why.push(format!(
                "destination port range {p:?} is not a port or range"
            )),
        }
    }
    if !why.is_empty() {
        return Err(why);
    }
    Ok(Space::product(
        &src,
        &dst,
        &ports,
        space::proto_bits(&r.protocol),
    ))
}

/// The rule restricts source ports (the spaces do not model them).
pub fn restricts_source_ports(r: &RuleDef) -> bool {
    r.source_ports.iter().any(|p| p.trim() != "*")
}

/// Microsoft's published service tags (`ServiceTags_Public_*.json`: `{"values": [{"name",
/// "properties": {"addressPrefixes": [...]}}]}`), by upper-cased name.
pub fn load_service_tags(path: &std::path::Path) -> Result<BTreeMap<String, Vec<IpNet>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    let Some(values) = v.get("values").and_then(|x| x.as_array()) else {
        return Err(format!(
            "{}: $.values: expected the service-tags array",
            path.display()
        ));
    };
    let mut out = BTreeMap::new();
    for (i, t) in values.iter().enumerate() {
        let name = t
            .get("name")
            .and_then(|x| x.as_str())
            .ok_or_else(|| format!("{}: $.values[{i}].name: expected a string", path.display()))?;
        let mut nets = Vec::new();
        if let Some(a) = t
            .pointer("/properties/addressPrefixes")
            .and_then(|x| x.as_array())
        {
            for (j, p) in a.iter().enumerate() {
                let n = p
                    .as_str()
                    .and_then(|s| s.parse::<IpNet>().ok())
                    .ok_or_else(|| {
                        format!(
                            "{}: $.values[{i}].properties.addressPrefixes[{j}]: not a CIDR",
                            path.display()
                        )
                    })?;
                nets.push(n);
            }
        }
        out.insert(name.to_ascii_uppercase(), nets);
    }
    Ok(out)
}
