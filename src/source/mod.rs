//! Where blob bytes come from: a local tree (files, read with `std::fs`) or Azure Blob
//! Storage (`az://ACCOUNT/CONTAINER[/PREFIX]` and
//! `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]`, through [`azure`] when the
//! default-on `azure` feature is built).
//!
//! A remote blob travels through discovery and the pipeline as the path
//! `az://ACCOUNT/CONTAINER/NAME`: its components are the blob name's own segments, so
//! [`crate::discover::BlobMeta::from_path`] reads the Azure layout from it exactly as from
//! an azcopy tree, and every report names it the way a user writes it.

#[cfg(feature = "azure")]
pub mod azure;

use std::io::Read;
use std::path::Path;

/// The scheme every remote blob path starts with.
pub const REMOTE_SCHEME: &str = "az://";

/// Whether an input or blob path names Azure Blob Storage rather than a local file.
pub fn is_remote(p: &Path) -> bool {
    p.to_str().is_some_and(is_remote_text)
}

/// [`is_remote`] on text: `az://…`, or an `https://` (or emulator `http://`) URL.
pub fn is_remote_text(s: &str) -> bool {
    s.starts_with(REMOTE_SCHEME) || s.starts_with("https://") || s.starts_with("http://")
}

/// Read a blob into `buf` (cleared first), at most `max` bytes. `Ok(Some(n))`: the blob is
/// `n` bytes or more, over `max`, and was not read.
pub fn read_capped(p: &Path, max: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    buf.clear();
    if is_remote(p) {
        return read_remote(p, max, buf);
    }
    let f = std::fs::File::open(p)?;
    if let Ok(md) = f.metadata() {
        if md.len() > max {
            return Ok(Some(md.len()));
        }
        buf.reserve(md.len() as usize);
    }
    f.take(max.saturating_add(1)).read_to_end(buf)?;
    Ok((buf.len() as u64 > max).then_some(buf.len() as u64))
}

/// A whole blob's bytes (duplicate detection compares copies byte for byte).
pub fn read_all(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_capped(p, u64::MAX - 1, &mut buf)?;
    Ok(buf)
}

#[cfg(feature = "azure")]
fn read_remote(p: &Path, max: u64, buf: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    azure::read(p, max, buf)
}

#[cfg(not(feature = "azure"))]
fn read_remote(_: &Path, _: u64, _: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    Err(std::io::Error::other(NO_AZURE))
}

/// Remote blobs downloaded ahead of the readers (see [`azure::Prefetch`]); dropping it stops.
#[cfg(feature = "azure")]
pub type Prefetch = azure::Prefetch;

/// Without the `azure` feature there is nothing to download.
#[cfg(not(feature = "azure"))]
pub struct Prefetch;

/// Start downloading the remote blobs among `order` (path, listed size), in that order, under
/// `budget` bytes in flight; `None` when there is none.
pub fn prefetch<'a>(
    order: impl IntoIterator<Item = (&'a Path, u64)>,
    budget: u64,
    max: u64,
) -> Option<Prefetch> {
    let remote: Vec<(std::path::PathBuf, u64)> = order
        .into_iter()
        .filter(|(p, _)| is_remote(p))
        .map(|(p, n)| (p.to_path_buf(), n))
        .collect();
    if remote.is_empty() || budget == 0 {
        return None;
    }
    #[cfg(feature = "azure")]
    return Some(azure::Prefetch::start(remote, budget, max));
    #[cfg(not(feature = "azure"))]
    {
        let _ = max;
        None
    }
}

/// Downloads made ahead so far in this process, and the most bytes held at once.
pub fn prefetch_totals() -> (u64, u64) {
    #[cfg(feature = "azure")]
    {
        let t = azure::prefetch_totals();
        (t.fetched, t.peak_bytes)
    }
    #[cfg(not(feature = "azure"))]
    (0, 0)
}

/// Why a build without the `azure` feature refuses remote inputs.
#[cfg(not(feature = "azure"))]
pub const NO_AZURE: &str =
    "this nsgflow was built without the `azure` feature: rebuild with default features to read Azure Blob Storage, or download the container with azcopy";
