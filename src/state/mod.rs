//! Partial results that leave the process: `summary` and `report` save their unfinished
//! folds and ledger (`--save-partial FILE`), and `merge` finishes any number of them into
//! exactly what one run over all their blobs prints or writes. This is what `--shard K/N`
//! is for: N machines each read a part, one merges.
//!
//! A partial file is one line of JSON, the [`Header`] (readable with `head -1`: tool and
//! format versions, the options that change results, the inputs, the shard, and the identity
//! of every blob read: path, size, modification time), then the body in CBOR: the ledger
//! and the folds ([`Body`]). Every fold merges associatively and commutatively, so merging
//! partials in any order gives the same bytes as a single run.
//!
//! Merging refuses, with a message naming the files: another format version, different
//! options (filters, `--dedup`, `--strict`, `--internal`, `--labels`), or the same blob read
//! in two partials.

pub mod incremental;

use crate::addr::AddressBook;
use crate::aggregate::coverage::Coverage;
use crate::aggregate::{Fold, ReportData, Summary};
use crate::cli::{DetectOptions, InputConfig};
use crate::detect::{DetectConfig, Severity};
use crate::discover::{Discovered, Shard, Skipped};
use crate::parse::Ledger;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Version of the partial-file layout; a file of another version is refused, not guessed at.
/// 2: the first-contacts table keeps IPv4 and IPv6 contacts apart. 7: the denied-spike
/// sources keep their first location (a finding's evidence).
pub const FORMAT_VERSION: u32 = 7;
/// The header's first field, so that `merge` can tell a partial from any other file.
pub const MAGIC: &str = "nsgflow-partial";

/// Why partials cannot be read or merged (exit 2, like any unusable input to `merge`).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: not an nsgflow partial file (write one with summary or report --save-partial)"
    )]
    NotPartial { path: String },
    #[error("{path}: partial format version {found}, this nsgflow reads version {FORMAT_VERSION}: merge with the nsgflow that wrote it ({tool})")]
    Version {
        path: String,
        found: u32,
        tool: String,
    },
    #[error("{path}: damaged partial file: {message}")]
    Damaged { path: String, message: String },
    #[error("{a} and {b} were made with different options ({what}: {va:?} vs {vb:?}); run every part with the same options")]
    Options {
        a: String,
        b: String,
        what: &'static str,
        va: String,
        vb: String,
    },
    #[error("{a} and {b} both read {blob}: a blob must be in one partial only (use --shard K/N with the same N)")]
    SameBlob { a: String, b: String, blob: String },
    #[error("these partials are from `summary`; `merge -o DIR` needs partials from `report --save-partial` (or use merge --format)")]
    NotReport,
    #[error("nothing to merge")]
    Empty,
}

/// The identity of one blob read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId {
    pub path: String,
    pub size: u64,
    /// Modification time (Unix ms), when the file system gave one.
    pub mtime_ms: Option<i64>,
}

/// The options that change results; partials merge only when these are equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Filters and `--dedup` as given, one `--flag value` each.
    pub filters: Vec<String>,
    pub strict: bool,
    /// `--internal` networks.
    pub internal: Vec<String>,
    /// `--labels` as read: (network, name), sorted by network.
    pub labels: Vec<(String, String)>,
    /// The detectors' configuration, `--min-severity` and `--baseline` (reports).
    pub detect: DetectRecord,
    /// `report --rules` files, as given (merge does not rerun the audit, and says so).
    #[serde(default)]
    pub rules: Vec<String>,
}

/// What a merged report's findings need: the same configuration as the parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectRecord {
    /// Whether the detectors ran (`report` without `--no-findings`).
    pub enabled: bool,
    pub config: DetectConfig,
    pub min_severity: Severity,
    pub baseline: Option<String>,
}

impl Options {
    /// The options of a run that change its results.
    pub fn new(
        input: &InputConfig,
        filters: &[String],
        book: &AddressBook,
        detect: &DetectOptions,
    ) -> Options {
        Options {
            filters: filters.to_vec(),
            strict: input.run.strict,
            internal: book.internal.iter().map(|n| n.to_string()).collect(),
            labels: book
                .labels()
                .iter()
                .map(|(n, l)| (n.to_string(), l.clone()))
                .collect(),
            detect: DetectRecord {
                enabled: detect.enabled,
                config: detect.config.clone(),
                min_severity: detect.min_severity,
                baseline: detect.baseline.as_ref().map(|p| p.display().to_string()),
            },
            rules: Vec::new(),
        }
    }

    /// The detector options of a merged report (no `--fail-on`: merge has its own exit).
    pub fn detect_options(&self) -> anyhow::Result<DetectOptions> {
        Ok(DetectOptions {
            enabled: self.detect.enabled,
            baseline: self.detect.baseline.as_ref().map(PathBuf::from),
            config: self.detect.config.clone(),
            min_severity: self.detect.min_severity,
            fail_on: None,
        })
    }

    /// The address book these options describe.
    pub fn book(&self) -> anyhow::Result<AddressBook> {
        let net = |s: &str| crate::filter::parse_net(s).map_err(anyhow::Error::msg);
        let mut book = AddressBook::new(
            self.internal
                .iter()
                .map(|s| net(s))
                .collect::<anyhow::Result<_>>()?,
        );
        for (cidr, name) in &self.labels {
            book.add_label(net(cidr)?, name);
        }
        Ok(book)
    }
}

/// What discovery found before `--shard` took its part: equal in every shard of one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub blobs: u64,
    pub bytes: u64,
    /// Blobs left out by path filters.
    pub filtered_out: u64,
    /// Paths that could not be walked, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// The first line of a partial file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// `nsgflow <version>` that wrote it.
    pub tool: String,
    /// `summary` or `report`: which folds the body holds.
    pub command: String,
    pub options: Options,
    /// The inputs as given.
    pub inputs: Vec<String>,
    pub shard: Option<Shard>,
    pub discovery: Discovery,
    /// Every blob this part read (its shard of the discovered blobs), sorted by path.
    pub blobs: Vec<BlobId>,
}

impl Header {
    /// The header of a run about to be saved.
    pub fn new(
        command: &str,
        input: &InputConfig,
        filters: &[String],
        book: &AddressBook,
        d: &Discovered,
        detect: &DetectOptions,
    ) -> Header {
        let path = |p: &Path| p.display().to_string();
        Header {
            magic: MAGIC.to_string(),
            format_version: FORMAT_VERSION,
            tool: format!("nsgflow {}", env!("CARGO_PKG_VERSION")),
            command: command.to_string(),
            options: Options::new(input, filters, book, detect),
            inputs: input.inputs.iter().map(|p| path(p)).collect(),
            shard: input.shard,
            discovery: Discovery {
                blobs: d.discovered_blobs,
                bytes: d.discovered_bytes,
                filtered_out: d.filtered_out,
                skipped: d
                    .skipped
                    .iter()
                    .map(|s| (path(&s.path), s.reason.clone()))
                    .collect(),
            },
            blobs: d
                .blobs
                .iter()
                .map(|b| BlobId {
                    path: path(&b.path),
                    size: b.size,
                    mtime_ms: b.mtime_ms,
                })
                .collect(),
        }
    }
}

/// The folds a partial holds. One value per merge, so the variants' sizes do not matter.
#[derive(Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Body {
    /// `summary`: rule counters and coverage.
    Summary(Summary, Coverage),
    /// `report`: every fold of the report.
    Report(ReportData),
}

/// [`Body`] by reference, for saving without a copy (serialises the same).
#[derive(Serialize)]
pub enum BodyRef<'a> {
    Summary(&'a Summary, &'a Coverage),
    Report(&'a ReportData),
}

impl Body {
    /// The summary's folds (a report's body holds them too).
    pub fn into_summary(self) -> (Summary, Coverage) {
        match self {
            Body::Summary(s, c) => (s, c),
            Body::Report(d) => (d.summary, d.coverage),
        }
    }

    fn merge(self, o: Body) -> Body {
        match (self, o) {
            (Body::Report(mut a), Body::Report(b)) => {
                a.summary.merge(b.summary);
                a.traffic.merge(b.traffic);
                Fold::merge(&mut a.coverage, b.coverage);
                a.conns.merge(b.conns);
                a.detect.merge(b.detect);
                Body::Report(a)
            }
            // A summary and a report merge into a summary.
            (a, b) => {
                let ((mut s, mut c), (s2, c2)) = (a.into_summary(), b.into_summary());
                s.merge(s2);
                Fold::merge(&mut c, c2);
                Body::Summary(s, c)
            }
        }
    }
}

/// A partial file read back.
pub struct Partial {
    pub header: Header,
    pub ledger: Ledger,
    pub body: Body,
}

impl Partial {
    /// What discovery skipped or left out, for the ledger's report (no blobs: they are read).
    pub fn discovered(&self) -> Discovered {
        Discovered {
            skipped: self
                .header
                .discovery
                .skipped
                .iter()
                .map(|(p, r)| Skipped {
                    path: PathBuf::from(p),
                    reason: r.clone(),
                })
                .collect(),
            filtered_out: self.header.discovery.filtered_out,
            ..Discovered::default()
        }
    }
}

/// `--save-partial FILE` must be writable before any input is read: its folder exists and
/// takes a new file, and `FILE` is not a folder, a symbolic link, or a file of the user's
/// (an existing file is replaced only when it is an earlier partial).
pub fn check_target(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_symlink() {
            anyhow::bail!("--save-partial {shown}: is a symbolic link; give a plain file path");
        }
        if md.is_dir() {
            anyhow::bail!("--save-partial {shown}: is a folder; give a file path");
        }
        if md.len() > 0 && !is_partial(path) {
            anyhow::bail!(
                "--save-partial {shown}: the file exists and is not an nsgflow partial; remove it or give another path"
            );
        }
    }
    let dir = parent(path);
    tempfile::NamedTempFile::new_in(dir).map(drop).map_err(|e| {
        anyhow::anyhow!(
            "--save-partial {shown}: cannot write in {}: {e}",
            dir.display()
        )
    })
}

/// A temporary file in `dir` to be renamed over the target, mode 0600: a partial holds
/// network data (share it on purpose, with `chmod`, not by default).
pub fn new_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    crate::report::render::private_file_in(dir)
}

/// Whether the file starts as a partial does (its header's `magic`).
fn is_partial(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let want = format!("{{\"magic\":\"{MAGIC}\"");
    head[..n].starts_with(want.as_bytes())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Write a partial file atomically (a temporary file in the same folder, renamed over).
pub fn save(
    path: &Path,
    header: &Header,
    ledger: &Ledger,
    body: BodyRef<'_>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let shown = path.display().to_string();
    let mut tmp = new_file_in(parent(path)).with_context(|| format!("--save-partial {shown}"))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        serde_json::to_writer(&mut w, header).context("writing the partial header")?;
        w.write_all(b"\n")?;
        ciborium::into_writer(&(ledger, body), &mut w)
            .map_err(|e| anyhow::anyhow!("{shown}: writing the partial: {e}"))?;
        w.flush().with_context(|| format!("writing {shown}"))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {shown}"))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("writing {shown}: {}", e.error))?;
    Ok(())
}

/// Read a partial file: the header first (a file of another version is refused before its
/// body is read), then the body.
pub fn load(path: &Path) -> Result<Partial, StateError> {
    let shown = path.display().to_string();
    let io = |source| StateError::Io {
        path: shown.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut r = std::io::BufReader::new(f);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(io)?;
    let not_partial = || StateError::NotPartial {
        path: shown.clone(),
    };
    let head: serde_json::Value = serde_json::from_slice(&line).map_err(|_| not_partial())?;
    if head.get("magic").and_then(|m| m.as_str()) != Some(MAGIC) {
        return Err(not_partial());
    }
    let found = head
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(StateError::Version {
            path: shown,
            found,
            tool: head
                .get("tool")
                .and_then(|t| t.as_str())
                .unwrap_or("unknown")
                .to_string(),
        });
    }
    let damaged = |message: String| StateError::Damaged {
        path: shown.clone(),
        message,
    };
    let header: Header = serde_json::from_value(head).map_err(|e| damaged(e.to_string()))?;
    let (ledger, body): (Ledger, Body) =
        ciborium::from_reader(r).map_err(|e| damaged(e.to_string()))?;
    Ok(Partial {
        header,
        ledger,
        body,
    })
}

/// Merge partials into one, as if one run had read all their blobs. Refuses partials of
/// different options, or that read the same blob.
pub fn merge(parts: Vec<(PathBuf, Partial)>) -> Result<Partial, StateError> {
    let mut parts = parts.into_iter();
    let (first_path, mut acc) = parts.next().ok_or(StateError::Empty)?;
    let first_path = first_path.display().to_string();
    let mut owner: std::collections::BTreeMap<String, String> = acc
        .header
        .blobs
        .iter()
        .map(|b| (b.path.clone(), first_path.clone()))
        .collect();
    let mut inputs: BTreeSet<String> = acc.header.inputs.iter().cloned().collect();
    let mut same_inputs = true;
    let mut same_discovery = true;
    let mut discoveries = vec![acc.header.discovery.clone()];
    for (path, p) in parts {
        let path = path.display().to_string();
        let (a, b) = (&acc.header.options, &p.header.options);
        let differ = |what: &'static str, va: String, vb: String| StateError::Options {
            a: first_path.clone(),
            b: path.clone(),
            what,
            va,
            vb,
        };
        if a.filters != b.filters {
            return Err(differ("filters", a.filters.join(" "), b.filters.join(" ")));
        }
        if a.strict != b.strict {
            return Err(differ(
                "--strict",
                a.strict.to_string(),
                b.strict.to_string(),
            ));
        }
        if a.internal != b.internal {
            return Err(differ(
                "--internal",
                a.internal.join(" "),
                b.internal.join(" "),
            ));
        }
        if a.detect != b.detect {
            return Err(differ(
                "detector --config, --min-severity or --baseline",
                format!("{:?}", a.detect.min_severity),
                format!("{:?}", b.detect.min_severity),
            ));
        }
        if a.labels != b.labels {
            return Err(differ(
                "--labels",
                format!("{} labels", a.labels.len()),
                format!("{} labels", b.labels.len()),
            ));
        }
        for blob in &p.header.blobs {
            if let Some(other) = owner.insert(blob.path.clone(), path.clone()) {
                return Err(StateError::SameBlob {
                    a: other,
                    b: path,
                    blob: blob.path.clone(),
                });
            }
        }
        same_inputs &= p.header.inputs == acc.header.inputs;
        same_discovery &= p.header.discovery == acc.header.discovery;
        inputs.extend(p.header.inputs.iter().cloned());
        discoveries.push(p.header.discovery.clone());
        acc.header.blobs.extend(p.header.blobs);
        acc.ledger.merge(p.ledger);
        let body = std::mem::replace(
            &mut acc.body,
            Body::Summary(Summary::default(), Coverage::default()),
        );
        acc.body = body.merge(p.body);
        if p.header.command != acc.header.command {
            acc.header.command = "summary".to_string();
        }
    }
    acc.header.blobs.sort();
    if !same_inputs {
        // Parts of different inputs: the union, in one order whatever the merge order.
        acc.header.inputs = inputs.into_iter().collect();
    }
    if !same_discovery {
        // Parts of different discoveries (not shards of one run): what each left out adds up.
        let mut skipped: BTreeSet<(String, String)> = BTreeSet::new();
        let mut d = Discovery {
            blobs: 0,
            bytes: 0,
            filtered_out: 0,
            skipped: Vec::new(),
        };
        for x in discoveries {
            d.blobs += x.blobs;
            d.bytes += x.bytes;
            d.filtered_out += x.filtered_out;
            skipped.extend(x.skipped);
        }
        d.skipped = skipped.into_iter().collect();
        acc.header.discovery = d;
    }
    acc.header.shard = None;
    Ok(acc)
}
