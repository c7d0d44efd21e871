//! `app::run`: carries out a validated [`Config`] and decides the exit code. Each command is a
//! short composition: discover, one pass of the folds it needs (see [`crate::aggregate`],
//! driven by [`crate::pipeline`]), a renderer. Diagnostics go to stderr (`path: message`,
//! ripgrep style), data to stdout.

use crate::addr::AddressBook;
use crate::aggregate::connections::{ConnFold, TopConnections};
use crate::aggregate::graph::GraphAgg;
use crate::aggregate::summary_pass;
use crate::aggregate::timeline::Timeline;
use crate::aggregate::top::TopAgg;
use crate::cli::{Config, DetectOptions, Format, GraphFormat, InputConfig, MergeOutput};
use crate::discover::{discover, Discovered};
use crate::export::{export_connections, export_flows};
use crate::gen::generate;
use crate::parse::Ledger;
use crate::pipeline::{run as run_folds, run_nics, Progress, RunOptions};
use crate::report::build::{add_findings, assemble_traffic, ReportContext};
use crate::report::Findings;
use crate::state::incremental::{Chain, NoChain, Persist, StateDir};
use crate::state::{self, Body, BodyRef};
use crate::summary::SummaryReport;
use crate::tables::{render_timeline, render_top, render_top_connections, to_json};
use crate::text::{fmt_ms, term_safe};
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Exit statuses (documented in `--help` and the README).
pub mod exit {
    /// Everything read was used.
    pub const OK: u8 = 0;
    /// Nothing usable was read (no blobs found, no record parsed, or no tuple matched the
    /// filters).
    pub const NOTHING_READ: u8 = 1;
    /// A usage or environment error: a bad flag value, an unusable output location, a write
    /// that failed, a partial file that cannot be merged.
    pub const USAGE: u8 = 2;
    /// Finished, but some input was rejected or failed.
    pub const LOSSES: u8 = 3;
    /// `--fail-on`: a finding at or above the given severity (wins over 0 and 3).
    pub const FINDINGS: u8 = 4;
}

/// At most this many problem lines on stderr; `summary --format json` has them all.
const MAX_STDERR_PROBLEMS: usize = 20;

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    match config {
        Config::Report {
            rules,
            input,
            book,
            out,
            force,
            stamp,
            title,
            quiet,
            filters,
            save_partial,
            detect,
            compare,
        } => {
            // The previous report is read before the folder is prepared: it may be in it.
            let previous = compare
                .as_ref()
                .map(|p| {
                    crate::report::compare::Previous::read(p)
                        .map(|prev| (p.display().to_string(), prev))
                })
                .transpose()?;
            let out_dir = crate::report::render::prepare_dir(&out, force)?;
            check_partial_target(save_partial.as_deref())?;
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), quiet);
            let watches = rules
                .as_ref()
                .map(|(defs, tags)| std::sync::Arc::new(crate::audit::watches(defs, tags)));
            let rule_files = rules
                .as_ref()
                .map(|(defs, _)| {
                    let files: std::collections::BTreeSet<String> =
                        defs.iter().map(|d| d.file.display().to_string()).collect();
                    files.into_iter().collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let data = if input.state_dir.is_some() {
                let opts = state_options("report", &input, &book, &detect, &rule_files)?;
                let on = detect.enabled;
                let (folds, conns, ledger) = state_pass(
                    &input,
                    &mut d,
                    "report",
                    opts,
                    &|| bar.inc(1),
                    || crate::aggregate::report_folds(on, &watches),
                    || ConnFold::new(on),
                    || ConnFold::new(on).take_part(),
                )?;
                crate::aggregate::ReportData::from_folds(folds, conns, ledger)
            } else {
                crate::aggregate::report_pass_with(
                    &d.blobs,
                    &input.run,
                    &|| bar.inc(1),
                    detect.enabled,
                    watches,
                )
            };
            let audit = rules.as_ref().map(|(defs, tags)| {
                crate::audit::audit(
                    defs,
                    &data.audit,
                    tags,
                    data.summary.first_ms,
                    data.summary.last_ms,
                )
            });
            bar.finish_and_clear();
            if let Some(p) = &save_partial {
                let mut header = state::Header::new("report", &input, &filters, &book, &d, &detect);
                header.options.rules = rule_files.clone();
                state::save(p, &header, &data.ledger, BodyRef::Report(&data))?;
            }
            coverage_warnings(&data.coverage);
            let (code, findings) = write_report(
                &data,
                &d,
                &input_names(&input),
                filters,
                stamp,
                quiet,
                title,
                &book,
                &out_dir,
                &input.run,
                || findings_of(data.detect_data(), &book, &detect, &input),
                audit.as_ref(),
                previous.as_ref(),
            )?;
            let audit_sevs = audit
                .iter()
                .flat_map(|a| a.findings.iter().map(|f| f.severity));
            Ok(fail_on(
                code,
                findings.items.iter().map(|f| f.severity).chain(audit_sevs),
                detect.fail_on,
            ))
        }
        Config::Anomalies {
            input,
            book,
            detect,
            format,
        } => {
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), false);
            let (summary, found, conns, ledger) = if input.state_dir.is_some() {
                let opts = state_options("anomalies", &input, &book, &detect, &[])?;
                let ((summary, found), conns, ledger) = state_pass(
                    &input,
                    &mut d,
                    "anomalies",
                    opts,
                    &|| bar.inc(1),
                    || {
                        (
                            crate::aggregate::Summary::default(),
                            crate::detect::Detect::new(true),
                        )
                    },
                    ConnFold::beacons_only,
                    || ConnFold::beacons_only().take_part(),
                )?;
                (summary, found, conns, ledger)
            } else {
                crate::aggregate::detect_pass(&d.blobs, &input.run, &|| bar.inc(1))
            };
            bar.finish_and_clear();
            let data = crate::aggregate::DetectData {
                summary: &summary,
                detect: &found,
                beacons: &conns.beacons,
            };
            let findings = findings_of(data, &book, &detect, &input)?;
            let report = crate::summary::LedgerReport::new(&ledger, &d);
            emit(&crate::tables::render_findings(&findings, &report, format)?)?;
            let code = finish(&ledger, &d, &input.run);
            Ok(fail_on(
                code,
                findings.items.iter().map(|f| f.severity),
                detect.fail_on,
            ))
        }
        Config::Audit {
            input,
            defs,
            tags,
            format,
            fail_on: fail_on_sev,
        } => {
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), false);
            // Shadowing is decided from the definitions first, so that the one pass can
            // also count the tuples that confirm it.
            let watches = std::sync::Arc::new(crate::audit::watches(&defs, &tags));
            let make = || {
                (
                    crate::aggregate::Summary::default(),
                    crate::audit::Hits::new(watches.clone()),
                )
            };
            let options = || {
                let files: std::collections::BTreeSet<String> =
                    defs.iter().map(|d| d.file.display().to_string()).collect();
                let files: Vec<String> = files.into_iter().collect();
                let none = (&AddressBook::default(), &DetectOptions::default());
                state_options("audit", &input, none.0, none.1, &files)
            };
            let ((summary, hits), ledger) =
                order_free_pass(&input, &mut d, "audit", options, &|| bar.inc(1), make)?;
            bar.finish_and_clear();
            let a = crate::audit::audit(&defs, &hits, &tags, summary.first_ms, summary.last_ms);
            let ledger_report = crate::summary::LedgerReport::new(&ledger, &d);
            emit(&crate::tables::render_audit(&a, &ledger_report, format)?)?;
            let code = finish(&ledger, &d, &input.run);
            Ok(fail_on(
                code,
                a.findings.iter().map(|f| f.severity),
                fail_on_sev,
            ))
        }
        Config::Summary {
            input,
            format,
            save_partial,
            filters,
        } => {
            check_partial_target(save_partial.as_deref())?;
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), false);
            let ((mut s, coverage), ledger) = if input.state_dir.is_some() {
                let options = || {
                    let none = (&AddressBook::default(), &DetectOptions::default());
                    state_options("summary", &input, none.0, none.1, &[])
                };
                let make = crate::aggregate::SummaryFolds::default;
                order_free_pass(&input, &mut d, "summary", options, &|| bar.inc(1), make)?
            } else {
                summary_pass(&d.blobs, &input.run, &|| bar.inc(1))
            };
            bar.finish_and_clear();
            s.ledger = ledger;
            if let Some(p) = &save_partial {
                let header = state::Header::new(
                    "summary",
                    &input,
                    &filters,
                    &AddressBook::default(),
                    &d,
                    &DetectOptions::default(),
                );
                state::save(p, &header, &s.ledger, BodyRef::Summary(&s, &coverage))?;
            }
            let report = SummaryReport::new(&s, &coverage, &d);
            emit(&match format {
                Format::Json => report.to_json(),
                Format::Table => report.to_table(),
            })?;
            if format == Format::Json {
                // The table prints them; JSON on stdout leaves stderr to say them.
                coverage_warnings(&coverage);
            }
            Ok(finish(&s.ledger, &d, &input.run))
        }
        Config::Merge { partials, output } => merge(&partials, output),
        Config::Top {
            input,
            book,
            spec,
            connections,
            format,
        } => {
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), false);
            let tick = || bar.inc(1);
            let out = match connections {
                Some(metric) => {
                    let make = || TopConnections::new(metric, spec.n);
                    let ((), best, ledger) = if input.state_dir.is_some() {
                        let mut opts =
                            state_options("top", &input, &book, &DetectOptions::default(), &[])?;
                        opts["top"] = format!("connection {} {}", metric.name(), spec.n).into();
                        let ((), list, ledger) = state_pass(
                            &input,
                            &mut d,
                            "top",
                            opts,
                            &tick,
                            || (),
                            make,
                            crate::aggregate::connections::ConnList::default,
                        )?;
                        ((), TopConnections::from_list(metric, spec.n, list), ledger)
                    } else {
                        run_nics(&d.blobs, &input.run, &tick, || (), make)
                    };
                    (
                        render_top_connections(&best.finish(), metric, format)?,
                        ledger,
                    )
                }
                None => {
                    let make = || TopAgg::new(spec, &book);
                    let options = || {
                        let mut o =
                            state_options("top", &input, &book, &DetectOptions::default(), &[])?;
                        o["top"] =
                            format!("{:?} {:?} {:?}", spec.by, spec.metric, spec.group).into();
                        Ok(o)
                    };
                    let (agg, ledger) =
                        order_free_pass(&input, &mut d, "top", options, &tick, make)?;
                    (render_top(&agg, spec, format)?, ledger)
                }
            };
            bar.finish_and_clear();
            emit(&out.0)?;
            Ok(finish(&out.1, &d, &input.run))
        }
        Config::Flows {
            input,
            format,
            location,
            blob_list,
            force,
        } => {
            no_state(&input, "flows")?;
            let d = start(&input)?;
            if let Some(p) = &blob_list {
                // Before any work: a usage error costs no read.
                if !force && std::fs::symlink_metadata(p).is_ok() {
                    anyhow::bail!(
                        "--blob-list {}: the file exists; --force replaces it",
                        term_safe(&p.display().to_string())
                    );
                }
                crate::report::render::write_atomic(p, &crate::export::blob_list_csv(&d.blobs))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            let code = stream(&input, &d, |blobs, tick, out| {
                export_flows(blobs, &input.run, format, location, tick, out).map(|(l, _)| l)
            })?;
            if location == crate::export::Location::Index
                && blob_list.is_none()
                && !d.blobs.is_empty()
            {
                eprintln!(
                    "nsgflow: the blob column is each row's blob index among the {} blobs in path order: --blob-list FILE writes them, --location path puts paths in the rows",
                    d.blobs.len()
                );
            }
            Ok(code)
        }
        Config::Connections { input, format } => {
            no_state(&input, "connections")?;
            let d = start(&input)?;
            stream(&input, &d, |blobs, tick, out| {
                export_connections(blobs, &input.run, format, tick, out)
            })
        }
        Config::Timeline {
            input,
            bin_ms,
            format,
        } => {
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), false);
            let make = || Timeline::new(bin_ms);
            let options = || {
                let none = (&AddressBook::default(), &DetectOptions::default());
                let mut o = state_options("timeline", &input, none.0, none.1, &[])?;
                o["bin_ms"] = bin_ms.into();
                Ok(o)
            };
            let (tl, ledger) =
                order_free_pass(&input, &mut d, "timeline", options, &|| bar.inc(1), make)?;
            bar.finish_and_clear();
            if !tl.gaps_listed() {
                eprintln!(
                    "nsgflow: the tuples span more than {} bins of this width: only the non-empty bins are listed",
                    crate::aggregate::timeline::MAX_GAP_ROWS
                );
            }
            emit(&render_timeline(&tl, bin_ms, format)?)?;
            Ok(finish(&ledger, &d, &input.run))
        }
        Config::Graph {
            input,
            book,
            direction,
            group,
            top,
            weight,
            format,
        } => {
            let mut d = start(&input)?;
            let bar = progress_bar(d.blobs.len(), false);
            let make = || GraphAgg::new(direction, group, &book);
            let options = || {
                let mut o = state_options("graph", &input, &book, &DetectOptions::default(), &[])?;
                o["graph"] = format!("{direction:?} {group:?}").into();
                Ok(o)
            };
            let (g, ledger) =
                order_free_pass(&input, &mut d, "graph", options, &|| bar.inc(1), make)?;
            bar.finish_and_clear();
            let report = g.report(top, weight);
            emit(&match format {
                GraphFormat::Dot => report.to_dot(),
                GraphFormat::Json => to_json(&report),
            })?;
            Ok(finish(&ledger, &d, &input.run))
        }
        Config::Completions(shell) => {
            let script = crate::cli::completion_script(shell);
            emit(&String::from_utf8_lossy(&script))?;
            Ok(ExitCode::from(exit::OK))
        }
        Config::Man { out, force } => {
            let pages = crate::cli::man_pages().context("rendering the manual pages")?;
            let Some(dir) = out else {
                emit(&String::from_utf8_lossy(&pages[0].1))?;
                return Ok(ExitCode::from(exit::OK));
            };
            write_man_pages(&dir, &pages, force)?;
            eprintln!(
                "wrote {} manual pages into {} (nsgflow.1, nsgflow-report.1, ...)",
                pages.len(),
                term_safe(&dir.display().to_string())
            );
            Ok(ExitCode::from(exit::OK))
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

/// A progress bar on stderr for interactive runs; hidden when stderr is not a terminal or
/// with `quiet`.
fn progress_bar(blobs: usize, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(blobs as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} blobs [{elapsed_precise}] {wide_bar} {eta}",
        )
        .expect("valid template"),
    );
    b
}

/// `man --out DIR`: each page written atomically; a page already there (or a link in its
/// place) is replaced only with `--force`; `DIR` itself must not be a symbolic link.
fn write_man_pages(dir: &Path, pages: &[(String, Vec<u8>)], force: bool) -> anyhow::Result<()> {
    let shown = term_safe(&dir.display().to_string()).into_owned();
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        anyhow::bail!(
            "--out {shown} is a symbolic link; outputs never go through one: give the real folder"
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out {shown}: cannot create the folder"))?;
    if !force {
        if let Some((name, _)) = pages
            .iter()
            .find(|(n, _)| dir.join(n).symlink_metadata().is_ok())
        {
            anyhow::bail!("--out {shown}: {name} is already there; --force replaces the pages");
        }
    }
    for (name, bytes) in pages {
        let p = dir.join(name);
        crate::report::render::write_atomic(&p, bytes)
            .with_context(|| format!("writing {}", term_safe(&p.display().to_string())))?;
        // A manual page is no network data: readable by every user of the man path.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("writing {}", term_safe(&p.display().to_string())))?;
        }
    }
    Ok(())
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
fn emit(s: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// A streaming export to stdout through a large buffer; a closed pipe ends it quietly.
fn stream(
    input: &InputConfig,
    d: &Discovered,
    f: impl FnOnce(
        &[crate::discover::BlobMeta],
        &Progress<'_>,
        &mut (dyn Write + Send),
    ) -> std::io::Result<Ledger>,
) -> anyhow::Result<ExitCode> {
    let bar = progress_bar(d.blobs.len(), false);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    let result = f(&d.blobs, &|| bar.inc(1), &mut out).and_then(|l| out.flush().map(|_| l));
    bar.finish_and_clear();
    match result {
        Ok(l) => Ok(finish(&l, d, &input.run)),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::from(exit::OK)),
        Err(e) => Err(e).context("writing to stdout"),
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

/// Threads, then discovery (and `--shard`), reporting unusable inputs and an empty result on
/// stderr.
fn start(input: &InputConfig) -> anyhow::Result<Discovered> {
    set_threads(input.threads)?;
    if let Some(r) = &input.run.rejects {
        r.prepare()?;
    }
    let mut d = discover(&input.inputs, &input.discover);
    if let Some(first) = d.unusable.first() {
        for more in &d.unusable[1..] {
            eprintln!("nsgflow: {}", term_safe(more));
        }
        anyhow::bail!("{}", term_safe(first));
    }
    for r in &d.remote_listings {
        eprintln!(
            "{}: listed {} objects in {} requests, kept {} blobs for the window and filters",
            term_safe(&r.input),
            r.listed,
            r.requests,
            r.kept
        );
    }
    for s in &d.skipped {
        eprintln!(
            "{}: {}",
            term_safe(&crate::text::path_text(&s.path)),
            term_safe(&s.reason)
        );
    }
    for w in crate::summary::discovery_warnings(&d) {
        eprintln!("nsgflow: {}", term_safe(&w));
    }
    for x in &d.duplicates {
        eprintln!(
            "{}: {} as {}: read once, counted as duplicate_blob",
            term_safe(&crate::text::path_text(&x.path)),
            x.how,
            term_safe(&x.same_as.display().to_string())
        );
    }
    if let Some(shard) = input.shard {
        d.blobs = shard.select(std::mem::take(&mut d.blobs));
    }
    if d.blobs.is_empty() {
        eprintln!(
            "nsgflow: no flow-log blobs found under {}{} ({} left out by filters). \
             Blobs are *.json files such as .../macAddress=<MAC>/PT1H.json; check the path and --since/--until/--nsg.",
            term_safe(&input_names(input).join(", ")),
            match input.shard {
                Some(s) => format!(" in shard {}/{}", s.k, s.n),
                None => String::new(),
            },
            d.filtered_out
        );
    }
    Ok(d)
}

/// Coverage warnings (hours missing, double logging) on stderr, as the report and the
/// summary's table say them.
fn coverage_warnings(c: &crate::aggregate::coverage::Coverage) {
    for w in crate::summary::warnings(c) {
        eprintln!("nsgflow: {}", term_safe(&w));
    }
}

fn input_names(input: &InputConfig) -> Vec<String> {
    input
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// `--save-partial FILE` must be writable before any input is read: its folder exists and
/// takes a file.
fn check_partial_target(p: Option<&Path>) -> anyhow::Result<()> {
    if let Some(p) = p {
        state::check_target(p)?;
    }
    Ok(())
}

/// Report the ledger's problems on stderr and decide the exit code.
fn finish(l: &Ledger, d: &Discovered, run: &RunOptions) -> ExitCode {
    if !d.remote_listings.is_empty() {
        let (ahead, peak) = crate::source::prefetch_totals();
        eprintln!(
            "nsgflow: downloaded {ahead} blobs ahead of the parsers, at most {peak} bytes held at once (--download-budget {})",
            run.download_budget
        );
    }
    let strict = run.strict;
    if let Some(r) = &run.rejects {
        match r.finish(l, d) {
            Ok(n) => eprintln!(
                "nsgflow: wrote {} ({n} lines: {} rejected tuples, {} blob problems, {} skipped paths)",
                term_safe(&r.target().display().to_string()),
                l.tuples_rejected,
                l.problems.len(),
                d.skipped.len()
            ),
            Err(e) => {
                eprintln!("nsgflow: {}", term_safe(&format!("{e:#}")));
                return ExitCode::from(exit::USAGE);
            }
        }
    }
    report_problems(l);
    if l.records == 0 {
        if l.blobs > 0 {
            eprintln!(
                "nsgflow: no records: {} blobs read ({} empty, {} failed), none held a flow-log record",
                l.blobs, l.blobs_empty, l.blobs_failed
            );
        }
        return ExitCode::from(exit::NOTHING_READ);
    }
    let passed = l.tuples_accepted - l.tuples_filtered.min(l.tuples_accepted);
    if l.tuples_filtered > 0 && passed <= l.tuples_deduplicated {
        // A scheduled job whose filter matches nothing (a renamed NSG, a typo) must not
        // look like a quiet week.
        eprintln!(
            "nsgflow: no tuples matched the filters; {} tuples were read ({} outside the filters)",
            l.tuples, l.tuples_filtered
        );
        return ExitCode::from(exit::NOTHING_READ);
    }
    if l.has_losses() || d.skipped.iter().any(|s| s.is_loss()) {
        if strict && l.blobs_unread > 0 {
            eprintln!(
                "nsgflow: stopped early (--strict): input was rejected or failed; {} blobs left unread",
                l.blobs_unread
            );
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

/// `merge`: finish partial files into what one run over all their blobs prints or writes.
fn merge(paths: &[std::path::PathBuf], output: MergeOutput) -> anyhow::Result<ExitCode> {
    let out_dir = match &output {
        MergeOutput::Report { out, force, .. } => {
            Some(crate::report::render::prepare_dir(out, *force)?)
        }
        _ => None,
    };
    let mut parts = Vec::new();
    for p in paths {
        parts.push((p.clone(), state::load(p)?));
    }
    let merged = state::merge(parts)?;
    let d = merged.discovered();
    let strict = merged.header.options.strict;
    match (output, merged.body) {
        (MergeOutput::Summary(format), body) => {
            let (mut s, coverage) = body.into_summary();
            s.ledger = merged.ledger;

            let report = SummaryReport::new(&s, &coverage, &d);
            emit(&match format {
                Format::Json => report.to_json(),
                Format::Table => report.to_table(),
            })?;
            Ok(finish(
                &s.ledger,
                &d,
                &RunOptions {
                    strict,
                    ..RunOptions::default()
                },
            ))
        }
        (
            MergeOutput::Report {
                stamp,
                quiet,
                title,
                ..
            },
            Body::Report(mut data),
        ) => {
            if !merged.header.options.rules.is_empty() {
                eprintln!(
                    "note: the partials were made with --rules {}; merge does not rerun the rule audit, so the report has no Audit section: run `nsgflow audit <input> --rules ...` for it",
                    merged.header.options.rules.iter().map(|r| term_safe(r).into_owned()).collect::<Vec<_>>().join(" --rules ")
                );
            }
            data.ledger = merged.ledger;
            let book = merged.header.options.book()?;
            let filters = merged.header.options.filters.clone();
            let detect = merged.header.options.detect_options()?;
            let out = out_dir.expect("prepared above");
            let (code, findings) = write_report(
                &data,
                &d,
                &merged.header.inputs,
                filters,
                stamp,
                quiet,
                title,
                &book,
                &out,
                &RunOptions {
                    strict,
                    ..RunOptions::default()
                },
                || findings_of(data.detect_data(), &book, &detect, &InputConfig::default()),
                None,
                None,
            )?;
            Ok(fail_on(
                code,
                findings.items.iter().map(|f| f.severity),
                detect.fail_on,
            ))
        }
        (MergeOutput::Report { .. }, Body::Summary(..)) => Err(state::StateError::NotReport.into()),
    }
}

/// The findings of a finished pass, with the baseline `--baseline` names (a report partial,
/// or a folder read with the same options).
fn findings_of(
    data: crate::aggregate::DetectData<'_>,
    book: &AddressBook,
    opts: &DetectOptions,
    input: &InputConfig,
) -> anyhow::Result<Findings> {
    if !opts.enabled {
        return Ok(Findings::not_run());
    }
    let baseline = match &opts.baseline {
        None => None,
        Some(p) if p.is_file() => match state::load(p)?.body {
            Body::Report(b) => Some((b.detect, format!("partial {}", p.display()))),
            Body::Summary(..) => anyhow::bail!(
                "--baseline {}: a summary partial holds no detector state; use one from report --save-partial",
                p.display()
            ),
        },
        Some(p) => {
            let d = discover(std::slice::from_ref(p), &input.discover);
            if d.blobs.is_empty() {
                anyhow::bail!("--baseline {}: no flow-log blobs found", p.display());
            }
            let (_, b, _, _) = crate::aggregate::detect_pass(&d.blobs, &input.run.without_rejects(), &|| {});
            Some((b, format!("input {} ({} blobs)", p.display(), d.blobs.len())))
        }
    };
    let s = &data.summary;
    let (first, last) = (s.first_ms.unwrap_or(0), s.last_ms.unwrap_or(0));
    let cx = crate::detect::Context::new(
        book,
        &opts.config,
        first,
        last,
        baseline.as_ref().map(|(b, n)| (b, n.clone())),
    );
    let items = crate::detect::findings(data.detect, data.beacons, &cx, opts.min_severity);
    Ok(Findings::new(
        items,
        opts.min_severity,
        cx.baseline_name.clone(),
    ))
}

/// `--fail-on`: exit 4 when a finding at or above the severity exists (unless nothing was
/// read).
fn fail_on(
    code: ExitCode,
    mut severities: impl Iterator<Item = crate::detect::Severity>,
    limit: Option<crate::detect::Severity>,
) -> ExitCode {
    match limit {
        Some(sev) if code != ExitCode::from(exit::NOTHING_READ) && severities.any(|s| s >= sev) => {
            ExitCode::from(exit::FINDINGS)
        }
        _ => code,
    }
}

/// Assemble the report model from finished folds and write every file. `findings` (the
/// detectors' finish) runs beside the assembling of everything else, whose rayon jobs take
/// the core a detector's long finish leaves idle; returns the findings too.
#[allow(clippy::too_many_arguments)]
fn write_report(
    data: &crate::aggregate::ReportData,
    d: &Discovered,
    inputs: &[String],
    filters: Vec<String>,
    stamp: bool,
    quiet: bool,
    title: Option<String>,
    book: &AddressBook,
    out: &Path,
    run: &RunOptions,
    findings: impl FnOnce() -> anyhow::Result<Findings> + Send,
    audit: Option<&crate::audit::Audit>,
    previous: Option<&(String, crate::report::compare::Previous)>,
) -> anyhow::Result<(ExitCode, Findings)> {
    let none = Findings::not_run();
    let cx = ReportContext {
        previous,
        findings: &none,
        audit,
        inputs: inputs.to_vec(),
        filters,
        title,
        generated_at: stamp.then(|| {
            let now = crate::text::wall_ms();
            fmt_ms(now)
        }),
        book,
    };
    let (found, mut r) = rayon::join(findings, || assemble_traffic(data, d, &cx));
    add_findings(&mut r, found?, previous);
    let written = crate::report::render::write_all(&r, out)?;
    if !quiet {
        eprintln!(
            "wrote {} files to {} (open {})",
            written.len(),
            out.display(),
            out.join("index.html").display()
        );
    }
    Ok((finish(&data.ledger, d, run), r.findings))
}

/// `--state-dir`: the options that change a command's results, as the state keeps them.
/// The time window is left out: each unit keeps the cut the window made in it.
fn state_options(
    command: &str,
    input: &InputConfig,
    book: &AddressBook,
    detect: &DetectOptions,
    rule_files: &[String],
) -> anyhow::Result<serde_json::Value> {
    // Every filter but the window, as parsed (the same for every command).
    let filters = [format!("{:?}", input.run.filter.without_window())];
    let mut o = state::Options::new(input, &filters, book, detect);
    // The rules files' contents, not only their names: an edited file is another audit.
    let mut rules = Vec::new();
    for f in rule_files {
        let bytes = std::fs::read(f).with_context(|| format!("--rules {f}"))?;
        rules.push(format!("{f} xxh3:{}", state::incremental::hex128(&bytes)));
    }
    o.rules = rules;
    let mut v = serde_json::to_value(&o)?;
    let m = v.as_object_mut().expect("an object");
    m.insert("command".into(), command.into());
    m.insert(
        "max_blob_bytes".into(),
        input.run.parse.limits.max_bytes.into(),
    );
    m.insert("dedup".into(), input.run.parse.dedup.into());
    m.insert(
        "shard".into(),
        input.shard.map(|s| format!("{}/{}", s.k, s.n)).into(),
    );
    m.insert(
        "partial_format_version".into(),
        state::FORMAT_VERSION.into(),
    );
    Ok(v)
}

/// One pass through `--state-dir`: units unchanged since the last run come from the state,
/// the others are read; the state is then saved, and the ledger says which was which.
#[allow(clippy::too_many_arguments)]
fn state_pass<F, C>(
    input: &InputConfig,
    d: &mut Discovered,
    command: &str,
    options: serde_json::Value,
    progress: &Progress<'_>,
    make_fold: impl Fn() -> F + Sync,
    make_chain: impl Fn() -> C + Sync,
    empty_part: impl Fn() -> C::Part + Sync,
) -> anyhow::Result<(F, C::Part, Ledger)>
where
    F: Persist,
    C: Chain,
{
    let dir = input.state_dir.as_deref().expect("--state-dir given");
    let shown = term_safe(&dir.display().to_string()).into_owned();
    if input.run.rejects.is_some() {
        anyhow::bail!("--rejects cannot be used with --state-dir: blobs taken from the state are not read again, so their rejected tuples would be missing; run without --state-dir to write the rejects file");
    }
    if input.run.strict {
        anyhow::bail!("--strict cannot be used with --state-dir: a run stopped early leaves units half read; run the strict check without --state-dir");
    }
    let st = StateDir::open(dir, command, options)?;
    if let Some(why) = st.rebuilt() {
        eprintln!(
            "--state-dir {shown}: {}: rebuilding it with a full read",
            term_safe(why)
        );
    }
    let r = state::incremental::run(
        &st, &d.blobs, &input.run, progress, make_fold, make_chain, empty_part,
    )?;
    let mut stats = r.stats;
    if d.blobs.is_empty() {
        eprintln!("--state-dir {shown}: no blobs read, the state is left as it was");
    } else {
        stats.state_bytes = st.commit(&r.units)?;
        eprintln!(
            "--state-dir {shown}: {} blobs from the state, {} read ({} of {} NIC-days read, {} dropped); state {} bytes",
            stats.blobs_from_state,
            stats.blobs_read,
            stats.units_read,
            stats.units,
            stats.units_dropped,
            stats.state_bytes
        );
    }
    d.state = Some(stats);
    Ok((r.fold, r.part, r.ledger))
}

/// An order-free pass (no connection stitching): through `--state-dir` when it is given,
/// with the `options` that change the command's results, else one plain pass.
fn order_free_pass<F: Persist>(
    input: &InputConfig,
    d: &mut Discovered,
    command: &str,
    options: impl FnOnce() -> anyhow::Result<serde_json::Value>,
    progress: &Progress<'_>,
    make: impl Fn() -> F + Sync,
) -> anyhow::Result<(F, Ledger)> {
    if input.state_dir.is_none() {
        return Ok(run_folds(&d.blobs, &input.run, progress, make));
    }
    let (folds, (), ledger) = state_pass(
        input,
        d,
        command,
        options()?,
        progress,
        make,
        || NoChain,
        || (),
    )?;
    Ok((folds, ledger))
}

/// Commands whose output is not a mergeable aggregate do not take `--state-dir`.
fn no_state(input: &InputConfig, command: &str) -> anyhow::Result<()> {
    if input.state_dir.is_some() {
        anyhow::bail!("--state-dir works with summary, report, anomalies, audit, top, timeline and graph (their results merge from saved parts); `{command}` writes every row it reads, so there is no aggregate to keep: run it without --state-dir");
    }
    Ok(())
}
