//! The flow-tuple grammar, by hand: one comma-separated string in, one [`FlowTuple`] or a
//! named reject reason out. No allocation, no `str::split` iterator state: the fields are
//! sliced once and each is parsed with a tight loop. The grammar per family is in
//! `../shared/FORMATS.md` ("Tuples").

use crate::model::{Decision, Direction, Encryption, Family, FlowState, FlowTuple, Protocol};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Why a tuple (or a whole record's tuples) was rejected. The names are stable: they are
/// the keys of `rejected_by_reason` in JSON output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not the number of fields the record's family has (8 for v1, 13 for v2 and VNet).
    FieldCount,
    /// Timestamp empty, not a whole non-negative number, or outside 2015..2100.
    Timestamp,
    /// Source or destination is not an IPv4 or IPv6 address.
    IpAddress,
    /// A port is empty, not a number, or outside 0–65535.
    Port,
    /// Protocol empty; in VNet logs, not an IANA number 0–255.
    Protocol,
    /// Direction is not `I` or `O`.
    Direction,
    /// Decision is not `A` or `D` (NSG logs).
    Decision,
    /// Flow state is not `B`, `C`, `E` (NSG v2) or also `D` (VNet).
    FlowState,
    /// A counter is not a whole number, is negative, or exceeds u64.
    Counter,
    /// The record's `properties.Version` / `flowLogVersion` is not one nsgflow knows.
    UnknownVersion,
    /// An item of `flowTuples` that is not a string (a number, an object), or a
    /// `flowTuples` that is not an array (counted as one item).
    NotAString,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::FieldCount,
        RejectReason::Timestamp,
        RejectReason::IpAddress,
        RejectReason::Port,
        RejectReason::Protocol,
        RejectReason::Direction,
        RejectReason::Decision,
        RejectReason::FlowState,
        RejectReason::Counter,
        RejectReason::UnknownVersion,
        RejectReason::NotAString,
    ];
    pub const COUNT: usize = 11;

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "field_count",
            RejectReason::Timestamp => "timestamp",
            RejectReason::IpAddress => "ip_address",
            RejectReason::Port => "port",
            RejectReason::Protocol => "protocol",
            RejectReason::Direction => "direction",
            RejectReason::Decision => "decision",
            RejectReason::FlowState => "flow_state",
            RejectReason::Counter => "counter",
            RejectReason::UnknownVersion => "unknown_version",
            RejectReason::NotAString => "not_a_string",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rejected tuple: the reason and which field (0-based) was at fault. Cheap to return;
/// [`TupleError::describe`] builds the human message only when an example is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleError {
    pub reason: RejectReason,
    /// Field index at fault, or the number of fields found for `FieldCount`.
    pub field: usize,
}

const FIELD_NAMES: [&str; 13] = [
    "timestamp",
    "source IP",
    "destination IP",
    "source port",
    "destination port",
    "protocol",
    "direction",
    "decision",
    "flow state",
    "packets src→dst",
    "bytes src→dst",
    "packets dst→src",
    "bytes dst→src",
];

impl TupleError {
    /// A one-line description naming the field and its text, e.g.
    /// `source port "70000" out of range`.
    pub fn describe(&self, tuple: &str, family: Family) -> String {
        if self.reason == RejectReason::FieldCount {
            return format!(
                "{} fields, {} expected for {}",
                self.field,
                family.field_count(),
                family.name()
            );
        }
        if self.reason == RejectReason::UnknownVersion {
            return "record version not supported".to_string();
        }
        let text = tuple.split(',').nth(self.field).unwrap_or("");
        let name = match (family, self.field) {
            (Family::Vnet, 7) => "flow state",
            (Family::Vnet, 8) => "encryption",
            (_, i) => FIELD_NAMES.get(i).copied().unwrap_or("field"),
        };
        let what = match self.reason {
            RejectReason::Port => "is not a port (0-65535)",
            RejectReason::Counter => "is not a non-negative 64-bit count",
            RejectReason::Timestamp => "is not a Unix timestamp",
            RejectReason::IpAddress => "is not an IP address",
            RejectReason::Protocol if family == Family::Vnet => "is not an IANA protocol number",
            _ => "is not a known code",
        };
        format!("{name} {text:?} {what}")
    }
}

/// Split `s` into at most `MAX` fields; returns the number of fields (which may exceed
/// `MAX`, in which case only the first `MAX` are filled).
#[inline]
fn split_fields<'a, const MAX: usize>(s: &'a str, out: &mut [&'a str; MAX]) -> usize {
    let bytes = s.as_bytes();
    let mut n = 0;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b',' {
            if n < MAX {
                // SAFETY-free: slicing at an ASCII comma is always a char boundary.
                out[n] = &s[start..i];
            }
            n += 1;
            start = i + 1;
        }
    }
    if n < MAX {
        out[n] = &s[start..];
    }
    n + 1
}

/// Parse an unsigned decimal; `None` when empty, non-digit or overflowing u64.
#[inline]
fn parse_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(n)
}

#[inline]
fn parse_port(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + d as u32;
    }
    u16::try_from(n).ok()
}

/// IPv4 dotted quad with the same acceptance as `std` (no leading zeros, 0–255), fast path;
/// anything with a `:` goes to `std`'s IPv6 parser.
#[inline]
fn parse_ip(s: &str) -> Option<IpAddr> {
    let b = s.as_bytes();
    if b.len() <= 15 {
        let mut oct = [0u8; 4];
        let mut i = 0;
        let mut ok = true;
        for (k, o) in oct.iter_mut().enumerate() {
            let start = i;
            let mut v: u32 = 0;
            while i < b.len() && b[i].is_ascii_digit() && i - start < 4 {
                v = v * 10 + (b[i] - b'0') as u32;
                i += 1;
            }
            let len = i - start;
            if len == 0 || len > 3 || v > 255 || (len > 1 && b[start] == b'0') {
                ok = false;
                break;
            }
            *o = v as u8;
            if k < 3 {
                if i < b.len() && b[i] == b'.' {
                    i += 1;
                } else {
                    ok = false;
                    break;
                }
            }
        }
        if ok && i == b.len() {
            return Some(IpAddr::V4(Ipv4Addr::from(oct)));
        }
        if !s.contains(':') {
            return None;
        }
    }
    // `::ffff:10.0.0.4` is 10.0.0.4: one address, one key, one class, whichever way it is
    // written.
    s.parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        })
}

/// The times a blob's tuple may carry: 2015-01-01 (before NSG flow logs existed) up to
/// 2100-01-01. Outside it the tuple is a `timestamp` reject (the parser checks it per blob,
/// the tuple grammar does not), not a year 1970 or 10000 in a report.
pub const MIN_TIME_MS: i64 = 1_420_070_400_000;
pub const MAX_TIME_MS: i64 = 4_102_444_800_000;

/// Timestamp in milliseconds: values above 10^11 are already milliseconds (VNet logs, and a
/// 10^11-second timestamp would be in the year 5138), smaller ones are seconds.
#[inline]
fn parse_time_ms(s: &str) -> Option<i64> {
    let v = parse_u64(s)?;
    let ms = if v > 100_000_000_000 { v } else { v * 1000 };
    i64::try_from(ms).ok()
}

#[inline]
fn counter(s: &str, field: usize) -> Result<Option<u64>, TupleError> {
    if s.is_empty() {
        return Ok(None);
    }
    parse_u64(s).map(Some).ok_or(TupleError {
        reason: RejectReason::Counter,
        field,
    })
}

#[inline]
fn err(reason: RejectReason, field: usize) -> TupleError {
    TupleError { reason, field }
}

/// Eight ASCII zeros: a word XOR this holds each digit's value in its byte.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

const POW10: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// The high bit of every byte of `x` (a word XOR [`ASCII_ZEROS`]) that was no digit: a
/// byte is a digit when it is 0-9 here. Adding 0x76 sets the high bit of every byte above 9
/// (those of 0x8A and more carry into the next byte, but they have the bit already, and a
/// carry only reaches later bytes, never the first byte that is no digit).
#[inline(always)]
fn non_digits(x: u64) -> u64 {
    (x.wrapping_add(0x7676_7676_7676_7676) | x) & 0x8080_8080_8080_8080
}

/// The value of the first `len` (0-7) digits of `x` (a word XOR [`ASCII_ZEROS`], first
/// character in the lowest byte): shifted to the top, the bytes below become leading zeros.
#[inline(always)]
fn value_of(x: u64, len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        eight_digits(x << (64 - 8 * len))
    }
}

/// Eight digit values (0-9 in each byte, the most significant in the lowest byte) as a
/// number: pairs, then the four pairs in two multiplications.
#[inline(always)]
fn eight_digits(v: u64) -> u64 {
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let lo = (v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let hi = ((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    lo.wrapping_add(hi) >> 32
}

/// A single forward pass over the bytes for the common shape (IPv4, `T`/`U` or a number,
/// documented letters). Anything unusual returns `None` and goes to [`parse_tuple_slow`],
/// which gives the same answer for every input the fast path accepts and names the reason
/// for every input it rejects.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    /// Commas consumed: a tuple of n fields has exactly n-1.
    commas: usize,
}

impl Cursor<'_> {
    /// End of a field: a comma (consumed) or the end of input.
    #[inline(always)]
    fn sep(&mut self) -> Option<()> {
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                self.commas += 1;
                Some(())
            }
            None => Some(()),
            _ => None,
        }
    }

    /// The 8 bytes from `i` as a little-endian word (`None` for a tuple shorter than 8
    /// bytes). Near the end of the tuple the word is its last 8 bytes shifted down, so the
    /// bytes past the end read as zero, which is no digit.
    #[inline(always)]
    fn word(&self, i: usize) -> Option<u64> {
        if let Some(w) = self.b.get(i..i + 8) {
            return Some(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let n = self.b.len();
        if n < 8 || i > n {
            return None;
        }
        let w = u64::from_le_bytes(self.b[n - 8..].try_into().expect("8 bytes"));
        Some(w.checked_shr(8 * (i + 8 - n) as u32).unwrap_or(0))
    }

    /// Up to `max_len` (≤ 19, so no overflow) digits; longer runs go to the slow path.
    ///
    /// Eight bytes at a time (SWAR): the run's length is the position of the first byte that
    /// is no digit, found with one add and mask over the word, and its value comes from three
    /// multiplications (the 8-digit step of Lemire's `fast_float`). No branch depends on how
    /// long a field is, where a byte loop's exit did (IPv4 octets of 1 to 3 digits, ports,
    /// counters); `summary -j 1` on the 1 GB container takes 3.5-8% less CPU.
    #[inline(always)]
    fn digits(&mut self, max_len: usize) -> Option<(u64, usize)> {
        if let Some(w) = self.word(self.i) {
            let x = w ^ ASCII_ZEROS;
            let non = non_digits(x);
            if non != 0 {
                let len = (non.trailing_zeros() / 8) as usize;
                self.i += len;
                return (len <= max_len).then(|| (value_of(x, len), len));
            }
            // Eight digits or more (timestamps, large counters): one more word.
            if let Some(w2) = self.word(self.i + 8) {
                let x2 = w2 ^ ASCII_ZEROS;
                let non2 = non_digits(x2);
                if non2 != 0 {
                    let len2 = (non2.trailing_zeros() / 8) as usize;
                    let len = 8 + len2;
                    self.i += len;
                    let n = eight_digits(x) * POW10[len2] + value_of(x2, len2);
                    return (len <= max_len).then_some((n, len));
                }
            }
        }
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            n = n.wrapping_mul(10).wrapping_add(d as u64);
            self.i += 1;
        }
        let len = self.i - start;
        (len <= max_len).then_some((n, len))
    }

    #[inline(always)]
    fn number(&mut self) -> Option<u64> {
        let (n, len) = self.digits(19)?;
        if len == 0 {
            return None;
        }
        self.sep()?;
        Some(n)
    }

    #[inline(always)]
    fn counter(&mut self) -> Option<Option<u64>> {
        let (n, len) = self.digits(19)?;
        self.sep()?;
        Some((len > 0).then_some(n))
    }

    #[inline(always)]
    fn port(&mut self) -> Option<u16> {
        let (n, len) = self.digits(5)?;
        if len == 0 {
            return None;
        }
        self.sep()?;
        u16::try_from(n).ok()
    }

    #[inline(always)]
    fn ipv4(&mut self) -> Option<IpAddr> {
        let mut oct = [0u8; 4];
        for (k, o) in oct.iter_mut().enumerate() {
            let start = self.i;
            let (v, len) = self.digits(3)?;
            if len == 0 || v > 255 || (len > 1 && self.b[start] == b'0') {
                return None;
            }
            *o = v as u8;
            if k < 3 {
                if self.b.get(self.i) != Some(&b'.') {
                    return None;
                }
                self.i += 1;
            }
        }
        self.sep()?;
        Some(IpAddr::V4(Ipv4Addr::from(oct)))
    }

    /// A one-byte field.
    #[inline(always)]
    fn letter(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        self.sep()?;
        Some(c)
    }

    /// A field as text, up to the next comma.
    #[inline(always)]
    fn text(&mut self) -> &str {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i] != b',' {
            self.i += 1;
        }
        let s = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("\u{fffd}");
        if self.i < self.b.len() {
            self.i += 1;
            self.commas += 1;
        }
        s
    }
}

#[inline(always)]
pub(crate) fn fast(s: &str, family: Family) -> Option<FlowTuple> {
    let b = s.as_bytes();
    let mut c = Cursor { b, i: 0, commas: 0 };
    let ts = c.number()?;
    let time_ms = i64::try_from(if ts > 100_000_000_000 {
        ts
    } else {
        ts.checked_mul(1000)?
    })
    .ok()?;
    let src = c.ipv4()?;
    let dst = c.ipv4()?;
    let sport = c.port()?;
    let dport = c.port()?;
    let protocol = if family == Family::Vnet {
        match c.number()? {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            n if n <= 255 => Protocol::Number(n as u8),
            _ => return None,
        }
    } else {
        match c.letter()? {
            b'T' => Protocol::Tcp,
            b'U' => Protocol::Udp,
            _ => return None,
        }
    };
    let direction = match c.letter()? {
        b'I' => Direction::Inbound,
        b'O' => Direction::Outbound,
        _ => return None,
    };
    let mut t = FlowTuple {
        time_ms,
        src,
        dst,
        sport,
        dport,
        protocol,
        direction,
        decision: Decision::Allow,
        state: None,
        encryption: None,
        packets_s2d: None,
        bytes_s2d: None,
        packets_d2s: None,
        bytes_d2s: None,
    };
    match family {
        Family::NsgV1 | Family::NsgV2 => {
            t.decision = match c.letter()? {
                b'A' => Decision::Allow,
                b'D' => Decision::Deny,
                _ => return None,
            };
            if family == Family::NsgV2 {
                t.state = Some(match c.letter()? {
                    b'B' => FlowState::Begin,
                    b'C' => FlowState::Continuing,
                    b'E' => FlowState::End,
                    _ => return None,
                });
                // Exactly four counter fields follow: the last one may be empty, so count commas.
                t.packets_s2d = c.counter()?;
                t.bytes_s2d = c.counter()?;
                t.packets_d2s = c.counter()?;
                t.bytes_d2s = c.counter()?;
            }
        }
        Family::Vnet => {
            let state = match c.letter()? {
                b'B' => FlowState::Begin,
                b'C' => FlowState::Continuing,
                b'E' => FlowState::End,
                b'D' => FlowState::Denied,
                _ => return None,
            };
            t.state = Some(state);
            if state == FlowState::Denied {
                t.decision = Decision::Deny;
            }
            t.encryption = Some(Encryption::parse(c.text()));
            t.packets_s2d = Some(c.number()?);
            t.bytes_s2d = Some(c.number()?);
            t.packets_d2s = Some(c.number()?);
            t.bytes_d2s = Some(c.number()?);
        }
    }
    (c.i == b.len() && c.commas + 1 == family.field_count()).then_some(t)
}

/// Parse one tuple of the given family.
#[inline]
pub fn parse_tuple(s: &str, family: Family) -> Result<FlowTuple, TupleError> {
    match fast(s, family) {
        Some(t) => Ok(t),
        None => parse_tuple_slow(s, family),
    }
}

/// The fuzzing property of the tuple grammar (`fuzz/`, replayed by a test): for any bytes
/// that are UTF-8 and every family, the fast pass and the reference grammar agree (the
/// same tuple, or the same reason and field). Panics on a disagreement.
pub fn check_agreement(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for family in [Family::NsgV1, Family::NsgV2, Family::Vnet] {
        let slow = parse_tuple_slow(s, family);
        if let Some(t) = fast(s, family) {
            assert_eq!(
                Ok(t),
                slow,
                "fast and reference grammar disagree on {s:?} ({family:?})"
            );
        }
        assert_eq!(parse_tuple(s, family), slow, "{s:?} ({family:?})");
    }
}

/// The reference grammar: split, then parse each field, naming the first field at fault.
pub fn parse_tuple_slow(s: &str, family: Family) -> Result<FlowTuple, TupleError> {
    let mut f: [&str; 13] = [""; 13];
    let n = split_fields(s, &mut f);
    if n != family.field_count() {
        return Err(err(RejectReason::FieldCount, n));
    }
    let time_ms = parse_time_ms(f[0]).ok_or(err(RejectReason::Timestamp, 0))?;
    let src = parse_ip(f[1]).ok_or(err(RejectReason::IpAddress, 1))?;
    let dst = parse_ip(f[2]).ok_or(err(RejectReason::IpAddress, 2))?;
    let sport = parse_port(f[3]).ok_or(err(RejectReason::Port, 3))?;
    let dport = parse_port(f[4]).ok_or(err(RejectReason::Port, 4))?;
    let protocol = match (family, f[5]) {
        (Family::Vnet, p) => match parse_u64(p) {
            Some(6) => Protocol::Tcp,
            Some(17) => Protocol::Udp,
            Some(n) if n <= 255 => Protocol::Number(n as u8),
            _ => return Err(err(RejectReason::Protocol, 5)),
        },
        (_, "T") => Protocol::Tcp,
        (_, "U") => Protocol::Udp,
        (_, p) if p.len() == 1 && p.as_bytes()[0].is_ascii_graphic() => {
            Protocol::Letter(p.as_bytes()[0])
        }
        (_, p) => match parse_u64(p) {
            Some(6) => Protocol::Tcp,
            Some(17) => Protocol::Udp,
            Some(n) if n <= 255 => Protocol::Number(n as u8),
            _ => return Err(err(RejectReason::Protocol, 5)),
        },
    };
    let direction = match f[6] {
        "I" => Direction::Inbound,
        "O" => Direction::Outbound,
        _ => return Err(err(RejectReason::Direction, 6)),
    };
    match family {
        Family::NsgV1 | Family::NsgV2 => {
            let decision = match f[7] {
                "A" => Decision::Allow,
                "D" => Decision::Deny,
                _ => return Err(err(RejectReason::Decision, 7)),
            };
            let mut t = FlowTuple {
                time_ms,
                src,
                dst,
                sport,
                dport,
                protocol,
                direction,
                decision,
                state: None,
                encryption: None,
                packets_s2d: None,
                bytes_s2d: None,
                packets_d2s: None,
                bytes_d2s: None,
            };
            if family == Family::NsgV2 {
                t.state = Some(match f[8] {
                    "B" => FlowState::Begin,
                    "C" => FlowState::Continuing,
                    "E" => FlowState::End,
                    _ => return Err(err(RejectReason::FlowState, 8)),
                });
                t.packets_s2d = counter(f[9], 9)?;
                t.bytes_s2d = counter(f[10], 10)?;
                t.packets_d2s = counter(f[11], 11)?;
                t.bytes_d2s = counter(f[12], 12)?;
            }
            Ok(t)
        }
        Family::Vnet => {
            let state = match f[7] {
                "B" => FlowState::Begin,
                "C" => FlowState::Continuing,
                "E" => FlowState::End,
                "D" => FlowState::Denied,
                _ => return Err(err(RejectReason::FlowState, 7)),
            };
            Ok(FlowTuple {
                time_ms,
                src,
                dst,
                sport,
                dport,
                protocol,
                direction,
                decision: if state == FlowState::Denied {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
                state: Some(state),
                encryption: Some(Encryption::parse(f[8])),
                packets_s2d: counter(f[9], 9)?,
                bytes_s2d: counter(f[10], 10)?,
                packets_d2s: counter(f[11], 11)?,
                bytes_d2s: counter(f[12], 12)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RejectReason as R;

    fn reason(s: &str, fam: Family) -> Option<RejectReason> {
        parse_tuple(s, fam).err().map(|e| e.reason)
    }

    #[test]
    fn valid_tuples_of_each_family() {
        let t = parse_tuple(
            "1487282421,192.0.2.95,10.1.0.4,51529,5358,T,I,D",
            Family::NsgV1,
        )
        .unwrap();
        assert_eq!(t.time_ms, 1_487_282_421_000);
        assert_eq!(t.src, "192.0.2.95".parse::<IpAddr>().unwrap());
        assert_eq!((t.sport, t.dport), (51529, 5358));
        assert_eq!(t.protocol, Protocol::Tcp);
        assert_eq!(t.direction, Direction::Inbound);
        assert_eq!(t.decision, Decision::Deny);
        assert_eq!(t.state, None);
        assert_eq!(t.bytes_s2d, None);

        let t = parse_tuple(
            "1542110379,10.5.16.4,203.0.113.115,44931,443,T,O,A,C,30,16978,24,14008",
            Family::NsgV2,
        )
        .unwrap();
        assert_eq!(t.state, Some(FlowState::Continuing));
        assert_eq!(
            (t.packets_s2d, t.bytes_s2d, t.packets_d2s, t.bytes_d2s),
            (Some(30), Some(16978), Some(24), Some(14008))
        );
        let t = parse_tuple(
            "1542110402,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,",
            Family::NsgV2,
        )
        .unwrap();
        assert_eq!(t.protocol, Protocol::Udp);
        assert_eq!(t.bytes_s2d, None);

        let t = parse_tuple(
            "1663146003599,10.0.0.6,192.0.2.180,23956,443,6,O,B,NX,0,0,0,0",
            Family::Vnet,
        )
        .unwrap();
        assert_eq!(t.time_ms, 1_663_146_003_599);
        assert_eq!(t.decision, Decision::Allow);
        assert_eq!(t.encryption, Some(Encryption::NotEncrypted));
        assert_eq!(t.bytes_s2d, Some(0));
        let t = parse_tuple(
            "1663146003,10.0.0.6,192.0.2.180,23956,443,1,I,D,NX_FALLBACK,0,0,0,0",
            Family::Vnet,
        )
        .unwrap();
        assert_eq!(
            t.time_ms, 1_663_146_003_000,
            "seconds in VNet docs are scaled by magnitude"
        );
        assert_eq!(t.decision, Decision::Deny);
        assert_eq!(t.protocol, Protocol::Number(1));
        assert_eq!(t.encryption, Some(Encryption::Fallback));
    }

    #[test]
    fn ipv6_and_other_protocols_are_kept() {
        let t = parse_tuple(
            "1542110402,2001:db8::1,fd00::4,1,443,T,I,A,B,,,,",
            Family::NsgV2,
        )
        .unwrap();
        assert!(t.src.is_ipv6());
        let t = parse_tuple(
            "1542110402,10.0.0.1,10.0.0.2,0,0,I,I,A,B,,,,",
            Family::NsgV2,
        )
        .unwrap();
        assert_eq!(t.protocol, Protocol::Letter(b'I'));
        let t = parse_tuple("1,10.0.0.1,10.0.0.2,0,0,6,O,D,X9,0,0,0,0", Family::Vnet).unwrap();
        assert_eq!(t.encryption, Some(Encryption::Other));
    }

    #[test]
    fn each_reject_reason_has_a_case() {
        let v2 = Family::NsgV2;
        let table: &[(&str, Family, RejectReason)] = &[
            ("1,10.0.0.1,10.0.0.2,1,2,T,I,A", v2, R::FieldCount),
            ("1,10.0.0.1,10.0.0.2,1,2,T,I,A,B,,,,,", v2, R::FieldCount),
            (
                "1,10.0.0.1,10.0.0.2,1,2,T,I,A,B,,,,",
                Family::NsgV1,
                R::FieldCount,
            ),
            ("x1,10.0.0.1,10.0.0.2,1,2,T,I,A,B,,,,", v2, R::Timestamp),
            (",10.0.0.1,10.0.0.2,1,2,T,I,A,B,,,,", v2, R::Timestamp),
            ("-5,10.0.0.1,10.0.0.2,1,2,T,I,A,B,,,,", v2, R::Timestamp),
            ("1,10.0.0.256,10.0.0.2,1,2,T,I,A,B,,,,", v2, R::IpAddress),
            ("1,10.0.0.1,10.0..2,1,2,T,I,A,B,,,,", v2, R::IpAddress),
            ("1,10.0.0.1,host,1,2,T,I,A,B,,,,", v2, R::IpAddress),
            ("1,010.0.0.1,10.0.0.2,1,2,T,I,A,B,,,,", v2, R::IpAddress),
            ("1,10.0.0.1,10.0.0.2,70000,2,T,I,A,B,,,,", v2, R::Port),
            ("1,10.0.0.1,10.0.0.2,1,,T,I,A,B,,,,", v2, R::Port),
            ("1,10.0.0.1,10.0.0.2,1,-2,T,I,A,B,,,,", v2, R::Port),
            ("1,10.0.0.1,10.0.0.2,1,2,,I,A,B,,,,", v2, R::Protocol),
            ("1,10.0.0.1,10.0.0.2,1,2,T,X,A,B,,,,", v2, R::Direction),
            ("1,10.0.0.1,10.0.0.2,1,2,T,I,Q,B,,,,", v2, R::Decision),
            ("1,10.0.0.1,10.0.0.2,1,2,T,I,A,Z,,,,", v2, R::FlowState),
            ("1,10.0.0.1,10.0.0.2,1,2,T,I,A,E,1,-3,0,0", v2, R::Counter),
            ("1,10.0.0.1,10.0.0.2,1,2,T,I,A,E,1,abc,0,0", v2, R::Counter),
            (
                "1,10.0.0.1,10.0.0.2,1,2,T,I,A,E,1,18446744073709551616,0,0",
                v2,
                R::Counter,
            ),
            (
                "1,10.0.0.1,10.0.0.2,1,2,T,O,B,NX,0,0,0,0",
                Family::Vnet,
                R::Protocol,
            ),
            (
                "1,10.0.0.1,10.0.0.2,1,2,300,O,B,NX,0,0,0,0",
                Family::Vnet,
                R::Protocol,
            ),
            (
                "1,10.0.0.1,10.0.0.2,1,2,6,O,Q,NX,0,0,0,0",
                Family::Vnet,
                R::FlowState,
            ),
            (
                "1,10.0.0.1,10.0.0.2,1,2,6,O,B,NX,0,0,0",
                Family::Vnet,
                R::FieldCount,
            ),
        ];
        for (s, fam, want) in table {
            assert_eq!(reason(s, *fam), Some(*want), "{s}");
        }
        // u64::MAX itself is accepted.
        assert!(parse_tuple(
            "1,10.0.0.1,10.0.0.2,1,2,T,I,A,E,1,18446744073709551615,0,0",
            v2
        )
        .is_ok());
    }

    #[test]
    fn messages_name_field_and_text() {
        let s = "1,10.0.0.1,10.0.0.2,70000,2,T,I,A,B,,,,";
        let e = parse_tuple(s, Family::NsgV2).unwrap_err();
        assert_eq!(
            e.describe(s, Family::NsgV2),
            "source port \"70000\" is not a port (0-65535)"
        );
        let s = "1,10.0.0.1";
        let e = parse_tuple(s, Family::NsgV1).unwrap_err();
        assert_eq!(
            e.describe(s, Family::NsgV1),
            "2 fields, 8 expected for nsg_v1"
        );
    }

    #[test]
    fn fast_path_agrees_with_reference_grammar() {
        let seeds = [
            (
                "1542110379,10.5.16.4,203.0.113.115,44931,443,T,O,A,C,30,16978,24,14008",
                Family::NsgV2,
            ),
            (
                "1542110402,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,",
                Family::NsgV2,
            ),
            (
                "1487282421,192.0.2.95,10.1.0.4,51529,5358,T,I,D",
                Family::NsgV1,
            ),
            (
                "1663146003599,10.0.0.6,192.0.2.180,23956,443,6,O,B,NX,0,0,0,0",
                Family::Vnet,
            ),
            (
                "1663146003599,10.0.0.6,192.0.2.180,23956,443,17,I,D,X,1,2,3,4",
                Family::Vnet,
            ),
            (
                "1,1.2.3.4,255.255.255.255,0,65535,T,I,A,E,1234567890123456789,9,0,99999999",
                Family::NsgV2,
            ),
            (
                "1542110379,100.64.0.1,8.8.8.8,1,2,U,O,D,B,,,,",
                Family::NsgV2,
            ),
        ];
        let alphabet = b"0123456789.,TUIOADBCEXN:-";
        let mut rng = fastrand::Rng::with_seed(11);
        let rounds = std::env::var("NSGFLOW_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300_000);
        for _ in 0..rounds {
            let (seed, fam) = seeds[rng.usize(..seeds.len())];
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..b.len());
                match rng.u8(..3) {
                    0 => b[i] = alphabet[rng.usize(..alphabet.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[rng.usize(..alphabet.len())]),
                }
                if b.is_empty() {
                    break;
                }
            }
            let s = String::from_utf8(b).unwrap();
            assert_eq!(
                parse_tuple(&s, fam),
                parse_tuple_slow(&s, fam),
                "{s:?} {fam:?}"
            );
        }
        for (seed, fam) in seeds {
            assert!(fast(seed, fam).is_some(), "{seed}");
        }
    }

    /// The word-at-a-time digit reader against a byte loop: every start in random strings of
    /// digit runs (0 to 25 long) and other bytes, near the end of the input too.
    #[test]
    fn word_digits_agree_with_a_byte_loop() {
        fn by_bytes(b: &[u8], i: usize, max_len: usize) -> (Option<(u64, usize)>, usize) {
            let mut j = i;
            let mut n: u64 = 0;
            while j < b.len() && b[j].is_ascii_digit() {
                n = n.wrapping_mul(10).wrapping_add((b[j] - b'0') as u64);
                j += 1;
            }
            ((j - i <= max_len).then_some((n, j - i)), j)
        }
        let others = b",.:/ aT\x00\x7f\xff";
        let mut rng = fastrand::Rng::with_seed(5);
        let mut checked = 0;
        for _ in 0..20_000 {
            let mut b = Vec::new();
            while b.len() < 40 {
                for _ in 0..rng.usize(0..=25) {
                    b.push(b'0' + rng.u8(0..10));
                }
                b.push(others[rng.usize(..others.len())]);
            }
            b.truncate(rng.usize(0..=40));
            for i in 0..=b.len() {
                for max_len in [3, 5, 19] {
                    let mut c = Cursor {
                        b: &b,
                        i,
                        commas: 0,
                    };
                    let got = c.digits(max_len);
                    let (want, end) = by_bytes(&b, i, max_len);
                    assert_eq!(got, want, "{b:?} from {i}, max {max_len}");
                    if want.is_some() {
                        assert_eq!(c.i, end, "{b:?} from {i}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000_000);
        assert_eq!(eight_digits(0x0908_0706_0504_0302), 23_456_789);
        assert_eq!(
            value_of(u64::from_le_bytes(*b"1234567,") ^ ASCII_ZEROS, 7),
            1_234_567
        );
    }

    #[test]
    fn ipv4_fast_path_agrees_with_std() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"0123456789.:";
        for _ in 0..200_000 {
            let len = rng.usize(0..16);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                .collect();
            assert_eq!(parse_ip(&s), s.parse::<IpAddr>().ok(), "{s:?}");
        }
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.",
            "::1",
        ] {
            assert_eq!(parse_ip(s), s.parse::<IpAddr>().ok(), "{s:?}");
        }
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(parse_ip("::ffff:1.2.3.4"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_ip("::ffff:a00:4"), Some("10.0.0.4".parse().unwrap()));
    }
}
