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

/// Where a read blob's bytes start in [`BlobBuf`]: a multiple of this many bytes.
const ALIGN: usize = 64;

/// A blob's bytes, in memory reused from blob to blob (one per reading thread).
///
/// A local file is read to an address that is a multiple of 64: the kernel copies a file
/// from the page cache with `rep movsb`, which on this project's CI machines (AMD EPYC) runs
/// 3-4x slower when the destination is not aligned like the page it copies from. A `Vec`
/// as large as a blob is a mapping of its own, whose data start 16 bytes into a page, so a
/// plain `read_to_end` always took the slow copy: reading the 1.1 GB bench container three
/// times took 1.6-2.3 s of system time at offsets 1, 8 and 16, against 0.43-0.55 s at 0
/// and 64.
#[derive(Default)]
pub struct BlobBuf {
    mem: Vec<u8>,
    /// The blob's bytes are `mem[start..start + len]`.
    start: usize,
    len: usize,
}

impl BlobBuf {
    /// The bytes read last.
    pub fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// Read a blob, at most `max` bytes. `Ok(Some(n))`: the blob is `n` bytes or more, over
    /// `max`, and was not read.
    pub fn read_capped(&mut self, p: &Path, max: u64) -> std::io::Result<Option<u64>> {
        self.len = 0;
        if is_remote(p) {
            self.mem.clear();
            self.start = 0;
            let r = read_remote(p, max, &mut self.mem);
            self.len = self.mem.len();
            return r;
        }
        let mut f = std::fs::File::open(p)?;
        let size = match f.metadata() {
            Ok(md) if md.len() > max => return Ok(Some(md.len())),
            Ok(md) => md.len(),
            Err(_) => 0,
        };
        // Reading stops past `max`: `limit` bytes are enough to tell. One byte past the size
        // lets a read see the end without growing the buffer.
        let limit = max.saturating_add(1);
        self.room(usize::try_from(size.saturating_add(1).min(limit)).unwrap_or(usize::MAX));
        loop {
            if self.start + self.len == self.mem.len() {
                // The file grew since its size was taken: make room as a Vec would.
                self.room(self.len.max(64 * 1024));
            }
            let want = usize::try_from(limit - self.len as u64).unwrap_or(usize::MAX);
            let from = self.start + self.len;
            let to = self.mem.len().min(from.saturating_add(want));
            match f.read(&mut self.mem[from..to]) {
                Ok(0) => break,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if self.len as u64 >= limit {
                break;
            }
        }
        Ok((self.len as u64 > max).then_some(self.len as u64))
    }

    /// At least `more` bytes free after the data, which start at a multiple of [`ALIGN`].
    /// New memory comes zeroed from the allocator (`vec!` of zeros: fresh pages, no
    /// writing); the data read so far move with it. The buffer never shrinks: it stays at
    /// most 1.5 times the largest blob read (plus [`ALIGN`]).
    fn room(&mut self, more: usize) {
        let pad = |m: &Vec<u8>| (m.as_ptr() as usize).wrapping_neg() % ALIGN;
        if self.len == 0 {
            self.start = pad(&self.mem);
        }
        let need = self.len.saturating_add(more);
        if self.mem.len().saturating_sub(self.start) >= need {
            return;
        }
        // Half as much again as before (at least): blobs of one NIC grow hour by hour, and
        // an exact fit would map and fault a new buffer for each slightly larger one.
        let size = need.max(self.mem.len().saturating_add(self.mem.len() / 2));
        let mem = vec![0u8; size.saturating_add(ALIGN)];
        let start = pad(&mem);
        let old = std::mem::replace(&mut self.mem, mem);
        if self.len > 0 {
            self.mem[start..start + self.len]
                .copy_from_slice(&old[self.start..self.start + self.len]);
        }
        self.start = start;
    }
}

/// A whole blob's bytes (duplicate detection compares copies byte for byte).
pub fn read_all(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut b = BlobBuf::default();
    b.read_capped(p, u64::MAX - 1)?;
    Ok(b.bytes().to_vec())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(b: &BlobBuf) -> bool {
        (b.bytes().as_ptr() as usize).is_multiple_of(ALIGN)
    }

    #[test]
    fn blobs_are_read_whole_to_an_aligned_address_in_reused_memory() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b, e) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("e"),
        );
        std::fs::write(&a, &big).unwrap();
        std::fs::write(&b, &big[..1234]).unwrap();
        std::fs::write(&e, b"").unwrap();
        let mut buf = BlobBuf::default();
        assert_eq!(buf.read_capped(&a, u64::MAX - 1).unwrap(), None);
        assert_eq!(buf.bytes(), &big[..]);
        assert!(aligned(&buf));
        let at = buf.mem.as_ptr();
        assert_eq!(
            buf.read_capped(&b, 1234).unwrap(),
            None,
            "exactly max is not over"
        );
        assert_eq!(buf.bytes(), &big[..1234]);
        assert!(aligned(&buf));
        assert_eq!(buf.mem.as_ptr(), at, "a smaller blob reuses the memory");
        assert_eq!(buf.read_capped(&e, 10).unwrap(), None);
        assert_eq!(buf.bytes(), b"");
        assert_eq!(buf.read_capped(&a, 299_999).unwrap(), Some(300_000));
        assert!(buf.read_capped(&dir.path().join("missing"), 10).is_err());
        // Growing keeps the bytes read so far, aligned (a file that grew while read).
        buf.read_capped(&b, 10_000).unwrap();
        buf.room(1 << 20);
        assert_eq!(buf.bytes(), &big[..1234]);
        assert!(aligned(&buf));
        assert!(buf.mem.len() - buf.start >= 1234 + (1 << 20));
    }
}
