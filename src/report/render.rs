//! Renderers: one small function per format, each reading the [`Report`] model (and the
//! charts drawn from it). Every string from a log is escaped for its format: HTML by the
//! template engine (askama autoescapes `.html` templates), Markdown by [`md`], CSV by
//! `csv_text` (quoting, and neutralising cells a spreadsheet would run as formulas).

use super::charts::{charts, Chart};
use super::{ConnectionRow, Finding, PortRow, Report, Talker, Talkers};
use crate::export::csv_text;
use crate::text::{human_bytes, human_count};
use askama::Template;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A file of the report: name relative to the output folder, and content.
pub struct OutFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// `report.json`: the model, pretty-printed.
pub fn json(r: &Report) -> String {
    let mut s = crate::text::json_pretty(r);
    s.push('\n');
    s
}

pub struct TalkerTable<'a> {
    pub title: &'static str,
    pub rows: &'a [Talker],
}

pub struct DirSection<'a> {
    pub name: &'static str,
    pub chart: Option<&'a Chart>,
    pub tables: Vec<TalkerTable<'a>>,
    pub ports: &'a [PortRow],
}

pub struct ConnTable<'a> {
    pub title: &'static str,
    pub rows: &'a [ConnectionRow],
}

#[derive(Template)]
#[template(path = "report.html")]
struct Html<'a> {
    r: &'a Report,
    charts: &'a [Chart],
    sections: Vec<DirSection<'a>>,
    conn_tables: Vec<ConnTable<'a>>,
    rejected: Vec<(&'static str, u64)>,
    /// The rules table's rows (all, or the [`MAX_RULE_ROWS`] with most hits).
    rules: Vec<&'a super::RuleRow>,
}

/// The HTML and Markdown rules tables list at most this many rules, those with the most
/// hits; `rules.csv` and `report.json` have every rule.
pub const MAX_RULE_ROWS: usize = 100;

/// The rules a page's table lists: all of them in their order when they fit, else the
/// [`MAX_RULE_ROWS`] with most hits, most first (ties by NSG and rule).
pub fn rules_shown(r: &Report) -> Vec<&super::RuleRow> {
    let mut v: Vec<&super::RuleRow> = r.rules.iter().collect();
    if v.len() > MAX_RULE_ROWS {
        v.sort_by_key(|x| std::cmp::Reverse(x.counters.tuples));
        v.truncate(MAX_RULE_ROWS);
    }
    v
}

/// "Showing the 100 rules with the most hits of 412; rules.csv has every rule." or nothing.
pub fn rules_note(r: &Report) -> Option<String> {
    (r.rules.len() > MAX_RULE_ROWS).then(|| {
        format!(
            "Showing the {MAX_RULE_ROWS} rules with the most hits of {}; rules.csv and report.json have every rule.",
            r.rules.len()
        )
    })
}

fn dir_section<'a>(name: &'static str, t: &'a Talkers, chart: Option<&'a Chart>) -> DirSection<'a> {
    DirSection {
        name,
        chart,
        tables: vec![
            TalkerTable {
                title: "Top sources",
                rows: &t.sources,
            },
            TalkerTable {
                title: "Top destinations",
                rows: &t.destinations,
            },
            TalkerTable {
                title: "Top pairs",
                rows: &t.pairs,
            },
        ],
        ports: &t.ports,
    }
}

/// `index.html`: self-contained (inline CSS and SVG, no scripts, a strict CSP).
pub fn html(r: &Report, charts: &[Chart]) -> Result<String, String> {
    let page = Html {
        r,
        charts,
        sections: vec![
            dir_section("Ingress (inbound to the NICs)", &r.ingress, charts.get(4)),
            dir_section("Egress (outbound from the NICs)", &r.egress, charts.get(5)),
        ],
        conn_tables: vec![
            ConnTable {
                title: "Largest by bytes",
                rows: &r.connections.top_by_bytes,
            },
            ConnTable {
                title: "Longest",
                rows: &r.connections.top_by_duration,
            },
        ],
        rules: rules_shown(r),
        rejected: r
            .ledger
            .rejected_by_reason
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (*k, *n))
            .collect(),
    };
    page.render().map_err(|e| e.to_string())
}

/// Escape text for a Markdown table cell: no markup, no links, no raw HTML, one line.
pub fn md(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '!' | '~' => {
                o.push('\\');
                o.push(c);
            }
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            // Control and invisible characters (bidi overrides, zero-width) made visible.
            c if c.is_control() || crate::text::is_invisible(c) => o.extend(c.escape_default()),
            c => o.push(c),
        }
    }
    o
}

fn md_table(o: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let _ = writeln!(o, "| {} |", header.join(" | "));
    let _ = writeln!(o, "|{}", header.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let _ = writeln!(o, "| {} |", r.join(" | "));
    }
    o.push('\n');
}

fn talker_rows(t: &[Talker]) -> impl Iterator<Item = Vec<String>> + '_ {
    t.iter().map(|x| {
        vec![
            md(&x.key),
            md(&x.scope),
            x.label.as_deref().map(md).unwrap_or_default(),
            human_count(x.tuples),
            human_count(x.allowed),
            human_count(x.denied),
            human_bytes(x.bytes),
        ]
    })
}

/// What the findings section says when the detectors did not run.
pub const NOT_RUN: &str = "The detectors did not run for this report (`--no-findings`): `nsgflow report` without it, or `nsgflow anomalies`, runs them.";

/// `report.md`: the same content for tickets and wikis, counts and bytes in human units
/// (`1.2 M`, `23.4 GB`; report.json and the CSV files have the exact values).
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let l = &r.ledger;
    let _ = writeln!(o, "# {}\n", md(&r.title));
    let _ = writeln!(
        o,
        "{}. Inputs: {}.",
        md(&r.generator),
        r.inputs
            .iter()
            .map(|i| format!("`{}`", i.replace('`', "'")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(at) = &r.generated_at {
        let _ = writeln!(o, "Written {at}.");
    }
    if !r.filters.is_empty() {
        let _ = writeln!(
            o,
            "Filters: {}.",
            r.filters
                .iter()
                .map(|f| md(f))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let f = &r.findings;
    let _ = writeln!(o, "\n## Findings\n");
    if !f.ran {
        let _ = writeln!(o, "{NOT_RUN}");
    } else if f.items.is_empty() {
        let _ = writeln!(
            o,
            "No findings at or above {}. Checked: {}.",
            f.min_severity.name(),
            f.checked.join(", ")
        );
    } else {
        let _ = writeln!(
            o,
            "{} ({} and above; baseline: {}).\n",
            f.count_line(),
            f.min_severity.name(),
            md(&f.baseline)
        );
        md_table(
            &mut o,
            &[
                "severity",
                "what",
                "who",
                "when",
                "why it fired",
                "evidence",
            ],
            f.items.iter().map(|x| {
                vec![
                    x.severity.name().to_string(),
                    md(&x.title),
                    md(&x.subject_line()),
                    format!("{} .. {}", x.window.first, x.window.last),
                    md(&x.threshold),
                    md(&x.first_evidence()),
                ]
            }),
        );
    }
    if let Some(c) = &r.comparison {
        let _ = writeln!(o, "\n## {}\n", md(&c.heading()));
        let _ = writeln!(o, "Compared with {}.", md(&c.previous));
        for t in c.tables() {
            let _ = writeln!(o, "\n### {}\n", t.title);
            if t.rows.is_empty() {
                let _ = writeln!(o, "{}", t.empty);
            } else {
                md_table(
                    &mut o,
                    &t.header,
                    t.rows.iter().map(|r| r.iter().map(|c| md(c)).collect()),
                );
            }
        }
    }
    if let Some(a) = &r.audit {
        let _ = writeln!(o, "\n## Audit\n");
        if a.findings.is_empty() {
            let _ = writeln!(o, "No rule findings.\n");
        } else {
            md_table(
                &mut o,
                &crate::audit::FINDING_COLUMNS,
                a.findings
                    .iter()
                    .map(|f| f.cells().iter().map(|c| md(c)).collect()),
            );
        }
        md_table(
            &mut o,
            &crate::audit::RULE_COLUMNS,
            a.rules
                .iter()
                .map(|x| x.cells().iter().map(|c| md(c)).collect()),
        );
    }
    let _ = writeln!(o, "\n## Ledger and coverage\n");
    md_table(
        &mut o,
        &[
            "blobs",
            "failed",
            "partial",
            "records",
            "tuples",
            "accepted",
            "rejected",
            "outside filters",
            "duplicates",
            "counted",
        ],
        std::iter::once(vec![
            l.blobs.to_string(),
            l.blobs_failed.to_string(),
            l.blobs_partial.to_string(),
            l.records.to_string(),
            l.tuples.to_string(),
            l.tuples_accepted.to_string(),
            l.tuples_rejected.to_string(),
            l.tuples_filtered.to_string(),
            l.duplicate_tuples.to_string(),
            r.totals.tuples.to_string(),
        ]),
    );
    let _ = writeln!(
        o,
        "Time covered: {} to {}. Families: {}.\n",
        r.coverage.first.as_deref().unwrap_or("-"),
        r.coverage.last.as_deref().unwrap_or("-"),
        r.coverage
            .families
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for w in &r.warnings {
        let _ = writeln!(o, "> **Warning:** {}\n", md(w));
    }
    if !r.coverage.nics.is_empty() {
        let _ = writeln!(o, "{}\n", r.coverage.complete_line());
    }
    if r.coverage.nics_with_gaps().next().is_some() {
        md_table(
            &mut o,
            &["NIC", "logs", "hours present", "hours missing"],
            r.coverage.nics_with_gaps().map(|n| {
                vec![
                    md(&n.mac),
                    n.kinds.join(", "),
                    n.hours_present.to_string(),
                    format!("{} of {}", n.hours_missing_count, r.coverage.hours_spanned),
                ]
            }),
        );
    }
    if l.tuples_rejected > 0 || !l.problems.is_empty() {
        let _ = writeln!(o, "### What was skipped\n");
        md_table(
            &mut o,
            &["reason", "tuples"],
            l.rejected_by_reason
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| vec![k.to_string(), n.to_string()]),
        );
        md_table(
            &mut o,
            &["where", "what"],
            l.reject_examples
                .iter()
                .map(|e| vec![md(&e.location()), md(&e.message)])
                .chain(l.problems.iter().map(|p| vec![md(&p.path), md(&p.message)])),
        );
    }
    let _ = writeln!(o, "## Rules\n");
    if let Some(n) = rules_note(r) {
        let _ = writeln!(o, "{n}\n");
    }
    md_table(
        &mut o,
        &[
            "NSG",
            "rule",
            "hits",
            "allowed",
            "denied",
            "in",
            "out",
            "bytes",
            "first seen",
            "last seen",
        ],
        rules_shown(r).into_iter().map(|x| {
            let c = &x.counters;
            vec![
                md(&x.label),
                md(&x.rule),
                human_count(c.tuples),
                human_count(c.allowed),
                human_count(c.denied),
                human_count(c.inbound),
                human_count(c.outbound),
                human_bytes(c.bytes_text()),
                x.first.clone().unwrap_or_else(|| "-".into()),
                x.last.clone().unwrap_or_else(|| "-".into()),
            ]
        }),
    );
    for (name, t) in [
        ("Ingress (inbound to the NICs)", &r.ingress),
        ("Egress (outbound from the NICs)", &r.egress),
    ] {
        let _ = writeln!(o, "## {name}\n");
        for (title, rows) in [
            ("Top sources", &t.sources),
            ("Top destinations", &t.destinations),
            ("Top pairs", &t.pairs),
        ] {
            let _ = writeln!(o, "### {title}\n");
            md_table(
                &mut o,
                &[
                    "endpoint", "scope", "label", "tuples", "allowed", "denied", "bytes",
                ],
                talker_rows(rows),
            );
        }
        let _ = writeln!(o, "### Top destination ports\n");
        md_table(
            &mut o,
            &["port", "tuples", "allowed", "denied", "bytes"],
            t.ports.iter().map(|p| {
                vec![
                    p.port.clone(),
                    human_count(p.tuples),
                    human_count(p.allowed),
                    human_count(p.denied),
                    human_bytes(p.bytes),
                ]
            }),
        );
    }
    let _ = writeln!(o, "## Connections\n");
    let _ = writeln!(
        o,
        "{} connections: {}.\n",
        r.connections.total,
        r.connections
            .by_status
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (title, rows) in [
        ("Largest by bytes", &r.connections.top_by_bytes),
        ("Longest", &r.connections.top_by_duration),
    ] {
        let _ = writeln!(o, "### {title}\n");
        md_table(
            &mut o,
            &[
                "start",
                "duration s",
                "source",
                "destination",
                "dir",
                "status",
                "bytes",
                "rule",
            ],
            rows.iter().map(|c| {
                vec![
                    c.start.clone(),
                    (c.duration_ms / 1000).to_string(),
                    md(&c.src),
                    md(&c.dst),
                    c.direction.to_string(),
                    c.status.to_string(),
                    human_bytes(c.bytes_text()),
                    md(&c.rule),
                ]
            }),
        );
    }
    let _ = writeln!(
        o,
        "Charts: {}.",
        [
            "decisions_per_hour",
            "bytes_per_hour",
            "rule_hits",
            "dest_ports",
            "ingress_flows",
            "egress_flows"
        ]
        .iter()
        .map(|c| format!("[{c}](charts/{c}.svg)"))
        .collect::<Vec<_>>()
        .join(", ")
    );
    o
}

fn csv_rows(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Vec<u8> {
    let mut o = Vec::new();
    let _ = writeln!(o, "{}", header.join(","));
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            csv_text(&mut o, c);
        }
        o.push(b'\n');
    }
    o
}

/// The CSV tables: rules, top talkers, ports, connections, rejects.
pub fn csv_tables(r: &Report) -> Vec<OutFile> {
    let header: Vec<&str> = ["nsg", "subscription", "resource_group", "rule"]
        .into_iter()
        .chain(crate::aggregate::Counters::COLUMNS)
        .chain(["first", "last"])
        .collect();
    let rules = csv_rows(
        &header,
        r.rules.iter().map(|x| {
            let mut row = vec![
                x.nsg.clone(),
                x.subscription.clone(),
                x.resource_group.clone(),
                x.rule.clone(),
            ];
            row.extend(x.counters.cells());
            row.push(x.first.clone().unwrap_or_default());
            row.push(x.last.clone().unwrap_or_default());
            row
        }),
    );
    let findings = csv_rows(
        &crate::report::FINDING_COLUMNS,
        r.findings.items.iter().map(Finding::cells),
    );
    let mut talkers = Vec::new();
    for (dir, t) in [("ingress", &r.ingress), ("egress", &r.egress)] {
        for (kind, rows) in [
            ("source", &t.sources),
            ("destination", &t.destinations),
            ("pair", &t.pairs),
        ] {
            for (i, x) in rows.iter().enumerate() {
                talkers.push(vec![
                    dir.to_string(),
                    kind.to_string(),
                    (i + 1).to_string(),
                    x.key.clone(),
                    x.scope.clone(),
                    x.label.clone().unwrap_or_default(),
                    x.tuples.to_string(),
                    x.allowed.to_string(),
                    x.denied.to_string(),
                    x.bytes.to_string(),
                ]);
            }
        }
    }
    let talkers = csv_rows(
        &[
            "direction",
            "kind",
            "rank",
            "key",
            "scope",
            "label",
            "tuples",
            "allowed",
            "denied",
            "bytes",
        ],
        talkers.into_iter(),
    );
    let ports = csv_rows(
        &["port", "tuples", "allowed", "denied", "bytes"],
        r.ports.iter().map(|p| {
            vec![
                p.port.clone(),
                p.tuples.to_string(),
                p.allowed.to_string(),
                p.denied.to_string(),
                p.bytes.to_string(),
            ]
        }),
    );
    let mut conns: Vec<Vec<String>> = r
        .connections
        .by_status
        .iter()
        .map(|(k, v)| {
            vec![
                "status".into(),
                k.to_string(),
                v.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]
        })
        .collect();
    for (list, rows) in [
        ("top_by_bytes", &r.connections.top_by_bytes),
        ("top_by_duration", &r.connections.top_by_duration),
    ] {
        for c in rows.iter() {
            conns.push(vec![
                list.into(),
                c.status.to_string(),
                c.bytes_text(),
                c.start.clone(),
                c.duration_ms.to_string(),
                c.src.clone(),
                c.dst.clone(),
                c.direction.to_string(),
                c.rule.clone(),
            ]);
        }
    }
    let conns = csv_rows(
        &[
            "list",
            "status",
            "count_or_bytes",
            "start",
            "duration_ms",
            "src",
            "dst",
            "direction",
            "rule",
        ],
        conns.into_iter(),
    );
    let mut rejects: Vec<Vec<String>> = r
        .ledger
        .rejected_by_reason
        .iter()
        .map(|(k, n)| vec![k.to_string(), n.to_string(), String::new(), String::new()])
        .collect();
    for e in &r.ledger.reject_examples {
        rejects.push(vec![
            e.reason.name().to_string(),
            String::new(),
            e.location(),
            e.message.clone(),
        ]);
    }
    for p in &r.ledger.problems {
        rejects.push(vec![
            crate::rejects::problem_reason(p.kind).to_string(),
            String::new(),
            match p.byte_offset {
                Some(b) => format!("{} (byte {b})", p.path),
                None => p.path.clone(),
            },
            p.message.clone(),
        ]);
    }
    for p in &r.ledger.skipped_paths {
        rejects.push(vec![
            "skipped_path".to_string(),
            String::new(),
            p.path.clone(),
            p.reason.clone(),
        ]);
    }
    let rejects = csv_rows(
        &["reason", "tuples", "example_location", "example_message"],
        rejects.into_iter(),
    );
    let mut files = vec![
        OutFile {
            name: "rules.csv".into(),
            bytes: rules,
        },
        OutFile {
            name: "top_talkers.csv".into(),
            bytes: talkers,
        },
        OutFile {
            name: "ports.csv".into(),
            bytes: ports,
        },
        OutFile {
            name: "connections.csv".into(),
            bytes: conns,
        },
        OutFile {
            name: "rejects.csv".into(),
            bytes: rejects,
        },
        OutFile {
            name: "findings.csv".into(),
            bytes: findings,
        },
    ];
    if let Some(a) = &r.audit {
        let (header, rows) = crate::audit::csv_rows(a);
        files.push(OutFile {
            name: "audit.csv".into(),
            bytes: csv_rows(&header, rows.into_iter()),
        });
    }
    files
}

/// Every file of the report.
pub fn all_files(r: &Report) -> Result<Vec<OutFile>, String> {
    let charts = charts(r)?;
    let mut files = vec![
        OutFile {
            name: "index.html".into(),
            bytes: html(r, &charts)?.into_bytes(),
        },
        OutFile {
            name: "report.json".into(),
            bytes: json(r).into_bytes(),
        },
        OutFile {
            name: "report.md".into(),
            bytes: markdown(r).into_bytes(),
        },
    ];
    files.extend(csv_tables(r));
    for c in charts {
        files.push(OutFile {
            name: format!("charts/{}", c.file),
            bytes: c.svg.into_bytes(),
        });
    }
    Ok(files)
}

/// The file that marks a folder as an nsgflow report (so a later run may replace it, and
/// discovery never reads a report as input).
pub const MARKER: &str = ".nsgflow-report";

/// Whether `dir` holds an nsgflow report: its marker, or (reports written before the
/// marker) both `report.json` and `index.html`.
pub fn is_report_dir(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
        || (dir.join("report.json").is_file() && dir.join("index.html").is_file())
}

/// Make sure `dir` can take the report before any input is read: refuse a symbolic link at
/// it or at its `charts/`, and a non-empty folder that is not an earlier report unless
/// `force`; create it and `charts/` (mode 0700: a report holds network data) and write a
/// test file.
pub fn prepare_dir(dir: &Path, force: bool) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let shown = dir.display();
    for p in [dir.to_path_buf(), dir.join("charts")] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            anyhow::bail!(
                "-o {shown}: {} is a symbolic link; outputs never go through one: give the real folder",
                p.display()
            );
        }
    }
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() && !force && !is_report_dir(dir) {
            anyhow::bail!(
                "-o {shown}: the folder is not empty and holds no earlier nsgflow report; give an empty or new folder, or --force to write into it"
            );
        }
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir.join("charts"))
        .with_context(|| format!("-o {shown}: cannot create the folder"))?;
    private_file_in(dir).with_context(|| format!("-o {shown}: cannot write in the folder"))?;
    Ok(dir.to_path_buf())
}

/// A temporary file in `dir`, mode 0600, to be renamed into place.
pub fn private_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(".nsgflow-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o600));
    }
    b.tempfile_in(dir)
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder (mode 0600),
/// written whole, then renamed over the target. A full disk leaves the old file or none, never a
/// cut-off one; a symbolic link at `path` is replaced, not written through.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = private_file_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Write the report into `dir` (see [`prepare_dir`]), each file atomically. Returns the
/// paths written.
pub fn write_all(r: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let files = all_files(r).map_err(|e| anyhow::anyhow!("drawing the report: {e}"))?;
    let mut written = Vec::new();
    write_atomic(&dir.join(MARKER), b"nsgflow report folder: a later report may replace its files; nsgflow never reads it as input\n")
        .with_context(|| format!("writing in {}", dir.display()))?;
    for f in files {
        let p = dir.join(&f.name);
        write_atomic(&p, &f.bytes).with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}
