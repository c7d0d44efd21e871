//! Streaming exports: `flows` (one row per tuple) and `connections` rows, as CSV with a
//! header or JSON lines. Both run through the pipeline's ordered mode: blobs (for `flows`)
//! or NIC groups (for `connections`) are rendered in parallel and written in their sorted
//! order, so the output is deterministic and memory holds the rows of the groups in flight.

use crate::aggregate::connections::{ConnRows, Connection};
use crate::aggregate::NicFold;
use crate::discover::BlobMeta;
use crate::model::{Decision, Direction, FlowState, Protocol};
use crate::parse::{Ledger, RuleTable, TableSink};
use crate::pipeline::{nic_groups, run_ordered, Progress, RunOptions, Schedule};
use crate::text::csv_safe;
use crate::text::fmt_ms;
use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;

/// Row format of exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFormat {
    Csv,
    JsonLines,
}

/// One exported tuple. Field order is the CSV column order.
#[derive(Serialize)]
pub struct FlowRow<'a> {
    pub time: String,
    pub time_ms: i64,
    pub family: &'static str,
    pub nsg: &'a str,
    pub rule: &'a str,
    pub mac: &'a str,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub protocol: String,
    pub direction: &'static str,
    pub decision: &'static str,
    pub state: &'static str,
    pub encryption: &'static str,
    pub packets_src_to_dst: Option<u64>,
    pub bytes_src_to_dst: Option<u64>,
    pub packets_dst_to_src: Option<u64>,
    pub bytes_dst_to_src: Option<u64>,
    /// `--location path`: the blob's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    /// `--location index`: the blob's position in path order (`--blob-list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<usize>,
    pub record: usize,
    pub tuple: u32,
}

/// How a `flows` row names its blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Location {
    /// A `blob` column: the blob's index in path order.
    Index,
    /// A `path` column: the blob's full path.
    Path,
}

/// The columns of `flows` CSV (and the fields of its JSON lines) for a location.
pub fn flow_columns(location: Location) -> Vec<&'static str> {
    let mut c = FLOW_COLUMNS.to_vec();
    if location == Location::Index {
        let at = c.iter().position(|x| *x == "path").expect("path column");
        c[at] = "blob";
    }
    c
}

/// The blob list `flows --blob-list` writes: what its `blob` column indexes.
pub fn blob_list_csv(blobs: &[BlobMeta]) -> Vec<u8> {
    let mut o = b"blob,path,bytes\n".to_vec();
    for (i, b) in blobs.iter().enumerate() {
        num(&mut o, i);
        o.push(b',');
        csv_text(&mut o, &b.path.display().to_string());
        o.push(b',');
        num(&mut o, b.size);
        o.push(b'\n');
    }
    o
}

pub const FLOW_COLUMNS: [&str; 22] = [
    "time",
    "time_ms",
    "family",
    "nsg",
    "rule",
    "mac",
    "src",
    "sport",
    "dst",
    "dport",
    "protocol",
    "direction",
    "decision",
    "state",
    "encryption",
    "packets_src_to_dst",
    "bytes_src_to_dst",
    "packets_dst_to_src",
    "bytes_dst_to_src",
    "path",
    "record",
    "tuple",
];

/// Rows of one blob at a time, rendered as its tables come; the pipeline writes each blob's
/// rows in path order.
struct RowSink {
    path: String,
    /// The blob's index in path order, and every blob's index by path.
    index: usize,
    indices: std::sync::Arc<crate::hash::HMap<std::path::PathBuf, usize>>,
    location: Location,
    format: RowFormat,
    out: Vec<u8>,
    rows: u64,
    clock: Clock,
}

/// RFC 3339 formatting of millisecond timestamps, caching the date part (rows of one blob
/// share a day), so exports do not spend their time in calendar arithmetic.
#[derive(Default)]
pub struct Clock {
    day: Option<i64>,
    date: String,
}

impl Clock {
    /// `2026-01-05T13:00:00.000Z`, identical to [`fmt_ms`].
    pub fn write(&mut self, out: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(86_400_000);
        if self.day != Some(day) {
            let s = fmt_ms(day * 86_400_000);
            self.date = s[..s.find('T').unwrap_or(s.len())].to_string();
            self.day = Some(day);
        }
        let r = ms.rem_euclid(86_400_000);
        let (h, m, sec, milli) = (r / 3_600_000, r / 60_000 % 60, r / 1000 % 60, r % 1000);
        let _ = write!(out, "{}T{h:02}:{m:02}:{sec:02}.{milli:03}Z", self.date);
    }
}

/// A CSV text cell: formula-neutralised (see [`csv_safe`]) and quoted when it holds a comma,
/// quote or line break (RFC 4180).
pub fn csv_text(out: &mut Vec<u8>, s: &str) {
    let s = csv_safe(s);
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn csv_opt(out: &mut Vec<u8>, v: Option<u64>) {
    if let Some(v) = v {
        num(out, v);
    }
}

/// An integer, then nothing else.
#[inline]
pub fn num<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// An address as `Display` writes it (IPv4 by hand: it is most of every row).
#[inline]
pub fn addr(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            num(out, o[0]);
            for x in &o[1..] {
                out.push(b'.');
                num(out, *x);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A field separator then a value.
macro_rules! sep {
    ($o:expr) => {
        $o.push(b',')
    };
}

impl TableSink for RowSink {
    fn table(&mut self, table: &RuleTable<'_>) {
        let ctx = &table.ctx;
        let mac = ctx.mac_normalized();
        for (t, i) in table.tuples.iter().zip(table.indices) {
            self.rows += 1;
            let direction = match t.direction {
                Direction::Inbound => "in",
                Direction::Outbound => "out",
            };
            let decision = match t.decision {
                Decision::Allow => "allow",
                Decision::Deny => "deny",
            };
            let state = match t.state {
                None => "",
                Some(FlowState::Begin) => "B",
                Some(FlowState::Continuing) => "C",
                Some(FlowState::End) => "E",
                Some(FlowState::Denied) => "D",
            };
            let encryption = t.encryption.map(|e| e.code()).unwrap_or("");
            let o = &mut self.out;
            match self.format {
                RowFormat::JsonLines => {
                    let mut time = Vec::with_capacity(24);
                    self.clock.write(&mut time, t.time_ms);
                    let row = FlowRow {
                        time: String::from_utf8(time).expect("ASCII"),
                        time_ms: t.time_ms,
                        family: ctx.family.name(),
                        nsg: ctx.nsg,
                        rule: ctx.rule,
                        mac: &mac,
                        src: t.src,
                        sport: t.sport,
                        dst: t.dst,
                        dport: t.dport,
                        protocol: t.protocol.to_string(),
                        direction,
                        decision,
                        state,
                        encryption,
                        packets_src_to_dst: t.packets_s2d,
                        bytes_src_to_dst: t.bytes_s2d,
                        packets_dst_to_src: t.packets_d2s,
                        bytes_dst_to_src: t.bytes_d2s,
                        path: (self.location == Location::Path).then_some(self.path.as_str()),
                        blob: (self.location == Location::Index).then_some(self.index),
                        record: ctx.record_index,
                        tuple: *i,
                    };
                    crate::text::json_line(&mut *o, &row).expect("rows serialize");
                    o.push(b'\n');
                }
                RowFormat::Csv => {
                    self.clock.write(o, t.time_ms);
                    sep!(o);
                    num(o, t.time_ms);
                    sep!(o);
                    o.extend_from_slice(ctx.family.name().as_bytes());
                    sep!(o);
                    csv_text(o, ctx.nsg);
                    sep!(o);
                    csv_text(o, ctx.rule);
                    sep!(o);
                    csv_text(o, &mac);
                    sep!(o);
                    addr(o, &t.src);
                    sep!(o);
                    num(o, t.sport);
                    sep!(o);
                    addr(o, &t.dst);
                    sep!(o);
                    num(o, t.dport);
                    sep!(o);
                    match t.protocol {
                        Protocol::Tcp => o.extend_from_slice(b"tcp"),
                        Protocol::Udp => o.extend_from_slice(b"udp"),
                        p => {
                            let _ = write!(o, "{p}");
                        }
                    }
                    for f in [direction, decision, state, encryption] {
                        sep!(o);
                        o.extend_from_slice(f.as_bytes());
                    }
                    sep!(o);
                    csv_opt(o, t.packets_s2d);
                    o.push(b',');
                    csv_opt(o, t.bytes_s2d);
                    o.push(b',');
                    csv_opt(o, t.packets_d2s);
                    o.push(b',');
                    csv_opt(o, t.bytes_d2s);
                    o.push(b',');
                    match self.location {
                        Location::Path => csv_text(o, &self.path),
                        Location::Index => num(o, self.index),
                    }
                    sep!(o);
                    num(o, ctx.record_index);
                    sep!(o);
                    num(o, *i);
                    o.push(b'\n');
                }
            }
        }
    }
}

impl NicFold for RowSink {
    type Out = Vec<u8>;
    fn begin_blob(&mut self, blob: &BlobMeta) {
        self.path = blob.path.display().to_string();
        self.index = *self
            .indices
            .get(&blob.path)
            .expect("every blob read is listed");
        // Rows run about 4 bytes per input byte (with the path in every row).
        self.out
            .reserve((blob.size as usize).saturating_mul(4).min(1 << 30));
    }
    fn end_group(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
    fn merge(&mut self, o: Self) {
        self.rows += o.rows;
    }
}

/// Write every tuple that passes the filters, in blob path order, then record and tuple
/// order (one read, blobs rendered in parallel, written in order). Returns the ledger and
/// the number of rows written.
pub fn export_flows(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    format: RowFormat,
    location: Location,
    progress: &Progress<'_>,
    out: &mut (dyn Write + Send),
) -> std::io::Result<(Ledger, u64)> {
    if format == RowFormat::Csv {
        writeln!(out, "{}", flow_columns(location).join(","))?;
    }
    let indices: std::sync::Arc<crate::hash::HMap<std::path::PathBuf, usize>> = std::sync::Arc::new(
        blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.path.clone(), i))
            .collect(),
    );
    // Each blob is a group of its own, in path order.
    let groups: Vec<Vec<&BlobMeta>> = blobs.iter().map(|b| vec![b]).collect();
    let ((), rows, ledger) = run_ordered(
        &groups,
        Schedule::InOrder,
        opts,
        progress,
        || (),
        || RowSink {
            path: String::new(),
            index: 0,
            indices: indices.clone(),
            location,
            format,
            out: Vec::new(),
            rows: 0,
            clock: Clock::default(),
        },
        &mut |buf: Vec<u8>| out.write_all(&buf),
    )?;
    Ok((ledger, rows.rows))
}

/// Stitch every connection and write it as a row: NIC groups in their sorted order, each
/// group's connections by start (see [`crate::aggregate::connections::ConnRows`]).
pub fn export_connections(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    format: RowFormat,
    progress: &Progress<'_>,
    out: &mut (dyn Write + Send),
) -> std::io::Result<Ledger> {
    if format == RowFormat::Csv {
        writeln!(out, "{}", CONNECTION_COLUMNS.join(","))?;
    }
    let groups = nic_groups(blobs);
    let render = move |conns: &[Connection]| {
        let mut buf = Vec::new();
        write_connections(conns, format, &mut buf).expect("writing to memory");
        buf
    };
    let ((), _, ledger) = run_ordered(
        &groups,
        Schedule::InOrder,
        opts,
        progress,
        || (),
        || ConnRows::new(render),
        &mut |buf: Vec<u8>| out.write_all(&buf),
    )?;
    Ok(ledger)
}

pub const CONNECTION_COLUMNS: [&str; 21] = [
    "start",
    "end",
    "duration_ms",
    "nsg",
    "rule",
    "mac",
    "family",
    "src",
    "sport",
    "dst",
    "dport",
    "protocol",
    "direction",
    "status",
    "tuples",
    "packets_src_to_dst",
    "bytes_src_to_dst",
    "packets_dst_to_src",
    "bytes_dst_to_src",
    "start_ms",
    "end_ms",
];

/// One connection as an export row (JSON lines).
#[derive(Serialize)]
pub struct ConnectionRow<'a> {
    pub start: String,
    pub end: String,
    pub duration_ms: i64,
    #[serde(flatten)]
    pub connection: &'a Connection,
}

/// Append connections as rows.
pub fn write_connections(
    conns: &[Connection],
    format: RowFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        RowFormat::JsonLines => {
            for c in conns {
                let row = ConnectionRow {
                    start: fmt_ms(c.start_ms),
                    end: fmt_ms(c.end_ms),
                    duration_ms: c.duration_ms(),
                    connection: c,
                };
                crate::text::json_line(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
        RowFormat::Csv => {
            let mut clock = Clock::default();
            let mut o = Vec::with_capacity(conns.len() * 200);
            for c in conns {
                clock.write(&mut o, c.start_ms);
                o.push(b',');
                clock.write(&mut o, c.end_ms);
                sep!(o);
                num(&mut o, c.duration_ms());
                sep!(o);
                csv_text(&mut o, &c.nsg);
                o.push(b',');
                csv_text(&mut o, &c.rule);
                o.push(b',');
                csv_text(&mut o, &c.mac);
                sep!(o);
                o.extend_from_slice(c.family.as_bytes());
                sep!(o);
                addr(&mut o, &c.src);
                sep!(o);
                num(&mut o, c.sport);
                sep!(o);
                addr(&mut o, &c.dst);
                sep!(o);
                num(&mut o, c.dport);
                let _ = write!(o, ",{},{},{}", c.protocol, c.direction, c.status.name());
                sep!(o);
                num(&mut o, c.tuples);
                // Counts none of its tuples logged are empty cells, as in `flows`.
                for v in [
                    c.packets_src_to_dst,
                    c.bytes_src_to_dst,
                    c.packets_dst_to_src,
                    c.bytes_dst_to_src,
                ] {
                    sep!(o);
                    if c.counters_logged {
                        num(&mut o, v);
                    }
                }
                for v in [c.start_ms, c.end_ms] {
                    sep!(o);
                    num(&mut o, v);
                }
                o.push(b'\n');
            }
            out.write_all(&o)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats_like_fmt_ms() {
        let mut c = Clock::default();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..10_000 {
            let ms = rng.i64(0..4_102_444_800_000);
            let mut o = Vec::new();
            c.write(&mut o, ms);
            assert_eq!(String::from_utf8(o).unwrap(), fmt_ms(ms));
        }
    }

    #[test]
    fn csv_text_quotes_and_neutralises() {
        let cell = |s: &str| {
            let mut o = Vec::new();
            csv_text(&mut o, s);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=1+1"), "'=1+1");
        assert_eq!(cell("-x,y"), "\"'-x,y\"");
    }
}
