//! `--rejects FILE`: every rejected tuple, failed or partial blob and skipped path of a run,
//! one JSON object per line (NDJSON), as SiLK's `--bad-input-lines` keeps what it could not
//! read. The ledger keeps counts and the first examples; this file keeps everything, so a
//! user can open each location.
//!
//! Lines, in this order (deterministic whatever the thread count):
//! - one `{"kind":"run", "nsgflow", "inputs", "tuples_rejected", "blobs_failed", ...}` line;
//! - `{"kind":"path", "path", "reason":"skipped_path", "message"}` for each path under the
//!   inputs that was skipped;
//! - `{"kind":"blob", "path", "reason", "byte_offset", "message"}` for each failed or partial
//!   blob and blob warning (`reason` is `failed_blob`, `partial_blob` or `blob_warning`);
//! - `{"kind":"tuple", "path", "byte_offset", "record", "rule", "tuple", "reason", "raw",
//!   "message"}` for each rejected tuple, blobs by path, tuples in reading order.
//!
//! Memory stays bounded: each blob's rejects go to an unnamed spool file as the blob ends
//! (only its offset is kept in memory); at the end the spool is copied in path order into a
//! temporary file beside the target, renamed over it.

use crate::discover::Discovered;
use crate::parse::{BlobProblemKind, Ledger, RejectExample};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first bytes of a rejects file: a later run may replace a file that starts so.
const HEAD: &str = "{\"kind\":\"run\",\"nsgflow\":";

/// The rejects file of a run (see the module docs).
pub struct RejectLog {
    target: PathBuf,
    inputs: Vec<String>,
    spool: Mutex<Option<Spool>>,
}

impl std::fmt::Debug for RejectLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RejectLog({})", self.target.display())
    }
}

struct Spool {
    file: std::fs::File,
    len: u64,
    /// (blob path, offset, length) of each blob's lines.
    chunks: Vec<(String, u64, u64)>,
    tuples: u64,
    error: Option<String>,
}

/// The first line; its first two fields make [`HEAD`].
#[derive(Serialize)]
struct RunLine<'a> {
    kind: &'static str,
    nsgflow: &'static str,
    inputs: &'a [String],
    tuples_rejected: u64,
    /// Tuple lines in the file (equal to `tuples_rejected` but for a write error).
    tuples_listed: u64,
    blobs_failed: u64,
    blobs_partial: u64,
    paths_skipped: usize,
}

#[derive(Serialize)]
struct PathLine<'a> {
    kind: &'static str,
    path: &'a str,
    reason: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct BlobLine<'a> {
    kind: &'static str,
    path: &'a str,
    reason: &'static str,
    byte_offset: Option<u64>,
    message: &'a str,
}

/// The reason a blob problem is listed under, in the rejects file and `rejects.csv`.
pub fn problem_reason(k: BlobProblemKind) -> &'static str {
    match k {
        BlobProblemKind::Failed => "failed_blob",
        BlobProblemKind::Partial => "partial_blob",
        BlobProblemKind::Warning => "blob_warning",
    }
}

#[derive(Serialize)]
struct TupleLine<'a> {
    kind: &'static str,
    path: &'a str,
    byte_offset: Option<u64>,
    record: usize,
    rule: &'a str,
    tuple: usize,
    reason: &'static str,
    raw: &'a str,
    message: &'a str,
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether the file starts as a rejects file does.
fn is_rejects_file(path: &Path) -> bool {
    let mut head = [0u8; 32];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n].starts_with(HEAD.as_bytes())
}

impl RejectLog {
    /// A log that writes `target` at the end of a run over `inputs`. Nothing is created
    /// yet (see [`RejectLog::prepare`]).
    pub fn new(target: PathBuf, inputs: Vec<String>) -> RejectLog {
        RejectLog {
            target,
            inputs,
            spool: Mutex::new(None),
        }
    }

    /// Check the target before any input is read and open the spool: refuse a symbolic
    /// link, a folder, or a file that is not an earlier rejects file (the user's file is
    /// never replaced); the folder must take a new file.
    pub fn prepare(&self) -> anyhow::Result<()> {
        let shown = self.target.display();
        if let Ok(md) = std::fs::symlink_metadata(&self.target) {
            if md.file_type().is_symlink() {
                anyhow::bail!("--rejects {shown}: is a symbolic link; give a plain file path");
            }
            if md.is_dir() {
                anyhow::bail!("--rejects {shown}: is a folder; give a file path");
            }
            if md.len() > 0 && !is_rejects_file(&self.target) {
                anyhow::bail!(
                    "--rejects {shown}: the file exists and is not an nsgflow rejects file; remove it or give another path"
                );
            }
        }
        let dir = parent(&self.target);
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            anyhow::anyhow!("--rejects {shown}: cannot write in {}: {e}", dir.display())
        })?;
        *self.spool.lock().unwrap_or_else(|e| e.into_inner()) = Some(Spool {
            file,
            len: 0,
            chunks: Vec::new(),
            tuples: 0,
            error: None,
        });
        Ok(())
    }

    /// Add one blob's rejected tuples (the ledger's `all_rejects`, taken).
    pub fn add(&self, path: &str, rejects: &[RejectExample]) {
        if rejects.is_empty() {
            return;
        }
        let mut buf = Vec::with_capacity(rejects.len() * 200);
        for e in rejects {
            let line = TupleLine {
                kind: "tuple",
                path: &e.path,
                byte_offset: e.byte_offset,
                record: e.record,
                rule: &e.rule,
                tuple: e.tuple,
                reason: e.reason.name(),
                raw: &e.text,
                message: &e.message,
            };
            // Writing a derived struct of strings and numbers to a Vec cannot fail.
            let _ = crate::text::json_line(&mut buf, &line);
            buf.push(b'\n');
        }
        let mut g = self.spool.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = g.as_mut() else { return };
        if s.error.is_some() {
            return;
        }
        match s.file.write_all(&buf) {
            Ok(()) => {
                s.chunks.push((path.to_string(), s.len, buf.len() as u64));
                s.len += buf.len() as u64;
                s.tuples += rejects.len() as u64;
            }
            Err(e) => s.error = Some(e.to_string()),
        }
    }

    /// The file written at the end.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Write the file: the run line, skipped paths, blob problems, then the spooled tuples
    /// by blob path. Returns the number of lines after the run line.
    pub fn finish(&self, l: &Ledger, d: &Discovered) -> anyhow::Result<u64> {
        use anyhow::Context;
        let shown = self.target.display().to_string();
        let mut g = self.spool.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut s) = g.take() else {
            return Ok(0);
        };
        if let Some(e) = &s.error {
            anyhow::bail!("--rejects {shown}: writing the spool failed: {e}");
        }
        let mut tmp = crate::report::render::private_file_in(parent(&self.target))
            .with_context(|| format!("--rejects {shown}"))?;
        let mut lines = 0u64;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
            let run = RunLine {
                kind: "run",
                nsgflow: env!("CARGO_PKG_VERSION"),
                inputs: &self.inputs,
                tuples_rejected: l.tuples_rejected,
                tuples_listed: s.tuples,
                blobs_failed: l.blobs_failed,
                blobs_partial: l.blobs_partial,
                paths_skipped: d.skipped.len(),
            };
            crate::text::json_line(&mut w, &run)?;
            w.write_all(b"\n")?;
            for p in &d.skipped {
                let line = PathLine {
                    kind: "path",
                    path: &crate::text::path_text(&p.path),
                    reason: "skipped_path",
                    message: &p.reason,
                };
                crate::text::json_line(&mut w, &line)?;
                w.write_all(b"\n")?;
                lines += 1;
            }
            for p in &l.problems {
                let line = BlobLine {
                    kind: "blob",
                    path: &p.path,
                    reason: problem_reason(p.kind),
                    byte_offset: p.byte_offset,
                    message: &p.message,
                };
                crate::text::json_line(&mut w, &line)?;
                w.write_all(b"\n")?;
                lines += 1;
            }
            // Blobs by path; a blob read in parts (zip entries) keeps its reading order.
            s.chunks.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut chunk = Vec::new();
            for (_, off, len) in &s.chunks {
                s.file.seek(SeekFrom::Start(*off))?;
                chunk.resize(*len as usize, 0);
                s.file.read_exact(&mut chunk)?;
                w.write_all(&chunk)?;
            }
            lines += s.tuples;
            w.flush()?;
        }
        tmp.persist(&self.target)
            .map_err(|e| e.error)
            .with_context(|| format!("--rejects {shown}"))?;
        Ok(lines)
    }
}
