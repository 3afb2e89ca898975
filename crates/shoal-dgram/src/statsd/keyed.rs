//! A string-keyed map for the hot path: one hash lookup per known key (the
//! value lives in a slot vector; the map holds the slot's index), hashed with
//! a fast seeded hasher instead of SipHash.
//!
//! The hasher folds 8 bytes at a time with a 64×64→128-bit multiply (the
//! wyhash/foldhash idea) under a per-map random seed taken from std's
//! `RandomState`, so keys chosen by a sender cannot be aimed at collisions
//! without knowing the seed.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

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

/// Values by string key, one lookup for a known key.
#[derive(Debug)]
pub struct KeyedMap<V> {
    index: HashMap<Box<str>, usize, FastState>,
    slots: Vec<V>,
}

impl<V> Default for KeyedMap<V> {
    fn default() -> Self {
        KeyedMap {
            index: HashMap::default(),
            slots: Vec::new(),
        }
    }
}

impl<V: Default> KeyedMap<V> {
    /// An empty map with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        KeyedMap {
            index: HashMap::with_capacity_and_hasher(n, FastState::default()),
            slots: Vec::with_capacity(n),
        }
    }

    /// The value for `k`, inserted as `V::default()` if new (the only case
    /// that allocates).
    #[inline]
    pub fn slot(&mut self, k: &str) -> &mut V {
        let i = match self.index.get(k) {
            Some(&i) => i,
            None => {
                let i = self.slots.len();
                self.slots.push(V::default());
                self.index.insert(k.into(), i);
                i
            }
        };
        &mut self.slots[i]
    }
}

impl<V> KeyedMap<V> {
    /// The value for `k`, if present.
    pub fn get(&self, k: &str) -> Option<&V> {
        self.index.get(k).map(|&i| &self.slots[i])
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
        self.index.keys().map(|k| &**k)
    }

    /// Every `(key, value)`, consuming the map.
    pub fn into_pairs(self) -> impl Iterator<Item = (String, V)> {
        let mut slots: Vec<Option<V>> = self.slots.into_iter().map(Some).collect();
        let mut pairs: Vec<(String, V)> = Vec::with_capacity(slots.len());
        for (k, i) in self.index {
            if let Some(v) = slots.get_mut(i).and_then(Option::take) {
                pairs.push((k.into_string(), v));
            }
        }
        pairs.into_iter()
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
}
