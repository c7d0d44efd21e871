//! NSG definitions as users have them: `az network nsg show` (one NSG), `az network nsg
//! list` (an array of them), and ARM-shaped JSON (an exported template's `resources`, or
//! `az resource show`, where a rule's fields sit under `properties`). Unknown fields are
//! ignored; a malformed value is an error naming the file and its JSON path.
//!
//! ARM templates carry no `defaultSecurityRules`: an NSG without them gets Azure's six
//! default rules (documented in "Network security groups: default security rules"), and the
//! audit says so.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// Inbound or outbound, as the definitions say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Inbound,
    Outbound,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Allow,
    Deny,
}

/// One security rule as defined.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RuleDef {
    pub name: String,
    /// One of Azure's default rules (`defaultSecurityRules`).
    pub default: bool,
    pub priority: u32,
    pub direction: Dir,
    pub access: Access,
    /// `Tcp`, `Udp`, `Icmp`, `Esp`, `Ah` or `*`, as written.
    pub protocol: String,
    /// Address prefixes or service tags, as written (`*` when empty).
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    /// Port ranges as written (`*`, `443`, `1024-65535`).
    pub source_ports: Vec<String>,
    pub ports: Vec<String>,
    /// Application security groups named as sources or destinations (their members are not
    /// in these files).
    pub source_asgs: Vec<String>,
    pub destination_asgs: Vec<String>,
}

impl RuleDef {
    /// The name flow logs give the rule (`UserRule_…`, `DefaultRule_…`).
    pub fn log_name(&self) -> String {
        if self.default {
            format!("DefaultRule_{}", self.name)
        } else {
            format!("UserRule_{}", self.name)
        }
    }
}

/// One NSG as defined.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NsgDef {
    pub name: String,
    pub resource_group: Option<String>,
    /// The ARM id, when the file has it.
    pub id: Option<String>,
    /// Security rules, then default rules, in file order.
    pub rules: Vec<RuleDef>,
    /// Ids of the NICs it is attached to (`networkInterfaces`).
    pub nics: Vec<String>,
    /// The default rules were not in the file and are Azure's documented six.
    pub assumed_defaults: bool,
    /// The file it came from.
    #[serde(skip)]
    pub file: PathBuf,
}

/// A definitions file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DefsError {
    #[error("{file}: {err}")]
    Io { file: String, err: std::io::Error },
    #[error("{file}: not valid JSON: {err}")]
    Json {
        file: String,
        err: serde_json::Error,
    },
    #[error("{file}: {path}: {what}")]
    Field {
        file: String,
        path: String,
        what: String,
    },
    #[error("{file}: no NSG definitions found (expected the output of `az network nsg show`, `az network nsg list`, or an ARM template/resource with securityRules)")]
    Empty { file: String },
}

/// Read one definitions file.
pub fn load(path: &Path) -> Result<Vec<NsgDef>, DefsError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|err| DefsError::Io {
        file: file.clone(),
        err,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let v: Value = serde_json::from_slice(bytes).map_err(|err| DefsError::Json {
        file: file.clone(),
        err,
    })?;
    let mut out = Vec::new();
    let r = Reader { file: &file };
    r.collect(&v, "$", &mut out)?;
    if out.is_empty() {
        return Err(DefsError::Empty { file });
    }
    for n in &mut out {
        n.file = path.to_path_buf();
    }
    Ok(out)
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, path: &str, what: impl Into<String>) -> DefsError {
        DefsError::Field {
            file: self.file.to_string(),
            path: path.to_string(),
            what: what.into(),
        }
    }

    /// Find NSGs in any of the shapes: an array of them, a template's `resources`, or one.
    fn collect(&self, v: &Value, path: &str, out: &mut Vec<NsgDef>) -> Result<(), DefsError> {
        match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.collect(x, &format!("{path}[{i}]"), out)?;
                }
            }
            Value::Object(o) => {
                if let Some(Value::Array(res)) = o.get("resources") {
                    for (i, x) in res.iter().enumerate() {
                        let is_nsg = x.get("type").and_then(Value::as_str).is_some_and(|t| {
                            t.eq_ignore_ascii_case("Microsoft.Network/networkSecurityGroups")
                        });
                        if is_nsg {
                            out.push(self.nsg(x, &format!("{path}.resources[{i}]"))?);
                        }
                    }
                } else if fields(v).is_some_and(|f| {
                    f.contains_key("securityRules") || f.contains_key("defaultSecurityRules")
                }) {
                    out.push(self.nsg(v, path)?);
                } else if let Some(Value::Array(a)) = o.get("value") {
                    // `az rest` / ARM list responses.
                    for (i, x) in a.iter().enumerate() {
                        self.collect(x, &format!("{path}.value[{i}]"), out)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn nsg(&self, v: &Value, path: &str) -> Result<NsgDef, DefsError> {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(&format!("{path}.name"), "an NSG needs a name (a string)"))?;
        // A template's name may be an expression: keep the last segment of a literal
        // "[...]" only when it is plain.
        let name = name.rsplit('/').next().unwrap_or(name).to_string();
        let id = v.get("id").and_then(Value::as_str).map(str::to_string);
        let resource_group = v
            .get("resourceGroup")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| id.as_deref().and_then(resource_group_of));
        let f = fields(v).expect("checked by the caller");
        let fpath = if v.get("properties").is_some() {
            format!("{path}.properties")
        } else {
            path.to_string()
        };
        let mut rules = Vec::new();
        for (key, default) in [("securityRules", false), ("defaultSecurityRules", true)] {
            match f.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for (i, r) in a.iter().enumerate() {
                        rules.push(self.rule(r, &format!("{fpath}.{key}[{i}]"), default)?);
                    }
                }
                Some(_) => return Err(self.err(&format!("{fpath}.{key}"), "expected an array")),
            }
        }
        let assumed_defaults = !rules.iter().any(|r| r.default);
        if assumed_defaults {
            rules.extend(azure_defaults());
        }
        let nics = match f.get("networkInterfaces") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|n| n.get("id").and_then(Value::as_str).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Ok(NsgDef {
            name,
            resource_group,
            id,
            rules,
            nics,
            assumed_defaults,
            file: PathBuf::new(),
        })
    }

    fn rule(&self, v: &Value, path: &str, default: bool) -> Result<RuleDef, DefsError> {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(&format!("{path}.name"), "a rule needs a name (a string)"))?
            .to_string();
        let Some(f) = fields(v) else {
            return Err(self.err(path, "a rule must be an object"));
        };
        let fpath = if v.get("properties").is_some() {
            format!("{path}.properties")
        } else {
            path.to_string()
        };
        let at = |k: &str| format!("{fpath}.{k}");
        let priority = match f.get("priority") {
            Some(Value::Number(n)) => n.as_u64().filter(|p| *p <= 65535).ok_or_else(|| {
                self.err(&at("priority"), format!("{n} is not a priority (0-65535)"))
            })?,
            Some(Value::String(s)) => s
                .parse::<u64>()
                .ok()
                .filter(|p| *p <= 65535)
                .ok_or_else(|| self.err(&at("priority"), format!("{s:?} is not a priority")))?,
            _ => return Err(self.err(&at("priority"), "missing or not a number")),
        } as u32;
        let word = |k: &str| -> Result<String, DefsError> {
            f.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| self.err(&at(k), "missing or not a string"))
        };
        let direction = match word("direction")?.to_ascii_lowercase().as_str() {
            "inbound" => Dir::Inbound,
            "outbound" => Dir::Outbound,
            d => return Err(self.err(&at("direction"), format!("{d:?}: Inbound or Outbound"))),
        };
        let access = match word("access")?.to_ascii_lowercase().as_str() {
            "allow" => Access::Allow,
            "deny" => Access::Deny,
            a => return Err(self.err(&at("access"), format!("{a:?}: Allow or Deny"))),
        };
        let protocol = word("protocol")?;
        if !["tcp", "udp", "icmp", "esp", "ah", "*"]
            .contains(&protocol.to_ascii_lowercase().as_str())
        {
            return Err(self.err(
                &at("protocol"),
                format!("{protocol:?}: Tcp, Udp, Icmp, Esp, Ah or *"),
            ));
        }
        let list = |one: &str, many: &str| -> Result<Vec<String>, DefsError> {
            let mut v = Vec::new();
            match f.get(one) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => v.push(s.clone()),
                Some(_) => return Err(self.err(&at(one), "expected a string")),
            }
            match f.get(many) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for (i, x) in a.iter().enumerate() {
                        match x {
                            Value::String(s) => v.push(s.clone()),
                            Value::Number(n) => v.push(n.to_string()),
                            _ => {
                                return Err(
                                    self.err(&format!("{}[{i}]", at(many)), "expected a string")
                                )
                            }
                        }
                    }
                }
                Some(_) => return Err(self.err(&at(many), "expected an array")),
            }
            Ok(v)
        };
        let asgs = |k: &str| -> Vec<String> {
            match f.get(k) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.get("id").and_then(Value::as_str))
                    .map(|id| id.rsplit('/').next().unwrap_or(id).to_string())
                    .collect(),
                _ => Vec::new(),
            }
        };
        let source_asgs = asgs("sourceApplicationSecurityGroups");
        let destination_asgs = asgs("destinationApplicationSecurityGroups");
        let star = |mut v: Vec<String>, asg: &[String]| {
            if v.is_empty() && asg.is_empty() {
                v.push("*".into());
            }
            v
        };
        Ok(RuleDef {
            name,
            default,
            priority,
            direction,
            access,
            protocol,
            sources: star(
                list("sourceAddressPrefix", "sourceAddressPrefixes")?,
                &source_asgs,
            ),
            destinations: star(
                list("destinationAddressPrefix", "destinationAddressPrefixes")?,
                &destination_asgs,
            ),
            source_ports: star(list("sourcePortRange", "sourcePortRanges")?, &[]),
            ports: star(list("destinationPortRange", "destinationPortRanges")?, &[]),
            source_asgs,
            destination_asgs,
        })
    }
}

/// The object holding an NSG's or rule's fields: `properties` (ARM) or the value itself
/// (az CLI).
fn fields(v: &Value) -> Option<&serde_json::Map<String, Value>> {
    match v.get("properties") {
        Some(Value::Object(p)) => Some(p),
        _ => v.as_object(),
    }
}

/// `…/resourceGroups/<rg>/…` of an ARM id, case-insensitively.
pub fn resource_group_of(id: &str) -> Option<String> {
    let mut it = id.split('/');
    while let Some(seg) = it.next() {
        if seg.eq_ignore_ascii_case("resourceGroups") {
            return it.next().filter(|s| !s.is_empty()).map(str::to_string);
        }
    }
    None
}

/// Azure's default rules, as documented.
pub fn azure_defaults() -> Vec<RuleDef> {
    let r = |name: &str, priority, direction, access, src: &str, dst: &str| RuleDef {
        name: name.into(),
        default: true,
        priority,
        direction,
        access,
        protocol: "*".into(),
        sources: vec![src.into()],
        destinations: vec![dst.into()],
        source_ports: vec!["*".into()],
        ports: vec!["*".into()],
        source_asgs: vec![],
        destination_asgs: vec![],
    };
    use Access::*;
    use Dir::*;
    vec![
        r(
            "AllowVnetInBound",
            65000,
            Inbound,
            Allow,
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        r(
            "AllowAzureLoadBalancerInBound",
            65001,
            Inbound,
            Allow,
            "AzureLoadBalancer",
            "*",
        ),
        r("DenyAllInBound", 65500, Inbound, Deny, "*", "*"),
        r(
            "AllowVnetOutBound",
            65000,
            Outbound,
            Allow,
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        r(
            "AllowInternetOutBound",
            65001,
            Outbound,
            Allow,
            "*",
            "Internet",
        ),
        r("DenyAllOutBound", 65500, Outbound, Deny, "*", "*"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<NsgDef>, DefsError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nsg.json");
        std::fs::write(&p, text).unwrap();
        load(&p)
    }

    const CLI_RULE: &str = r#"{"name": "AllowSsh", "priority": 100, "direction": "Inbound",
        "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": "10.0.9.0/24",
        "sourceAddressPrefixes": [], "destinationAddressPrefix": "*",
        "sourcePortRange": "*", "destinationPortRange": "22", "destinationPortRanges": []}"#;

    #[test]
    fn az_show_list_and_arm_shapes_read_the_same_rule() {
        let show = format!(
            r#"{{"name": "APP-NSG", "resourceGroup": "RG-A", "securityRules": [{CLI_RULE}],
                "networkInterfaces": [{{"id": "/subscriptions/s/resourceGroups/RG-A/providers/Microsoft.Network/networkInterfaces/nic1"}}]}}"#
        );
        let list = format!("[{show}, {show}]");
        let arm = r#"{"resources": [{"type": "Microsoft.Network/networkSecurityGroups",
            "name": "APP-NSG", "id": "/subscriptions/s/resourceGroups/RG-A/providers/Microsoft.Network/networkSecurityGroups/APP-NSG",
            "properties": {"securityRules": [{"name": "AllowSsh", "properties": {
              "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
              "sourceAddressPrefixes": ["10.0.9.0/24"], "destinationAddressPrefix": "*",
              "sourcePortRange": "*", "destinationPortRanges": ["22"]}}]}},
            {"type": "Microsoft.Network/virtualNetworks", "name": "vnet"}]}"#;
        let a = parse(&show).unwrap();
        let b = parse(&list).unwrap();
        let c = parse(arm).unwrap();
        assert_eq!(b.len(), 2);
        for n in [&a[0], &b[1], &c[0]] {
            assert_eq!(n.name, "APP-NSG");
            assert_eq!(n.resource_group.as_deref(), Some("RG-A"));
            assert!(n.assumed_defaults);
            assert_eq!(n.rules.len(), 7);
            let r = &n.rules[0];
            assert_eq!(
                (r.priority, r.direction, r.access),
                (100, Dir::Inbound, Access::Allow)
            );
            assert_eq!(r.sources, ["10.0.9.0/24"]);
            assert_eq!(r.destinations, ["*"]);
            assert_eq!(r.ports, ["22"]);
            assert_eq!(r.log_name(), "UserRule_AllowSsh");
            assert_eq!(n.rules[3].log_name(), "DefaultRule_DenyAllInBound");
        }
        assert_eq!(a[0].nics.len(), 1);
    }

    #[test]
    fn a_malformed_file_names_the_json_path() {
        let bad = CLI_RULE.replace("\"priority\": 100", "\"priority\": \"high\"");
        let e = parse(&format!(r#"[{{"name": "N", "securityRules": [{bad}]}}]"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("nsg.json: $[0].securityRules[0].priority: \"high\" is not a priority"),
            "{e}"
        );
        let bad = CLI_RULE.replace("\"Inbound\"", "\"Sideways\"");
        let e = parse(&format!(r#"{{"name": "N", "securityRules": [{bad}]}}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("$.securityRules[0].direction: \"sideways\": Inbound or Outbound"),
            "{e}"
        );
        let e = parse(r#"{"name": "x"}"#).unwrap_err().to_string();
        assert!(e.contains("no NSG definitions found"), "{e}");
        let e = parse("{nope").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
