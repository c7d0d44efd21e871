//! Building a [`Report`] from the finished folds of one pass (or of merged partials): a pure
//! function of [`ReportData`], no parsing, scheduling or tallying here.

use super::*;
use crate::addr::AddressBook;
use crate::aggregate::connections::{Connection, Status, Tally as Stat};
use crate::aggregate::coverage::Coverage as CoverageFold;
use crate::aggregate::graph::{top_tallies, PairTally};
use crate::aggregate::traffic::{Hour, HOUR_MS};
use crate::aggregate::{ReportData, Summary};
use crate::discover::Discovered;
use crate::hash::HMap;
use crate::model::Protocol;
use crate::text::fmt_ms;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Rows per top list.
pub const TOP_N: usize = 15;
/// Missing hours listed per NIC (the count is always given).
const MISSING_LISTED: usize = 48;

fn talker(book: &AddressBook, ip: &IpAddr, s: &Stat) -> Talker {
    Talker {
        key: ip.to_string(),
        src: None,
        dst: None,
        scope: book.scope_name(ip).to_string(),
        label: book.label(ip).map(|(l, _)| l.to_string()),
        tuples: s.tuples,
        allowed: s.tuples - s.denied,
        denied: s.denied,
        bytes: s.bytes,
    }
}

fn port_rows(m: &HMap<(Protocol, u16), Stat>, n: usize) -> Vec<PortRow> {
    top_tallies(m, n)
        .into_iter()
        .map(|((p, port), s)| PortRow {
            port: format!("{port}/{p}"),
            tuples: s.tuples,
            allowed: s.tuples - s.denied,
            denied: s.denied,
            bytes: s.bytes,
        })
        .collect()
}

fn talkers(book: &AddressBook, pairs: &PairTally, ports: &HMap<(Protocol, u16), Stat>) -> Talkers {
    let (src, dst) = pairs.top_ends(TOP_N);
    Talkers {
        sources: src.iter().map(|(ip, s)| talker(book, ip, s)).collect(),
        destinations: dst.iter().map(|(ip, s)| talker(book, ip, s)).collect(),
        pairs: pairs
            .top_edges(TOP_N)
            .iter()
            .map(|((a, b), s)| {
                let la = book.label(a).map(|(l, _)| l);
                let lb = book.label(b).map(|(l, _)| l);
                Talker {
                    key: format!("{a} -> {b}"),
                    src: Some(a.to_string()),
                    dst: Some(b.to_string()),
                    scope: format!("{} -> {}", book.scope_name(a), book.scope_name(b)),
                    label: (la.is_some() || lb.is_some())
                        .then(|| format!("{} -> {}", la.unwrap_or("-"), lb.unwrap_or("-"))),
                    tuples: s.tuples,
                    allowed: s.tuples - s.denied,
                    denied: s.denied,
                    bytes: s.bytes,
                }
            })
            .collect(),
        ports: port_rows(ports, TOP_N),
    }
}

fn conn_row(c: &Connection) -> ConnectionRow {
    ConnectionRow {
        start: fmt_ms(c.start_ms),
        duration_ms: c.duration_ms(),
        src: format!("{}:{}", c.src, c.sport),
        dst: format!("{}:{}", c.dst, c.dport),
        service: format!("{}/{}", c.dport, c.protocol),
        direction: c.direction,
        status: c.status.name(),
        bytes: c.counters_logged.then(|| c.bytes()),
        packets: c.counters_logged.then(|| {
            c.packets_src_to_dst as crate::aggregate::rules::Sum
                + c.packets_dst_to_src as crate::aggregate::rules::Sum
        }),
        rule: format!("{}/{}", c.nsg, c.rule),
    }
}

fn coverage(s: &Summary, c: &CoverageFold) -> Coverage {
    let span = c.span();
    let mut families = BTreeMap::new();
    for (f, c) in s.family_counters() {
        if c.tuples > 0 {
            families.insert(f.name(), c.tuples);
        }
    }
    let nsgs: Vec<String> = crate::summary::nsg_labels(s)
        .into_values()
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    Coverage {
        first: s.first_ms.map(fmt_ms),
        last: s.last_ms.map(fmt_ms),
        families,
        nsgs,
        hours_spanned: span.len(),
        nics: c
            .nics
            .iter()
            .map(|(mac, seen)| {
                let missing: Vec<i64> = span
                    .iter()
                    .copied()
                    .filter(|h| !seen.hours.contains_key(h))
                    .collect();
                NicCoverage {
                    mac: mac.clone(),
                    kinds: seen.kind_names(),
                    hours_present: seen.hours.len(),
                    hours_missing_count: missing.len(),
                    hours_missing: missing
                        .iter()
                        .take(MISSING_LISTED)
                        .map(|h| fmt_ms(*h))
                        .collect(),
                }
            })
            .collect(),
    }
}

/// Most bins in the time series: the bin width grows (1 h, 2 h, 3 h, 6 h, 12 h, 1 d, 7 d,
/// 30 d, …) until the span fits, so a report over years stays readable and small.
const MAX_BINS: i64 = 400;

/// The hourly counts regrouped into at most [`MAX_BINS`] bins aligned to the epoch, dense
/// from the first to the last bin (empty bins as zeros). Returns (bin width ms, rows).
fn series(hours: &HMap<i64, Hour>) -> (i64, Vec<HourRow>) {
    let (Some(lo), Some(hi)) = (hours.keys().min().copied(), hours.keys().max().copied()) else {
        return (HOUR_MS, Vec::new());
    };
    let span_h = (hi - lo) / HOUR_MS + 1;
    let mut bin_h: i64 = 1;
    for b in [1, 2, 3, 6, 12, 24, 7 * 24, 30 * 24] {
        bin_h = b;
        if span_h / b < MAX_BINS {
            break;
        }
    }
    while span_h / bin_h >= MAX_BINS {
        bin_h *= 2;
    }
    let bin = bin_h * HOUR_MS;
    let mut bins: BTreeMap<i64, Hour> = BTreeMap::new();
    for (h, v) in hours {
        bins.entry(h - h.rem_euclid(bin)).or_default().add(v);
    }
    let (first, last) = (lo - lo.rem_euclid(bin), hi - hi.rem_euclid(bin));
    let mut rows = Vec::new();
    let mut at = first;
    while at <= last {
        let v = bins.get(&at).copied().unwrap_or_default();
        rows.push(HourRow {
            start: fmt_ms(at),
            allowed: v.allowed,
            denied: v.denied,
            bytes_in: v.bytes_in,
            bytes_out: v.bytes_out,
            nics_missing: 0,
            nics_double_logged: 0,
        });
        at += bin;
    }
    (bin, rows)
}

/// Every external source (of inbound pairs) and destination (of outbound pairs), and every
/// destination port, sorted: complete, for a later `--compare`.
fn endpoints(
    book: &AddressBook,
    pairs: &[PairTally; 2],
    ports: &HMap<(Protocol, u16), Stat>,
) -> compare::Endpoints {
    let ends = |t: &PairTally, dst: bool| -> Vec<String> {
        let mut v4: Vec<u32> =
            t.v4.keys()
                .map(|k| if dst { *k as u32 } else { (k >> 32) as u32 })
                .collect();
        v4.sort_unstable();
        v4.dedup();
        let v6: BTreeSet<IpAddr> =
            t.v6.keys()
                .map(|(a, b)| if dst { *b } else { *a })
                .collect();
        v4.into_iter()
            .map(|ip| IpAddr::from(ip.to_be_bytes()))
            .chain(v6)
            .filter(|ip| book.scope_name(ip) == "external")
            .map(|ip| ip.to_string())
            .collect()
    };
    let mut dports: Vec<(Protocol, u16)> = ports.keys().copied().collect();
    dports.sort_unstable_by_key(|(p, port)| (*port, p.code()));
    compare::Endpoints {
        external_sources: ends(&pairs[1], false),
        external_destinations: ends(&pairs[0], true),
        dports: dports
            .iter()
            .map(|(p, port)| format!("{port}/{p}"))
            .collect(),
    }
}

/// Mark each bin with the NICs that miss an hour of it or log one twice ([`HourRow`]).
fn mark_coverage(rows: &mut [HourRow], bin: i64, c: &CoverageFold) {
    let Some(first) = rows
        .first()
        .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.start).ok())
        .map(|t| t.timestamp_millis())
    else {
        return;
    };
    let index = |h: i64| -> Option<usize> {
        let i = (h - first).div_euclid(bin);
        (i >= 0 && (i as usize) < rows.len()).then_some(i as usize)
    };
    let span = c.span();
    let mut missing: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); rows.len()];
    for (mac, seen) in &c.nics {
        for h in span.iter().filter(|h| !seen.hours.contains_key(h)) {
            if let Some(i) = index(*h) {
                missing[i].insert(mac);
            }
        }
    }
    let mut double: Vec<BTreeSet<String>> = vec![BTreeSet::new(); rows.len()];
    for (mac, h) in c.double_logged() {
        if let Some(i) = index(h) {
            double[i].insert(mac);
        }
    }
    for (r, (m, d)) in rows.iter_mut().zip(missing.iter().zip(&double)) {
        r.nics_missing = m.len();
        r.nics_double_logged = d.len();
    }
}

/// Context the model records besides the data.
pub struct ReportContext<'a> {
    /// `--compare`: the previous report.json as given, and what was read of it.
    pub previous: Option<&'a (String, compare::Previous)>,
    pub findings: &'a Findings,
    /// The rule audit (`report --rules`).
    pub audit: Option<&'a crate::audit::Audit>,
    pub inputs: Vec<String>,
    pub filters: Vec<String>,
    /// `--title`; `None`: [`default_title`].
    pub title: Option<String>,
    pub generated_at: Option<String>,
    pub book: &'a AddressBook,
}

/// "Flow logs of A, B, 2026-01-05 00:00 to 2026-01-05 02:59 UTC": the inputs' last path
/// components (the first three, then how many more) and the window, to the minute.
pub fn default_title(inputs: &[String], first_ms: Option<i64>, last_ms: Option<i64>) -> String {
    let names: Vec<String> = inputs
        .iter()
        .map(|i| {
            let t = i.trim_end_matches('/');
            t.rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or(t)
                .to_string()
        })
        .collect();
    let mut what = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        what.push_str(&format!(" and {} more", names.len() - 3));
    }
    let minute = |ms: i64| {
        let t = fmt_ms(ms);
        format!("{} {}", &t[..10], &t[11..16])
    };
    match (first_ms, last_ms) {
        (Some(a), Some(b)) => format!("Flow logs of {what}, {} to {} UTC", minute(a), minute(b)),
        _ => format!("Flow logs of {what}"),
    }
}

/// Assemble the model from the finished folds. `d` gives what discovery skipped or left out.
pub fn assemble(data: &ReportData, d: &Discovered, cx: &ReportContext<'_>) -> Report {
    let mut r = assemble_traffic(data, d, cx);
    add_findings(&mut r, cx.findings.clone(), cx.previous);
    r
}

/// The findings, and then the comparison with `--compare`'s previous report (which compares
/// findings too): the last step of [`assemble`], apart so that a run can assemble the rest
/// ([`assemble_traffic`]) while the detectors finish.
pub fn add_findings(
    r: &mut Report,
    findings: Findings,
    previous: Option<&(String, compare::Previous)>,
) {
    r.findings = findings;
    if let Some((name, prev)) = previous {
        r.comparison = Some(compare::compare(r, prev, name));
    }
}

/// [`assemble`] but for its findings (`cx.findings` unread; [`Findings::not_run`]) and the
/// comparison: see [`add_findings`].
pub fn assemble_traffic(data: &ReportData, d: &Discovered, cx: &ReportContext<'_>) -> Report {
    let s = &data.summary;
    let (series_bin_ms, mut series) = series(&data.traffic.hours);
    mark_coverage(&mut series, series_bin_ms, &data.coverage);
    let pairs = &data.conns.pairs;
    let ports = &data.traffic.ports;
    // The two directions' top lists (the slowest part of assembling) are built at once.
    let (ingress, (egress, all_ports)) = rayon::join(
        || talkers(cx.book, &pairs[1], &ports[1]),
        || {
            (
                talkers(cx.book, &pairs[0], &ports[0]),
                data.traffic.all_ports(),
            )
        },
    );
    // The summary's warnings (double logging) are worded once, in `summary`.
    let mut warnings = crate::summary::warnings(&data.coverage);
    warnings.extend(crate::summary::discovery_warnings(d));
    Report {
        schema_version: SCHEMA_VERSION,
        title: cx
            .title
            .clone()
            .unwrap_or_else(|| default_title(&cx.inputs, s.first_ms, s.last_ms)),
        generator: format!("nsgflow {}", env!("CARGO_PKG_VERSION")),
        generated_at: cx.generated_at.clone(),
        inputs: cx.inputs.clone(),
        filters: cx.filters.clone(),
        findings: Findings::not_run(),
        audit: cx.audit.cloned(),
        ledger: LedgerSection::new(&data.ledger, d),
        coverage: coverage(s, &data.coverage),
        totals: s.totals,
        rules: crate::summary::rule_rows(s),
        ingress,
        egress,
        series_bin_ms,
        series,
        ports: port_rows(&all_ports, 20),
        endpoints: endpoints(cx.book, pairs, &all_ports),
        comparison: None,
        connections: {
            let c = &data.conns;
            let by_status: BTreeMap<&'static str, u64> = [
                Status::Completed,
                Status::Open,
                Status::Denied,
                Status::Stateless,
            ]
            .iter()
            .map(|s| (s.name(), c.by_status[*s as usize]))
            .filter(|(_, n)| *n > 0)
            .collect();
            ConnectionsSection {
                total: c.by_status.iter().sum(),
                by_status,
                top_by_bytes: c.top_bytes.sorted().iter().map(conn_row).collect(),
                top_by_duration: c.top_duration.sorted().iter().map(conn_row).collect(),
            }
        },
        warnings,
    }
}
