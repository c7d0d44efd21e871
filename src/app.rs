//! `app::run`: carries out a validated [`Config`] and decides the exit code. Diagnostics go
//! to stderr (`path: message`, ripgrep style), data to stdout.

use crate::addr::AddressBook;
use crate::analyze::connections::Connection;
use crate::analyze::export::{export_flows, write_connections, RowFormat, CONNECTION_COLUMNS};
use crate::analyze::stitch_connections;
use crate::analyze::timeline::Timeline;
use crate::analyze::top::{TopAgg, TopSpec};
use crate::cli::{Config, ConnMetric, Format, GraphFormat, InputConfig, TableFormat};
use crate::discover::{discover, Discovered};
use crate::gen::generate;
use crate::graph::GraphAgg;
use crate::parse::Ledger;
use crate::pipeline::{fold_blobs, summarize};
use crate::summary::SummaryReport;
use crate::text::{fmt_ms, table, term_safe};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;

/// Exit statuses (documented in `--help` and the README).
pub mod exit {
    pub const OK: u8 = 0;
    pub const NOTHING_READ: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const LOSSES: u8 = 3;
}

/// At most this many problem lines on stderr; `summary --format json` has them all.
const MAX_STDERR_PROBLEMS: usize = 20;

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    match config {
        Config::Report {
            input,
            book,
            out,
            stamp,
            quiet,
            filters,
        } => report(&input, &book, &out, stamp, quiet, filters),
        Config::Summary { input, format } => summary(&input, format),
        Config::Top {
            input,
            book,
            spec,
            connections,
            format,
        } => top(&input, &book, spec, connections, format),
        Config::Flows { input, format } => flows(&input, format),
        Config::Timeline {
            input,
            bin_ms,
            format,
        } => timeline(&input, bin_ms, format),
        Config::Connections { input, format } => connections(&input, format),
        Config::Graph {
            input,
            book,
            direction,
            group,
            top,
            weight,
            format,
        } => {
            let d = start(&input)?;
            let (g, ledger) = fold_blobs(&d.blobs, &input.run, || {
                GraphAgg::new(direction, group, &book)
            });
            let report = g.report(top, weight);
            let out = match format {
                GraphFormat::Dot => report.to_dot(),
                GraphFormat::Json => to_json(&report),
            };
            emit(&out)?;
            Ok(finish(&ledger, &d, &input))
        }
        Config::Gen(opts) => {
            let stats =
                generate(&opts).with_context(|| format!("writing to {}", opts.out.display()))?;
            eprintln!(
                "wrote {} blobs, {} records, {} tuples, {} bytes under {}",
                stats.blobs,
                stats.records,
                stats.tuples,
                stats.bytes,
                opts.out.display()
            );
            Ok(ExitCode::from(exit::OK))
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("output serializes");
    s.push('\n');
    s
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn emit(s: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up worker threads")?;
    }
    Ok(())
}

/// Threads, then discovery, reporting unusable inputs and an empty result on stderr.
fn start(input: &InputConfig) -> anyhow::Result<Discovered> {
    set_threads(input.threads)?;
    let d = discover(&input.inputs, &input.discover);
    for s in &d.skipped {
        eprintln!(
            "{}: {}",
            term_safe(&s.path.display().to_string()),
            term_safe(&s.reason)
        );
    }
    if d.blobs.is_empty() {
        eprintln!(
            "nsgflow: no flow-log blobs found under {} ({} left out by filters). \
             Blobs are *.json files such as .../macAddress=<MAC>/PT1H.json; check the path and --since/--until/--nsg.",
            input
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            d.filtered_out
        );
    }
    Ok(d)
}

/// Report the ledger's problems on stderr and decide the exit code.
fn finish(l: &Ledger, d: &Discovered, input: &InputConfig) -> ExitCode {
    report_problems(l);
    if l.records == 0 {
        return ExitCode::from(exit::NOTHING_READ);
    }
    if l.has_losses() || !d.skipped.is_empty() {
        if input.run.strict {
            eprintln!("nsgflow: stopped early (--strict): input was rejected or failed");
        }
        return ExitCode::from(exit::LOSSES);
    }
    ExitCode::from(exit::OK)
}

/// Blob problems and the first example of each reject reason, one line each, then one line
/// saying what was skipped.
fn report_problems(l: &Ledger) {
    let mut lines: Vec<String> = l
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    let mut last_reason = None;
    for e in &l.examples {
        if last_reason == Some(e.reason) {
            continue;
        }
        last_reason = Some(e.reason);
        lines.push(format!("{}: {} ({})", e.location(), e.message, e.reason));
    }
    let n = lines.len();
    for line in lines.iter().take(MAX_STDERR_PROBLEMS) {
        eprintln!("{}", term_safe(line));
    }
    if n > MAX_STDERR_PROBLEMS {
        eprintln!(
            "... and {} more (all in summary --format json)",
            n - MAX_STDERR_PROBLEMS
        );
    }
    let line = crate::summary::skipped_line(l, 0);
    if !line.is_empty() {
        eprintln!("{line}");
    }
}

fn summary(input: &InputConfig, format: Format) -> anyhow::Result<ExitCode> {
    let d = start(input)?;
    let s = summarize(&d.blobs, &input.run);
    let report = SummaryReport::new(&s, &d);
    emit(&match format {
        Format::Json => report.to_json(),
        Format::Table => report.to_table(),
    })?;
    Ok(finish(&s.ledger, &d, input))
}

fn render_rows(
    header: &[&str],
    rows: Vec<Vec<String>>,
    numeric: &[usize],
    format: TableFormat,
) -> anyhow::Result<String> {
    Ok(match format {
        TableFormat::Table => table(header, &rows, numeric),
        TableFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(header)?;
            for r in &rows {
                w.write_record(
                    r.iter()
                        .map(|c| crate::analyze::csv_safe(c))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|c| c.as_bytes()),
                )?;
            }
            String::from_utf8(w.into_inner().context("writing CSV")?)?
        }
        TableFormat::Json => unreachable!("JSON is rendered from the typed rows"),
    })
}

fn top(
    input: &InputConfig,
    book: &AddressBook,
    spec: TopSpec,
    connections: Option<ConnMetric>,
    format: TableFormat,
) -> anyhow::Result<ExitCode> {
    let d = start(input)?;
    if let Some(metric) = connections {
        return top_connections(input, &d, spec.n, metric, format);
    }
    let (agg, ledger) = fold_blobs(&d.blobs, &input.run, || TopAgg::new(spec, book));
    let rows = agg.rows();
    let out = if format == TableFormat::Json {
        to_json(&serde_json::json!({
            "by": format!("{:?}", spec.by).to_lowercase(),
            "metric": spec.metric.name(),
            "rows": rows,
        }))
    } else {
        let header = [
            "RANK",
            "KEY",
            "SCOPE",
            "LABEL",
            spec.metric.name(),
            "TUPLES",
            "ALLOWED",
            "DENIED",
            "PACKETS",
            "BYTES",
        ];
        let cells = rows
            .iter()
            .map(|r| {
                vec![
                    r.rank.to_string(),
                    r.key.clone(),
                    r.scope.clone().unwrap_or_default(),
                    r.label.clone().unwrap_or_default(),
                    r.value.to_string(),
                    r.tuples.to_string(),
                    r.allowed.to_string(),
                    r.denied.to_string(),
                    r.packets.to_string(),
                    r.bytes.to_string(),
                ]
            })
            .collect();
        render_rows(&header, cells, &[0, 4, 5, 6, 7, 8, 9], format)?
    };
    emit(&out)?;
    Ok(finish(&ledger, &d, input))
}

fn conn_value(c: &Connection, m: ConnMetric) -> u64 {
    match m {
        ConnMetric::Bytes => c.bytes(),
        ConnMetric::Packets => c.packets_src_to_dst + c.packets_dst_to_src,
        ConnMetric::Duration => c.duration_ms().max(0) as u64,
        ConnMetric::Tuples => c.tuples,
    }
}

fn top_connections(
    input: &InputConfig,
    d: &Discovered,
    n: usize,
    metric: ConnMetric,
    format: TableFormat,
) -> anyhow::Result<ExitCode> {
    let (best, ledger) =
        crate::analyze::top_connections(&d.blobs, &input.run, n, |c| conn_value(c, metric));
    let out = match format {
        TableFormat::Json => {
            let rows: Vec<serde_json::Value> = best
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = serde_json::to_value(c).expect("serializes");
                    v["rank"] = (i + 1).into();
                    v["start"] = fmt_ms(c.start_ms).into();
                    v["end"] = fmt_ms(c.end_ms).into();
                    v["duration_ms"] = c.duration_ms().into();
                    v
                })
                .collect();
            to_json(
                &serde_json::json!({ "by": "connection", "metric": format!("{metric:?}").to_lowercase(), "rows": rows }),
            )
        }
        TableFormat::Csv => {
            let mut buf = Vec::new();
            writeln!(buf, "{}", CONNECTION_COLUMNS.join(","))?;
            write_connections(&best, RowFormat::Csv, &mut buf)?;
            String::from_utf8(buf)?
        }
        TableFormat::Table => {
            let header = [
                "RANK",
                "START",
                "DURATION_S",
                "SRC",
                "DST",
                "PROTO",
                "DIR",
                "STATUS",
                "BYTES",
                "PACKETS",
                "NSG/RULE",
            ];
            let rows: Vec<Vec<String>> = best
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    vec![
                        (i + 1).to_string(),
                        fmt_ms(c.start_ms),
                        format!("{:.3}", c.duration_ms() as f64 / 1000.0),
                        format!("{}:{}", c.src, c.sport),
                        format!("{}:{}", c.dst, c.dport),
                        c.protocol.to_string(),
                        c.direction.to_string(),
                        c.status.name().to_string(),
                        c.bytes().to_string(),
                        (c.packets_src_to_dst + c.packets_dst_to_src).to_string(),
                        format!("{}/{}", c.nsg, c.rule),
                    ]
                })
                .collect();
            table(&header, &rows, &[0, 2, 8, 9])
        }
    };
    emit(&out)?;
    Ok(finish(&ledger, d, input))
}

fn flows(input: &InputConfig, format: RowFormat) -> anyhow::Result<ExitCode> {
    let d = start(input)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let ledger = match export_flows(&d.blobs, &input.run, format, &mut out)
        .and_then(|(l, _)| out.flush().map(|_| l))
    {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(ExitCode::from(exit::OK))
        }
        Err(e) => return Err(e).context("writing to stdout"),
    };
    Ok(finish(&ledger, &d, input))
}

fn connections(input: &InputConfig, format: RowFormat) -> anyhow::Result<ExitCode> {
    let d = start(input)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let result = (|| {
        if format == RowFormat::Csv {
            writeln!(out, "{}", CONNECTION_COLUMNS.join(","))?;
        }
        let render = |conns: Vec<Connection>| {
            let mut buf = Vec::new();
            write_connections(&conns, format, &mut buf).map(|_| buf)
        };
        // One NIC group per thread at a time: a group's rows are held until written.
        let l = stitch_connections(
            &d.blobs,
            &input.run,
            rayon::current_num_threads(),
            render,
            |buf| out.write_all(&buf?),
        )?;
        out.flush()?;
        Ok::<_, std::io::Error>(l)
    })();
    let ledger = match result {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(ExitCode::from(exit::OK))
        }
        Err(e) => return Err(e).context("writing to stdout"),
    };
    Ok(finish(&ledger, &d, input))
}

fn timeline(input: &InputConfig, bin_ms: i64, format: TableFormat) -> anyhow::Result<ExitCode> {
    let d = start(input)?;
    let (tl, ledger) = fold_blobs(&d.blobs, &input.run, || Timeline::new(bin_ms));
    let rows = tl.rows();
    let out = if format == TableFormat::Json {
        to_json(&serde_json::json!({ "bin_ms": bin_ms, "bins": rows }))
    } else {
        let header = [
            "START",
            "TUPLES",
            "ALLOWED",
            "DENIED",
            "IN",
            "OUT",
            "PKTS_S2D",
            "BYTES_S2D",
            "PKTS_D2S",
            "BYTES_D2S",
            "SRCS",
            "DSTS",
        ];
        let cells = rows
            .iter()
            .map(|r| {
                let mut row = vec![r.start.clone()];
                row.extend(r.counters.cells());
                row.push(r.distinct_src.to_string());
                row.push(r.distinct_dst.to_string());
                row
            })
            .collect();
        render_rows(&header, cells, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], format)?
    };
    emit(&out)?;
    Ok(finish(&ledger, &d, input))
}

fn report(
    input: &InputConfig,
    book: &AddressBook,
    out: &std::path::Path,
    stamp: bool,
    quiet: bool,
    filters: Vec<String>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let d = start(input)?;
    let bar = if quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(d.blobs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} blobs [{elapsed_precise}] {wide_bar} {eta}",
            )
            .expect("valid template"),
        );
        b
    };
    let (agg, ledger) = crate::report::build::aggregate(&d.blobs, &input.run, &|| bar.inc(1));
    bar.finish_and_clear();
    let cx = crate::report::build::ReportContext {
        inputs: input
            .inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        filters,
        generated_at: stamp.then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            fmt_ms(now)
        }),
        book,
    };
    let r = crate::report::build::assemble(&agg, &ledger, &d, &cx);
    let written = crate::report::render::write_all(&r, out)?;
    if !quiet {
        eprintln!(
            "wrote {} files to {} (open {})",
            written.len(),
            out.display(),
            out.join("index.html").display()
        );
    }
    Ok(finish(&ledger, &d, input))
}
