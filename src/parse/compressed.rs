//! Compressed blobs: gzip (`.json.gz`, or gzip bytes under a `.json` name) and zip (Storage
//! Explorer's and `Compress-Archive`'s downloads), told apart by their magic bytes, not their
//! names, and read in memory under a cap on the decompressed size and on the ratio, so a zip
//! bomb is a clear reject and never an out-of-memory abort.

use std::io::Read;

/// What a blob's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Plain,
    Gzip,
    Zip,
}

/// Sniff the first bytes: gzip `1f 8b`, zip `PK\x03\x04` (or an empty archive's `PK\x05\x06`).
pub fn sniff(data: &[u8]) -> Container {
    if data.starts_with(&[0x1f, 0x8b]) {
        Container::Gzip
    } else if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        Container::Zip
    } else {
        Container::Plain
    }
}

/// Limits on what a compressed blob may expand to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest decompressed size (`--max-blob-bytes`).
    pub max_bytes: u64,
    /// Largest decompressed / compressed ratio once past [`RATIO_FLOOR`] bytes. JSON flow
    /// logs compress 10–30:1; zip bombs reach thousands.
    pub max_ratio: u64,
}

/// Below this decompressed size the ratio is not checked (a small blob of repeated tuples
/// compresses very well and is harmless).
pub const RATIO_FLOOR: u64 = 64 << 20;

/// The default `--max-blob-bytes`: 4 GiB, a few times the largest hourly blob Azure writes.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_ratio: 200,
        }
    }
}

/// Read all of `r` into `out`, stopping with an error past the limits.
fn read_capped(
    r: impl Read,
    compressed: u64,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let cap = limits.max_bytes;
    let start = out.len();
    let mut r = r.take(cap.saturating_add(1));
    let mut chunk = [0u8; 64 << 10];
    loop {
        let n = r
            .read(&mut chunk)
            .map_err(|e| format!("cannot decompress: {e}"))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        let got = (out.len() - start) as u64;
        if got > cap {
            return Err(format!(
                "decompresses to more than --max-blob-bytes {cap}: not read (raise the limit if it is genuine)"
            ));
        }
        if got > RATIO_FLOOR && got / compressed.max(1) > limits.max_ratio {
            return Err(format!(
                "decompresses more than {}:1 ({got} bytes from {compressed} so far): not read, a zip bomb or not a flow log",
                limits.max_ratio
            ));
        }
    }
    Ok(())
}

/// Every member of a gzip stream (multi-member: `cat a.gz b.gz` is one valid gzip file).
pub fn gunzip(data: &[u8], limits: &Limits, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    read_capped(
        flate2::read::MultiGzDecoder::new(data),
        data.len() as u64,
        limits,
        out,
    )
}

/// One zip entry: its name, and its bytes or why they could not be read.
pub type Entry = (String, Result<Vec<u8>, String>);

/// The file entries of a zip archive, each decompressed under the limits (counted over the
/// whole archive).
pub fn unzip(data: &[u8], limits: &Limits) -> Result<Vec<Entry>, String> {
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(data))
        .map_err(|e| format!("not a readable zip archive: {e}"))?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for i in 0..a.len() {
        let mut f = match a.by_index(i) {
            Ok(f) => f,
            Err(e) => {
                out.push((format!("entry {i}"), Err(format!("cannot open: {e}"))));
                continue;
            }
        };
        if f.is_dir() {
            continue;
        }
        let name = f.name().to_string();
        let left = Limits {
            max_bytes: limits.max_bytes.saturating_sub(total),
            ..*limits
        };
        let mut buf = Vec::new();
        let compressed = f.compressed_size();
        let r = read_capped(&mut f, compressed, &left, &mut buf);
        total += buf.len() as u64;
        out.push((name, r.map(|()| buf)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn multi_member_gzip_is_read_whole() {
        let mut two = gz(b"{\"records\":[");
        two.extend(gz(b"]}"));
        assert_eq!(sniff(&two), Container::Gzip);
        let mut out = Vec::new();
        gunzip(&two, &Limits::default(), &mut out).unwrap();
        assert_eq!(out, b"{\"records\":[]}");
    }

    #[test]
    fn a_bomb_stops_at_the_size_cap_with_a_clear_reason() {
        let bomb = gz(&vec![b' '; 10 << 20]);
        let tight = Limits {
            max_bytes: 1 << 20,
            max_ratio: 200,
        };
        let mut out = Vec::new();
        let e = gunzip(&bomb, &tight, &mut out).unwrap_err();
        assert!(e.contains("more than --max-blob-bytes 1048576"), "{e}");
        assert!(out.len() <= (1 << 20) + (64 << 10));
    }

    #[test]
    fn plain_json_is_plain() {
        assert_eq!(sniff(b"{\"records\":[]}"), Container::Plain);
        assert_eq!(sniff(b""), Container::Plain);
    }
}
