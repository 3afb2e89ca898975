//! A string-keyed map for the hot path: one hash lookup per known key (keys
//! and values live in slot vectors; the table holds the slot's index),
//! hashed with a fast seeded hasher instead of SipHash, and keys compared
//! inline (metric names are short: two 8-byte loads instead of a call to
//! `memcmp`).
//!
//! The hasher folds 8 bytes at a time with a 64×64→128-bit multiply (the
//! wyhash/foldhash idea) under a per-map random seed taken from std's
//! `RandomState`, so keys chosen by a sender cannot be aimed at collisions
//! without knowing the seed.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xD6E8_FEB8_6659_FD93;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

/// The per-map seed.
#[derive(Clone, Copy, Debug)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        FastState(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// See the module docs.
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = fold(h ^ w, K1);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            h = fold(h ^ u64::from_le_bytes(buf), K2);
        }
        self.0 = fold(h ^ bytes.len() as u64, K1);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = fold(self.0 ^ i as u64, K2);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Whether two keys are equal, without a library call for the usual short
/// ones.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=24 => {
            word(a, 0) == word(b, 0) && word(a, 8) == word(b, 8) && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// Values by string key, one lookup for a known key.
#[derive(Debug)]
pub struct KeyedMap<V> {
    state: FastState,
    /// Indexes into `keys` and `slots`.
    index: HashTable<usize>,
    keys: Vec<Box<str>>,
    slots: Vec<V>,
}

impl<V> Default for KeyedMap<V> {
    fn default() -> Self {
        KeyedMap {
            state: FastState::default(),
            index: HashTable::new(),
            keys: Vec::new(),
            slots: Vec::new(),
        }
    }
}

impl<V: Default> KeyedMap<V> {
    /// An empty map with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        KeyedMap {
            state: FastState::default(),
            index: HashTable::with_capacity(n),
            keys: Vec::with_capacity(n),
            slots: Vec::with_capacity(n),
        }
    }

    /// The value for `k`, inserted as `V::default()` if new (the only case
    /// that allocates).
    #[inline]
    pub fn slot(&mut self, k: &str) -> &mut V {
        let hash = self.state.hash_one(k);
        let keys = &self.keys;
        let i = match self
            .index
            .find(hash, |&i| same(keys[i].as_bytes(), k.as_bytes()))
        {
            Some(&i) => i,
            None => {
                let i = self.slots.len();
                self.slots.push(V::default());
                self.keys.push(k.into());
                let (state, keys) = (&self.state, &self.keys);
                self.index
                    .insert_unique(hash, i, |&j| state.hash_one(&*keys[j]));
                i
            }
        };
        &mut self.slots[i]
    }
}

impl<V> KeyedMap<V> {
    /// The value for `k`, if present.
    pub fn get(&self, k: &str) -> Option<&V> {
        let hash = self.state.hash_one(k);
        self.index
            .find(hash, |&i| same(self.keys[i].as_bytes(), k.as_bytes()))
            .map(|&i| &self.slots[i])
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &**k)
    }

    /// Every `(key, value)`, consuming the map.
    pub fn into_pairs(self) -> impl Iterator<Item = (String, V)> {
        self.keys.into_iter().map(str::into_string).zip(self.slots)
    }
}

impl<V> std::ops::Index<&str> for KeyedMap<V> {
    type Output = V;
    fn index(&self, k: &str) -> &V {
        self.get(k).unwrap_or_else(|| panic!("no key {k:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_pairs() {
        let mut m: KeyedMap<u32> = KeyedMap::default();
        *m.slot("a") += 1;
        *m.slot("b") += 2;
        *m.slot("a") += 3;
        assert_eq!((m.len(), m["a"], m["b"]), (2, 4, 2));
        let mut p: Vec<_> = m.into_pairs().collect();
        p.sort();
        assert_eq!(p, vec![("a".to_string(), 4), ("b".to_string(), 2)]);
    }

    #[test]
    fn hasher_spreads_similar_keys() {
        let s = FastState::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            seen.insert(s.hash_one(format!("bench.{i}")) >> 50);
        }
        // 14 high bits over 10k keys: a sane hash fills most buckets.
        assert!(seen.len() > 7_000, "{}", seen.len());
    }

    #[test]
    fn keys_of_every_length_are_told_apart() {
        let mut m: KeyedMap<usize> = KeyedMap::default();
        let keys: Vec<String> = (0..40)
            .flat_map(|n| {
                [
                    "a".repeat(n),
                    format!("{}b", "a".repeat(n)),
                    format!("c{}", "a".repeat(n)),
                ]
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            *m.slot(k) = i;
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k), Some(&i), "{k:?}");
        }
        assert_eq!(m.len(), keys.len());
        assert!(m.get("d").is_none());
    }
}
