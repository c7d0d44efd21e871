//! Hashing of what logs contain. Maps keyed by addresses, ports, rule and NSG names use
//! foldhash with a seed drawn at random per map ([`Build`]), so input crafted to collide in
//! one fixed hash function (HashDoS) cannot turn a map's lookups linear. foldhash is about as
//! fast as the FxHash it replaced for the short keys here and hashes strings better (the cost
//! was measured with `benches/throughput.sh`; see the README's Performance section).
//!
//! Hashes that are saved in partial files and compared across runs and shards (the
//! detectors' name ids, `detect::name_hash`) stay fixed: a random seed would make two shards
//! of one container disagree.

/// A `BuildHasher` seeded at random for each map.
pub type Build = foldhash::fast::RandomState;
/// A hash map with [`Build`].
pub type HMap<K, V> = std::collections::HashMap<K, V, Build>;
/// A hash set with [`Build`].
pub type HSet<K> = std::collections::HashSet<K, Build>;
