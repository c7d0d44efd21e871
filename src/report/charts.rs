//! SVG charts drawn with plotters' SVG backend (default features off: no system fonts; text
//! is laid out with plotters' built-in estimate and rendered by the viewer). Each chart reads
//! the [`Report`] model only. Labels from logs are stripped of control characters (invalid
//! in XML) and cut to a readable length; plotters escapes `<`, `>`, `&` and quotes.

use super::{Report, Talker};
use plotters::prelude::*;
use std::collections::BTreeMap;

/// One chart: file name (under `charts/`), title, SVG text.
#[derive(Clone, Debug)]
pub struct Chart {
    pub file: &'static str,
    pub title: &'static str,
    pub svg: String,
}

const W: u32 = 860;
const H: u32 = 340;
const FONT: &str = "sans-serif";
const GREEN: RGBColor = RGBColor(22, 163, 74);
const RED: RGBColor = RGBColor(220, 38, 38);
const BLUE: RGBColor = RGBColor(37, 99, 235);
const ORANGE: RGBColor = RGBColor(234, 88, 12);
const GREY: RGBColor = RGBColor(100, 116, 139);

/// A label from a log, safe for SVG text and short enough for an axis.
pub fn chart_label(s: &str, max: usize) -> String {
    // Control and invisible characters (bidi overrides, zero-width) shown as escapes.
    let clean = crate::text::term_safe(s).into_owned();
    if clean.chars().count() <= max {
        clean
    } else {
        let cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn hour_label(start: &str) -> String {
    // 2026-01-05T13:00:00.000Z -> 01-05 13h
    match (start.get(5..10), start.get(11..13)) {
        (Some(d), Some(h)) => format!("{d} {h}h"),
        _ => start.to_string(),
    }
}

fn empty_chart(title: &str) -> Res<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 80)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        root.draw(&Text::new(
            format!("{title}: no data"),
            (20, 40),
            (FONT, 16).into_font().color(&GREY),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// `hour`, `6 hours`, `day`, `week`, `30 days` for a bin width.
fn bin_name(ms: i64) -> String {
    let h = ms / 3_600_000;
    match h {
        1 => "hour".to_string(),
        24 => "day".to_string(),
        168 => "week".to_string(),
        h if h % 24 == 0 => format!("{} days", h / 24),
        h => format!("{h} hours"),
    }
}

/// Allowed and denied tuples per time bin, stacked bars.
/// The time axis' tick text at x: bin i's label at x = i, none between bins.
fn bin_label(labels: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-6 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

const AMBER: RGBColor = RGBColor(245, 158, 11);

/// Shade the bins where logs are missing (grey) or logged twice (amber), behind the data,
/// with a legend entry each when any bin has them: so that a drop or a rise there is not
/// read as a change of traffic. Bin i spans x = i - 0.5 .. i + 0.5.
fn shade_coverage<'a, Y>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    r: &Report,
    lo: Y::ValueType,
    hi: Y::ValueType,
) -> Res<()>
where
    Y: Ranged,
    Y::ValueType: Clone + 'static,
{
    type Mark = fn(&super::HourRow) -> bool;
    let marks: [(Mark, RGBColor, &str); 2] = [
        (|h| h.nics_missing > 0, GREY, "NIC logs missing"),
        (
            |h| h.nics_double_logged > 0,
            AMBER,
            "logged twice (NSG + VNet)",
        ),
    ];
    for (marked, colour, name) in marks {
        if !r.series.iter().any(marked) {
            continue;
        }
        chart
            .draw_series(
                r.series
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| marked(h))
                    .map(|(i, _)| {
                        let x = i as f64;
                        Rectangle::new(
                            [(x - 0.5, lo.clone()), (x + 0.5, hi.clone())],
                            colour.mix(0.18).filled(),
                        )
                    }),
            )
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.mix(0.35).filled())
            });
    }
    Ok(())
}

fn decisions_per_hour(r: &Report) -> Res<String> {
    let title = format!(
        "Allowed and denied tuples per {}",
        bin_name(r.series_bin_ms)
    );
    let title = title.as_str();
    if r.series.is_empty() {
        return empty_chart(title);
    }
    let n = r.series.len();
    let max = r
        .series
        .iter()
        .map(|h| h.allowed + h.denied)
        .max()
        .unwrap_or(1)
        .max(1);
    let labels: Vec<String> = r.series.iter().map(|h| hour_label(&h.start)).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0..max + max / 3 + 1)
            .map_err(err)?;
        // Bin i is centred on x = i, with a gap either side.
        let label = |v: &f64| bin_label(&labels, *v);
        let x_desc = format!("{} starting (UTC)", bin_name(r.series_bin_ms));
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(12))
            .x_label_formatter(&label)
            .x_desc(x_desc.as_str())
            .y_desc("tuples")
            .draw()
            .map_err(err)?;
        shade_coverage(&mut chart, r, 0, max + max / 3 + 1)?;
        let half = if n > 60 { 0.5 } else { 0.38 };
        let bar = |i: usize| (i as f64 - half, i as f64 + half);
        chart
            .draw_series(r.series.iter().enumerate().map(|(i, h)| {
                let (a, b) = bar(i);
                Rectangle::new([(a, 0), (b, h.allowed)], GREEN.mix(0.85).filled())
            }))
            .map_err(err)?
            .label("allowed")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], GREEN.filled()));
        chart
            .draw_series(r.series.iter().enumerate().map(|(i, h)| {
                let (a, b) = bar(i);
                Rectangle::new(
                    [(a, h.allowed), (b, h.allowed + h.denied)],
                    RED.mix(0.85).filled(),
                )
            }))
            .map_err(err)?
            .label("denied")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RED.filled()));
        // Upper right, in the headroom kept above the highest value: off the data.
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Bytes of inbound and outbound tuples per time bin, two lines.
fn bytes_per_hour(r: &Report) -> Res<String> {
    let title = format!(
        "Bytes per {}, inbound and outbound tuples",
        bin_name(r.series_bin_ms)
    );
    let title = title.as_str();
    if r.series.is_empty() {
        return empty_chart(title);
    }
    let n = r.series.len();
    let max = r
        .series
        .iter()
        .map(|h| h.bytes_in.max(h.bytes_out))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let labels: Vec<String> = r.series.iter().map(|h| hour_label(&h.start)).collect();
    let x_desc = format!("{} starting (UTC)", bin_name(r.series_bin_ms));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..max * 1.35 + 1.0)
            .map_err(err)?;
        // Point i at x = i, the middle of its bin.
        let label = |v: &f64| bin_label(&labels, *v);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(12))
            .x_label_formatter(&label)
            .y_label_formatter(&|v| human_bytes(v.max(0.0) as crate::aggregate::rules::Sum))
            .x_desc(x_desc.as_str())
            .y_desc("bytes")
            .draw()
            .map_err(err)?;
        shade_coverage(&mut chart, r, 0.0, max * 1.35 + 1.0)?;
        chart
            .draw_series(LineSeries::new(
                r.series
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (i as f64, h.bytes_in as f64)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("inbound")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                r.series
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (i as f64, h.bytes_out as f64)),
                ORANGE.stroke_width(2),
            ))
            .map_err(err)?
            .label("outbound")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], ORANGE.stroke_width(2)));
        // Upper right, in the headroom kept above the highest value: off the data.
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

pub use crate::text::human_bytes;

/// Horizontal bars: (label, allowed, denied), top to bottom.
fn hbars(title: &str, rows: &[(String, u64, u64)]) -> Res<String> {
    if rows.is_empty() {
        return empty_chart(title);
    }
    let n = rows.len();
    let max = rows.iter().map(|r| r.1 + r.2).max().unwrap_or(1).max(1);
    let h = (70 + 22 * n as u32).max(160);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(300)
            .build_cartesian_2d(0..max + max / 10 + 1, 0..n)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|i| {
                // Row 0 at the top.
                n.checked_sub(i + 1)
                    .and_then(|k| rows.get(k))
                    .map(|r| r.0.clone())
                    .unwrap_or_default()
            })
            .x_desc("tuples")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().flat_map(|(k, r)| {
                let y = n - 1 - k;
                [
                    Rectangle::new([(0, y), (r.1, y + 1)], GREEN.mix(0.85).filled()),
                    Rectangle::new([(r.1, y), (r.1 + r.2, y + 1)], RED.mix(0.85).filled()),
                ]
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn rule_hits(r: &Report) -> Res<String> {
    let mut rules: Vec<&super::RuleRow> =
        r.rules.iter().filter(|x| x.counters.tuples > 0).collect();
    rules.sort_by(|a, b| {
        b.counters
            .tuples
            .cmp(&a.counters.tuples)
            .then((&a.label, &a.rule).cmp(&(&b.label, &b.rule)))
    });
    let rows: Vec<(String, u64, u64)> = rules
        .iter()
        .take(15)
        .map(|x| {
            (
                chart_label(&format!("{}/{}", x.label, x.rule), 44),
                x.counters.allowed,
                x.counters.denied,
            )
        })
        .collect();
    hbars("Hits per rule (green allowed, red denied)", &rows)
}

fn ports(r: &Report) -> Res<String> {
    let rows: Vec<(String, u64, u64)> = r
        .ports
        .iter()
        .take(15)
        .map(|p| (p.port.clone(), p.allowed, p.denied))
        .collect();
    hbars("Destination ports (green allowed, red denied)", &rows)
}

/// Sources on the left, destinations on the right, one line per pair, width by tuples, red
/// when most of the pair's tuples were denied.
fn flow_picture(title: &str, pairs: &[Talker]) -> Res<String> {
    if pairs.is_empty() {
        return empty_chart(title);
    }
    let mut left: BTreeMap<&str, u64> = BTreeMap::new();
    let mut right: BTreeMap<&str, u64> = BTreeMap::new();
    for p in pairs {
        *left.entry(p.src.as_deref().unwrap_or("")).or_default() += p.tuples;
        *right.entry(p.dst.as_deref().unwrap_or("")).or_default() += p.tuples;
    }
    let order = |m: BTreeMap<&str, u64>| {
        let mut v: Vec<(&str, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
    };
    let (ls, rs) = (order(left), order(right));
    let rows = ls.len().max(rs.len()) as i32;
    let h = (84 + 26 * rows).max(184) as u32;
    let y_of = |i: usize, count: usize| -> i32 {
        let span = h as i32 - 94;
        74 + ((i as i32 * 2 + 1) * span) / (2 * count.max(1) as i32)
    };
    let (x_left, x_right) = (230, W as i32 - 230);
    let max = pairs.iter().map(|p| p.tuples).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        root.draw(&Text::new(
            title.to_string(),
            (12, 12),
            (FONT, 18).into_font(),
        ))
        .map_err(err)?;
        // The legend, under the title: what a line's width and colour say.
        let max_tuples = max as u64;
        let mut x = 12;
        let legend: [(RGBColor, u32, String); 3] = [
            (BLUE, 1, "1 tuple".to_string()),
            (
                BLUE,
                8,
                format!(
                    "{} tuples (widest pair)",
                    crate::text::human_count(max_tuples)
                ),
            ),
            (RED, 4, "mostly denied".to_string()),
        ];
        for (colour, width, text) in legend {
            root.draw(&PathElement::new(
                vec![(x, 44), (x + 28, 44)],
                colour.mix(0.55).stroke_width(width),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                text.clone(),
                (x + 36, 37),
                (FONT, 13).into_font(),
            ))
            .map_err(err)?;
            x += 36 + 7 * text.chars().count() as i32 + 24;
        }
        for p in pairs {
            let li = ls
                .iter()
                .position(|x| Some(x.as_str()) == p.src.as_deref())
                .unwrap_or(0);
            let ri = rs
                .iter()
                .position(|x| Some(x.as_str()) == p.dst.as_deref())
                .unwrap_or(0);
            let colour = if p.denied * 2 > p.tuples { RED } else { BLUE };
            let width = 1 + (7.0 * p.tuples as f64 / max).round() as u32;
            root.draw(&PathElement::new(
                vec![(x_left, y_of(li, ls.len())), (x_right, y_of(ri, rs.len()))],
                colour.mix(0.55).stroke_width(width),
            ))
            .map_err(err)?;
        }
        for (i, s) in ls.iter().enumerate() {
            let y = y_of(i, ls.len());
            root.draw(&Circle::new((x_left, y), 4, BLUE.filled()))
                .map_err(err)?;
            root.draw(&Text::new(
                chart_label(s, 28),
                (12, y - 7),
                (FONT, 13).into_font(),
            ))
            .map_err(err)?;
        }
        for (i, s) in rs.iter().enumerate() {
            let y = y_of(i, rs.len());
            root.draw(&Circle::new((x_right, y), 4, BLUE.filled()))
                .map_err(err)?;
            root.draw(&Text::new(
                chart_label(s, 28),
                (x_right + 12, y - 7),
                (FONT, 13).into_font(),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Every chart of the report, in the order the HTML shows them.
pub fn charts(r: &Report) -> Res<Vec<Chart>> {
    Ok(vec![
        Chart {
            file: "decisions_per_hour.svg",
            title: "Allowed and denied tuples per hour",
            svg: decisions_per_hour(r)?,
        },
        Chart {
            file: "bytes_per_hour.svg",
            title: "Bytes per hour",
            svg: bytes_per_hour(r)?,
        },
        Chart {
            file: "rule_hits.svg",
            title: "Hits per rule",
            svg: rule_hits(r)?,
        },
        Chart {
            file: "dest_ports.svg",
            title: "Destination ports",
            svg: ports(r)?,
        },
        Chart {
            file: "ingress_flows.svg",
            title: "Ingress: top source → destination pairs",
            svg: flow_picture(
                "Ingress: top pairs (sources left, NICs right)",
                &r.ingress.pairs,
            )?,
        },
        Chart {
            file: "egress_flows.svg",
            title: "Egress: top source → destination pairs",
            svg: flow_picture(
                "Egress: top pairs (NICs left, destinations right)",
                &r.egress.pairs,
            )?,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_show_control_characters_and_get_cut() {
        assert_eq!(
            chart_label("a\u{1b}[2Jb\u{202e}", 30),
            "a\\u{1b}[2Jb\\u{202e}"
        );
        assert_eq!(chart_label("abcdefghij", 5), "abcd…");
    }

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
