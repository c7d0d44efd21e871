//! Small text helpers shared by renderers: time formatting and making untrusted strings
//! (rule names, resource ids from logs) safe for a terminal.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use std::borrow::Cow;

/// Unix milliseconds → RFC 3339 UTC with milliseconds (`2026-01-05T13:00:00.000Z`).
pub fn fmt_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Parse a time bound: RFC 3339 (`2026-01-05T13:00:00Z`), a date (`2026-01-05`, meaning
/// its midnight UTC), or a time relative to now ([`now_ms`]): `now`, `today`, `yesterday`
/// (midnights UTC), `now-24h`, `now+1h`, or a bare span meaning that long ago (`7d`,
/// `-36h`, `1w2d`; units `s`, `m`, `h`, `d`, `w`). Returns Unix milliseconds.
pub fn parse_time_bound(s: &str) -> Result<i64, String> {
    if let Some(ms) = parse_absolute(s) {
        return Ok(ms);
    }
    parse_relative(s, now_ms()?).ok_or_else(|| {
        format!(
            "{s:?} is not a time: use RFC 3339 (2026-01-05T13:00:00Z), a date (2026-01-05), \
             or one relative to now (7d, now-24h, today, yesterday)"
        )
    })
}

/// An absolute time bound (RFC 3339 or a date), or `None`.
pub fn parse_absolute(s: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(midnight_ms)
}

fn midnight_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

const DAY_MS: i64 = 86_400_000;

/// A time relative to `now` (Unix ms), as [`parse_time_bound`] takes it.
pub fn parse_relative(s: &str, now: i64) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "now" => return Some(now),
        "today" => return Some(now.div_euclid(DAY_MS) * DAY_MS),
        "yesterday" => return Some(now.div_euclid(DAY_MS) * DAY_MS - DAY_MS),
        _ => {}
    }
    let (sign, span) = if let Some(r) = s.strip_prefix("now-") {
        (-1, r)
    } else if let Some(r) = s.strip_prefix("now+") {
        (1, r)
    } else if let Some(r) = s.strip_prefix('-') {
        (-1, r)
    } else {
        (-1, s.as_str())
    };
    now.checked_add(sign * parse_span_ms(span)?)
}

/// A span like `7d`, `36h`, `1w2d`, `90m`, `30s` in milliseconds (at most 100 years).
pub fn parse_span_ms(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes().get(digits)? {
            b's' => 1_000,
            b'm' => 60_000,
            b'h' => 3_600_000,
            b'd' => DAY_MS,
            b'w' => 7 * DAY_MS,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    (total <= 36_525 * DAY_MS).then_some(total)
}

/// The last complete UTC period before `now`: `[start, end)` in Unix ms. A week is an ISO
/// week, Monday 00:00 to Monday 00:00.
pub fn last_period(period: Period, now: i64) -> (i64, i64) {
    let (end, len) = match period {
        Period::Hour => (now.div_euclid(3_600_000) * 3_600_000, 3_600_000),
        Period::Day => (now.div_euclid(DAY_MS) * DAY_MS, DAY_MS),
        Period::Week => {
            let day = now.div_euclid(DAY_MS);
            // 1970-01-01 was a Thursday: day 0 is 3 days after a Monday.
            ((day - (day + 3).rem_euclid(7)) * DAY_MS, 7 * DAY_MS)
        }
    };
    (end - len, end)
}

/// A period for `--last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
}

/// Now, in Unix milliseconds, once per process (every relative bound of one run agrees).
/// `NSGFLOW_NOW` (RFC 3339 or a date) sets it: to re-run a missed scheduled job as it
/// would have run, or to make a test's window fixed.
pub fn now_ms() -> Result<i64, String> {
    static NOW: std::sync::OnceLock<Result<i64, String>> = std::sync::OnceLock::new();
    NOW.get_or_init(|| match std::env::var("NSGFLOW_NOW") {
        Ok(v) => parse_absolute(&v)
            .ok_or_else(|| format!("NSGFLOW_NOW={v:?} is not a time: use RFC 3339 or a date")),
        Err(_) => Ok(wall_ms()),
    })
    .clone()
}

/// The wall clock in Unix milliseconds (what Azure is writing now; a report's stamp),
/// whatever `NSGFLOW_NOW` says.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A count in human units (`999`, `1.2 k`, `23.4 M`, `1.0 G`): for reading in the HTML
/// and Markdown reports; JSON and CSV keep exact values. Text that is no number (`not
/// logged`, `-`) comes back as it is.
pub fn human_count(v: impl std::fmt::Display) -> String {
    human(
        v.to_string(),
        &["", " k", " M", " G", " T", " P", " E", " Z", " Y"],
    )
}

/// Bytes in human units, decimal (`999 B`, `1.5 kB`, `23.4 GB`), as [`human_count`].
pub fn human_bytes(v: impl std::fmt::Display) -> String {
    human(
        v.to_string(),
        &[" B", " kB", " MB", " GB", " TB", " PB", " EB", " ZB", " YB"],
    )
}

fn human(text: String, units: &[&str]) -> String {
    let Ok(n) = text.parse::<u128>() else {
        return text;
    };
    if n < 1000 {
        return format!("{n}{}", units[0]);
    }
    let mut x = n as f64;
    let mut i = 0;
    // Round first: 999,960 is 1.0 M, not 1000.0 k.
    while (x * 10.0).round() / 10.0 >= 1000.0 && i < units.len() - 1 {
        x /= 1000.0;
        i += 1;
    }
    format!("{x:.1}{}", units[i])
}

/// [`human_count`] for HTML, the exact value in a tooltip: `<span title="1234567">1.2
/// M</span>`. Text that is no number is escaped.
pub fn count_html(v: impl std::fmt::Display) -> String {
    html_human(v.to_string(), human_count)
}

/// [`human_bytes`] for HTML, as [`count_html`].
pub fn bytes_html(v: impl std::fmt::Display) -> String {
    html_human(v.to_string(), human_bytes)
}

fn html_human(text: String, f: fn(String) -> String) -> String {
    match text.parse::<u128>() {
        Ok(n) if n >= 1000 => format!("<span title=\"{n}\">{}</span>", f(text)),
        Ok(_) => f(text),
        Err(_) => match askama::filters::escape(&text, askama::filters::Html) {
            Ok(safe) => safe.to_string(),
            Err(never) => match never {},
        },
    }
}

/// Characters that change how text around them reads without being seen: bidirectional
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069, U+061C, U+200E/U+200F, the
/// "Trojan Source" set), zero-width characters (U+200B–U+200D, U+2060–U+2064) and the BOM.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Replace control characters (ESC, CR, …) and invisible formatting characters (bidi
/// overrides, zero-width) with visible escapes (`\u{1b}`, `\u{202e}`), so a hostile rule
/// name cannot move the cursor, recolour the terminal or reorder what a reader sees.
pub fn term_safe(s: &str) -> Cow<'_, str> {
    if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_control()) {
        return Cow::Borrowed(s);
    }
    if !s.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || is_invisible(c) {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    Cow::Owned(o)
}

/// The `index.html` escaper (askama.toml): HTML escaping after [`term_safe`], so control and
/// invisible characters from logs (bidi overrides, zero-width) show as `\u{202e}` instead
/// of reordering or hiding what a reader sees.
#[derive(Clone, Copy, Debug, Default)]
pub struct VisibleHtml;

impl askama::filters::Escaper for VisibleHtml {
    fn write_escaped_str<W: std::fmt::Write>(&self, dest: W, s: &str) -> std::fmt::Result {
        askama::filters::Html.write_escaped_str(dest, &term_safe(s))
    }
}

/// Characters JSON output writes as `\uXXXX` although JSON allows them raw: DEL, the C1
/// controls and the invisible ones ([`is_invisible`]). The decoded string is unchanged; the
/// file read as text shows them.
fn json_hidden(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}') || is_invisible(c)
}

/// A serde_json formatter that writes [`json_hidden`] characters as escapes, around another
/// formatter (compact or pretty).
pub struct VisibleJson<F>(pub F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for VisibleJson<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.is_ascii() && !fragment.as_bytes().contains(&0x7f) {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if json_hidden(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Pretty JSON with [`VisibleJson`] escapes (every JSON document nsgflow prints or writes).
pub fn json_pretty<T: serde::Serialize + ?Sized>(v: &T) -> String {
    let mut out = Vec::with_capacity(4096);
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        VisibleJson(serde_json::ser::PrettyFormatter::new()),
    );
    v.serialize(&mut ser).expect("output serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// One compact JSON value with [`VisibleJson`] escapes (a JSON Lines row).
pub fn json_line<W: std::io::Write, T: serde::Serialize + ?Sized>(
    w: W,
    v: &T,
) -> serde_json::Result<()> {
    let mut ser =
        serde_json::Serializer::with_formatter(w, VisibleJson(serde_json::ser::CompactFormatter));
    v.serialize(&mut ser)
}

/// A plain-text table: columns padded to their widest cell, `numeric` columns right-aligned,
/// every cell made terminal-safe.
pub fn table(header: &[&str], rows: &[Vec<String>], numeric: &[usize]) -> String {
    let safe: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| term_safe(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &safe {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if numeric.contains(&i) {
                o.push_str(&" ".repeat(pad));
                o.push_str(c);
            } else {
                o.push_str(c);
                if i < last {
                    o.push_str(&" ".repeat(pad));
                }
            }
            if i < last {
                o.push_str("  ");
            }
        }
        o.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &safe {
        line(&mut r.iter().map(String::as_str));
    }
    o
}

/// Neutralise a CSV cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`,
/// tab, CR): prefix it with `'`, as OWASP's "CSV Injection" guidance recommends. Numbers
/// written by nsgflow itself never pass through here.
pub fn csv_safe(s: &str) -> std::borrow::Cow<'_, str> {
    // Control and invisible characters made visible first (see [`term_safe`]).
    let t = term_safe(s);
    match t.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => std::borrow::Cow::Owned(format!("'{t}")),
        _ => t,
    }
}

/// A path as text that keeps every byte apart: valid UTF-8 as is, each invalid byte as
/// `\xNN` (where `Path::display` would print U+FFFD and make two names look the same).
pub fn path_text(p: &std::path::Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in p.as_os_str().as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        p.display().to_string()
    }
}

/// A count and its noun, singular for one: `counted(1, "host", "hosts")` is "1 host",
/// `counted(3, "host", "hosts")` "3 hosts". Finding titles and reasons say what they count.
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", noun(n, one, many))
}

/// The noun for a count of `n`: `one` for 1, else `many`.
pub fn noun<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_safe("UserRule_Web"), "UserRule_Web");
        assert_eq!(csv_safe(""), "");
    }

    #[test]
    fn control_bidi_and_zero_width_characters_are_made_visible() {
        for (raw, shown) in [
            ("a\u{1b}[2Jb", "a\\u{1b}[2Jb"),
            ("bell\u{7}", "bell\\u{7}"),
            ("cr\rx", "cr\\rx"),
            ("Allow\u{202E}nI", "Allow\\u{202e}nI"),
            ("iso\u{2066}late", "iso\\u{2066}late"),
            ("zero\u{200B}width", "zero\\u{200b}width"),
        ] {
            assert_eq!(term_safe(raw), shown, "{raw:?}");
            assert_eq!(csv_safe(raw), shown, "{raw:?}");
        }
        assert_eq!(term_safe("Ünïcode rule"), "Ünïcode rule");
        assert_eq!(csv_safe("=\u{202E}x"), "'=\\u{202e}x");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        parse_absolute(s).unwrap()
    }

    #[test]
    fn counts_name_one_in_the_singular() {
        assert_eq!(counted(1, "host", "hosts"), "1 host");
        assert_eq!(counted(0, "host", "hosts"), "0 hosts");
        assert_eq!(
            counted(30, "internet source", "internet sources"),
            "30 internet sources"
        );
    }

    #[test]
    fn human_units_round_to_one_decimal_and_keep_text() {
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(1_234), "1.2 k");
        assert_eq!(human_count(999_960), "1.0 M");
        assert_eq!(human_count(23_400_000u64), "23.4 M");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(23_400_000_000u64), "23.4 GB");
        assert_eq!(human_bytes(u128::MAX), "340282366920938.4 YB");
        assert_eq!(human_bytes("not logged"), "not logged");
        assert_eq!(
            count_html(1_234_567),
            "<span title=\"1234567\">1.2 M</span>"
        );
        assert_eq!(bytes_html(12), "12 B");
        // Escaped as askama escapes the rest of the page.
        assert_eq!(bytes_html("<x>"), "&#60;x&#62;");
    }

    #[test]
    fn relative_bounds_count_back_from_now() {
        let now = t("2026-01-14T15:30:00Z");
        let at = |s| parse_relative(s, now);
        assert_eq!(at("now"), Some(now));
        assert_eq!(at("7d"), Some(t("2026-01-07T15:30:00Z")));
        assert_eq!(at("now-24h"), Some(t("2026-01-13T15:30:00Z")));
        assert_eq!(at("NOW+90m"), Some(t("2026-01-14T17:00:00Z")));
        assert_eq!(at("1w2d"), Some(t("2026-01-05T15:30:00Z")));
        assert_eq!(at("-3h"), Some(t("2026-01-14T12:30:00Z")));
        assert_eq!(at("today"), Some(t("2026-01-14")));
        assert_eq!(at("yesterday"), Some(t("2026-01-13")));
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "now-",
            "7d-",
            "--7d",
            "99999999999d",
            "now*2h",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_last_period_is_the_previous_complete_utc_hour_day_or_iso_week() {
        // A Wednesday afternoon.
        let now = t("2026-01-14T15:30:00Z");
        assert_eq!(
            last_period(Period::Hour, now),
            (t("2026-01-14T14:00:00Z"), t("2026-01-14T15:00:00Z"))
        );
        assert_eq!(
            last_period(Period::Day, now),
            (t("2026-01-13"), t("2026-01-14"))
        );
        // ISO week 2 of 2026: Monday 5 to Monday 12 January.
        assert_eq!(
            last_period(Period::Week, now),
            (t("2026-01-05"), t("2026-01-12"))
        );
        // On a Monday at midnight the week just ended is the last one.
        assert_eq!(
            last_period(Period::Week, t("2026-01-12")),
            (t("2026-01-05"), t("2026-01-12"))
        );
        // A Sunday still belongs to the week that started six days before.
        assert_eq!(
            last_period(Period::Week, t("2026-01-11T23:59:59Z")),
            (t("2025-12-29"), t("2026-01-05"))
        );
    }
}
