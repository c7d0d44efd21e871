//! Streaming exports: `flows` (one row per tuple) and `connections` rows, as CSV with a
//! header or JSON lines. Blobs are rendered in parallel a batch at a time and written in
//! path order, so the output is deterministic and memory holds one batch of rows.

use super::connections::Connection;
use super::csv_safe;
use crate::discover::BlobMeta;
use crate::model::{Decision, Direction, FlowState};
use crate::parse::{Ledger, RuleTable, TableSink};
use crate::pipeline::{process_blob, RunOptions, Worker};
use crate::text::fmt_ms;
use rayon::prelude::*;
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
    pub path: &'a str,
    pub record: usize,
    pub tuple: u32,
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

struct RowSink<'p> {
    path: &'p str,
    /// JSON lines go to `json`; CSV rows through `csv` (one writer per blob).
    json: Option<Vec<u8>>,
    csv: Option<csv::Writer<Vec<u8>>>,
    rows: u64,
}

impl RowSink<'_> {
    fn into_bytes(self) -> Vec<u8> {
        match (self.json, self.csv) {
            (Some(j), _) => j,
            (None, Some(w)) => w.into_inner().expect("flush to memory"),
            (None, None) => Vec::new(),
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl TableSink for RowSink<'_> {
    fn table(&mut self, table: &RuleTable<'_>) {
        let ctx = &table.ctx;
        let mac = ctx.mac_normalized();
        for (t, i) in table.tuples.iter().zip(table.indices) {
            let row = FlowRow {
                time: fmt_ms(t.time_ms),
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
                direction: match t.direction {
                    Direction::Inbound => "in",
                    Direction::Outbound => "out",
                },
                decision: match t.decision {
                    Decision::Allow => "allow",
                    Decision::Deny => "deny",
                },
                state: match t.state {
                    None => "",
                    Some(FlowState::Begin) => "B",
                    Some(FlowState::Continuing) => "C",
                    Some(FlowState::End) => "E",
                    Some(FlowState::Denied) => "D",
                },
                encryption: t.encryption.map(|e| e.code()).unwrap_or(""),
                packets_src_to_dst: t.packets_s2d,
                bytes_src_to_dst: t.bytes_s2d,
                packets_dst_to_src: t.packets_d2s,
                bytes_dst_to_src: t.bytes_d2s,
                path: self.path,
                record: ctx.record_index,
                tuple: *i,
            };
            self.rows += 1;
            if let Some(out) = &mut self.json {
                serde_json::to_writer(&mut *out, &row).expect("rows serialize");
                out.push(b'\n');
            } else if let Some(w) = &mut self.csv {
                {
                    let cells: [std::borrow::Cow<'_, str>; 22] = [
                        row.time.into(),
                        row.time_ms.to_string().into(),
                        row.family.into(),
                        csv_safe(row.nsg),
                        csv_safe(row.rule),
                        csv_safe(row.mac),
                        row.src.to_string().into(),
                        row.sport.to_string().into(),
                        row.dst.to_string().into(),
                        row.dport.to_string().into(),
                        row.protocol.into(),
                        row.direction.into(),
                        row.decision.into(),
                        row.state.into(),
                        row.encryption.into(),
                        opt(row.packets_src_to_dst).into(),
                        opt(row.bytes_src_to_dst).into(),
                        opt(row.packets_dst_to_src).into(),
                        opt(row.bytes_dst_to_src).into(),
                        csv_safe(row.path),
                        row.record.to_string().into(),
                        row.tuple.to_string().into(),
                    ];
                    w.write_record(cells.iter().map(|c| c.as_bytes()))
                        .expect("write to memory");
                }
            }
        }
    }
}

/// Write every tuple that passes the filters, in blob path order, then record and tuple
/// order. Returns the ledger and the number of rows written.
pub fn export_flows(
    blobs: &[BlobMeta],
    opts: &RunOptions,
    format: RowFormat,
    out: &mut dyn Write,
) -> std::io::Result<(Ledger, u64)> {
    if format == RowFormat::Csv {
        writeln!(out, "{}", FLOW_COLUMNS.join(","))?;
    }
    let mut ledger = Ledger::default();
    let mut rows = 0;
    let batch = rayon::current_num_threads() * 2;
    for chunk in blobs.chunks(batch.max(1)) {
        let parts: Vec<(Vec<u8>, u64, Ledger)> = chunk
            .par_iter()
            .map_init(Worker::default, |w, blob| {
                let label = blob.path.display().to_string();
                let mut sink = RowSink {
                    path: &label,
                    json: (format == RowFormat::JsonLines).then(Vec::new),
                    csv: (format == RowFormat::Csv).then(|| {
                        csv::WriterBuilder::new()
                            .has_headers(false)
                            .from_writer(Vec::new())
                    }),
                    rows: 0,
                };
                let l = process_blob(w, blob, opts, &mut sink);
                let rows = sink.rows;
                (sink.into_bytes(), rows, l)
            })
            .collect();
        for (bytes, n, l) in parts {
            out.write_all(&bytes)?;
            rows += n;
            ledger.merge(l);
        }
    }
    Ok((ledger, rows))
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
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
        RowFormat::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            for c in conns {
                w.write_record([
                    fmt_ms(c.start_ms),
                    fmt_ms(c.end_ms),
                    c.duration_ms().to_string(),
                    csv_safe(&c.nsg).into_owned(),
                    csv_safe(&c.rule).into_owned(),
                    csv_safe(&c.mac).into_owned(),
                    c.family.to_string(),
                    c.src.to_string(),
                    c.sport.to_string(),
                    c.dst.to_string(),
                    c.dport.to_string(),
                    c.protocol.clone(),
                    c.direction.to_string(),
                    c.status.name().to_string(),
                    c.tuples.to_string(),
                    c.packets_src_to_dst.to_string(),
                    c.bytes_src_to_dst.to_string(),
                    c.packets_dst_to_src.to_string(),
                    c.bytes_dst_to_src.to_string(),
                    c.start_ms.to_string(),
                    c.end_ms.to_string(),
                ])?;
            }
            w.flush()?;
        }
    }
    Ok(())
}
