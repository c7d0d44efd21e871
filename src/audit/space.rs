//! Match spaces of NSG rules and exact set arithmetic over them.
//!
//! A rule matches a set of (source address, destination address, destination port,
//! protocol). Each dimension is a union of intervals (addresses as `u128`, IPv4 mapped into
//! `::ffff:0:0/96`; ports `u16`) or a set (protocols, a bit mask), so a rule's space is a
//! union of boxes: the product of one interval per dimension. [`Space::subtract`] removes a
//! box exactly (a box minus a box is at most seven boxes), which is what deciding "is this
//! rule fully covered by the rules above it" needs: subtract every higher-priority rule in
//! turn and see whether anything is left. The source port is not a dimension: Azure rules
//! are nearly always `*` there, and the audit says when a rule restricts it.

use std::net::IpAddr;

/// Protocol bits.
pub const TCP: u8 = 1;
pub const UDP: u8 = 2;
pub const ICMP: u8 = 4;
pub const ESP: u8 = 8;
pub const AH: u8 = 16;
/// Every other IP protocol (`*` matches them too).
pub const OTHER: u8 = 32;
pub const ANY_PROTO: u8 = 63;

/// An address as a point of the address line: IPv4 mapped into `::ffff:0:0/96`.
pub fn addr_point(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => 0xffff_u128 << 32 | u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The interval of a network.
pub fn net_interval(net: &ipnet::IpNet) -> (u128, u128) {
    (addr_point(net.network()), addr_point(net.broadcast()))
}

/// The protocol bits of a rule's protocol (`Tcp`, `Udp`, `Icmp`, `Esp`, `Ah`, `*`).
pub fn proto_bits(p: &str) -> u8 {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => TCP,
        "udp" => UDP,
        "icmp" => ICMP,
        "esp" => ESP,
        "ah" => AH,
        _ => ANY_PROTO,
    }
}

/// One box: inclusive intervals and a protocol mask (non-empty when the box is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub src: (u128, u128),
    pub dst: (u128, u128),
    pub port: (u16, u16),
    pub proto: u8,
}

fn meet<T: Ord + Copy>(a: (T, T), b: (T, T)) -> Option<(T, T)> {
    let lo = a.0.max(b.0);
    let hi = a.1.min(b.1);
    (lo <= hi).then_some((lo, hi))
}

impl Cell {
    pub fn intersect(&self, o: &Cell) -> Option<Cell> {
        let proto = self.proto & o.proto;
        if proto == 0 {
            return None;
        }
        Some(Cell {
            src: meet(self.src, o.src)?,
            dst: meet(self.dst, o.dst)?,
            port: meet(self.port, o.port)?,
            proto,
        })
    }

    /// `self` minus `o`: disjoint boxes whose union is exactly the difference.
    pub fn minus(&self, o: &Cell, out: &mut Vec<Cell>) {
        let Some(i) = self.intersect(o) else {
            out.push(*self);
            return;
        };
        let mut rest = *self;
        // Peel off, one dimension at a time, the parts of `rest` outside the intersection.
        if rest.src.0 < i.src.0 {
            out.push(Cell {
                src: (rest.src.0, i.src.0 - 1),
                ..rest
            });
        }
        if i.src.1 < rest.src.1 {
            out.push(Cell {
                src: (i.src.1 + 1, rest.src.1),
                ..rest
            });
        }
        rest.src = i.src;
        if rest.dst.0 < i.dst.0 {
            out.push(Cell {
                dst: (rest.dst.0, i.dst.0 - 1),
                ..rest
            });
        }
        if i.dst.1 < rest.dst.1 {
            out.push(Cell {
                dst: (i.dst.1 + 1, rest.dst.1),
                ..rest
            });
        }
        rest.dst = i.dst;
        if rest.port.0 < i.port.0 {
            out.push(Cell {
                port: (rest.port.0, i.port.0 - 1),
                ..rest
            });
        }
        if i.port.1 < rest.port.1 {
            out.push(Cell {
                port: (i.port.1 + 1, rest.port.1),
                ..rest
            });
        }
        rest.port = i.port;
        let p = rest.proto & !i.proto;
        if p != 0 {
            out.push(Cell { proto: p, ..rest });
        }
    }
}

/// A union of disjoint boxes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    pub cells: Vec<Cell>,
}

/// More boxes than this in one remainder: the rule is too fragmented to decide exactly.
pub const MAX_CELLS: usize = 200_000;

impl Space {
    /// The product of unions of intervals per dimension.
    pub fn product(
        src: &[(u128, u128)],
        dst: &[(u128, u128)],
        ports: &[(u16, u16)],
        proto: u8,
    ) -> Space {
        let mut cells = Vec::new();
        for s in disjoint(src) {
            for d in disjoint(dst) {
                for p in disjoint(ports) {
                    if proto != 0 {
                        cells.push(Cell {
                            src: s,
                            dst: d,
                            port: p,
                            proto,
                        });
                    }
                }
            }
        }
        Space { cells }
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn intersects(&self, c: &Cell) -> bool {
        self.cells.iter().any(|x| x.intersect(c).is_some())
    }

    /// Remove `other` (exactly). `false` when the result outgrew [`MAX_CELLS`] (then `self`
    /// is left as it was).
    pub fn subtract(&mut self, other: &Space) -> bool {
        let mut cur = std::mem::take(&mut self.cells);
        let keep = cur.clone();
        for o in &other.cells {
            let mut next = Vec::with_capacity(cur.len());
            for c in &cur {
                c.minus(o, &mut next);
            }
            if next.len() > MAX_CELLS {
                self.cells = keep;
                return false;
            }
            cur = next;
        }
        self.cells = cur;
        true
    }

    /// Whether the point lies in the space.
    pub fn contains(&self, src: u128, dst: u128, port: u16, proto: u8) -> bool {
        self.cells.iter().any(|c| {
            c.proto & proto != 0
                && (c.src.0..=c.src.1).contains(&src)
                && (c.dst.0..=c.dst.1).contains(&dst)
                && (c.port.0..=c.port.1).contains(&port)
        })
    }
}

/// Sorted, merged, disjoint intervals.
pub fn disjoint<T: Ord + Copy + Step>(v: &[(T, T)]) -> Vec<(T, T)> {
    let mut v: Vec<(T, T)> = v.iter().copied().filter(|(a, b)| a <= b).collect();
    v.sort();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if a <= l.1 || l.1.next() == Some(a) => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The complement of disjoint sorted intervals within `[0, MAX]`.
pub fn complement(v: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let mut next = Some(0u128);
    for &(a, b) in &disjoint(v) {
        if let Some(n) = next {
            if a > n {
                out.push((n, a - 1));
            }
        }
        next = b.checked_add(1);
    }
    if let Some(n) = next {
        out.push((n, u128::MAX));
    }
    out
}

/// The successor of an interval end (for merging adjacent intervals).
pub trait Step: Sized {
    fn next(self) -> Option<Self>;
}
impl Step for u128 {
    fn next(self) -> Option<u128> {
        self.checked_add(1)
    }
}
impl Step for u16 {
    fn next(self) -> Option<u16> {
        self.checked_add(1)
    }
}

/// A port range as written (`*`, `22`, `1024-65535`).
pub fn port_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    if s == "*" {
        return Some((0, u16::MAX));
    }
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some((a, b))
        }
        None => s.parse().ok().map(|p| (p, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cell(s: (u128, u128), d: (u128, u128), p: (u16, u16), proto: u8) -> Cell {
        Cell {
            src: s,
            dst: d,
            port: p,
            proto,
        }
    }

    #[test]
    fn a_box_minus_a_box_is_exact_and_disjoint() {
        let a = cell((0, 9), (0, 9), (0, 9), TCP | UDP);
        let b = cell((3, 5), (0, 20), (4, 4), TCP);
        let mut out = Vec::new();
        a.minus(&b, &mut out);
        let vol = |c: &Cell| {
            (c.src.1 - c.src.0 + 1)
                * (c.dst.1 - c.dst.0 + 1)
                * (c.port.1 - c.port.0 + 1) as u128
                * c.proto.count_ones() as u128
        };
        let total: u128 = out.iter().map(vol).sum();
        // Removed: 3 sources x 10 destinations x 1 port x TCP.
        assert_eq!(total, 10 * 10 * 10 * 2 - 3 * 10);
        for (i, x) in out.iter().enumerate() {
            for y in &out[i + 1..] {
                assert!(x.intersect(y).is_none());
            }
            assert!(x.intersect(&b).is_none());
        }
    }

    #[test]
    fn complement_and_ports() {
        assert_eq!(complement(&[(0, 4), (10, u128::MAX)]), vec![(5, 9)]);
        assert_eq!(complement(&[]), vec![(0, u128::MAX)]);
        assert_eq!(port_range("1024-65535"), Some((1024, 65535)));
        assert_eq!(port_range("*"), Some((0, 65535)));
        assert_eq!(port_range("70000"), None);
        assert_eq!(
            disjoint(&[(5u16, 9), (0, 4), (20, 30)]),
            vec![(0, 9), (20, 30)]
        );
    }

    proptest! {
        /// Subtracting boxes agrees, point by point, with the naive "in a and not in any b".
        #[test]
        fn subtraction_agrees_with_pointwise_membership(
            a in (0u128..8, 0u128..8, 0u16..8, 1u8..4),
            bs in proptest::collection::vec((0u128..8, 0u128..8, 0u16..8, 0u128..4, 0u128..4, 0u16..4, 1u8..4), 0..5),
        ) {
            let a_cell = cell((a.0, a.0 + 3), (a.1, a.1 + 3), (a.2, a.2 + 3), a.3);
            let b_cells: Vec<Cell> = bs.iter().map(|b| cell((b.0, b.0 + b.3), (b.1, b.1 + b.4), (b.2, b.2 + b.5), b.6)).collect();
            let mut s = Space { cells: vec![a_cell] };
            let b_space = Space { cells: b_cells.clone() };
            prop_assert!(s.subtract(&b_space));
            let inside = |c: &Cell, x: u128, y: u128, p: u16, q: u8| {
                c.proto & q != 0 && (c.src.0..=c.src.1).contains(&x) && (c.dst.0..=c.dst.1).contains(&y) && (c.port.0..=c.port.1).contains(&p)
            };
            for x in 0..12u128 { for y in 0..12u128 { for p in 0..12u16 { for q in [1u8, 2] {
                let want = inside(&a_cell, x, y, p, q) && !b_cells.iter().any(|b| inside(b, x, y, p, q));
                prop_assert_eq!(s.contains(x, y, p, q), want, "{} {} {} {}", x, y, p, q);
            }}}}
        }
    }
}
