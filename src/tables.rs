//! Renderers of the analyst toolkit's answers (`top`, `top --by connection`, `timeline`) as
//! a terminal table, CSV (formula cells neutralised) or JSON. They read finished folds and
//! never recompute.

use crate::aggregate::connections::{ConnMetric, Connection};
use crate::aggregate::timeline::Timeline;
use crate::aggregate::top::{TopAgg, TopSpec};
use crate::cli::TableFormat;
use crate::export::{write_connections, RowFormat, CONNECTION_COLUMNS};
use crate::text::{fmt_ms, table};
use anyhow::Context;
use std::io::Write;

/// Pretty JSON with a trailing newline.
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = crate::text::json_pretty(v);
    s.push('\n');
    s
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
                w.write_record(r.iter().map(|c| crate::text::csv_safe(c).into_owned()))?;
            }
            String::from_utf8(w.into_inner().context("writing CSV")?)?
        }
        TableFormat::Json => unreachable!("JSON is rendered from the typed rows"),
    })
}

pub fn render_top(agg: &TopAgg<'_>, spec: TopSpec, format: TableFormat) -> anyhow::Result<String> {
    let rows = agg.rows();
    if format == TableFormat::Json {
        // Typed, not a `json!` value: sums past 2^64 are written exactly (a `Value` number
        // holds 64 bits).
        #[derive(serde::Serialize)]
        struct Top<'a> {
            by: String,
            metric: &'a str,
            rows: &'a [crate::aggregate::top::TopRow],
        }
        return Ok(to_json(&Top {
            by: format!("{:?}", spec.by).to_lowercase(),
            metric: spec.metric.name(),
            rows: &rows,
        }));
    }
    // The metric has a column of its own only when it is not one of the counts (the
    // distinct counts); CSV names its columns as JSON does, the table in capitals.
    use crate::aggregate::top::Metric;
    let own = matches!(
        spec.metric,
        Metric::DistinctDst | Metric::DistinctSrc | Metric::DistinctDport
    );
    let mut header: Vec<&str> = vec!["rank", "key", "scope", "label"];
    if own {
        header.push(spec.metric.name());
    }
    header.extend(["tuples", "allowed", "denied", "packets", "bytes"]);
    let upper: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let header: Vec<&str> = match format {
        TableFormat::Table => upper.iter().map(String::as_str).collect(),
        _ => header,
    };
    let cells = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.rank.to_string(),
                r.key.clone(),
                r.scope.clone().unwrap_or_default(),
                r.label.clone().unwrap_or_default(),
            ];
            if own {
                row.push(r.value.to_string());
            }
            row.extend([
                r.tuples.to_string(),
                r.allowed.to_string(),
                r.denied.to_string(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]);
            row
        })
        .collect();
    let numeric: Vec<usize> = (0..header.len()).filter(|i| *i == 0 || *i >= 4).collect();
    render_rows(&header, cells, &numeric, format)
}

pub fn render_top_connections(
    best: &[Connection],
    metric: ConnMetric,
    format: TableFormat,
) -> anyhow::Result<String> {
    Ok(match format {
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
                &serde_json::json!({ "by": "connection", "metric": metric.name(), "rows": rows }),
            )
        }
        TableFormat::Csv => {
            let mut buf = Vec::new();
            writeln!(buf, "{}", CONNECTION_COLUMNS.join(","))?;
            write_connections(best, RowFormat::Csv, &mut buf)?;
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
                        if c.counters_logged {
                            c.bytes().to_string()
                        } else {
                            crate::aggregate::rules::NOT_LOGGED.to_string()
                        },
                        (c.packets_src_to_dst as u128 + c.packets_dst_to_src as u128).to_string(),
                        format!("{}/{}", c.nsg, c.rule),
                    ]
                })
                .collect();
            table(&header, &rows, &[0, 2, 8, 9])
        }
    })
}

pub fn render_timeline(tl: &Timeline, bin_ms: i64, format: TableFormat) -> anyhow::Result<String> {
    let rows = tl.rows();
    if format == TableFormat::Json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            bin_ms: i64,
            /// Whether the empty bins between the first and the last are listed.
            gaps_listed: bool,
            bins: &'a [crate::aggregate::timeline::BinRow],
        }
        return Ok(to_json(&Out {
            bin_ms,
            gaps_listed: tl.gaps_listed(),
            bins: &rows,
        }));
    }
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
    render_rows(&header, cells, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], format)
}

/// `anomalies`: the findings as a table, CSV (one row each) or JSON (the contract:
/// `findings` with every field, the counts, what was checked, the baseline, the ledger).
pub fn render_findings(
    f: &crate::report::Findings,
    ledger: &crate::summary::LedgerReport,
    format: TableFormat,
) -> anyhow::Result<String> {
    if format == TableFormat::Json {
        return Ok(to_json(&serde_json::json!({
            "findings": f.items,
            "counts": f.counts,
            "min_severity": f.min_severity,
            "checked": f.checked,
            "baseline": f.baseline,
            "ledger": ledger,
        })));
    }
    if format == TableFormat::Csv {
        let rows = f.items.iter().map(crate::report::Finding::cells).collect();
        return render_rows(&crate::report::FINDING_COLUMNS, rows, &[], format);
    }
    let mut o = String::new();
    if f.items.is_empty() {
        o.push_str(&format!(
            "no findings at or above {} (checked: {})\n",
            f.min_severity.name(),
            f.checked.join(", ")
        ));
        return Ok(o);
    }
    o.push_str(&format!(
        "findings: {} ({} and above; baseline: {})\n\n",
        f.count_line(),
        f.min_severity.name(),
        crate::text::term_safe(&f.baseline)
    ));
    let short: Vec<Vec<String>> = f
        .items
        .iter()
        .map(|x| {
            vec![
                x.severity.name().to_string(),
                x.kind.to_string(),
                x.window
                    .first
                    .get(..16)
                    .unwrap_or(&x.window.first)
                    .to_string(),
                x.title.clone(),
            ]
        })
        .collect();
    o.push_str(&table(&["SEVERITY", "KIND", "FIRST", "WHAT"], &short, &[]));
    o.push_str("\n(why each fired, and its evidence: --format json or csv)\n");
    Ok(o)
}

/// `audit` output: findings first (what needs attention), then the rule table.
pub fn render_audit(
    a: &crate::audit::Audit,
    ledger: &crate::summary::LedgerReport,
    format: TableFormat,
) -> anyhow::Result<String> {
    use crate::audit::{FINDING_COLUMNS, RULE_COLUMNS};
    match format {
        TableFormat::Json => {
            #[derive(serde::Serialize)]
            struct Out<'a> {
                #[serde(flatten)]
                audit: &'a crate::audit::Audit,
                ledger: &'a crate::summary::LedgerReport,
            }
            Ok(to_json(&Out { audit: a, ledger }))
        }
        TableFormat::Csv => {
            let (header, rows) = crate::audit::csv_rows(a);
            render_rows(&header, rows, &[], format)
        }
        TableFormat::Table => {
            let mut o = String::new();
            if !a.definitions_given {
                o.push_str("definitions not given (--rules): only the hits per rule from the logs; unused, redundant and shadowed rules are not decided\n\n");
            } else if a.findings.is_empty() {
                o.push_str("no findings\n\n");
            } else {
                let rows: Vec<Vec<String>> = a.findings.iter().map(|f| f.cells()).collect();
                o.push_str(&render_rows(&FINDING_COLUMNS, rows, &[], format)?);
                o.push('\n');
            }
            let rows: Vec<Vec<String>> = a.rules.iter().map(|r| r.cells()).collect();
            o.push_str(&render_rows(
                &RULE_COLUMNS,
                rows,
                &[3, 8, 9, 10, 11, 13],
                format,
            )?);
            o.push_str(&format!(
                "\nwindow {} .. {}; VirtualNetwork = {} ({})\n",
                a.window["first"].as_str().unwrap_or("-"),
                a.window["last"].as_str().unwrap_or("-"),
                a.assumptions["virtual_network"]
                    .as_array()
                    .map(|v| v
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default(),
                a.assumptions["virtual_network_from"].as_str().unwrap_or("")
            ));
            Ok(o)
        }
    }
}
