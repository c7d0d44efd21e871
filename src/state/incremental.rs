//! `--state-dir DIR`: incremental runs that never double count.
//!
//! The unit of reuse is one NIC's blobs of one UTC day (blobs without a MAC or an hour in
//! their path stand alone). A NIC's units are read in time order, as the connection stitcher
//! needs; at the end of each unit the stitcher's open connections are saved
//! ([`crate::aggregate::connections::OpenState`]), so that a later unit can be read on its own
//! and still give exactly what one read of the whole NIC gives. A unit is taken from the
//! state, without reading a byte of its blobs, when
//! - its blobs are the same (path, size, and the modification time or the ETag: Azure gives a
//!   blob it rewrites or appends to a new one of each),
//! - it starts from the same open connections (the previous unit is unchanged, or was re-read
//!   to the same end),
//! - the time window cuts the same tuples out of it (the unit keeps the time span of the
//!   tuples it saw; a window that cuts none of them is no cut at all), and
//! - none of its blobs failed (a failed read is tried again next time).
//!
//! Everything else is read, and its contribution replaces the old one. A unit holds the
//! command's order-free folds, the connections it closed, its ledger and its end state, in
//! one deflated CBOR file named by its content hash (`units/u-<xxh3-128>.cbor`).
//! `manifest.json` lists the units with every blob's path, size, modification time, ETag and
//! content hash, the hash of each unit file, and the options that change results. A run writes its new unit files
//! first, then the manifest (a temporary file renamed over the old), and only then removes the
//! files the new manifest no longer names: a run killed at any point leaves the last complete
//! state, which the next run uses. A manifest of another version, or made with other options,
//! is rebuilt with a message; a damaged one, or a unit file that does not match its hash, is
//! an error (exit 2) and is never used.

use crate::aggregate::connections::{ConnFold, ConnSummary, OpenState};
use crate::aggregate::{Fold, NicFold};
use crate::discover::BlobMeta;
use crate::filter::{Filter, Filtered};
use crate::parse::{Ledger, RuleTable, TableBuffer, TableSink};
use crate::pipeline::{nic_groups, nic_key, process_blob, Progress, RunOptions, Worker};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Version of the state layout (manifest and unit files). Another version is rebuilt.
/// 2: unit files are deflated.
pub const STATE_VERSION: u32 = 2;
/// The manifest's first field.
pub const STATE_MAGIC: &str = "nsgflow-state";
const MANIFEST: &str = "manifest.json";
const UNITS: &str = "units";
const LOCK: &str = "lock";
const DAY_MS: i64 = 86_400_000;

/// The ordered part of a command's folds, as a state run needs it: what it closed so far can
/// be taken out, and what is open can be saved and taken up again.
pub trait Chain: TableSink + Send {
    type Part: Serialize + DeserializeOwned + Send;
    fn begin_blob(&mut self, blob: &BlobMeta);
    fn end_blob(&mut self);
    /// What was closed since the last call.
    fn take_part(&mut self) -> Self::Part;
    fn open_state(&self) -> OpenState;
    /// Take up a saved state (the chain holds nothing open).
    fn restore(&mut self, state: &OpenState) -> Result<(), String>;
    /// Close everything open (the end of the NIC's data) and take what that closed.
    fn close(&mut self) -> Self::Part;
    fn merge_part(into: &mut Self::Part, part: Self::Part);
}

impl Chain for ConnFold {
    type Part = ConnSummary;
    fn begin_blob(&mut self, blob: &BlobMeta) {
        NicFold::begin_blob(self, blob)
    }
    fn end_blob(&mut self) {
        NicFold::end_blob(self)
    }
    fn take_part(&mut self) -> ConnSummary {
        ConnFold::take_part(self)
    }
    fn open_state(&self) -> OpenState {
        ConnFold::open_state(self)
    }
    fn restore(&mut self, state: &OpenState) -> Result<(), String> {
        ConnFold::restore(self, state)
    }
    fn close(&mut self) -> ConnSummary {
        self.end_group();
        ConnFold::take_part(self)
    }
    fn merge_part(into: &mut ConnSummary, part: ConnSummary) {
        into.merge(part)
    }
}

/// An order-free fold a state keeps: saved as bytes, and merged back from them into a fold
/// made the same way (a fold that holds references, such as the address book, rebuilds its
/// saved keys against its own).
pub trait Persist: Fold {
    fn save(&self) -> Vec<u8>;
    /// Merge what [`Persist::save`] wrote into this fold.
    fn load_into(&mut self, bytes: &[u8]) -> Result<(), String>;
}

/// CBOR of a fold that serialises whole.
pub fn save_cbor<T: Serialize>(t: &T) -> Vec<u8> {
    let mut b = Vec::new();
    ciborium::into_writer(t, &mut b).expect("serialising to memory");
    b
}

/// Read back [`save_cbor`].
pub fn load_cbor<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

/// [`Persist`] for folds that serialise whole and merge.
macro_rules! persist_serde {
    ($($t:ty),* $(,)?) => {$(
        impl Persist for $t {
            fn save(&self) -> Vec<u8> {
                save_cbor(self)
            }
            fn load_into(&mut self, bytes: &[u8]) -> Result<(), String> {
                self.merge(load_cbor::<$t>(bytes)?);
                Ok(())
            }
        }
    )*};
}

persist_serde!(
    (),
    crate::aggregate::SummaryFolds,
    crate::aggregate::ReportFolds,
    (crate::aggregate::Summary, crate::detect::Detect),
    (crate::aggregate::Summary, crate::audit::Hits),
);

impl Chain for crate::aggregate::connections::TopConnections {
    type Part = crate::aggregate::connections::ConnList;
    fn begin_blob(&mut self, blob: &BlobMeta) {
        NicFold::begin_blob(self, blob)
    }
    fn end_blob(&mut self) {
        NicFold::end_blob(self)
    }
    fn take_part(&mut self) -> Self::Part {
        self.take_best()
    }
    fn open_state(&self) -> OpenState {
        crate::aggregate::connections::TopConnections::open_state(self)
    }
    fn restore(&mut self, state: &OpenState) -> Result<(), String> {
        crate::aggregate::connections::TopConnections::restore(self, state)
    }
    fn close(&mut self) -> Self::Part {
        crate::aggregate::connections::TopConnections::close(self)
    }
    fn merge_part(into: &mut Self::Part, mut part: Self::Part) {
        into.0.append(&mut part.0);
    }
}

/// No ordered fold (`summary`, `audit`).
#[derive(Default)]
pub struct NoChain;

impl TableSink for NoChain {
    fn table(&mut self, _t: &RuleTable<'_>) {}
}

impl Chain for NoChain {
    type Part = ();
    fn begin_blob(&mut self, _blob: &BlobMeta) {}
    fn end_blob(&mut self) {}
    fn take_part(&mut self) {}
    fn open_state(&self) -> OpenState {
        OpenState::default()
    }
    fn restore(&mut self, state: &OpenState) -> Result<(), String> {
        if *state == OpenState::default() {
            Ok(())
        } else {
            Err("open connections for a command that stitches none".to_string())
        }
    }
    fn close(&mut self) {}
    fn merge_part(_into: &mut (), _part: ()) {}
}

/// One blob of a unit, as the manifest keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub path: String,
    pub size: u64,
    pub mtime_ms: Option<i64>,
    pub etag: Option<String>,
    /// xxh3-128 of the bytes read (hex), when the read succeeded.
    pub xxh3: Option<String>,
}

impl BlobRecord {
    fn of(b: &BlobMeta) -> BlobRecord {
        BlobRecord {
            path: crate::text::path_text(&b.path),
            size: b.size,
            mtime_ms: b.mtime_ms,
            etag: b.etag.clone(),
            xxh3: None,
        }
    }

    /// The same blob as when it was read (the content hash is not known before reading).
    fn same(&self, o: &BlobRecord) -> bool {
        self.path == o.path
            && self.size == o.size
            && self.mtime_ms == o.mtime_ms
            && self.etag == o.etag
    }
}

/// A unit's numbers, in the manifest (the unit file holds the full ledger).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitLedger {
    pub blobs: u64,
    pub blobs_failed: u64,
    pub records: u64,
    pub tuples: u64,
    pub tuples_accepted: u64,
    pub tuples_rejected: u64,
    pub tuples_filtered: u64,
}

/// One unit in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// `mac:<MAC>|<day>` (or `path:<blob>|<day>`), the day as Unix days.
    pub key: String,
    pub blobs: Vec<BlobRecord>,
    /// xxh3-128 of the open state it started from and the one it ended with.
    pub start: String,
    pub end: String,
    /// The time span (ms) of the tuples the time window saw, if any.
    pub span: Option<(i64, i64)>,
    /// The `--since`/`--until` that cut tuples out of the span (`None`: cut none).
    pub clip: (Option<i64>, Option<i64>),
    /// The unit file under `units/` and its xxh3-128.
    pub file: String,
    pub file_xxh3: String,
    pub bytes: u64,
    pub ledger: UnitLedger,
}

impl UnitRecord {
    /// Whether `records` are this unit's blobs as they were read, none of them failed.
    fn same_blobs(&self, records: &[BlobRecord]) -> bool {
        self.ledger.blobs_failed == 0
            && self.blobs.len() == records.len()
            && self.blobs.iter().zip(records).all(|(a, b)| a.same(b))
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub magic: String,
    pub state_version: u32,
    pub tool: String,
    pub command: String,
    /// The options that change results (the time window aside: see the module).
    pub options: serde_json::Value,
    /// When the state was written (RFC 3339).
    pub written: String,
    pub units: Vec<UnitRecord>,
}

/// What a state run took from the state and read, for the ledger and stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateUse {
    pub dir: String,
    pub units: u64,
    pub units_from_state: u64,
    pub units_read: u64,
    pub blobs_from_state: u64,
    pub blobs_read: u64,
    pub bytes_from_state: u64,
    pub bytes_read: u64,
    /// Units of the previous state the run no longer has (blobs deleted, or out of the window).
    pub units_dropped: u64,
    /// Why the previous state was not used, when it was not (another version, other options).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
    /// Size of the state folder once written (manifest and unit files).
    pub state_bytes: u64,
}

/// Why a state folder cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("--state-dir {dir}: {message}")]
    Unusable { dir: String, message: String },
    #[error("--state-dir {dir}: damaged state ({message}); it is not used: remove the folder (or give another --state-dir) to rebuild it with a full read")]
    Damaged { dir: String, message: String },
}

/// An open state folder: the previous manifest (if usable) and a lock held for the run.
pub struct StateDir {
    dir: PathBuf,
    shown: String,
    old: BTreeMap<String, UnitRecord>,
    command: String,
    options: serde_json::Value,
    rebuilt: Option<String>,
    _lock: std::fs::File,
}

impl StateDir {
    /// Open (or create) `dir` for `command` with `options`: a state of another version or
    /// other options is set aside to be rebuilt (said in [`StateUse::rebuilt`]); a damaged
    /// one, a folder of other files, or a link is an error.
    pub fn open(
        dir: &Path,
        command: &str,
        options: serde_json::Value,
    ) -> Result<StateDir, StateDirError> {
        let shown = crate::text::path_text(dir);
        let unusable = |message: String| StateDirError::Unusable {
            dir: shown.clone(),
            message,
        };
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(unusable(
                "is a symbolic link; state is never written through one: give the real folder"
                    .to_string(),
            ));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(unusable("is not a folder".to_string()));
        }
        let manifest = dir.join(MANIFEST);
        if dir.is_dir() && !manifest.exists() {
            let foreign = std::fs::read_dir(dir)
                .map_err(|e| unusable(e.to_string()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n != UNITS && n != LOCK && !n.starts_with(".tmp"));
            if let Some(name) = foreign {
                return Err(unusable(format!(
                    "the folder holds other files ({name}) and no nsgflow state: give an empty or new folder"
                )));
            }
        }
        let fresh = !dir.exists();
        std::fs::create_dir_all(dir.join(UNITS))
            .map_err(|e| unusable(format!("cannot create the folder: {e}")))?;
        // The state holds network data: a folder nsgflow creates is its owner's only.
        #[cfg(unix)]
        if fresh {
            use std::os::unix::fs::PermissionsExt;
            for d in [dir.to_path_buf(), dir.join(UNITS)] {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| unusable(format!("cannot set the folder's permissions: {e}")))?;
            }
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(|e| unusable(format!("cannot write in the folder: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(unusable(
                    "another nsgflow run is using this state folder".to_string(),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(unusable(format!("cannot lock the folder: {e}")))
            }
        }
        let mut s = StateDir {
            dir: dir.to_path_buf(),
            shown: shown.clone(),
            old: BTreeMap::new(),
            command: command.to_string(),
            options,
            rebuilt: None,
            _lock: lock,
        };
        if !manifest.exists() {
            return Ok(s);
        }
        let damaged = |message: String| StateDirError::Damaged {
            dir: shown.clone(),
            message,
        };
        let bytes = std::fs::read(&manifest).map_err(|e| unusable(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("{MANIFEST} is not JSON: {e}")))?;
        if v.get("magic").and_then(|m| m.as_str()) != Some(STATE_MAGIC) {
            return Err(damaged(format!(
                "{MANIFEST} is not an nsgflow state manifest"
            )));
        }
        let version = v.get("state_version").and_then(|x| x.as_u64()).unwrap_or(0);
        if version != STATE_VERSION as u64 {
            s.rebuilt = Some(format!(
                "the state is of version {version} ({}), this nsgflow writes version {STATE_VERSION}",
                v.get("tool").and_then(|t| t.as_str()).unwrap_or("unknown")
            ));
            return Ok(s);
        }
        let m: Manifest =
            serde_json::from_value(v).map_err(|e| damaged(format!("{MANIFEST}: {e}")))?;
        let tool = format!("nsgflow {}", env!("CARGO_PKG_VERSION"));
        if m.tool != tool {
            s.rebuilt = Some(format!("the state was made by {}, this is {tool}", m.tool));
            return Ok(s);
        }
        if m.command != s.command {
            s.rebuilt = Some(format!(
                "the state was made by `{}`, this is `{}`",
                m.command, s.command
            ));
            return Ok(s);
        }
        if m.options != s.options {
            s.rebuilt = Some(format!(
                "the state was made with other options ({})",
                differing(&m.options, &s.options)
            ));
            return Ok(s);
        }
        s.old = m.units.into_iter().map(|u| (u.key.clone(), u)).collect();
        Ok(s)
    }

    /// Why the previous state is rebuilt, if it is.
    pub fn rebuilt(&self) -> Option<&str> {
        self.rebuilt.as_deref()
    }

    fn unit_path(&self, file: &str) -> PathBuf {
        self.dir.join(UNITS).join(file)
    }

    /// Read a unit file back, checking it against the manifest's hash: its ledger, ordered
    /// part and end state, and the bytes of its folds (for [`Persist::load_into`]).
    fn load<P: DeserializeOwned>(
        &self,
        u: &UnitRecord,
    ) -> Result<(Ledger, P, OpenState, Vec<u8>), StateDirError> {
        let damaged = |message: String| StateDirError::Damaged {
            dir: self.shown.clone(),
            message,
        };
        let bytes = std::fs::read(self.unit_path(&u.file))
            .map_err(|e| damaged(format!("{UNITS}/{}: {e}", u.file)))?;
        if hex128(&bytes) != u.file_xxh3 {
            return Err(damaged(format!(
                "{UNITS}/{} does not match the hash in {MANIFEST}",
                u.file
            )));
        }
        let bytes = {
            use std::io::Read;
            let mut out = Vec::with_capacity(bytes.len() * 6);
            flate2::read::DeflateDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .map_err(|e| damaged(format!("{UNITS}/{}: {e}", u.file)))?;
            out
        };
        let short = || damaged(format!("{UNITS}/{}: cut short", u.file));
        let head_len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(short)?;
        let head = bytes.get(8..8 + head_len).ok_or_else(short)?;
        let (ledger, part, end): (Ledger, P, OpenState) =
            ciborium::from_reader(head).map_err(|e| damaged(format!("{UNITS}/{}: {e}", u.file)))?;
        Ok((ledger, part, end, bytes[8 + head_len..].to_vec()))
    }

    /// Write a unit file (named by its hash; one already there is the same bytes), deflated:
    /// the length of its head (8 bytes, little-endian), the head in CBOR (ledger, ordered
    /// part, end state), then the folds as [`Persist::save`] wrote them.
    fn save<P: Serialize>(
        &self,
        head: (&Ledger, &P, &OpenState),
        folds: &[u8],
    ) -> anyhow::Result<(String, String)> {
        let mut h = Vec::new();
        ciborium::into_writer(&head, &mut h)
            .map_err(|e| anyhow::anyhow!("writing a state unit: {e}"))?;
        let bytes = {
            use std::io::Write;
            // Deflate at its fastest level: a report's folds shrink about 5x (7.4 MB to 1.3 MB
            // for a NIC-day of the 1 GB container) for ~0.08 s of one core per unit.
            let mut z = flate2::write::DeflateEncoder::new(
                Vec::with_capacity((8 + h.len() + folds.len()) / 4),
                flate2::Compression::fast(),
            );
            z.write_all(&(h.len() as u64).to_le_bytes())
                .and_then(|()| z.write_all(&h))
                .and_then(|()| z.write_all(folds))
                .and_then(|()| z.finish())
                .map_err(|e| anyhow::anyhow!("writing a state unit: {e}"))?
        };
        let hash = hex128(&bytes);
        let file = format!("u-{hash}.cbor");
        let path = self.unit_path(&file);
        if !path.exists() {
            write_file(&path, &bytes).map_err(|e| {
                anyhow::anyhow!("--state-dir {}: writing {UNITS}/{file}: {e}", self.shown)
            })?;
        }
        Ok((file, hash))
    }

    /// Write the manifest of this run's units (atomically), then remove unit files and
    /// temporary files it no longer names. Returns the folder's size.
    pub fn commit(&self, units: &[UnitRecord]) -> anyhow::Result<u64> {
        let m = Manifest {
            magic: STATE_MAGIC.to_string(),
            state_version: STATE_VERSION,
            tool: format!("nsgflow {}", env!("CARGO_PKG_VERSION")),
            command: self.command.clone(),
            options: self.options.clone(),
            written: crate::text::fmt_ms(crate::text::wall_ms()),
            units: units.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&m)?;
        write_file(&self.dir.join(MANIFEST), &json)
            .map_err(|e| anyhow::anyhow!("--state-dir {}: writing {MANIFEST}: {e}", self.shown))?;
        let keep: std::collections::BTreeSet<&str> =
            units.iter().map(|u| u.file.as_str()).collect();
        let mut size = json.len() as u64;
        for dir in [self.dir.join(UNITS), self.dir.clone()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_units = dir != self.dir;
                if name.starts_with(".tmp") || (is_units && !keep.contains(name.as_str())) {
                    let _ = std::fs::remove_file(e.path());
                } else if is_units {
                    size += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        Ok(size)
    }
}

/// Whether `dir` is a `--state-dir` folder (its manifest names the state, or it has the
/// state's `units/` and `lock`): discovery never reads one as input.
pub fn is_state_dir(dir: &Path) -> bool {
    use std::io::Read;
    if dir.join(UNITS).is_dir() && dir.join(LOCK).is_file() {
        return true;
    }
    let mut head = [0u8; 128];
    let n = std::fs::File::open(dir.join(MANIFEST))
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let want = format!("\"magic\": \"{STATE_MAGIC}\"");
    String::from_utf8_lossy(&head[..n]).contains(&want)
}

/// Which option differs between two fingerprints (for the rebuild message).
fn differing(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "options".to_string();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let names: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.to_string())
        .collect();
    if names.is_empty() {
        "options".to_string()
    } else {
        names.join(", ")
    }
}

/// Write `bytes` to `path` through a temporary file in the same folder, synced, renamed over.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = crate::state::new_file_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// xxh3-128 as 32 hex digits.
pub fn hex128(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

fn digest(s: &OpenState) -> String {
    let mut b = Vec::new();
    ciborium::into_writer(s, &mut b).expect("serialising to memory");
    hex128(&b)
}

/// The cut a window makes in tuples spanning `span`: a bound that cuts none is no bound.
fn clip(
    span: Option<(i64, i64)>,
    since: Option<i64>,
    until: Option<i64>,
) -> (Option<i64>, Option<i64>) {
    match span {
        None => (None, None),
        Some((lo, hi)) => (since.filter(|&s| s > lo), until.filter(|&u| u <= hi)),
    }
}

/// The time window applied after the other filters (by [`Filtered`] with a window-only
/// filter), noting the span of the tuples it sees.
struct Window<'a, S: TableSink> {
    cut: Filtered<'a, S>,
    span: Option<(i64, i64)>,
}

impl<'a, S: TableSink> Window<'a, S> {
    fn new(inner: &'a mut S, window: &'a Filter) -> Self {
        Window {
            cut: Filtered::new(inner, window),
            span: None,
        }
    }

    /// Tuples the window cut.
    fn filtered(&self) -> u64 {
        self.cut.filtered
    }
}

/// The span of two spans.
fn union(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

/// A blob parsed ahead: its ledger, tables, tuple span and content hash.
type Parsed = (Ledger, TableBuffer, Option<(i64, i64)>, Option<String>);

impl<S: TableSink> TableSink for Window<'_, S> {
    fn table(&mut self, table: &RuleTable<'_>) {
        self.span = table.tuples.iter().fold(self.span, |span, t| {
            union(span, Some((t.time_ms, t.time_ms)))
        });
        self.cut.table(table);
    }
}

/// Both sinks see every table.
struct Both<'a, A, B>(&'a mut A, &'a mut B);

impl<A: TableSink, B: TableSink> TableSink for Both<'_, A, B> {
    fn table(&mut self, t: &RuleTable<'_>) {
        self.0.table(t);
        self.1.table(t);
    }
}

/// What one thread of a state run gathered.
struct Acc<F, P> {
    fold: F,
    part: P,
    ledger: Ledger,
    units: Vec<UnitRecord>,
    stats: StateUse,
    error: Option<anyhow::Error>,
}

/// The result of a state run: the folds (as one run over all the blobs gives them), the
/// ordered fold's part, the ledger, the units for the new manifest and the counts.
pub struct StateRun<F, P> {
    pub fold: F,
    pub part: P,
    pub ledger: Ledger,
    pub units: Vec<UnitRecord>,
    pub stats: StateUse,
}

/// A NIC group's blobs split into units by UTC day.
fn units_of<'a>(group: &[&'a BlobMeta]) -> Vec<(String, Vec<&'a BlobMeta>)> {
    let mut out: Vec<(String, Vec<&BlobMeta>)> = Vec::new();
    for b in group {
        let day = match b.hour_ms {
            Some(h) => h.div_euclid(DAY_MS).to_string(),
            None => "none".to_string(),
        };
        let key = format!("{}|{day}", nic_key(b));
        match out.last_mut() {
            Some((k, v)) if *k == key => v.push(b),
            _ => out.push((key, vec![b])),
        }
    }
    out
}

/// One pass over `blobs` with the state: units the state holds unchanged are taken from it,
/// the others are read (NICs in parallel, each NIC's units in time order). The folds come
/// out as one run over every blob gives them; [`StateDir::commit`] then saves the units.
pub fn run<F, C>(
    state: &StateDir,
    blobs: &[BlobMeta],
    opts: &RunOptions,
    progress: &Progress<'_>,
    make_fold: impl Fn() -> F + Sync,
    make_chain: impl Fn() -> C + Sync,
    empty_part: impl Fn() -> C::Part + Sync,
) -> anyhow::Result<StateRun<F, C::Part>>
where
    F: Persist,
    C: Chain,
{
    let groups = nic_groups(blobs);
    let mut order: Vec<(u64, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.iter().map(|b| b.size).sum::<u64>(), i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // The time window is applied by [`Window`], after the other filters, to note what it cuts.
    let mut inner = opts.clone();
    inner.filter.since_ms = None;
    inner.filter.until_ms = None;
    let (since, until) = (opts.filter.since_ms, opts.filter.until_ms);
    let window = Filter {
        since_ms: since,
        until_ms: until,
        ..Filter::default()
    };
    // Download ahead the blobs of NIC-days that are new or changed (a NIC-day whose blobs are
    // unchanged may still be read, when the day before it ends otherwise: it is then fetched
    // when read).
    let threads = rayon::current_num_threads().max(1);
    let to_read = order.iter().map(|&(_, gi)| {
        units_of(&groups[gi])
            .into_iter()
            .filter(|(key, unit)| {
                let records: Vec<BlobRecord> = unit.iter().map(|b| BlobRecord::of(b)).collect();
                !state.old.get(key).is_some_and(|o| o.same_blobs(&records))
            })
            .flat_map(|(_, unit)| unit)
            .collect::<Vec<&BlobMeta>>()
    });
    let to_read: Vec<Vec<&BlobMeta>> = to_read.collect();
    // With fewer NICs to read than threads, each NIC's reader gets a thread parsing ahead.
    let pipelined = to_read.iter().filter(|g| !g.is_empty()).count() < threads;
    let _ahead = crate::source::prefetch(
        crate::pipeline::owner_order(to_read, threads),
        opts.download_budget,
        opts.parse.limits.max_bytes,
    );
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        let mut acc = Acc {
            fold: make_fold(),
            part: empty_part(),
            ledger: Ledger::default(),
            units: Vec::new(),
            stats: StateUse::default(),
            error: None,
        };
        let mut w = Worker::default();
        loop {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(_, gi)) = order.get(i) else { break };
            let r = group(
                state,
                &groups[gi],
                &inner,
                &window,
                progress,
                &make_fold,
                &make_chain,
                pipelined,
                &mut w,
                &mut acc,
            );
            if let Err(e) = r {
                acc.error = Some(e);
                failed.store(true, Ordering::Relaxed);
                break;
            }
        }
        acc
    };
    let accs: Vec<Acc<F, C::Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut v = vec![work()];
        for h in handles {
            v.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        v
    });
    let mut accs = accs.into_iter();
    let mut total = accs.next().expect("one thread at least");
    for a in accs {
        if let Some(e) = a.error {
            return Err(e);
        }
        total.fold.merge(a.fold);
        C::merge_part(&mut total.part, a.part);
        total.ledger.merge(a.ledger);
        total.units.extend(a.units);
        let (s, o) = (&mut total.stats, a.stats);
        s.units_from_state += o.units_from_state;
        s.units_read += o.units_read;
        s.blobs_from_state += o.blobs_from_state;
        s.blobs_read += o.blobs_read;
        s.bytes_from_state += o.bytes_from_state;
        s.bytes_read += o.bytes_read;
    }
    if let Some(e) = total.error {
        return Err(e);
    }
    total.units.sort_by(|a, b| a.key.cmp(&b.key));
    let mut stats = total.stats;
    stats.dir = state.shown.clone();
    stats.units = total.units.len() as u64;
    let kept: std::collections::BTreeSet<&str> =
        total.units.iter().map(|u| u.key.as_str()).collect();
    stats.units_dropped = state
        .old
        .keys()
        .filter(|k| !kept.contains(k.as_str()))
        .count() as u64;
    stats.rebuilt = state.rebuilt.clone();
    Ok(StateRun {
        fold: total.fold,
        part: total.part,
        ledger: total.ledger,
        units: total.units,
        stats,
    })
}

/// One NIC group, unit by unit in time order.
#[allow(clippy::too_many_arguments)]
fn group<F, C>(
    state: &StateDir,
    blobs: &[&BlobMeta],
    opts: &RunOptions,
    window: &Filter,
    progress: &Progress<'_>,
    make_fold: &(impl Fn() -> F + Sync),
    make_chain: &(impl Fn() -> C + Sync),
    pipelined: bool,
    w: &mut Worker,
    acc: &mut Acc<F, C::Part>,
) -> anyhow::Result<()>
where
    F: Persist,
    C: Chain,
{
    let (since, until) = (window.since_ms, window.until_ms);
    let mut prev = OpenState::default();
    // A chain whose open state is `prev`, when the last unit was read (not taken from state).
    let mut live: Option<C> = None;
    let restored = |prev: &OpenState| -> anyhow::Result<C> {
        let mut c = make_chain();
        c.restore(prev).map_err(|e| StateDirError::Damaged {
            dir: state.shown.clone(),
            message: format!("a saved open-connection state: {e}"),
        })?;
        Ok(c)
    };
    for (key, unit) in units_of(blobs) {
        let records: Vec<BlobRecord> = unit.iter().map(|b| BlobRecord::of(b)).collect();
        let start = digest(&prev);
        let bytes: u64 = unit.iter().map(|b| b.size).sum();
        let reuse = state.old.get(&key).filter(|o| {
            o.same_blobs(&records) && o.start == start && o.clip == clip(o.span, since, until)
        });
        if let Some(old) = reuse {
            let (ledger, part, end, folds): (Ledger, C::Part, OpenState, Vec<u8>) =
                state.load(old)?;
            if digest(&end) != old.end {
                return Err(StateDirError::Damaged {
                    dir: state.shown.clone(),
                    message: format!(
                        "{UNITS}/{}: its end state does not match {MANIFEST}",
                        old.file
                    ),
                }
                .into());
            }
            acc.fold
                .load_into(&folds)
                .map_err(|e| StateDirError::Damaged {
                    dir: state.shown.clone(),
                    message: format!("{UNITS}/{}: {e}", old.file),
                })?;
            C::merge_part(&mut acc.part, part);
            acc.ledger.merge(ledger);
            acc.units.push(old.clone());
            acc.stats.units_from_state += 1;
            acc.stats.blobs_from_state += unit.len() as u64;
            acc.stats.bytes_from_state += bytes;
            for _ in &unit {
                progress();
            }
            prev = end;
            live = None;
            continue;
        }
        let mut chain = match live.take() {
            Some(c) => c,
            None => restored(&prev)?,
        };
        let mut fold = make_fold();
        let mut ledger = Ledger::default();
        let mut span = None;
        let mut records = records;
        if pipelined && unit.len() > 1 {
            // Fewer NICs to read than threads: a second thread parses the unit's blobs ahead
            // (into table buffers, at most two waiting) while this one folds and stitches
            // them in order, as `pipeline::run_ordered`'s helpers do.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Parsed>(1);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut w2 = Worker::default();
                    for b in &unit {
                        let mut buf = TableBuffer::default();
                        let mut win = Window::new(&mut buf, window);
                        let mut l = process_blob(&mut w2, b, opts, &mut win);
                        l.tuples_filtered += win.filtered();
                        let span = win.span;
                        let hash = (l.blobs_failed == 0).then(|| hex128(w2.bytes()));
                        if tx.send((l, buf, span, hash)).is_err() {
                            break;
                        }
                    }
                });
                for (b, rec) in unit.iter().zip(&mut records) {
                    let (l, buf, bspan, hash) = rx.recv().expect("one parsed blob per blob");
                    fold.begin_blob(b);
                    chain.begin_blob(b);
                    buf.replay(&mut Both(&mut fold, &mut chain));
                    fold.end_blob();
                    chain.end_blob();
                    span = union(span, bspan);
                    rec.xxh3 = hash;
                    ledger.merge(l);
                    progress();
                }
            });
        } else {
            for (b, rec) in unit.iter().zip(&mut records) {
                fold.begin_blob(b);
                chain.begin_blob(b);
                let mut both = Both(&mut fold, &mut chain);
                let mut win = Window::new(&mut both, window);
                let mut l = process_blob(w, b, opts, &mut win);
                l.tuples_filtered += win.filtered();
                span = union(span, win.span);
                if l.blobs_failed == 0 {
                    rec.xxh3 = Some(hex128(w.bytes()));
                }
                fold.end_blob();
                chain.end_blob();
                ledger.merge(l);
                progress();
            }
        }
        let part = chain.take_part();
        let end = chain.open_state();
        let (file, file_xxh3) = state.save((&ledger, &part, &end), &fold.save())?;
        acc.units.push(UnitRecord {
            key,
            blobs: records,
            start,
            end: digest(&end),
            span,
            clip: clip(span, since, until),
            file,
            file_xxh3,
            bytes,
            ledger: UnitLedger {
                blobs: ledger.blobs,
                blobs_failed: ledger.blobs_failed,
                records: ledger.records,
                tuples: ledger.tuples,
                tuples_accepted: ledger.tuples_accepted,
                tuples_rejected: ledger.tuples_rejected,
                tuples_filtered: ledger.tuples_filtered,
            },
        });
        acc.fold.merge(fold);
        C::merge_part(&mut acc.part, part);
        acc.ledger.merge(ledger);
        acc.stats.units_read += 1;
        acc.stats.blobs_read += unit.len() as u64;
        acc.stats.bytes_read += bytes;
        prev = end;
        live = Some(chain);
    }
    // The end of the NIC's data: close what is open.
    let mut chain = match live.take() {
        Some(c) => c,
        None => restored(&prev)?,
    };
    let closing = chain.close();
    C::merge_part(&mut acc.part, closing);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One run at a time: a second opening of the same folder is refused while the first
    /// holds it, and taken once the first is gone (as when a run is killed).
    #[test]
    fn a_state_folder_is_one_runs_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let first = StateDir::open(&dir, "summary", serde_json::json!({})).unwrap();
        let second = StateDir::open(&dir, "summary", serde_json::json!({}));
        let Err(e) = second else {
            panic!("opened twice")
        };
        assert!(
            e.to_string()
                .contains("another nsgflow run is using this state folder"),
            "{e}"
        );
        drop(first);
        assert!(StateDir::open(&dir, "summary", serde_json::json!({})).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
    }

    #[test]
    fn a_window_that_cuts_nothing_is_no_cut() {
        let span = Some((1_000, 5_000));
        assert_eq!(clip(span, Some(1_000), Some(5_001)), (None, None));
        assert_eq!(clip(span, Some(1_001), None), (Some(1_001), None));
        // `until` is exclusive: a tuple at 5,000 is cut by until = 5,000.
        assert_eq!(clip(span, None, Some(5_000)), (None, Some(5_000)));
        assert_eq!(clip(None, Some(7), Some(9)), (None, None));
    }

    #[test]
    fn blobs_split_into_nic_days_in_time_order() {
        let mk = |mac: &str, h: i64| BlobMeta {
            path: PathBuf::from(format!("{mac}-{h}")),
            mac: Some(mac.to_string()),
            hour_ms: Some(h * 3_600_000),
            ..BlobMeta::default()
        };
        let blobs = [mk("A", 23), mk("A", 24), mk("A", 25), mk("B", 1)];
        let groups = nic_groups(&blobs);
        let a = units_of(&groups[0]);
        let keys: Vec<(&str, usize)> = a.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        assert_eq!(keys, [("mac:A|0", 1), ("mac:A|1", 2)]);
    }
}
