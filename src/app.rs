//! `app::run`: carries out a validated [`Config`] and decides the exit code. Diagnostics go
//! to stderr (`path: message`, ripgrep style), data to stdout.

use crate::cli::{Config, Format, InputConfig};
use crate::discover::{discover, Discovered};
use crate::gen::generate;
use crate::pipeline::summarize;
use crate::summary::SummaryReport;
use crate::text::term_safe;
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

/// At most this many problem lines on stderr; the JSON output has them all.
const MAX_STDERR_PROBLEMS: usize = 20;

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    match config {
        Config::Summary { input, format } => summary(&input, format),
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

fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up worker threads")?;
    }
    Ok(())
}

/// Discover, reporting unusable inputs on stderr.
fn discover_inputs(input: &InputConfig) -> Discovered {
    let d = discover(&input.inputs, &input.discover);
    for s in &d.skipped {
        eprintln!(
            "{}: {}",
            term_safe(&s.path.display().to_string()),
            term_safe(&s.reason)
        );
    }
    d
}

fn summary(input: &InputConfig, format: Format) -> anyhow::Result<ExitCode> {
    set_threads(input.threads)?;
    let d = discover_inputs(input);
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
    let s = summarize(&d.blobs, &input.run);
    let report = SummaryReport::new(&s, &d);
    report_problems(&report);
    let out = match format {
        Format::Json => report.to_json(),
        Format::Table => report.to_table(),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    Ok(ExitCode::from(exit_code(&report, input.run.strict)))
}

fn exit_code(report: &SummaryReport, strict: bool) -> u8 {
    let l = &report.ledger;
    if l.records == 0 {
        return exit::NOTHING_READ;
    }
    let lossy = l.blobs_failed > 0
        || l.blobs_partial > 0
        || l.tuples_rejected > 0
        || l.records_unrecognized > 0
        || !l.skipped_paths.is_empty();
    if lossy {
        if strict {
            eprintln!("nsgflow: stopped early (--strict): input was rejected or failed");
        }
        return exit::LOSSES;
    }
    exit::OK
}

/// Blob problems and the first example of each reject reason, one line each.
fn report_problems(report: &SummaryReport) {
    let l = &report.ledger;
    let mut lines: Vec<String> = l
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    let mut last_reason = None;
    for e in &l.reject_examples {
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
            "... and {} more (all in --format json)",
            n - MAX_STDERR_PROBLEMS
        );
    }
    if report.ledger.tuples_rejected > 0 || !l.problems.is_empty() {
        let line = report.skipped_line();
        if !line.is_empty() {
            eprintln!("{line}");
        }
    }
}
