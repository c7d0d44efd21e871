//! `port_scan` (vertical): one source probing many destination ports of one host.
//!
//! Method: Threshold Random Walk (Jung, Paxson, Berger and Balakrishnan, "Fast Portscan
//! Detection Using Sequential Hypothesis Testing", IEEE S&P 2004), as SiLK's `rwscan` applies
//! it, over the source's first contacts with each port of the host in time order. A first
//! contact is a failure when it was denied, or allowed with no reply (a B and nothing back);
//! else a success. Each success multiplies the likelihood ratio by theta1/theta0 and each
//! failure by (1-theta1)/(1-theta0); the source is a scanner once the ratio reaches
//! eta1 = beta/alpha, benign once it falls to eta0 = (1-beta)/(1-alpha). Defaults are the
//! paper's and rwscan's: theta0 0.8 (a benign first contact succeeds 80% of the time), theta1
//! 0.2 (a scanner's 20%), alpha 0.01 (false positive rate), beta 0.99 (detection rate): four
//! failures in a row decide "scanner".
//!
//! TRW alone fires on a source that failed four times, which internet background radiation
//! does all day; a finding also needs `min_ports` distinct ports (default 20: more than the
//! favourite-port lists of common scanners and worms, Mirai's 2 and the ~10 of the usual
//! SSH/RDP/SMB/SQL sweepers).
//!
//! Slow scans that the NSG denied throughout are what every Internet-facing host sees all
//! day (Durumeric et al., "An Internet-Wide View of Internet-Wide Scanning", USENIX Security
//! 2014): like [`super::horizontal_sweep`], they are summarised as one `info` finding
//! (sources, hosts, ports) and a scan is raised on its own only when it stands out: a port
//! answered, a first contact was allowed, or it was fast, `fast_ports` distinct ports
//! (default 100) within `window_min` minutes (default 5): 20 ports a minute sustained, which
//! nmap's "polite" timing (-T2, 0.4 s between probes) and anything faster exceed, and the
//! trickle of background scanners does not. Severity: high when a scan of `medium_ports`
//! (100) ports or more found ports that answered, or a fast one reached `high_ports` (1000,
//! nmap's default list); medium when ports answered, when it was fast, or when it reached
//! `medium_ports` with a first contact allowed in; else low.
//!
//! This file also owns the first-contacts table that [`super::horizontal_sweep`] and
//! [`super::lateral_movement`] read: one entry per (source, destination, port, protocol), with
//! the first time, whether it ever succeeded, and the first tuple's location.

use super::{ip_key, ip_of, Context, Finding, Ip, Loc, Seen, Severity, Window};
use crate::hash::HMap;
use crate::text::counted;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `[port_scan]` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub theta0: f64,
    pub theta1: f64,
    pub alpha: f64,
    pub beta: f64,
    pub min_ports: usize,
    pub medium_ports: usize,
    pub high_ports: usize,
    pub fast_ports: usize,
    pub window_min: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            theta0: 0.8,
            theta1: 0.2,
            alpha: 0.01,
            beta: 0.99,
            min_ports: 20,
            medium_ports: 100,
            high_ports: 1000,
            fast_ports: 100,
            window_min: 5,
        }
    }
}

/// One first contact.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub first_ms: i64,
    /// Any tuple of it was answered.
    pub success: bool,
    /// Any tuple of it was allowed.
    pub allowed: bool,
    pub loc: Loc,
}

/// (source, destination, destination port, protocol code) → first contact.
pub type ContactKey = (Ip, Ip, u16, u16);

/// An IPv4 contact key in one `u128`: source, destination, port, protocol code. Packed keys
/// sort as their [`ContactKey`]s do.
#[inline]
fn pack4(src: u32, dst: u32, dport: u16, proto: u16) -> u128 {
    (src as u128) << 64 | (dst as u128) << 32 | (dport as u128) << 16 | proto as u128
}

#[inline]
fn unpack4(k: u128) -> ContactKey {
    (
        (k >> 64) as u32 as u128 | 1 << 127,
        (k >> 32) as u32 as u128 | 1 << 127,
        (k >> 16) as u16,
        k as u16,
    )
}

/// Fold `c` into the table's entry `m`: the earliest contact (ties by location) wins,
/// outcomes are or-ed. Commutative and associative, so no merge order shows in the result.
#[inline]
fn absorb(m: &mut Contact, c: &Contact) {
    if (c.first_ms, &c.loc) < (m.first_ms, &m.loc) {
        m.first_ms = c.first_ms;
        m.loc = c.loc;
    }
    m.success |= c.success;
    m.allowed |= c.allowed;
}

/// Sorted runs of contacts, one entry per key within a run, kept as a binary counter (each
/// run at least twice the next, so about log2(blobs) runs; a merge of tables keeps both
/// sides' runs, see [`Runs::absorb`]): a blob's table joins as a new run and equal-sized
/// runs merge, a sequential merge of sorted arrays where a run-wide hash
/// table would take a cache miss per entry. Readers see one entry per key through a k-way
/// merge ([`Runs::iter`]), in key order.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Runs<K> {
    runs: Vec<Vec<(K, Contact)>>,
}

impl<K> Default for Runs<K> {
    fn default() -> Self {
        Runs { runs: Vec::new() }
    }
}

/// Runs a table keeps at most after a merge of tables ([`Runs::absorb`]): a reader's step
/// looks at every run's head, and two threads' tables hold about 2 log2(blobs / 2) runs.
const MAX_RUNS: usize = 24;

impl<K: Ord + Copy> Runs<K> {
    /// Add a sorted run with one entry per key.
    fn push(&mut self, run: Vec<(K, Contact)>) {
        if run.is_empty() {
            return;
        }
        self.runs.push(run);
        while let [.., a, b] = &self.runs[..] {
            if a.len() >= 2 * b.len() {
                break;
            }
            let b = self.runs.pop().expect("two runs");
            let a = self.runs.pop().expect("two runs");
            self.runs.push(merge_runs(a, b));
        }
    }

    /// A table's entries as a run.
    fn push_unsorted(&mut self, mut run: Vec<(K, Contact)>) {
        run.sort_unstable_by_key(|e| e.0);
        self.push(run);
    }

    /// Take up a blob's run: it joins the binary counter ([`Runs::push`]). (A whole table's
    /// runs go in by [`Runs::absorb_table`].)
    fn absorb(&mut self, o: Runs<K>) {
        for r in o.runs {
            self.push(r);
        }
    }

    /// Take up a whole table's runs (another thread's, a partial's) as they are, even when
    /// it has one: that merge is a serial step after the pass, and merging the runs there
    /// copied every contact once more (0.15 s of one thread on the 1 GB container; a
    /// table of one run pushed into the binary counter merged all of both tables, 80 ms at
    /// the start of the report's finish) where the readers' k-way merge takes the extra
    /// runs in its stride. Only past [`MAX_RUNS`] (the merge of many partials) are the
    /// shortest runs merged.
    fn absorb_table(&mut self, o: Runs<K>) {
        self.runs
            .extend(o.runs.into_iter().filter(|r| !r.is_empty()));
        self.runs.sort_by_key(|r| std::cmp::Reverse(r.len()));
        while self.runs.len() > MAX_RUNS {
            let b = self.runs.pop().expect("two runs");
            let a = self.runs.pop().expect("two runs");
            let m = merge_runs(a, b);
            let at = self.runs.partition_point(|r| r.len() >= m.len());
            self.runs.insert(at, m);
        }
    }

    /// One entry per key, in key order.
    fn iter(&self) -> KMerge<'_, K> {
        KMerge {
            heads: self
                .runs
                .iter()
                .map(|r| &r[..])
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }

    /// One entry per key from `lo` on while `within` holds (a prefix of the key order), in
    /// key order.
    fn range(&self, lo: K, within: impl Fn(&K) -> bool) -> KMerge<'_, K> {
        KMerge {
            heads: self
                .runs
                .iter()
                .map(|r| {
                    let r = &r[r.partition_point(|e| e.0 < lo)..];
                    &r[..r.partition_point(|e| within(&e.0))]
                })
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }
}

/// Two sorted runs as one, equal keys absorbed.
fn merge_runs<K: Ord + Copy>(a: Vec<(K, Contact)>, b: Vec<(K, Contact)>) -> Vec<(K, Contact)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => out.push(a.next().expect("peeked")),
                std::cmp::Ordering::Greater => out.push(b.next().expect("peeked")),
                std::cmp::Ordering::Equal => {
                    let (mut x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    absorb(&mut x.1, &y.1);
                    out.push(x);
                }
            },
            (Some(_), None) => {
                out.extend(a);
                break;
            }
            (None, _) => {
                out.extend(b);
                break;
            }
        }
    }
    out
}

/// The k-way merge behind [`Runs::iter`]: the smallest head key, absorbed over every run
/// that has it.
struct KMerge<'a, K> {
    heads: Vec<&'a [(K, Contact)]>,
}

impl<K: Ord + Copy> Iterator for KMerge<'_, K> {
    type Item = (K, Contact);

    fn next(&mut self) -> Option<(K, Contact)> {
        if let [h] = &mut self.heads[..] {
            let (first, rest) = h.split_first()?;
            *h = rest;
            return Some(*first);
        }
        let k = self
            .heads
            .iter()
            .filter_map(|h| h.first())
            .map(|e| e.0)
            .min()?;
        let mut out: Option<Contact> = None;
        let mut ended = false;
        for h in &mut self.heads {
            if let Some((hk, c)) = h.first() {
                if *hk == k {
                    match &mut out {
                        None => out = Some(*c),
                        Some(m) => absorb(m, c),
                    }
                    *h = &h[1..];
                    ended |= h.is_empty();
                }
            }
        }
        if ended {
            // A run read to its end leaves the merge: fewer heads to look at on every step.
            self.heads.retain(|h| !h.is_empty());
        }
        out.map(|c| (k, c))
    }
}

/// A blob's IPv4 first contact while the blob is read: the blob is implied and the rule
/// is an index into [`Contacts::live_rules`], so an entry takes 40 bytes with its key where a
/// [`Contact`] takes 64 (the per-tuple probe is a cache miss; smaller entries miss less).
#[derive(Clone, Copy)]
struct Live {
    first_ms: i64,
    record: u32,
    tuple: u32,
    rule: u32,
    success: bool,
    allowed: bool,
}

/// The first-contacts table (see the module docs). Mergeable: the earliest contact wins,
/// outcomes are or-ed.
///
/// Two levels: the blob being read goes to hash tables small enough for the cache (`live4`,
/// `live6`); when it ends ([`Contacts::merge`] into the run's table) they become a sorted
/// run of [`Runs`].
#[derive(Default, Serialize, Deserialize)]
pub struct Contacts {
    /// IPv4 contacts by [`pack4`] key.
    v4: Runs<u128>,
    /// Contacts with an IPv6 end.
    v6: Runs<ContactKey>,
    /// The blob being read: IPv4 contacts by [`pack4`] key as two words.
    #[serde(skip)]
    live4: HMap<(u64, u64), Live>,
    #[serde(skip)]
    live6: HMap<ContactKey, Contact>,
    /// The blob of the live tables, and its rules by [`Live::rule`].
    #[serde(skip)]
    live_blob: u64,
    #[serde(skip)]
    live_rules: Vec<u64>,
    /// A direct-mapped cache of IPv4 contacts in front of `live4` (empty until the first
    /// one): see [`Contacts::see`].
    #[serde(skip)]
    cache: Box<[Cached]>,
}

/// Slots of [`Contacts::cache`]: 1,024 of 48 bytes, 48 KiB, within the core's L2 where a
/// blob's `live4` is not (8.7 K contacts, 650 KiB with hashbrown's growth on the generated
/// container). Measured on a generated blob, 70% of tuples repeat a contact their own table
/// already had (one host's connections to one service within the minute); 1,024 slots keep
/// 85% of tuples out of `live4` (256: 72%).
const CACHE_SLOTS: usize = 1 << 10;

/// One slot of [`Contacts::cache`]: an IPv4 contact key and what the blob's tuples of it
/// added up to since it took the slot. `live.rule == EMPTY` marks a free slot.
#[derive(Clone, Copy)]
struct Cached {
    key: u128,
    live: Live,
}

/// [`Live::rule`] of a free cache slot (no table has that many rules).
const EMPTY: u32 = u32::MAX;

const FREE: Cached = Cached {
    key: 0,
    live: Live {
        first_ms: 0,
        record: 0,
        tuple: 0,
        rule: EMPTY,
        success: false,
        allowed: false,
    },
};

/// The slot of a packed key: Fibonacci hashing (Knuth, TAOCP vol. 3, 6.4) of both halves.
/// Not seeded: crafted keys that share a slot only send every tuple to `live4`, which is
/// seeded (what every tuple cost without the cache).
#[inline(always)]
fn cache_slot(key: u128) -> usize {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(31);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
}

/// Fold `c` into `m` (both of one key and blob): the earliest tuple wins, ties by location
/// (rule, record, tuple, the order of [`Loc`] within a blob); outcomes are or-ed. What
/// [`absorb`] is to [`Contact`]s, so the cache changes no result.
#[inline(always)]
fn absorb_live(m: &mut Live, c: &Live, rules: &[u64]) {
    // Tables come in time order, so `c` is mostly later; at the same time it is mostly of
    // the same table (rule), where the record and tuple decide without the rule's name.
    let earlier = c.first_ms < m.first_ms
        || (c.first_ms == m.first_ms
            && if c.rule == m.rule {
                (c.record, c.tuple) < (m.record, m.tuple)
            } else {
                (rules[c.rule as usize], c.record, c.tuple)
                    < (rules[m.rule as usize], m.record, m.tuple)
            });
    if earlier {
        (m.first_ms, m.rule, m.record, m.tuple) = (c.first_ms, c.rule, c.record, c.tuple);
    }
    m.success |= c.success;
    m.allowed |= c.allowed;
}

impl Contacts {
    #[inline]
    pub fn see(&mut self, s: &Seen<'_>) {
        let t = s.t;
        let allowed = !s.deny;
        if s.blob != self.live_blob {
            self.seal();
            self.live_blob = s.blob;
        }
        if let (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) = (t.src, t.dst) {
            let key = pack4(a.into(), b.into(), t.dport, t.protocol.code());
            let rule = match self.live_rules.last() {
                Some(r) if *r == s.rule => self.live_rules.len() - 1,
                _ => match self.live_rules.iter().position(|r| *r == s.rule) {
                    Some(i) => i,
                    None => {
                        self.live_rules.push(s.rule);
                        self.live_rules.len() - 1
                    }
                },
            } as u32;
            let seen = Live {
                first_ms: t.time_ms,
                record: s.record,
                tuple: s.tuple,
                rule,
                success: s.replied,
                allowed,
            };
            // The tuple goes to its cache slot; a slot taken by another key sends that
            // key's sum to `live4` first. Sums are order-free, so where a tuple is added
            // up first changes nothing.
            if self.cache.is_empty() {
                self.cache = vec![FREE; CACHE_SLOTS].into_boxed_slice();
            }
            let slot = &mut self.cache[cache_slot(key)];
            if slot.key == key && slot.live.rule != EMPTY {
                absorb_live(&mut slot.live, &seen, &self.live_rules);
                return;
            }
            let old = std::mem::replace(slot, Cached { key, live: seen });
            if old.live.rule != EMPTY {
                self.write_back(old);
            }
            return;
        }
        let key = (ip_key(&t.src), ip_key(&t.dst), t.dport, t.protocol.code());
        let c = self.live6.entry(key).or_insert_with(|| Contact {
            first_ms: t.time_ms,
            success: false,
            allowed: false,
            loc: s.loc(),
        });
        if t.time_ms <= c.first_ms {
            let loc = s.loc();
            if (t.time_ms, &loc) < (c.first_ms, &c.loc) {
                c.first_ms = t.time_ms;
                c.loc = loc;
            }
        }
        c.success |= s.replied;
        c.allowed |= allowed;
    }

    /// Add a cache slot's sum to `live4`.
    #[inline]
    fn write_back(&mut self, c: Cached) {
        match self.live4.entry(((c.key >> 64) as u64, c.key as u64)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                absorb_live(e.get_mut(), &c.live, &self.live_rules)
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(c.live);
            }
        }
    }

    /// The live tables as runs.
    fn seal(&mut self) {
        for i in 0..self.cache.len() {
            let c = std::mem::replace(&mut self.cache[i], FREE);
            if c.live.rule != EMPTY {
                self.write_back(c);
            }
        }
        if !self.live4.is_empty() {
            let (blob, rules) = (self.live_blob, &self.live_rules);
            let run: Vec<(u128, Contact)> = self
                .live4
                .drain()
                .map(|((hi, lo), l)| {
                    let loc = Loc {
                        blob,
                        rule: rules[l.rule as usize],
                        record: l.record,
                        tuple: l.tuple,
                    };
                    let c = Contact {
                        first_ms: l.first_ms,
                        success: l.success,
                        allowed: l.allowed,
                        loc,
                    };
                    ((hi as u128) << 64 | lo as u128, c)
                })
                .collect();
            self.v4.push_unsorted(run);
        }
        self.live_rules.clear();
        if !self.live6.is_empty() {
            self.v6.push_unsorted(self.live6.drain().collect());
        }
    }

    /// Merge another whole table in (another thread's, a partial's): its runs are kept as
    /// they are ([`Runs::absorb_table`]).
    pub fn merge(&mut self, mut o: Contacts) {
        o.seal();
        self.v4.absorb_table(std::mem::take(&mut o.v4));
        self.v6.absorb_table(std::mem::take(&mut o.v6));
    }

    /// Merge a blob's table `o` in and leave it empty, its live tables' memory and cache
    /// kept for the next blob.
    pub fn drain_from(&mut self, o: &mut Contacts) {
        o.seal();
        self.v4.absorb(std::mem::take(&mut o.v4));
        self.v6.absorb(std::mem::take(&mut o.v6));
    }

    /// Every contact, one per key, in key order (source, destination, port, protocol). The
    /// table's runs must be sealed (a merged or loaded table is; a live blob's is not).
    pub fn iter(&self) -> impl Iterator<Item = (ContactKey, Contact)> + '_ {
        let mut v4 = self.v4.iter().map(|(k, c)| (unpack4(k), c)).peekable();
        let mut v6 = self.v6.iter().peekable();
        std::iter::from_fn(move || match (v4.peek(), v6.peek()) {
            (Some(a), Some(b)) if a.0 < b.0 => v4.next(),
            (Some(_), Some(_)) | (None, _) => v6.next(),
            (Some(_), None) => v4.next(),
        })
    }

    /// The contacts of one source, in key order.
    pub fn of_src(&self, src: Ip) -> Box<dyn Iterator<Item = (ContactKey, Contact)> + '_> {
        if src >> 32 == 1 << 95 {
            let s = src as u32;
            Box::new(
                self.v4
                    .range(pack4(s, 0, 0, 0), move |k| (k >> 64) as u32 == s)
                    .map(|(k, c)| (unpack4(k), c)),
            )
        } else {
            Box::new(self.v6.range((src, 0, 0, 0), move |k| k.0 == src))
        }
    }

    /// Runs of contacts (in key order) whose keys share `group`, a prefix of the key order
    /// (the source, or the source and destination), restricted to `keep`: the runs of `min`
    /// or more, each sorted by `order` and ties by key, given to `each` in key order. (A
    /// stable sort of the key-ordered run: comparing the key too, 80 bytes, made the sort
    /// the largest part of the detectors' finish.)
    pub fn groups<G: Eq + Copy, O: Ord>(
        &self,
        min: usize,
        group: impl Fn(&ContactKey) -> G,
        keep: impl Fn(&ContactKey, &Contact) -> bool,
        order: impl Fn(&(ContactKey, Contact)) -> O,
        mut each: impl FnMut(G, &mut Vec<(ContactKey, Contact)>),
    ) {
        let mut cur: Option<G> = None;
        let mut v: Vec<(ContactKey, Contact)> = Vec::new();
        let mut flush = |g: Option<G>, v: &mut Vec<(ContactKey, Contact)>| {
            if let Some(g) = g {
                if v.len() >= min {
                    v.sort_by_key(&order);
                    each(g, v);
                }
            }
            v.clear();
        };
        for (k, c) in self.iter() {
            let g = group(&k);
            if cur != Some(g) {
                flush(cur, &mut v);
                cur = Some(g);
            }
            if keep(&k, &c) {
                v.push((k, c));
            }
        }
        flush(cur, &mut v);
    }
}

/// In time order (then by key, as [`Contacts::groups`] keeps ties): the order a detector
/// walks one group's first contacts in.
pub fn by_time(a: &(ContactKey, Contact)) -> i64 {
    a.1.first_ms
}

/// The TRW decision over outcomes in order: `Some(n)` when the walk reached "scanner" at the
/// n-th contact, `None` when it decided "benign" first or never decided.
pub fn trw(outcomes: impl IntoIterator<Item = bool>, c: &Config) -> Option<usize> {
    let (eta1, eta0) = (c.beta / c.alpha, (1.0 - c.beta) / (1.0 - c.alpha));
    let (up, down) = ((1.0 - c.theta1) / (1.0 - c.theta0), c.theta1 / c.theta0);
    let mut l = 1.0;
    for (i, success) in outcomes.into_iter().enumerate() {
        l *= if success { down } else { up };
        if l >= eta1 {
            return Some(i + 1);
        }
        if l <= eta0 {
            return None;
        }
    }
    None
}

pub fn finish(contacts: &Contacts, cx: &Context<'_>) -> Vec<Finding> {
    let c = &cx.config.port_scan;
    let window_ms = c.window_min * 60_000;
    let mut out = Vec::new();
    // The background: scans that do not stand out, as (ports, first location) per source.
    let mut bg: BTreeMap<Ip, (usize, Loc)> = BTreeMap::new();
    let (mut bg_hosts, mut bg_ports) = (BTreeSet::new(), vec![false; 1 << 16]);
    let (mut bg_first, mut bg_last, mut bg_scans) = (i64::MAX, i64::MIN, 0usize);
    let group = |k: &ContactKey| (k.0, k.1);
    contacts.groups(c.min_ports, group, |_, _| true, by_time, |(src, dst), v| {
        let (s, d) = (ip_of(src), ip_of(dst));
        if cx.allowed(&s) || cx.allowed(&d) {
            return;
        }
        let mut ports: Vec<u16> = v.iter().map(|(k, _)| k.2).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() < c.min_ports {
            return;
        }
        let Some(at) = trw(v.iter().map(|(_, x)| x.success), c) else {
            return;
        };
        let failures = v.iter().filter(|(_, x)| !x.success).count();
        let open: Vec<u16> = {
            let mut o: Vec<u16> = v
                .iter()
                .filter(|(_, x)| x.success)
                .map(|(k, _)| k.2)
                .collect();
            o.sort_unstable();
            o.dedup();
            o
        };
        let allowed = v.iter().filter(|(_, x)| x.allowed).count();
        let times: Vec<i64> = v.iter().map(|(_, x)| x.first_ms).collect();
        let (fast, w_first, w_last) = super::horizontal_sweep::max_in_window(&times, window_ms);
        let (first, last) = (times[0], times[times.len() - 1]);
        let n = ports.len();
        let is_fast = fast >= c.fast_ports;
        if open.is_empty() && allowed == 0 && !is_fast {
            let e = bg.entry(src).or_insert((0, v[0].1.loc));
            e.0 = e.0.max(n);
            bg_hosts.insert(dst);
            for p in &ports {
                bg_ports[*p as usize] = true;
            }
            bg_first = bg_first.min(first);
            bg_last = bg_last.max(last);
            bg_scans += 1;
            return;
        }
        let severity = if (!open.is_empty() && n >= c.medium_ports) || (is_fast && n >= c.high_ports)
        {
            Severity::High
        } else if !open.is_empty() || is_fast || n >= c.medium_ports {
            Severity::Medium
        } else {
            Severity::Low
        };
        let mut why = Vec::new();
        if !open.is_empty() {
            why.push(format!("{} answered", counted(open.len(), "port", "ports")));
        }
        if allowed > 0 {
            why.push(format!(
                "{} allowed in",
                counted(allowed, "first contact", "first contacts")
            ));
        }
        if is_fast {
            why.push(format!(
                "{fast} ports within {} min >= fast_ports {}",
                c.window_min, c.fast_ports
            ));
        }
        let minutes = ((last - first) as f64 / 60_000.0).max(1.0);
        let subjects = BTreeMap::from([("src", s.to_string()), ("dst", d.to_string())]);
        out.push(
            Finding::new(
                "port_scan",
                severity,
                n as f64,
                format!(
                    "{s} probed {n} ports of {d} in {:.0} min ({failures} failed, {} answered)",
                    minutes,
                    open.len()
                ),
                subjects,
                Window::new(first, last),
            )
            .metric("distinct_ports", n)
            .metric("first_contacts", v.len())
            .metric("failures", failures)
            .metric("allowed_first_contacts", allowed)
            .metric("answered_ports", open.iter().take(20).copied().collect::<Vec<_>>())
            .metric("ports_per_minute", (n as f64 / minutes * 10.0).round() / 10.0)
            .metric("ports_in_window", fast)
            .metric("window_first", crate::text::fmt_ms(w_first))
            .metric("window_last", crate::text::fmt_ms(w_last))
            .metric("trw_decided_at_contact", at)
            .threshold(format!(
                "Threshold Random Walk (theta0 {}, theta1 {}, alpha {}, beta {}) decided \"scanner\" at first contact {at}, and {n} distinct ports >= min_ports {}; stands out from background scanning because {} (medium from {} ports with one allowed, high from {} answered or {} fast)",
                c.theta0, c.theta1, c.alpha, c.beta, c.min_ports, why.join(", "), c.medium_ports, c.medium_ports, c.high_ports
            ))
            .evidence(v.iter().map(|(_, x)| &x.loc)),
        );
    });
    if !bg.is_empty() {
        // Evidence: the first contact of the sources that probed the most ports.
        let mut top: Vec<(&Ip, &(usize, Loc))> = bg.iter().collect();
        top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        let most = top[0].1 .0;
        out.push(
            Finding::new(
                "port_scan",
                Severity::Info,
                bg.len() as f64,
                format!(
                    "background scanning: {} probed {} on {}, slowly, all denied",
                    counted(bg.len(), "source", "sources"),
                    counted(bg_ports.iter().filter(|p| **p).count(), "port", "ports"),
                    counted(bg_hosts.len(), "host", "hosts")
                ),
                BTreeMap::from([("src", "background radiation".to_string())]),
                Window::new(bg_first, bg_last),
            )
            .metric("sources", bg.len())
            .metric("scans", bg_scans)
            .metric("hosts", bg_hosts.len())
            .metric("ports", bg_ports.iter().filter(|p| **p).count())
            .metric("most_ports_of_one_host", most)
            .metric(
                "top_sources",
                top.iter().take(10).map(|(s, _)| ip_of(**s).to_string()).collect::<Vec<_>>(),
            )
            .threshold(format!(
                "scans of >= min_ports {} ports that the walk calls \"scanner\", every first contact denied, none answered, slower than fast_ports {} in {} min: internet background scanning, summarised",
                c.min_ports, c.fast_ports, c.window_min
            ))
            .evidence(top.iter().map(|(_, (_, l))| l)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random contacts over a few keys, as `blobs` tables.
    fn random_tables(seed: u64, blobs: usize) -> Vec<Vec<(u128, Contact)>> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        (0..blobs)
            .map(|b| {
                let mut m: HMap<u128, Contact> = HMap::default();
                for _ in 0..(next() % 200) {
                    let key = pack4(
                        0x0a00_0000 | (next() % 4) as u32,
                        0x0a00_0100 | (next() % 8) as u32,
                        (next() % 6) as u16,
                        6,
                    );
                    let c = Contact {
                        first_ms: (next() % 50) as i64,
                        success: next() % 3 == 0,
                        allowed: next() % 2 == 0,
                        loc: Loc {
                            blob: b as u64,
                            rule: 1,
                            record: (next() % 5) as u32,
                            tuple: (next() % 5) as u32,
                        },
                    };
                    m.entry(key).and_modify(|e| absorb(e, &c)).or_insert(c);
                }
                m.into_iter().collect()
            })
            .collect()
    }

    #[test]
    fn runs_give_one_entry_per_key_whatever_the_merge_order() {
        for seed in 0..20 {
            let tables = random_tables(seed, 37);
            let mut reference: BTreeMap<u128, Contact> = BTreeMap::new();
            for t in &tables {
                for (k, c) in t {
                    reference
                        .entry(*k)
                        .and_modify(|e| absorb(e, c))
                        .or_insert(*c);
                }
            }
            // One table after another, and in two halves merged the other way round.
            let mut one = Contacts::default();
            for t in &tables {
                one.v4.push_unsorted(t.clone());
            }
            let (mut a, mut b) = (Contacts::default(), Contacts::default());
            for (i, t) in tables.iter().enumerate().rev() {
                let half = if i % 3 == 0 { &mut a } else { &mut b };
                half.v4.push_unsorted(t.clone());
            }
            let runs_before = (a.v4.runs.len(), b.v4.runs.len());
            b.merge(a);
            // A table's runs are kept as they are, even a table of one run.
            assert_eq!(b.v4.runs.len(), runs_before.0 + runs_before.1);
            assert!(one.v4.runs.len() <= 7, "{}", one.v4.runs.len());
            let want: Vec<(ContactKey, Contact)> =
                reference.iter().map(|(k, c)| (unpack4(*k), *c)).collect();
            assert_eq!(one.iter().collect::<Vec<_>>(), want, "seed {seed}");
            assert_eq!(b.iter().collect::<Vec<_>>(), want, "seed {seed}");
            let src = 0x0a00_0002u128 | 1 << 127;
            let of: Vec<_> = want.iter().filter(|(k, _)| k.0 == src).cloned().collect();
            assert!(!of.is_empty());
            assert_eq!(b.of_src(src).collect::<Vec<_>>(), of);
        }
    }

    #[test]
    fn a_table_of_one_run_joins_another_table_unmerged() {
        let tables = random_tables(7, 4);
        let mut reference: BTreeMap<u128, Contact> = BTreeMap::new();
        for (k, c) in tables.iter().flatten() {
            reference
                .entry(*k)
                .and_modify(|e| absorb(e, c))
                .or_insert(*c);
        }
        let (mut a, mut b) = (Contacts::default(), Contacts::default());
        a.v4.push_unsorted(tables[0].clone());
        for t in &tables[1..] {
            b.v4.push_unsorted(t.clone());
        }
        assert_eq!(a.v4.runs.len(), 1);
        let before = b.v4.runs.len();
        // Another thread's table of one run: kept beside the runs, not pushed into the
        // binary counter (which would merge all of both tables after the pass).
        b.merge(a);
        assert_eq!(b.v4.runs.len(), before + 1);
        let want: Vec<(ContactKey, Contact)> =
            reference.iter().map(|(k, c)| (unpack4(*k), *c)).collect();
        assert_eq!(b.iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn a_merge_of_two_runs_is_sorted_with_one_entry_per_key() {
        let c = |ms: i64| Contact {
            first_ms: ms,
            success: ms % 2 == 0,
            allowed: false,
            loc: Loc {
                blob: 1,
                rule: 2,
                record: ms as u32,
                tuple: 0,
            },
        };
        let run = |keys: &[u32], ms: i64| -> Vec<(u32, Contact)> {
            keys.iter().map(|k| (*k, c(ms + *k as i64))).collect()
        };
        // Disjoint, interleaved, all shared, one side empty, a shared key at either end.
        let cases: [(&[u32], &[u32]); 6] = [
            (&[1, 3, 5], &[2, 4, 6]),
            (&[1, 2, 3], &[1, 2, 3]),
            (&[], &[1, 2]),
            (&[1, 2], &[]),
            (&[1, 4, 9, 10], &[0, 1, 10, 11]),
            (&[5, 6, 7, 8, 9], &[0, 9]),
        ];
        for (x, y) in cases {
            let (a, b) = (run(x, 100), run(y, 50));
            let mut want: BTreeMap<u32, Contact> = BTreeMap::new();
            for (k, v) in a.iter().chain(&b) {
                want.entry(*k).and_modify(|e| absorb(e, v)).or_insert(*v);
            }
            let got = merge_runs(a, b);
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{x:?} + {y:?}");
        }
    }

    #[test]
    fn the_tuple_cache_changes_no_contact() {
        // More keys than cache slots (evictions), times out of order, ties, and answers
        // and allowed tuples after the first: every contact equals a plain fold of its
        // tuples (earliest time, ties by location; outcomes or-ed).
        use crate::detect::testkit::{denied, unanswered};
        use crate::model::Protocol;
        let mut rng = fastrand::Rng::with_seed(11);
        let h = crate::detect::name_hash;
        let rules = [h("r1"), h("r2"), h("r3")];
        let blob = h("blob");
        let mut c = Contacts::default();
        let mut reference: BTreeMap<u128, Contact> = BTreeMap::new();
        for record in 0..60u32 {
            for (ri, rule) in rules.iter().enumerate() {
                for tuple in 0..100u32 {
                    let (src, dst) = (0x0a00_0001 + rng.u32(0..3), rng.u32(0..40));
                    let (dport, deny) = (rng.u16(0..40), rng.u8(0..3) == 0);
                    let (s, d) = (
                        std::net::Ipv4Addr::from(src).to_string(),
                        std::net::Ipv4Addr::from(dst).to_string(),
                    );
                    // Whole seconds within ten minutes: many ties.
                    let min = rng.u32(0..600) as f64 / 60.0;
                    let t = if deny {
                        denied(min, &s, &d, dport, false)
                    } else {
                        unanswered(min, &s, &d, dport, false)
                    };
                    let replied = !deny && rng.u8(0..4) == 0;
                    let seen = Seen {
                        t: &t,
                        nsg: 1,
                        record: record * 3 + ri as u32,
                        tuple,
                        blob,
                        rule: *rule,
                        inbound: false,
                        deny,
                        replied,
                    };
                    c.see(&seen);
                    let one = Contact {
                        first_ms: t.time_ms,
                        success: replied,
                        allowed: !deny,
                        loc: seen.loc(),
                    };
                    reference
                        .entry(pack4(src, dst, dport, Protocol::Tcp.code()))
                        .and_modify(|e| absorb(e, &one))
                        .or_insert(one);
                }
            }
        }
        assert!(reference.len() > 4 * CACHE_SLOTS, "{}", reference.len());
        c.seal();
        let want: Vec<(ContactKey, Contact)> =
            reference.iter().map(|(k, c)| (unpack4(*k), *c)).collect();
        let got: Vec<(ContactKey, Contact)> = c.iter().collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn trw_decides_scanner_after_four_failures_and_benign_after_successes() {
        let c = Config::default();
        // (1-0.2)/(1-0.8) = 4 per failure: 4^3 = 64 < 99 <= 4^4 = 256.
        assert_eq!(trw([false; 10], &c), Some(4));
        assert_eq!(trw([false, false, false], &c), None);
        // 0.25 per success: two successes reach 0.0625 > 0.0101, four reach 0.0039: benign.
        assert_eq!(
            trw(
                [true, true, true, true, false, false, false, false, false],
                &c
            ),
            None
        );
        // A success between failures delays the decision: 4*4*0.25*4*4 = 64, then 256.
        assert_eq!(trw([false, false, true, false, false, false], &c), Some(6));
    }

    fn scan(ports: u16, every_min: f64, answered_too: bool) -> Vec<crate::detect::Finding> {
        use crate::detect::testkit::*;
        let t: Vec<_> = (0..ports)
            .map(|i| {
                let min = i as f64 * every_min;
                let t = if answered_too {
                    answered(min, "198.51.100.7", "10.0.0.4", 1000 + i, true, 0)
                } else {
                    denied(min, "198.51.100.7", "10.0.0.4", 1000 + i, true)
                };
                ("APP-NSG", "DefaultRule_DenyAllInBound", t)
            })
            .collect();
        run(&t, None)
    }

    #[test]
    fn a_fast_denied_scan_of_120_ports_fires_with_its_subjects_window_and_evidence() {
        use crate::detect::testkit::*;
        // One port every 1.2 s: 120 ports in 2.4 min.
        let v = scan(120, 0.02, false);
        let f = of(&v, "port_scan");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.subjects["src"], "198.51.100.7");
        assert_eq!(f.subjects["dst"], "10.0.0.4");
        assert_eq!(f.window.first, "2026-01-05T00:00:00.000Z");
        assert_eq!(f.window.last, "2026-01-05T00:02:22.800Z");
        assert_eq!(f.metrics["distinct_ports"], 120);
        assert_eq!(f.metrics["failures"], 120);
        assert_eq!(f.metrics["ports_in_window"], 120);
        assert_eq!(f.metrics["trw_decided_at_contact"], 4);
        assert!(
            f.threshold
                .contains("because 120 ports within 5 min >= fast_ports 100"),
            "{}",
            f.threshold
        );
        assert_eq!(f.evidence.len(), 5);
        assert_eq!(f.evidence[0].path, "test/h=490992/PT1H.json");
        assert_eq!((f.evidence[0].record, f.evidence[0].tuple), (0, 0));
        assert_eq!(f.evidence[0].rule, "DefaultRule_DenyAllInBound");
    }

    #[test]
    fn a_slow_denied_scan_is_background_summarised_as_info() {
        use crate::detect::testkit::*;
        // 26 ports, one every 6 s: denied throughout and slower than 100 in 5 min.
        let v = scan(26, 0.1, false);
        let f = of(&v, "port_scan");
        assert_eq!(f.len(), 1, "{v:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.subjects["src"], "background radiation");
        assert_eq!(f.metrics["sources"], 1);
        assert_eq!(f.metrics["ports"], 26);
        assert_eq!(f.metrics["most_ports_of_one_host"], 26);
        assert_eq!(
            f.metrics["top_sources"],
            serde_json::json!(["198.51.100.7"])
        );
        assert_eq!(f.window.last, "2026-01-05T00:02:30.000Z");
        assert_eq!((f.evidence[0].record, f.evidence[0].tuple), (0, 0));
    }

    #[test]
    fn allowed_first_contacts_that_nothing_answered_are_failures_too() {
        use crate::detect::testkit::*;
        let t: Vec<_> = (0..30)
            .map(|i| {
                let u = unanswered(i as f64 * 0.1, "198.51.100.7", "10.0.0.4", 2000 + i, true);
                ("APP-NSG", "AllowAnyIn", u)
            })
            .collect();
        let v = run(&t, None);
        let f = of(&v, "port_scan");
        assert_eq!(f.len(), 1, "{v:#?}");
        assert_eq!(f[0].metrics["failures"], 30);
        // Allowed in, 30 ports: it stands out, below medium_ports.
        assert_eq!(f[0].severity, Severity::Low);
        assert_eq!(f[0].metrics["allowed_first_contacts"], 30);
        assert_eq!(f[0].metrics["answered_ports"], serde_json::json!([]));
    }

    #[test]
    fn near_misses_19_ports_or_ports_that_answer_do_not_fire() {
        use crate::detect::testkit::*;
        assert!(of(&scan(19, 0.01, false), "port_scan").is_empty());
        // 26 ports that all answered: the walk decides "benign".
        assert!(of(&scan(26, 0.1, true), "port_scan").is_empty());
    }
}
