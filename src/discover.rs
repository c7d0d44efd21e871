//! Finding blobs: walk the inputs (container folders as azcopy downloads them, any folder
//! above or inside one, or single files), read the Azure path segments of each blob into a
//! [`BlobMeta`], and drop blobs outside the run's time window, NSGs, subscriptions or
//! family before a byte of them is read. Results are sorted by path so runs reproduce.
//!
//! Path layouts (see `../shared/FORMATS.md`, "Blobs and paths"):
//! `insights-logs-networksecuritygroupflowevent/resourceId=/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/{RG}/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/{NSG}/y=/m=/d=/h=/m=00/macAddress={MAC}/PT1H.json`,
//! and for VNet flow logs `insights-logs-flowlogflowevent/flowLogResourceID=/{SUB}_NETWORKWATCHERRG/NETWORKWATCHER_{REGION}_{FLOWLOG}/y=…`
//! or the long ARM form `flowLogResourceID=/SUBSCRIPTIONS/{SUB}/…/FLOWLOGS/{FLOWLOG}/y=…`.

use crate::model::normalize_mac;
use chrono::{NaiveDate, TimeZone, Utc};
use std::path::{Path, PathBuf};

/// Which kind of flow log a path (or a record) belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogKind {
    /// NSG flow logs (`insights-logs-networksecuritygroupflowevent`), v1 or v2.
    Nsg,
    /// VNet flow logs (`insights-logs-flowlogflowevent`).
    Vnet,
}

impl LogKind {
    pub fn name(self) -> &'static str {
        match self {
            LogKind::Nsg => "nsg",
            LogKind::Vnet => "vnet",
        }
    }
}

/// A discovered blob and what its path says about it. Every field is `None` when the path
/// does not say (a file outside the azcopy layout).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobMeta {
    pub path: PathBuf,
    /// Size in bytes at discovery time.
    pub size: u64,
    pub kind: Option<LogKind>,
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
    /// NSG name (NSG logs).
    pub nsg: Option<String>,
    /// Flow-log resource name (VNet logs).
    pub flow_log: Option<String>,
    /// Region from the short VNet layout (`NETWORKWATCHER_{REGION}_…`).
    pub region: Option<String>,
    /// Start of the blob's hour, Unix milliseconds UTC.
    pub hour_ms: Option<i64>,
    /// NIC MAC, normalised to 12 upper-case hex digits.
    pub mac: Option<String>,
    /// Modification time at discovery (Unix ms), when the file system gives one: with the
    /// path and size, the blob's identity in a partial file.
    pub mtime_ms: Option<i64>,
    /// The ETag Azure Blob Storage lists (changes whenever the blob is written).
    pub etag: Option<String>,
    /// The file's (device, inode) where the file system gives them: one file reached by two
    /// paths (`DIR` and `./DIR`, a followed link) is read once.
    pub file_id: Option<(u64, u64)>,
}

impl BlobMeta {
    /// Read the Azure segments out of a path.
    pub fn from_path(path: &Path) -> BlobMeta {
        let mut m = BlobMeta {
            path: path.to_path_buf(),
            ..BlobMeta::default()
        };
        let comps: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let (mut y, mut mo, mut d, mut h) = (None, None, None, None);
        let mut arm = false;
        let mut i = 0;
        while i < comps.len() {
            let c = comps[i].as_str();
            let lower = c.to_ascii_lowercase();
            let next = comps.get(i + 1).map(String::as_str);
            match lower.as_str() {
                "insights-logs-networksecuritygroupflowevent" => m.kind = Some(LogKind::Nsg),
                "insights-logs-flowlogflowevent" => m.kind = Some(LogKind::Vnet),
                _ => {}
            }
            if let Some((k, v)) = c.split_once('=') {
                match (k, v) {
                    ("resourceId", _) => {
                        m.kind.get_or_insert(LogKind::Nsg);
                        arm = true;
                    }
                    ("flowLogResourceID", _) => {
                        m.kind = Some(LogKind::Vnet);
                        arm = true;
                        // Short form: {SUB}_NETWORKWATCHERRG/NETWORKWATCHER_{REGION}_{NAME}
                        if let Some(n) = next {
                            if let Some(sub) = n
                                .strip_suffix("_NETWORKWATCHERRG")
                                .or_else(|| n.strip_suffix("_networkwatcherrg"))
                            {
                                m.subscription = Some(sub.to_string());
                                if let Some(w) = comps.get(i + 2) {
                                    if let Some(rest) = w
                                        .strip_prefix("NETWORKWATCHER_")
                                        .or_else(|| w.strip_prefix("networkwatcher_"))
                                    {
                                        if let Some((region, name)) = rest.split_once('_') {
                                            m.region = Some(region.to_string());
                                            m.flow_log = Some(name.to_string());
                                        }
                                    }
                                }
                            }
                        }
                    }
                    ("y", v) => y = v.parse::<i32>().ok(),
                    // The first m= is the month, the second the minute (always 00).
                    ("m", v) if mo.is_none() => mo = v.parse::<u32>().ok(),
                    ("d", v) => d = v.parse::<u32>().ok(),
                    ("h", v) => h = v.parse::<u32>().ok(),
                    ("macAddress", v) => m.mac = Some(normalize_mac(v)),
                    _ => {}
                }
            } else if arm {
                if let Some(n) = next {
                    match lower.as_str() {
                        "subscriptions" => m.subscription = Some(n.to_string()),
                        "resourcegroups" => m.resource_group = Some(n.to_string()),
                        "networksecuritygroups" => m.nsg = Some(n.to_string()),
                        "flowlogs" => m.flow_log = Some(n.to_string()),
                        _ => {}
                    }
                }
            }
            i += 1;
        }
        if let (Some(y), Some(mo), Some(d), Some(h)) = (y, mo, d, h) {
            m.hour_ms = NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|date| date.and_hms_opt(h, 0, 0))
                .map(|dt| Utc.from_utc_datetime(&dt).timestamp_millis())
                // `y=200000` names no hour a flow log can have.
                .filter(|ms| {
                    (crate::parse::tuple::MIN_TIME_MS..crate::parse::tuple::MAX_TIME_MS)
                        .contains(ms)
                });
        }
        m
    }
}

/// Filters applied to paths before any byte is read. Empty lists mean "no restriction".
#[derive(Clone, Debug, Default)]
pub struct DiscoverOptions {
    /// Follow symbolic links while walking (off by default).
    pub follow_links: bool,
    /// Keep blobs whose hour can hold tuples at or after this time (ms). A blob of hour
    /// `h` may hold tuples of hour `h-1` in its first record, so the window is widened by
    /// an hour on that side.
    pub since_ms: Option<i64>,
    /// Keep blobs whose hour can hold tuples before this time (ms).
    pub until_ms: Option<i64>,
    /// NSG names, compared case-insensitively (NSG logs; VNet blobs are not filtered by
    /// path, their NSG is only known from each record's `aclID`).
    pub nsgs: Vec<String>,
    /// Subscription ids, compared case-insensitively.
    pub subscriptions: Vec<String>,
    /// Only this kind of log.
    pub kind: Option<LogKind>,
    /// `--skip-open-hour`: leave out blobs of an hour Azure may still be writing.
    pub skip_open_hour: bool,
}

/// Azure appends to an hour's blob until a few minutes after the hour ends (flow logs are
/// written with up to ~10 minutes' delay): until then its counts still grow.
pub const OPEN_HOUR_GRACE_MS: i64 = 10 * 60_000;

/// Whether a blob's hour (from its path) may still be written at `now_ms`.
pub fn is_open_hour(b: &BlobMeta, now_ms: i64) -> bool {
    b.hour_ms
        .is_some_and(|h| h + HOUR_MS + OPEN_HOUR_GRACE_MS > now_ms)
}

/// Something under the inputs that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Why a report folder under the inputs is skipped (listed, not a loss: exit code 0 stays).
pub const OWN_OUTPUT: &str = "an nsgflow report folder (its own output): not read as input";

/// Why a `--state-dir` folder under the inputs is skipped (listed, not a loss).
pub const OWN_STATE: &str = "an nsgflow --state-dir folder (its own state): not read as input";

impl Skipped {
    /// Input that could not be used (a loss), not nsgflow's own output or state.
    pub fn is_loss(&self) -> bool {
        self.reason != OWN_OUTPUT && self.reason != OWN_STATE
    }
}

/// The result of discovery.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    /// Blobs to read, sorted by path.
    pub blobs: Vec<BlobMeta>,
    /// Inputs or entries that could not be walked (missing, unreadable), sorted.
    pub skipped: Vec<Skipped>,
    /// Blobs found but left out by the filters.
    pub filtered_out: u64,
    /// Blobs and bytes discovery kept, before `--shard` took its part.
    pub discovered_blobs: u64,
    pub discovered_bytes: u64,
    /// Blobs found twice (the same file by two paths, or a copy with the same bytes): read
    /// once, listed here with the path that is read.
    pub duplicates: Vec<Duplicate>,
    /// Blobs of an hour still being written (see [`is_open_hour`]): read and marked
    /// provisional, or left out with `--skip-open-hour` (`open_hour_skipped`).
    pub provisional: Vec<PathBuf>,
    pub open_hour_skipped: Vec<PathBuf>,
    /// Remote inputs that cannot be used at all (authentication, a missing container, no
    /// list permission): one line each, and the run stops before any work (exit 2).
    pub unusable: Vec<String>,
    /// Per remote input, what its listing saw and kept.
    pub remote_listings: Vec<RemoteListing>,
    /// `--state-dir`: what the run took from the state (set by the run, not by discovery).
    pub state: Option<crate::state::incremental::StateUse>,
}

/// One `az://` input's listing: objects listed under the prefixes the window and filters
/// left, blobs kept, and listing requests made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteListing {
    pub input: String,
    pub listed: u64,
    pub kept: u64,
    pub requests: u64,
}

/// A blob not read because another path gives the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duplicate {
    pub path: PathBuf,
    /// The path that is read instead.
    pub same_as: PathBuf,
    /// `the same file` (one file reached by two paths: `DIR` and `./DIR`, a followed link),
    /// or `the same bytes` (a copy: `PT1H (1).json`, overlapping exports).
    pub how: &'static str,
}

/// Who a blob is, as far as its path says: copies of one blob agree on it (the Azure
/// segments, or else the folder), so only blobs of one identity and size are compared.
fn identity(b: &BlobMeta) -> (u64, String) {
    let who = match (&b.hour_ms, &b.mac) {
        (Some(h), Some(m)) => format!(
            "{:?}|{}|{}|{}|{h}|{m}",
            b.kind,
            b.subscription.as_deref().unwrap_or("").to_ascii_lowercase(),
            b.nsg
                .as_deref()
                .or(b.flow_log.as_deref())
                .unwrap_or("")
                .to_ascii_lowercase(),
            b.resource_group
                .as_deref()
                .unwrap_or("")
                .to_ascii_lowercase(),
        ),
        _ => format!("dir|{}", parent_of(&b.path).display()),
    };
    (b.size, who)
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

/// Keep one of each blob (see [`Duplicate`]).
/// Only blobs that share an identity and a size are read here, to compare their bytes.
fn drop_duplicates(blobs: Vec<BlobMeta>, dups: &mut Vec<Duplicate>) -> Vec<BlobMeta> {
    use std::collections::HashMap;
    let mut by_file: HashMap<(u64, u64), usize> = HashMap::new();
    let mut kept: Vec<BlobMeta> = Vec::with_capacity(blobs.len());
    for b in blobs {
        // The same path twice (`DIR` and `DIR/.` compare equal as paths).
        if let Some(last) = kept.last() {
            if last.path == b.path {
                dups.push(Duplicate {
                    path: b.path,
                    same_as: last.path.clone(),
                    how: "the same file",
                });
                continue;
            }
        }
        let Some(id) = b.file_id else {
            kept.push(b);
            continue;
        };
        match by_file.get(&id) {
            Some(&k) => dups.push(Duplicate {
                path: b.path,
                same_as: kept[k].path.clone(),
                how: "the same file",
            }),
            None => {
                by_file.insert(id, kept.len());
                kept.push(b);
            }
        }
    }
    let mut groups: HashMap<(u64, String), Vec<usize>> = HashMap::new();
    for (i, b) in kept.iter().enumerate() {
        if b.size > 0 {
            groups.entry(identity(b)).or_default().push(i);
        }
    }
    let mut drop = vec![false; kept.len()];
    let mut groups: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for mut g in groups {
        // The copy read is Azure's own name if one has it (`PT1H.json`, not a browser's
        // `PT1H (1).json`), then the shortest path, then the first in sort order.
        g.sort_by_key(|&i| {
            let p = &kept[i].path;
            let azure = p.file_name().is_some_and(|n| n == "PT1H.json");
            (!azure, p.as_os_str().len(), p.clone())
        });
        // Distinct contents seen in this group, each with the index that is read.
        let mut firsts: Vec<(usize, Vec<u8>)> = Vec::new();
        for i in g {
            let Ok(bytes) = crate::source::read_all(&kept[i].path) else {
                continue; // read (and failed, with its reason) by the run
            };
            match firsts.iter().find(|(_, b)| *b == bytes) {
                Some((k, _)) => {
                    drop[i] = true;
                    dups.push(Duplicate {
                        path: kept[i].path.clone(),
                        same_as: kept[*k].path.clone(),
                        how: "the same bytes",
                    });
                }
                None => firsts.push((i, bytes)),
            }
        }
    }
    dups.sort();
    kept.into_iter()
        .zip(drop)
        .filter_map(|(b, d)| (!d).then_some(b))
        .collect()
}

const HOUR_MS: i64 = 3_600_000;

/// Whether a file name is one a flow-log blob can have (`*.json`, `.json.gz`, `.zip`, ...).
pub fn is_blob_name(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') {
        return false;
    }
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("json" | "ndjson" | "jsonl" | "gz" | "zip")
    )
}

impl DiscoverOptions {
    /// Whether a blob passes the path-level filters.
    pub fn keeps(&self, m: &BlobMeta) -> bool {
        if let (Some(want), Some(kind)) = (self.kind, m.kind) {
            if want != kind {
                return false;
            }
        }
        if let Some(h) = m.hour_ms {
            if self.since_ms.is_some_and(|s| h + HOUR_MS <= s) {
                return false;
            }
            if self.until_ms.is_some_and(|u| h - HOUR_MS >= u) {
                return false;
            }
        }
        if !self.nsgs.is_empty() && m.kind != Some(LogKind::Vnet) {
            if let Some(n) = &m.nsg {
                if !self.nsgs.iter().any(|w| w.eq_ignore_ascii_case(n)) {
                    return false;
                }
            }
        }
        if !self.subscriptions.is_empty() {
            if let Some(s) = &m.subscription {
                if !self.subscriptions.iter().any(|w| w.eq_ignore_ascii_case(s)) {
                    return false;
                }
            }
        }
        true
    }
}

/// Walk the inputs and return the blobs to read.
/// What a non-regular file is, for its skip reason.
fn special(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    let _ = ft;
    "a special file"
}

fn file_id(md: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((md.dev(), md.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = md;
        None
    }
}

fn mtime_ms(md: &std::fs::Metadata) -> Option<i64> {
    let t = md.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// `--shard K/N`: which part of the discovered blobs one of N runs reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// 1-based: 1..=n.
    pub k: u32,
    pub n: u32,
}

impl Shard {
    /// `K/N` with 1 <= K <= N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s:?}: use K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }

    /// Keep this shard's blobs: whole NICs (a NIC's connections must be stitched in one run),
    /// dealt largest first to the shard with the fewest bytes so far (ties to the lowest
    /// shard), so the N shards are balanced by bytes and the split is the same for the same
    /// input whatever the order of discovery.
    pub fn select(self, blobs: Vec<BlobMeta>) -> Vec<BlobMeta> {
        use std::collections::BTreeMap;
        let mut groups: BTreeMap<String, (u64, Vec<BlobMeta>)> = BTreeMap::new();
        for b in blobs {
            let g = groups.entry(crate::pipeline::nic_key(&b)).or_default();
            g.0 += b.size;
            g.1.push(b);
        }
        let mut order: Vec<(String, (u64, Vec<BlobMeta>))> = groups.into_iter().collect();
        order.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
        let mut load = vec![0u64; self.n as usize];
        let mut mine = Vec::new();
        for (_, (bytes, group)) in order {
            let (i, _) = load
                .iter()
                .enumerate()
                .min_by_key(|(i, l)| (**l, *i))
                .expect("n >= 1");
            load[i] += bytes;
            if i + 1 == self.k as usize {
                mine.extend(group);
            }
        }
        mine.sort_by(|a, b| a.path.cmp(&b.path));
        mine
    }
}

pub fn discover(inputs: &[PathBuf], opts: &DiscoverOptions) -> Discovered {
    let mut out = Discovered::default();
    for input in inputs {
        if crate::source::is_remote(input) {
            discover_remote(input, opts, &mut out);
            continue;
        }
        let meta = match std::fs::metadata(input) {
            Ok(m) => m,
            Err(e) => {
                out.skipped.push(Skipped {
                    path: input.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if meta.is_file() {
            // A file named on the command line is taken whatever its name.
            let mut m = BlobMeta::from_path(input);
            m.size = meta.len();
            m.mtime_ms = mtime_ms(&meta);
            m.file_id = file_id(&meta);
            if opts.keeps(&m) {
                out.blobs.push(m);
            } else {
                out.filtered_out += 1;
            }
            continue;
        }
        let walker = walkdir::WalkDir::new(input)
            .follow_links(opts.follow_links)
            .sort_by_file_name();
        let mut it = walker.into_iter();
        while let Some(entry) = it.next() {
            match entry {
                Ok(e) => {
                    if e.file_type().is_dir() && crate::report::render::is_report_dir(e.path()) {
                        // nsgflow's own output (its report.json is JSON too): never input.
                        out.skipped.push(Skipped {
                            path: e.path().to_path_buf(),
                            reason: OWN_OUTPUT.to_string(),
                        });
                        it.skip_current_dir();
                        continue;
                    }
                    if e.file_type().is_dir() && crate::state::incremental::is_state_dir(e.path()) {
                        // Its manifest is JSON too: never input.
                        out.skipped.push(Skipped {
                            path: e.path().to_path_buf(),
                            reason: OWN_STATE.to_string(),
                        });
                        it.skip_current_dir();
                        continue;
                    }
                    let ft = e.file_type();
                    if ft.is_symlink() {
                        // Not followed (a followed one shows as what it points to).
                        out.skipped.push(Skipped {
                            path: e.path().to_path_buf(),
                            reason: "a symbolic link, not followed (--follow-links follows it)"
                                .to_string(),
                        });
                        continue;
                    }
                    if !ft.is_file() && !ft.is_dir() {
                        out.skipped.push(Skipped {
                            path: e.path().to_path_buf(),
                            reason: format!("not a regular file ({}): not read", special(&ft)),
                        });
                        continue;
                    }
                    if !ft.is_file() || !is_blob_name(e.path()) {
                        continue;
                    }
                    let mut m = BlobMeta::from_path(e.path());
                    if let Ok(md) = e.metadata() {
                        m.size = md.len();
                        m.mtime_ms = mtime_ms(&md);
                        m.file_id = file_id(&md);
                    }
                    if opts.keeps(&m) {
                        out.blobs.push(m);
                    } else {
                        out.filtered_out += 1;
                    }
                }
                Err(e) => {
                    let path = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| input.clone());
                    let reason = e
                        .io_error()
                        .map(|io| io.to_string())
                        .unwrap_or_else(|| e.to_string());
                    out.skipped.push(Skipped { path, reason });
                }
            }
        }
    }
    out.blobs.sort_by(|a, b| a.path.cmp(&b.path));
    out.blobs = drop_duplicates(std::mem::take(&mut out.blobs), &mut out.duplicates);
    let now_ms = crate::text::wall_ms();
    let (open, closed): (Vec<BlobMeta>, Vec<BlobMeta>) = std::mem::take(&mut out.blobs)
        .into_iter()
        .partition(|b| is_open_hour(b, now_ms));
    out.blobs = closed;
    let open_paths = open.iter().map(|b| b.path.clone()).collect();
    if opts.skip_open_hour {
        out.open_hour_skipped = open_paths;
    } else {
        out.provisional = open_paths;
        out.blobs.extend(open);
        out.blobs.sort_by(|a, b| a.path.cmp(&b.path));
    }
    out.skipped.sort();
    out.discovered_blobs = out.blobs.len() as u64;
    out.discovered_bytes = out.blobs.iter().map(|b| b.size).sum();
    out
}

/// List a remote input (`az://`, `https://`) into `out`.
fn discover_remote(input: &Path, opts: &DiscoverOptions, out: &mut Discovered) {
    let text = input.to_str().unwrap_or("");
    #[cfg(feature = "azure")]
    match crate::source::azure::list(text, opts) {
        Ok(l) => {
            out.remote_listings.push(RemoteListing {
                input: text.to_string(),
                listed: l.listed,
                kept: l.blobs.len() as u64,
                requests: l.requests,
            });
            out.filtered_out += l.filtered_out;
            out.blobs.extend(l.blobs);
        }
        Err(e) => out.unusable.push(e),
    }
    #[cfg(not(feature = "azure"))]
    {
        let _ = opts;
        out.unusable
            .push(format!("{text}: {}", crate::source::NO_AZURE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsg_path_segments() {
        let p = Path::new("dl/insights-logs-networksecuritygroupflowevent/resourceId=/SUBSCRIPTIONS/AAAA-1/RESOURCEGROUPS/RG-WEB/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WEB-NSG/y=2026/m=01/d=05/h=13/m=00/macAddress=000d3a0af519/PT1H.json");
        let m = BlobMeta::from_path(p);
        assert_eq!(m.kind, Some(LogKind::Nsg));
        assert_eq!(m.subscription.as_deref(), Some("AAAA-1"));
        assert_eq!(m.resource_group.as_deref(), Some("RG-WEB"));
        assert_eq!(m.nsg.as_deref(), Some("WEB-NSG"));
        assert_eq!(m.mac.as_deref(), Some("000D3A0AF519"));
        assert_eq!(m.hour_ms, Some(1_767_618_000_000));
    }

    #[test]
    fn vnet_short_and_long_paths() {
        let p = Path::new("insights-logs-flowlogflowevent/flowLogResourceID=/C088DC46-D692_NETWORKWATCHERRG/NETWORKWATCHER_WESTUS_LAB_FLOWLOG/y=2024/m=12/d=31/h=09/m=00/macAddress=000D3A359573/PT1H.json");
        let m = BlobMeta::from_path(p);
        assert_eq!(m.kind, Some(LogKind::Vnet));
        assert_eq!(m.subscription.as_deref(), Some("C088DC46-D692"));
        assert_eq!(m.region.as_deref(), Some("WESTUS"));
        assert_eq!(m.flow_log.as_deref(), Some("LAB_FLOWLOG"));
        assert!(m.hour_ms.is_some());
        let p = Path::new("flowLogResourceID=/SUBSCRIPTIONS/S2/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/VNETLOG/y=2024/m=12/d=31/h=09/m=00/macAddress=00-0D-3A-35-95-73/PT1H.json");
        let m = BlobMeta::from_path(p);
        assert_eq!(m.subscription.as_deref(), Some("S2"));
        assert_eq!(m.flow_log.as_deref(), Some("VNETLOG"));
        assert_eq!(m.mac.as_deref(), Some("000D3A359573"));
    }

    #[test]
    fn time_window_keeps_neighbouring_hour() {
        let mut m = BlobMeta::from_path(Path::new("x/y=2026/m=01/d=05/h=13/m=00/PT1H.json"));
        m.kind = Some(LogKind::Nsg);
        let h = m.hour_ms.unwrap();
        let opts = |s: Option<i64>, u: Option<i64>| DiscoverOptions {
            since_ms: s,
            until_ms: u,
            ..Default::default()
        };
        assert!(opts(Some(h), None).keeps(&m));
        assert!(opts(Some(h + HOUR_MS - 1), None).keeps(&m));
        assert!(!opts(Some(h + HOUR_MS), None).keeps(&m));
        // The blob of 13:00 can hold tuples from 12:xx.
        assert!(opts(None, Some(h - HOUR_MS + 1)).keeps(&m));
        assert!(!opts(None, Some(h - HOUR_MS)).keeps(&m));
    }
}
