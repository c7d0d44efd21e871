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
const RG_NAMES: [&str; 4] = ["RG-PROD-WEB", "RG-PROD-APP", "RG-PROD-DATA", "RG-SHARED"];
const PLATFORM_ACL: &str = "00000000-0000-0000-0000-000000000000";

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
                    self.rng.u16(1..65535)
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
                    PLATFORM_ACL
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

/// Write the container. Returns what was written.
pub fn generate(opts: &GenOptions) -> std::io::Result<GenStats> {
    if opts.nsgs == 0 || opts.nics_per_nsg == 0 || opts.hours == 0 {
        return Ok(GenStats::default());
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
            let nsg = NSG_NAMES[nic.nsg % NSG_NAMES.len()];
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
    let mut all = GenStats::default();
    for s in totals {
        all.blobs += s.blobs;
        all.records += s.records;
        all.tuples += s.tuples;
        all.bytes += s.bytes;
    }
    Ok(all)
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
