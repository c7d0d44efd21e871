//! `gen`: a realistic synthetic container, for demos, tests and benchmarks.
//!
//! The tree and the JSON are what Azure writes (see `../shared/FORMATS.md`): one compact
//! `PT1H.json` blob per NSG (or flow log) × NIC × hour, one record per minute, busy
//! minutes split into ~32 KB records with the same `time`, the first record of an hour
//! holding the previous hour's last seconds, B→C→E lifecycles with delta counters, denied
//! scanners retrying `D,B` tuples, stateless inbound allow rules that only log `B`, rules
//! with `"flows": []`, and for VNet logs `PlatformRule` traffic under the all-zero ACL,
//! encryption codes and E/B of a reused source port in one millisecond.
//!
//! The same seed gives byte-identical output: every blob has its own generator seeded from
//! (seed, NSG, NIC), and blobs are written in parallel without shared state.

use crate::model::Family;
use rayon::prelude::*;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Which families to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenFamily {
    /// NSG flow logs only.
    Nsg,
    /// VNet flow logs only.
    Vnet,
    /// A migration: NSG logs for the first half of the hours, VNet logs from the middle
    /// hour on, so one hour per NIC is logged by both (double logging).
    Mixed,
}

/// NSG flow-log version to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsgVersion {
    V1,
    V2,
    /// NSG 0 writes v1, the others v2.
    Mixed,
}

/// Options of `gen`. Defaults make a ~1 MB container.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub out: PathBuf,
    pub seed: u64,
    pub family: GenFamily,
    pub nsg_version: NsgVersion,
    pub nsgs: usize,
    pub nics_per_nsg: usize,
    pub hours: usize,
    /// First hour, Unix milliseconds (aligned down to the hour).
    pub start_ms: i64,
    /// New connections per NIC per minute. Ignored when `size` is set.
    pub flows_per_minute: f64,
    /// Approximate total size in bytes; sets `flows_per_minute`.
    pub size: Option<u64>,
    /// Inject one attack of each kind the detectors know (see [`attacks`]) and write their
    /// ground truth beside the container, in `<out>.attacks.json`.
    pub attacks: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            out: PathBuf::from("gen-out"),
            seed: 1,
            family: GenFamily::Nsg,
            nsg_version: NsgVersion::V2,
            nsgs: 3,
            nics_per_nsg: 2,
            hours: 2,
            start_ms: 1_767_571_200_000, // 2026-01-05T00:00:00Z, a Monday
            flows_per_minute: 6.0,
            size: None,
            attacks: false,
        }
    }
}

/// What `gen` wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenStats {
    pub blobs: u64,
    pub records: u64,
    pub tuples: u64,
    pub bytes: u64,
}

const HOUR_MS: i64 = 3_600_000;
const MIN_MS: i64 = 60_000;
/// Records are cut near this size, as Azure does for busy minutes.
const RECORD_SPLIT_BYTES: usize = 32 * 1024;
/// A record written at minute k holds tuples from 20 s before to 40 s after the minute
/// mark, so the first record of an hour holds the previous hour's last 20 seconds.
const RECORD_LAG_MS: i64 = 20_000;
/// Mean tuples per generated connection and bytes per rendered tuple, measured on the
/// generator's own output (used only to turn `--size` into a flow rate).
const TUPLES_PER_FLOW: f64 = 2.3;
const BYTES_PER_TUPLE: f64 = 62.0;

const SUBSCRIPTIONS: [&str; 2] = [
    "6F3C1E2A-8B4D-4F6A-9C2E-1A2B3C4D5E6F",
    "0D9E8F7A-6B5C-4D3E-A2F1-0E9D8C7B6A5F",
];
const NSG_NAMES: [&str; 8] = [
    "WEB-NSG",
    "APP-NSG",
    "DB-NSG",
    "BASTION-NSG",
    "AKS-NODES-NSG",
    "JUMP-NSG",
    "API-NSG",
    "BATCH-NSG",
];

/// NSG names given out by index: the 8 base names, then `WEB-2-NSG`, `APP-2-NSG`, … so that
/// every generated NSG has a name of its own (up to [`MAX_NSG_NAMES`]; past it they repeat).
pub const MAX_NSG_NAMES: usize = 1024;

fn nsg_name(g: usize) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..MAX_NSG_NAMES)
            .map(|i| {
                let base = NSG_NAMES[i % NSG_NAMES.len()];
                match i / NSG_NAMES.len() {
                    0 => base.to_string(),
                    k => format!("{}-{}-NSG", base.trim_end_matches("-NSG"), k + 1),
                }
            })
            .collect()
    });
    &names[g % MAX_NSG_NAMES]
}
const RG_NAMES: [&str; 4] = ["RG-PROD-WEB", "RG-PROD-APP", "RG-PROD-DATA", "RG-SHARED"];
pub use crate::parse::PLATFORM_ACL_ID;

/// The rules a generated flow can be logged under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    DenyAllInBound,
    AllowHttps,
    AllowSsh,
    AllowVnetInBound,
    AllowInternetOutBound,
    AllowVnetOutBound,
    DenySmbOut,
    Platform,
    /// Only in `--attacks`: an RDP allow rule open to the Internet.
    AllowRdpAny,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::DenyAllInBound => "DefaultRule_DenyAllInBound",
            Rule::AllowHttps => "UserRule_AllowHttps",
            Rule::AllowSsh => "UserRule_AllowSshFromBastion",
            Rule::AllowVnetInBound => "DefaultRule_AllowVnetInBound",
            Rule::AllowInternetOutBound => "DefaultRule_AllowInternetOutBound",
            Rule::AllowVnetOutBound => "DefaultRule_AllowVnetOutBound",
            Rule::DenySmbOut => "UserRule_DenySmbOutbound",
            Rule::Platform => "PlatformRule",
            Rule::AllowRdpAny => "UserRule_AllowRdpFromAnywhere",
        }
    }
}

/// A user rule that never matches: logged with `"flows": []`.
const IDLE_RULE: &str = "UserRule_AllowRdpLegacy";

#[derive(Clone, Copy, Debug)]
struct GTuple {
    time_ms: i64,
    rule: Rule,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    udp: bool,
    inbound: bool,
    deny: bool,
    /// b'B', b'C', b'E'
    state: u8,
    /// VNet encryption code index into ENCRYPTION.
    enc: u8,
    /// packets/bytes s2d, packets/bytes d2s (deltas); None on B.
    counts: Option<[u64; 4]>,
}

const ENCRYPTION: [&str; 4] = ["NX", "X", "NX_HW_NOT_SUPPORTED", "NX_LOCAL_DST"];

struct Nic {
    nsg: usize,
    nic: usize,
    ip: Ipv4Addr,
    mac: String,
}

fn public_ip(rng: &mut fastrand::Rng) -> Ipv4Addr {
    const FIRST: [u8; 16] = [
        13, 20, 23, 34, 35, 40, 45, 52, 64, 80, 91, 104, 142, 151, 162, 185,
    ];
    Ipv4Addr::new(
        FIRST[rng.usize(..FIRST.len())],
        rng.u8(..),
        rng.u8(..),
        rng.u8(1..255),
    )
}

/// Generate one NIC's traffic for all hours, in time order.
struct TrafficGen {
    rng: fastrand::Rng,
    scanners: Vec<Ipv4Addr>,
    peers: Vec<Ipv4Addr>,
    clients: Vec<Ipv4Addr>,
    host: Ipv4Addr,
    vnet_peers: Vec<Ipv4Addr>,
}

impl TrafficGen {
    fn new(seed: u64, nic: &Nic) -> TrafficGen {
        let mut rng = fastrand::Rng::with_seed(seed);
        let scanners = (0..40).map(|_| public_ip(&mut rng)).collect();
        let peers = (0..60).map(|_| public_ip(&mut rng)).collect();
        let clients = (0..200).map(|_| public_ip(&mut rng)).collect();
        let vnet_peers = (0..12)
            .map(|i| Ipv4Addr::new(10, (i % 4) as u8, (i / 4) as u8, 4 + (i % 7) as u8))
            .filter(|ip| *ip != nic.ip)
            .collect();
        TrafficGen {
            rng,
            scanners,
            peers,
            clients,
            host: nic.ip,
            vnet_peers,
        }
    }

    /// Skewed index below `n`: low indexes much more often (a few heavy hitters).
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.rng.usize(..n);
        let b = self.rng.usize(..n);
        a.min(b).min(self.rng.usize(..n))
    }

    fn counts(&mut self, scale: u64) -> [u64; 4] {
        let p1 = 1 + self.rng.u64(..scale);
        let p2 = self.rng.u64(..scale + 1);
        [
            p1,
            p1 * self.rng.u64(60..1400),
            p2,
            p2 * self.rng.u64(60..1400),
        ]
    }

    /// Emit all tuples of one connection starting at `t0`.
    fn connection(&mut self, t0: i64, out: &mut Vec<GTuple>) {
        let r = self.rng.u32(..1000);
        let host = self.host;
        let eph = self.rng.u16(32768..61000);
        let base = GTuple {
            time_ms: t0,
            rule: Rule::DenyAllInBound,
            src: host,
            dst: host,
            sport: eph,
            dport: 443,
            udp: false,
            inbound: false,
            deny: false,
            state: b'B',
            enc: 0,
            counts: None,
        };
        match r {
            // Internet scanners against closed ports: denied, retried.
            0..=299 => {
                const PORTS: [u16; 10] = [22, 23, 3389, 445, 1433, 8080, 5900, 6379, 3306, 25];
                let dport = if self.rng.u8(..4) == 0 {
                    // Not 443: AllowHttps (in `<out>.nsgs.json`) would let TCP to it in.
                    match self.rng.u16(1..65535) {
                        443 => 444,
                        p => p,
                    }
                } else {
                    PORTS[self.rng.usize(..PORTS.len())]
                };
                let i = self.skewed(self.scanners.len());
                let src = self.scanners[i];
                let t = GTuple {
                    rule: Rule::DenyAllInBound,
                    src,
                    dst: host,
                    dport,
                    inbound: true,
                    deny: true,
                    udp: self.rng.u8(..10) == 0,
                    ..base
                };
                out.push(t);
                for k in 1..=self.rng.u8(..3) as i64 {
                    out.push(GTuple {
                        time_ms: t0 + k * 3_000,
                        ..t
                    });
                }
            }
            // HTTPS from internet clients.
            300..=549 => {
                let i = self.skewed(self.clients.len());
                let src = self.clients[i];
                let t = GTuple {
                    rule: Rule::AllowHttps,
                    src,
                    dst: host,
                    dport: 443,
                    inbound: true,
                    ..base
                };
                self.lifecycle(t, out);
            }
            // Outbound to the internet.
            550..=799 => {
                let i = self.skewed(self.peers.len());
                let dst = self.peers[i];
                let dport = if self.rng.u8(..5) == 0 { 80 } else { 443 };
                let t = GTuple {
                    rule: Rule::AllowInternetOutBound,
                    src: host,
                    dst,
                    dport,
                    ..base
                };
                let end = self.lifecycle(t, out);
                // Source-port reuse: E of the old and B of the new flow in one timestamp.
                if self.rng.u8(..20) == 0 {
                    self.lifecycle(GTuple { time_ms: end, ..t }, out);
                }
            }
            // East-west inside the VNet.
            800..=869 => {
                let peer = self.vnet_peers[self.rng.usize(..self.vnet_peers.len())];
                const PORTS: [u16; 4] = [1433, 5432, 6379, 8080];
                let t = GTuple {
                    rule: Rule::AllowVnetOutBound,
                    src: host,
                    dst: peer,
                    dport: PORTS[self.rng.usize(..4)],
                    enc: if self.rng.bool() { 1 } else { 0 },
                    ..base
                };
                self.lifecycle(t, out);
            }
            870..=919 => {
                let peer = self.vnet_peers[self.rng.usize(..self.vnet_peers.len())];
                let t = GTuple {
                    rule: Rule::AllowVnetInBound,
                    src: peer,
                    dst: host,
                    dport: 8080,
                    inbound: true,
                    enc: if self.rng.u8(..3) == 0 { 2 } else { 0 },
                    ..base
                };
                self.lifecycle(t, out);
            }
            // SSH from the bastion subnet: a stateless user allow rule, only B, no counts.
            920..=944 => {
                out.push(GTuple {
                    rule: Rule::AllowSsh,
                    src: Ipv4Addr::new(10, 255, 0, 4 + self.rng.u8(..3)),
                    dst: host,
                    dport: 22,
                    inbound: true,
                    ..base
                });
            }
            // SMB to the internet, blocked by a user rule.
            945..=959 => {
                let dst = public_ip(&mut self.rng);
                let t = GTuple {
                    rule: Rule::DenySmbOut,
                    src: host,
                    dst,
                    dport: 445,
                    deny: true,
                    ..base
                };
                out.push(t);
                out.push(GTuple {
                    time_ms: t0 + 3_000,
                    ..t
                });
            }
            // DNS and IMDS to the Azure platform.
            _ => {
                let (dst, dport, udp) = if self.rng.bool() {
                    (Ipv4Addr::new(168, 63, 129, 16), 53, true)
                } else {
                    (Ipv4Addr::new(169, 254, 169, 254), 80, false)
                };
                let t = GTuple {
                    rule: Rule::Platform,
                    src: host,
                    dst,
                    dport,
                    udp,
                    enc: 3,
                    ..base
                };
                self.lifecycle(t, out);
            }
        }
    }

    /// B, then C every 5 minutes, then E, with delta counters. Returns the end time.
    fn lifecycle(&mut self, b: GTuple, out: &mut Vec<GTuple>) -> i64 {
        let t0 = b.time_ms;
        let dur = if self.rng.u8(..12) == 0 {
            self.rng.i64(300_000..3_000_000)
        } else {
            self.rng.i64(50..45_000)
        };
        out.push(GTuple {
            state: b'B',
            counts: None,
            ..b
        });
        let mut t = t0 + 300_000;
        while t < t0 + dur {
            let c = self.counts(400);
            out.push(GTuple {
                time_ms: t,
                state: b'C',
                counts: Some(c),
                ..b
            });
            t += 300_000;
        }
        // One in 15 ends unanswered: one-sided counters.
        let mut c = self.counts(40);
        if self.rng.u8(..15) == 0 {
            c[2] = 0;
            c[3] = 0;
        }
        out.push(GTuple {
            time_ms: t0 + dur,
            state: b'E',
            counts: Some(c),
            ..b
        });
        t0 + dur
    }
}

fn render_tuple(t: &GTuple, fam: Family, s: &mut String) {
    let dir = if t.inbound { 'I' } else { 'O' };
    match fam {
        Family::NsgV1 | Family::NsgV2 => {
            let _ = write!(
                s,
                "{},{},{},{},{},{},{},{}",
                t.time_ms / 1000,
                t.src,
                t.dst,
                t.sport,
                t.dport,
                if t.udp { 'U' } else { 'T' },
                dir,
                if t.deny { 'D' } else { 'A' }
            );
            if fam == Family::NsgV2 {
                match t.counts {
                    Some(c) => {
                        let _ = write!(
                            s,
                            ",{},{},{},{},{}",
                            t.state as char, c[0], c[1], c[2], c[3]
                        );
                    }
                    None => {
                        let _ = write!(s, ",{},,,,", t.state as char);
                    }
                }
            }
        }
        Family::Vnet => {
            let c = t.counts.unwrap_or([0; 4]);
            let state = if t.deny { 'D' } else { t.state as char };
            let _ = write!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                t.time_ms,
                t.src,
                t.dst,
                t.sport,
                t.dport,
                if t.udp { 17 } else { 6 },
                dir,
                state,
                ENCRYPTION[t.enc as usize],
                c[0],
                c[1],
                c[2],
                c[3]
            );
        }
    }
}

struct BlobSpec<'a> {
    nic: &'a Nic,
    hour: i64,
    family: Family,
    sub: &'static str,
    rg: &'static str,
    nsg: &'static str,
}

fn fmt_time(ms: i64, frac: u32) -> String {
    let d = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).expect("valid time");
    format!("{}.{:07}Z", d.format("%Y-%m-%dT%H:%M:%S"), frac)
}

impl BlobSpec<'_> {
    fn path(&self, out: &Path) -> PathBuf {
        let d =
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.hour).expect("valid hour");
        let tail = format!(
            "{}/macAddress={}/PT1H.json",
            d.format("y=%Y/m=%m/d=%d/h=%H/m=00"),
            self.nic.mac
        );
        match self.family {
            Family::Vnet => out.join(format!(
                "insights-logs-flowlogflowevent/flowLogResourceID=/{}_NETWORKWATCHERRG/NETWORKWATCHER_WESTEUROPE_{}-FLOWLOG/{tail}",
                self.sub, self.nsg
            )),
            _ => out.join(format!(
                "insights-logs-networksecuritygroupflowevent/resourceId=/SUBSCRIPTIONS/{}/RESOURCEGROUPS/{}/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/{}/{tail}",
                self.sub, self.rg, self.nsg
            )),
        }
    }

    fn resource_id(&self) -> String {
        format!(
            "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/{}/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/{}",
            self.sub, self.rg, self.nsg
        )
    }

    fn acl_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkSecurityGroups/{}",
            self.sub.to_ascii_lowercase(),
            self.rg.to_ascii_lowercase(),
            self.nsg.to_ascii_lowercase()
        )
    }

    fn record_head(&self, time: &str) -> String {
        match self.family {
            Family::Vnet => format!(
                "{{\"time\":\"{time}\",\"flowLogVersion\":4,\"flowLogGUID\":\"5b2c{:04x}-7e1d-4c3a-9f8e-{:012x}\",\"macAddress\":\"{}\",\"category\":\"FlowLogFlowEvent\",\"flowLogResourceID\":\"/SUBSCRIPTIONS/{}/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/{}-FLOWLOG\",\"targetResourceID\":\"/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/vm{}-nic{}\",\"operationName\":\"FlowLogFlowEvent\",\"flowRecords\":{{\"flows\":[",
                self.nic.nsg, self.nic.nic, self.nic.mac, self.sub, self.nsg,
                self.sub.to_ascii_lowercase(), self.rg.to_ascii_lowercase(), self.nic.nsg, self.nic.nic
            ),
            fam => format!(
                "{{\"time\":\"{time}\",\"systemId\":\"a0fca5ce-022c-47b1-9735-{:012x}\",\"macAddress\":\"{}\",\"category\":\"NetworkSecurityGroupFlowEvent\",\"resourceId\":\"{}\",\"operationName\":\"NetworkSecurityGroupFlowEvents\",\"properties\":{{\"Version\":{},\"flows\":[",
                self.nic.nsg * 100 + self.nic.nic, self.nic.mac, self.resource_id(),
                if fam == Family::NsgV1 { 1 } else { 2 }
            ),
        }
    }

    fn record_tail(&self) -> &'static str {
        match self.family {
            Family::Vnet => "]}}",
            _ => "]}}",
        }
    }

    /// Write one record group (a rule's tuples) opening, as the family nests it.
    fn group_open(&self, rule: Rule, acl: &str) -> String {
        match self.family {
            Family::Vnet => {
                let acl = if rule == Rule::Platform {
                    PLATFORM_ACL_ID
                } else {
                    acl
                };
                format!(
                    "{{\"aclID\":\"{acl}\",\"flowGroups\":[{{\"rule\":\"{}\",\"flowTuples\":[",
                    rule.name()
                )
            }
            _ => format!(
                "{{\"rule\":\"{}\",\"flows\":[{{\"mac\":\"{}\",\"flowTuples\":[",
                rule.name(),
                self.nic.mac
            ),
        }
    }
}

/// Write one blob: `slots[k]` holds the tuples of record k (minute k of the hour).
fn write_blob(
    spec: &BlobSpec<'_>,
    slots: &mut [Vec<GTuple>],
    out: &Path,
    seed: u64,
) -> std::io::Result<GenStats> {
    let path = spec.path(out);
    std::fs::create_dir_all(path.parent().expect("blob path has a parent"))?;
    let file = std::fs::File::create(&path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut stats = GenStats {
        blobs: 1,
        ..GenStats::default()
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let acl = spec.acl_id();
    w.write_all(b"{\"records\":[")?;
    let mut first_record = true;
    let mut rec = String::with_capacity(RECORD_SPLIT_BYTES + 4096);
    let mut tuple = String::with_capacity(96);
    for (k, slot) in slots.iter_mut().enumerate() {
        let mut ts: Vec<GTuple> = std::mem::take(slot);
        if spec.family == Family::NsgV1 {
            // v1 has no state: one tuple per flow start (and per denied attempt).
            ts.retain(|t| t.state == b'B');
        }
        if spec.family != Family::Vnet {
            // NSG logs have no platform rule: that traffic falls under the outbound defaults.
            for t in ts.iter_mut() {
                if t.rule == Rule::Platform {
                    t.rule = Rule::AllowInternetOutBound;
                }
            }
        }
        ts.sort_by_key(|t| (t.rule, t.time_ms));
        let time = fmt_time(
            spec.hour + k as i64 * MIN_MS + 40_000,
            rng.u32(..10_000_000),
        );
        let head = spec.record_head(&time);
        let mut i = 0;
        let idle = k == 0 && spec.family != Family::Vnet;
        if ts.is_empty() && !idle {
            continue;
        }
        // One or more records for this minute, each cut near RECORD_SPLIT_BYTES.
        loop {
            rec.clear();
            rec.push_str(&head);
            let mut groups = 0;
            if idle && i == 0 {
                let _ = write!(rec, "{{\"rule\":\"{IDLE_RULE}\",\"flows\":[]}}");
                groups += 1;
            }
            while i < ts.len() && rec.len() < RECORD_SPLIT_BYTES {
                let rule = ts[i].rule;
                if groups > 0 {
                    rec.push(',');
                }
                rec.push_str(&spec.group_open(rule, &acl));
                let mut n = 0;
                while i < ts.len() && ts[i].rule == rule && rec.len() < RECORD_SPLIT_BYTES {
                    if n > 0 {
                        rec.push(',');
                    }
                    tuple.clear();
                    render_tuple(&ts[i], spec.family, &mut tuple);
                    rec.push('"');
                    rec.push_str(&tuple);
                    rec.push('"');
                    n += 1;
                    i += 1;
                }
                stats.tuples += n;
                rec.push_str("]}]}");
                groups += 1;
            }
            rec.push_str(spec.record_tail());
            if !first_record {
                w.write_all(b",")?;
            }
            first_record = false;
            w.write_all(rec.as_bytes())?;
            stats.records += 1;
            if i >= ts.len() {
                break;
            }
        }
    }
    w.write_all(b"]}")?;
    w.flush()?;
    stats.bytes = w.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
    Ok(stats)
}

/// Which family logs (nic, hour) under the options; may be two during a migration.
fn families_for(opts: &GenOptions, nsg: usize, hour: usize) -> Vec<Family> {
    let nsg_family = match opts.nsg_version {
        NsgVersion::V1 => Family::NsgV1,
        NsgVersion::V2 => Family::NsgV2,
        NsgVersion::Mixed if nsg == 0 => Family::NsgV1,
        NsgVersion::Mixed => Family::NsgV2,
    };
    match opts.family {
        GenFamily::Nsg => vec![nsg_family],
        GenFamily::Vnet => vec![Family::Vnet],
        GenFamily::Mixed => {
            let switch = opts.hours / 2;
            let mut v = Vec::new();
            if hour <= switch {
                v.push(nsg_family);
            }
            if hour >= switch {
                v.push(Family::Vnet);
            }
            v
        }
    }
}

/// The attacks `gen --attacks` injects, one of each kind, with their ground truth. Each is
/// built to be found at medium or above by the detector of its kind with default settings,
/// inside ordinary generated traffic.
pub mod attacks {
    use super::{GTuple, Nic, Rule, HOUR_MS, MIN_MS};
    use serde::Serialize;
    use std::net::Ipv4Addr;

    pub const MIN_NICS: usize = 6;
    pub const MIN_HOURS: usize = 3;

    pub const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
    pub const SWEEPER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);
    pub const DROP_SITE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
    pub const C2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
    pub const NEWCOMER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 44);
    /// Scan ports: 300 ports from 1000.
    pub const SCAN_PORTS: u16 = 300;

    /// One injected attack: what a detector must report.
    #[derive(Clone, Debug, Serialize, PartialEq, Eq)]
    pub struct Truth {
        pub kind: &'static str,
        pub src: String,
        pub dst: String,
        pub dport: Option<u16>,
        /// Its window, Unix ms.
        pub first_ms: i64,
        pub last_ms: i64,
    }

    fn base(time_ms: i64, rule: Rule, src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> GTuple {
        GTuple {
            time_ms,
            rule,
            src,
            dst,
            sport: 40_000 + (time_ms / 1000 % 20_000) as u16,
            dport,
            udp: false,
            inbound: false,
            deny: false,
            state: b'B',
            enc: 0,
            counts: None,
        }
    }

    /// A short allowed connection: B, then E `dur` later with its counts.
    fn conn(out: &mut Vec<GTuple>, b: GTuple, dur: i64, counts: [u64; 4]) {
        out.push(b);
        out.push(GTuple {
            time_ms: b.time_ms + dur,
            state: b'E',
            counts: Some(counts),
            ..b
        });
    }

    /// Hour indexes: the middle hour and the last.
    fn hours(n: usize) -> (usize, usize) {
        (n / 2, n - 1)
    }

    /// Sources of the denied spike.
    const SPIKE_SOURCES: u64 = 50;

    /// Attempts each spike source makes: 40 (2,000 denied tuples in the hour), or, where the
    /// background is busier, enough for 4 times the NSG's expected hourly denied tuples, so
    /// that the hour stands at about 5 times the series' median whatever `--size` (the
    /// detector's defaults ask for 3 times the median and 5 robust deviations above it).
    /// The background's denied tuples: 30% of the new connections are scanner attempts, each
    /// logged once plus 0-2 retries (2 tuples on average), so 36 per NIC-hour per flow a
    /// minute.
    pub(super) fn spike_attempts(rate: f64, nics_per_nsg: usize) -> u64 {
        let background = 36.0 * rate * nics_per_nsg as f64;
        ((4.0 * background) / SPIKE_SOURCES as f64).ceil().max(40.0) as u64
    }

    /// The attack tuples NIC `i` logs in hour `h` (starting at `hour`), in a container of
    /// `rate` new connections per NIC a minute.
    pub(super) fn tuples(
        i: usize,
        nics: &[Nic],
        h: usize,
        n: usize,
        hour: i64,
        rate: f64,
    ) -> Vec<GTuple> {
        let (mid, last) = hours(n);
        let me = nics[i].ip;
        let mut out = Vec::new();
        // port_scan: 300 ports of NIC 0, two a second, denied.
        if i == 0 && h == mid {
            for p in 0..SCAN_PORTS as i64 {
                out.push(GTuple {
                    inbound: true,
                    deny: true,
                    ..base(
                        hour + 10 * MIN_MS + p * 500,
                        Rule::DenyAllInBound,
                        SCANNER,
                        me,
                        1000 + p as u16,
                    )
                });
            }
        }
        // horizontal_sweep: WinRM on every NIC, 2 s apart, denied.
        if h == mid {
            out.push(GTuple {
                inbound: true,
                deny: true,
                ..base(
                    hour + 20 * MIN_MS + i as i64 * 2_000,
                    Rule::DenyAllInBound,
                    SWEEPER,
                    me,
                    5985,
                )
            });
        }
        // exfiltration: NIC 1 uploads ~3.2 GB over 40 minutes to one address.
        if i == 1 && h == mid {
            let b = base(
                hour + 5 * MIN_MS,
                Rule::AllowInternetOutBound,
                me,
                DROP_SITE,
                443,
            );
            out.push(b);
            for k in 1..=8 {
                out.push(GTuple {
                    time_ms: b.time_ms + k * 5 * MIN_MS,
                    state: if k == 8 { b'E' } else { b'C' },
                    counts: Some([300_000, 400_000_000, 60_000, 4_000_000]),
                    ..b
                });
            }
        }
        // beacon: NIC 2 calls home every 60 s (jitter up to 2 s), ~1.2 KB each, all along.
        if i == 2 {
            for m in 0..60i64 {
                let jitter = (m * 7919 + h as i64 * 104_729) % 2_000;
                let size = 880 + ((m * 31) % 40) as u64;
                conn(
                    &mut out,
                    base(
                        hour + m * MIN_MS + 30_000 + jitter,
                        Rule::AllowInternetOutBound,
                        me,
                        C2,
                        443,
                    ),
                    800,
                    [6, size, 4, 300],
                );
            }
        }
        // new_talker: NIC 3 sends 30 MB to an address never seen before, in the last hour.
        if i == 3 && h == last {
            conn(
                &mut out,
                base(
                    hour + 15 * MIN_MS,
                    Rule::AllowInternetOutBound,
                    me,
                    NEWCOMER,
                    8443,
                ),
                4 * MIN_MS,
                [25_000, 30_000_000, 8_000, 500_000],
            );
        }
        // exposure: 30 internet sources in on RDP to NIC 4 through an allow-any rule.
        if i == 4 && h == mid {
            for s in 0..30u8 {
                let b = GTuple {
                    inbound: true,
                    ..base(
                        hour + (25 + s as i64) * MIN_MS,
                        Rule::AllowRdpAny,
                        Ipv4Addr::new(203, 0, 113, 1 + s),
                        me,
                        3389,
                    )
                };
                conn(&mut out, b, 90_000, [200, 40_000, 300, 250_000]);
            }
        }
        // denied_spike: 50 sources hammer telnet on NIC 5 within one hour, 40 attempts each
        // or, in a busier container, enough to stand out of the NSG's hourly series
        // ([`spike_attempts`]), evenly spaced over 53 minutes.
        if i == 5 && h == mid {
            let per_nsg = nics.iter().filter(|n| n.nsg == nics[i].nsg).count();
            let attempts = spike_attempts(rate, per_nsg);
            let every = 3_200_000 / attempts as i64;
            for s in 0..SPIKE_SOURCES as u8 {
                for k in 0..attempts as i64 {
                    let mut t = GTuple {
                        inbound: true,
                        deny: true,
                        ..base(
                            hour + 5 * MIN_MS + k * every + s as i64 * 700,
                            Rule::DenyAllInBound,
                            Ipv4Addr::new(192, 0, 2, 100 + s),
                            me,
                            23,
                        )
                    };
                    if every < 1_000 {
                        // Several attempts of a source within a second (NSG times are in
                        // seconds): each from a port of its own, as new connections are.
                        t.sport = 1_024 + (k % 60_000) as u16;
                    }
                    out.push(t);
                }
            }
        }
        // lateral_movement: NIC 0 opens SMB and RDP on every other NIC within 2 minutes.
        if i == 0 && h == last {
            for (j, other) in nics.iter().enumerate().filter(|(j, _)| *j != 0) {
                for (k, port) in [445u16, 3389].into_iter().enumerate() {
                    let t = hour + 30 * MIN_MS + (j * 2 + k) as i64 * 5_000;
                    conn(
                        &mut out,
                        base(t, Rule::AllowVnetOutBound, me, other.ip, port),
                        20_000,
                        [40, 9_000, 40, 60_000],
                    );
                }
            }
        }
        out
    }

    /// What was injected, for tests and the README's demo.
    pub(super) fn truth(nics: &[Nic], n: usize, start: i64) -> Vec<Truth> {
        let (mid, last) = hours(n);
        let at = |h: usize, ms: i64| start + h as i64 * HOUR_MS + ms;
        let t = |kind, src: Ipv4Addr, dst: &str, dport, first_ms, last_ms| Truth {
            kind,
            src: src.to_string(),
            dst: dst.to_string(),
            dport,
            first_ms,
            last_ms,
        };
        let ip = |i: usize| nics[i].ip.to_string();
        vec![
            t(
                "port_scan",
                SCANNER,
                &ip(0),
                None,
                at(mid, 10 * MIN_MS),
                at(mid, 10 * MIN_MS + (SCAN_PORTS as i64 - 1) * 500),
            ),
            t(
                "horizontal_sweep",
                SWEEPER,
                "",
                Some(5985),
                at(mid, 20 * MIN_MS),
                at(mid, 20 * MIN_MS + (nics.len() as i64 - 1) * 2_000),
            ),
            t(
                "exfiltration",
                nics[1].ip,
                &DROP_SITE.to_string(),
                None,
                at(mid, 5 * MIN_MS),
                at(mid, 45 * MIN_MS),
            ),
            t(
                "beacon",
                nics[2].ip,
                &C2.to_string(),
                Some(443),
                at(0, 30_000),
                at(n - 1, 59 * MIN_MS + 32_000),
            ),
            t(
                "new_talker",
                nics[3].ip,
                &NEWCOMER.to_string(),
                None,
                at(last, 15 * MIN_MS),
                at(last, 19 * MIN_MS),
            ),
            t(
                "exposure",
                Ipv4Addr::new(203, 0, 113, 1),
                &ip(4),
                Some(3389),
                at(mid, 25 * MIN_MS),
                at(mid, 55 * MIN_MS + 90_000),
            ),
            t(
                "denied_spike",
                Ipv4Addr::new(192, 0, 2, 100),
                &ip(5),
                Some(23),
                at(mid, 0),
                at(mid, HOUR_MS - 1),
            ),
            t(
                "lateral_movement",
                nics[0].ip,
                "",
                None,
                at(last, 30 * MIN_MS),
                at(last, 31 * MIN_MS),
            ),
        ]
    }
}

/// Write the container. Returns what was written.
pub fn generate(opts: &GenOptions) -> std::io::Result<GenStats> {
    if opts.nsgs == 0 || opts.nics_per_nsg == 0 || opts.hours == 0 {
        return Ok(GenStats::default());
    }
    if opts.nsgs > MAX_NSG_NAMES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--nsgs is at most {MAX_NSG_NAMES} (one name each)"),
        ));
    }
    if opts.attacks
        && (opts.nsgs * opts.nics_per_nsg < attacks::MIN_NICS || opts.hours < attacks::MIN_HOURS)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "--attacks needs at least {} NICs (--nsgs x --nics-per-nsg) and {} hours",
                attacks::MIN_NICS,
                attacks::MIN_HOURS
            ),
        ));
    }
    let start = opts.start_ms - opts.start_ms.rem_euclid(HOUR_MS);
    let nics: Vec<Nic> = (0..opts.nsgs)
        .flat_map(|g| {
            (0..opts.nics_per_nsg).map(move |n| Nic {
                nsg: g,
                nic: n,
                ip: Ipv4Addr::new(10, (g % 250) as u8, (n / 250) as u8, 4 + (n % 250) as u8),
                mac: format!("000D3A{:02X}{:02X}{:02X}", g % 256, (n >> 8) % 256, n % 256),
            })
        })
        .collect();
    let rate = match opts.size {
        Some(size) => {
            let blobs_per_hour: f64 = (0..opts.hours)
                .map(|h| families_for(opts, 0, h).len() as f64)
                .sum::<f64>()
                / opts.hours as f64;
            let minutes = (nics.len() * opts.hours * 60) as f64 * blobs_per_hour;
            size as f64 / (minutes * TUPLES_PER_FLOW * BYTES_PER_TUPLE)
        }
        None => opts.flows_per_minute,
    };
    let totals = nics
        .par_iter()
        .map(|nic| -> std::io::Result<GenStats> {
            let nic_seed = opts
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((nic.nsg as u64) << 32 | nic.nic as u64);
            let mut tg = TrafficGen::new(nic_seed, nic);
            let sub = SUBSCRIPTIONS[nic.nsg % SUBSCRIPTIONS.len()];
            let rg = RG_NAMES[nic.nsg % RG_NAMES.len()];
            let nsg = nsg_name(nic.nsg);
            let mut stats = GenStats::default();
            let mut pending: Vec<GTuple> = Vec::new();
            let mut buf = Vec::new();
            for h in 0..opts.hours {
                let hour = start + h as i64 * HOUR_MS;
                let last = h + 1 == opts.hours;
                // New connections this hour (Poisson-ish: rate ± jitter per minute).
                for m in 0..60 {
                    let n = (rate * (0.5 + tg.rng.f64())).round() as u64;
                    for _ in 0..n {
                        let t0 = hour + m * MIN_MS + tg.rng.i64(0..MIN_MS);
                        tg.connection(t0, &mut buf);
                    }
                }
                if opts.attacks {
                    let i = nic.nsg * opts.nics_per_nsg + nic.nic;
                    buf.extend(attacks::tuples(i, &nics, h, opts.hours, hour, rate));
                }
                pending.append(&mut buf);
                // Bucket into this hour's records; later tuples wait for their hour.
                let mut slots: Vec<Vec<GTuple>> = vec![Vec::new(); 60];
                let end = hour + HOUR_MS - RECORD_LAG_MS;
                let mut keep = Vec::new();
                for t in pending.drain(..) {
                    if last && t.time_ms >= hour + HOUR_MS {
                        // Past the end of the data: the connection is still open.
                        continue;
                    }
                    if t.time_ms < end || last {
                        let k =
                            ((t.time_ms - hour + RECORD_LAG_MS).max(0) / MIN_MS).min(59) as usize;
                        slots[k].push(t);
                    } else {
                        keep.push(t);
                    }
                }
                pending = keep;
                let fams = families_for(opts, nic.nsg, h);
                for (fi, fam) in fams.iter().enumerate() {
                    let spec = BlobSpec {
                        nic,
                        hour,
                        family: *fam,
                        sub,
                        rg,
                        nsg,
                    };
                    let mut s = if fi + 1 < fams.len() {
                        slots.clone()
                    } else {
                        std::mem::take(&mut slots)
                    };
                    let st = write_blob(
                        &spec,
                        &mut s,
                        &opts.out,
                        nic_seed ^ (h as u64 + 1) << 8 ^ fi as u64,
                    )?;
                    stats.blobs += st.blobs;
                    stats.records += st.records;
                    stats.tuples += st.tuples;
                    stats.bytes += st.bytes;
                }
            }
            Ok(stats)
        })
        .collect::<std::io::Result<Vec<GenStats>>>()?;
    // The NSG definitions of this world, and the attacks' ground truth, beside the container
    // (never inside it, so a run over it does not read them).
    write_beside(&opts.out, ".nsgs.json", &definitions(opts.nsgs))?;
    if opts.attacks {
        let start = opts.start_ms - opts.start_ms.rem_euclid(HOUR_MS);
        write_beside(
            &opts.out,
            ".attacks.json",
            &attacks::truth(&nics, opts.hours, start),
        )?;
    }
    let mut all = GenStats::default();
    for s in totals {
        all.blobs += s.blobs;
        all.records += s.records;
        all.tuples += s.tuples;
        all.bytes += s.bytes;
    }
    Ok(all)
}

/// Write `value` as pretty JSON to `<out><suffix>`, beside the container.
fn write_beside(out: &Path, suffix: &str, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    let mut text = serde_json::to_string_pretty(value).expect("serializes");
    text.push('\n');
    std::fs::write(out.with_file_name(name), text)
}

/// The NSG definitions of the generated world (`az network nsg list` shape), written to
/// `<out>.nsgs.json`. Every flow `gen` logs is logged under the rule these definitions really
/// apply (priority order, first match; test `gen_logs_every_flow_under_the_rule_its_definitions_apply`),
/// and four problems are planted for the rule audit: `AllowRdpLegacy` (from a range with no
/// hosts: unused), `AllowHttpsFromClients` (redundant under `AllowHttps`), `AllowSshAnyLegacy`
/// (SSH from any source, to a subnet with no hosts: overly permissive) and
/// `DenySshFromInternet` (shadowed by it). With `--attacks`, the exposed RDP rule
/// (`UserRule_AllowRdpFromAnywhere`) is not in them: the audit reports it as a rule the
/// definitions lack, as it would a rule added during the window.
pub fn definitions(nsgs: usize) -> serde_json::Value {
    let rule = |name: &str,
                priority: u32,
                dir: &str,
                access: &str,
                src: &str,
                dst: &str,
                port: &str| {
        serde_json::json!({
            "name": name, "priority": priority, "direction": dir, "access": access, "protocol": "Tcp",
            "sourceAddressPrefix": src, "sourceAddressPrefixes": [], "sourcePortRange": "*",
            "destinationAddressPrefix": dst, "destinationAddressPrefixes": [], "destinationPortRange": port,
            "destinationPortRanges": [], "provisioningState": "Succeeded",
        })
    };
    let default = |name: &str, priority: u32, dir: &str, access: &str, src: &str, dst: &str| {
        let mut r = rule(name, priority, dir, access, src, dst, "*");
        r["protocol"] = "*".into();
        r
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for g in 0..nsgs {
        let (sub, rg, nsg) = (
            SUBSCRIPTIONS[g % SUBSCRIPTIONS.len()],
            RG_NAMES[g % RG_NAMES.len()],
            nsg_name(g),
        );
        if !seen.insert((rg, nsg)) {
            continue;
        }
        out.push(serde_json::json!({
            "name": nsg,
            "resourceGroup": rg,
            "location": "westeurope",
            "id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{nsg}"),
            "securityRules": [
                rule("AllowHttps", 100, "Inbound", "Allow", "Internet", "*", "443"),
                rule("AllowSshFromBastion", 110, "Inbound", "Allow", "10.255.0.0/24", "*", "22"),
                rule("AllowRdpLegacy", 120, "Inbound", "Allow", "10.254.0.0/24", "*", "3389"),
                rule("AllowHttpsFromClients", 130, "Inbound", "Allow", "Internet", "*", "443"),
                rule("AllowSshAnyLegacy", 140, "Inbound", "Allow", "*", "10.99.0.0/24", "22"),
                rule("DenySshFromInternet", 150, "Inbound", "Deny", "Internet", "10.99.0.0/24", "22"),
                rule("DenySmbOutbound", 100, "Outbound", "Deny", "*", "Internet", "445"),
            ],
            "defaultSecurityRules": [
                default("AllowVnetInBound", 65000, "Inbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
                default("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "AzureLoadBalancer", "*"),
                default("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
                default("AllowVnetOutBound", 65000, "Outbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
                default("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", "Internet"),
                default("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
            ],
        }));
    }
    serde_json::Value::Array(out)
}

/// Parse a size like `1G`, `500M`, `64K`, `1000` (bytes; binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return Err(format!("{s:?}: unknown size unit (use K, M or G)")),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1G, 500M)"))?;
    if n < 0.0 {
        return Err(format!("{s:?}: size must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5M"), Ok(1_572_864));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("3Q").is_err());
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let mk = |out: &Path, seed| GenOptions {
            out: out.to_path_buf(),
            seed,
            hours: 1,
            nsgs: 1,
            nics_per_nsg: 1,
            ..GenOptions::default()
        };
        let sa = generate(&mk(a.path(), 5)).unwrap();
        let sb = generate(&mk(b.path(), 5)).unwrap();
        generate(&mk(c.path(), 6)).unwrap();
        assert_eq!(sa, sb);
        assert!(sa.tuples > 100, "{sa:?}");
        let files = |d: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            walkdir::WalkDir::new(d)
                .sort_by_file_name()
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| {
                    (
                        e.path().strip_prefix(d).unwrap().to_path_buf(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(files(a.path()), files(b.path()));
        assert_ne!(files(a.path()), files(c.path()));
    }
}
