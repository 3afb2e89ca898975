//! A channel's unacknowledged deliveries by delivery tag.
//!
//! Tags are handed out in increasing order and are mostly acknowledged in
//! that order, so the deliveries sit in a deque in tag order: a delivery is
//! pushed at the back, an acknowledgement of the oldest pops the front, and
//! one of any other tag finds it by binary search and leaves a hole that is
//! dropped once it reaches the front. (A `BTreeMap` cost a few hundred
//! instructions per message in node splits and merges.) Holes behind a
//! delivery that stays unacknowledged are squeezed out once they outnumber
//! the live entries, so memory stays proportional to what is unacknowledged.

use super::Unacked;
use std::collections::VecDeque;

/// Unacknowledged deliveries of one channel, in tag order (`T`: what is
/// kept of each; `()` for a copy of the tags alone).
#[derive(Debug)]
pub struct UnackedMap<T = Unacked> {
    /// (tag, delivery); `None` once acknowledged (a hole).
    slots: VecDeque<(u64, Option<T>)>,
    /// Entries that are not holes.
    live: usize,
}

impl<T> Default for UnackedMap<T> {
    fn default() -> Self {
        UnackedMap {
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> UnackedMap<T> {
    /// Deliveries not yet acknowledged.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether every delivery has been settled.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Record a delivery. A channel's tags come in increasing order and go
    /// at the back; any other tag is put in its place (replacing a delivery
    /// with the same tag, as a map would).
    pub fn insert(&mut self, tag: u64, u: T) {
        if self.slots.back().is_none_or(|&(last, _)| last < tag) {
            self.slots.push_back((tag, Some(u)));
            self.live += 1;
            return;
        }
        match self.slots.binary_search_by_key(&tag, |&(t, _)| t) {
            Ok(i) => {
                if self.slots[i].1.replace(u).is_none() {
                    self.live += 1;
                }
            }
            Err(i) => {
                self.slots.insert(i, (tag, Some(u)));
                self.live += 1;
            }
        }
    }

    /// Whether the delivery with `tag` is unacknowledged.
    fn contains(&self, tag: u64) -> bool {
        self.slots
            .binary_search_by_key(&tag, |&(t, _)| t)
            .is_ok_and(|i| self.slots[i].1.is_some())
    }

    /// The tags of the unacknowledged deliveries alone, to try
    /// acknowledgements on without settling anything.
    pub fn tags_only(&self) -> UnackedMap<()> {
        UnackedMap {
            slots: self
                .slots
                .iter()
                .filter(|(_, u)| u.is_some())
                .map(|&(t, _)| (t, Some(())))
                .collect(),
            live: self.live,
        }
    }

    /// Take what an acknowledgement of `tag` settles, in tag order, or
    /// `None` (settling nothing) when it names no outstanding delivery.
    /// With `multiple`, every delivery up to `tag`, which must itself be
    /// outstanding; tag 0 with `multiple`, every delivery. (RabbitMQ's
    /// channel applies the same rule.)
    pub fn settle(&mut self, tag: u64, multiple: bool) -> Option<Vec<T>> {
        match (multiple, tag) {
            (true, 0) => Some(self.take_all()),
            (true, _) => self.contains(tag).then(|| self.take_through(tag)),
            (false, _) => self.remove(tag).map(|u| vec![u]),
        }
    }

    /// Take the delivery with `tag`, if it is unacknowledged.
    pub fn remove(&mut self, tag: u64) -> Option<T> {
        let i = match self.slots.front() {
            // The usual case: the oldest is acknowledged.
            Some(&(first, _)) if first == tag => 0,
            _ => self.slots.binary_search_by_key(&tag, |&(t, _)| t).ok()?,
        };
        let u = self.slots[i].1.take()?;
        self.live -= 1;
        self.trim();
        Some(u)
    }

    /// Take every delivery with a tag up to and including `tag`, in order.
    fn take_through(&mut self, tag: u64) -> Vec<T> {
        let n = self.slots.partition_point(|&(t, _)| t <= tag);
        let taken: Vec<T> = self.slots.drain(..n).filter_map(|(_, u)| u).collect();
        self.live -= taken.len();
        taken
    }

    /// Take every delivery, in tag order.
    pub fn take_all(&mut self) -> Vec<T> {
        self.live = 0;
        self.slots.drain(..).filter_map(|(_, u)| u).collect()
    }

    /// Drop the holes at the front, and squeeze out the rest once they
    /// outnumber the live entries.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|(_, u)| u.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() > 2 * self.live + 32 {
            self.slots.retain(|(_, u)| u.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{paged_stub, QMsg};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn delivery(tag: u64) -> Unacked {
        Unacked {
            queue: Arc::from(format!("q{tag}").as_str()),
            qm: QMsg {
                msg: paged_stub(0),
                redelivered: false,
                expires_ms: 0,
                sref: None,
                paged: false,
                seq: tag,
            },
            consumer: None,
        }
    }

    fn names(v: &[Unacked]) -> Vec<String> {
        v.iter().map(|u| u.queue.to_string()).collect()
    }

    /// The map answers as a `BTreeMap` by tag does, whatever the order of
    /// single and multiple acknowledgements, and holds no more holes than
    /// its bound.
    #[test]
    fn behaves_as_an_ordered_map_by_tag() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut m = UnackedMap::default();
        let mut model: BTreeMap<u64, ()> = BTreeMap::new();
        let mut next = 1u64;
        for _ in 0..20_000 {
            match rand(10) {
                0..=4 => {
                    next += 1 + rand(3);
                    m.insert(next, delivery(next));
                    model.insert(next, ());
                }
                5..=7 => {
                    // Any tag, often a missing one.
                    let tag = rand(next + 2);
                    let got = m.remove(tag).map(|u| u.queue.to_string());
                    let want = model.remove(&tag).map(|_| format!("q{tag}"));
                    assert_eq!(got, want, "remove {tag}");
                }
                8 => {
                    let tag = rand(next + 2);
                    assert_eq!(m.contains(tag), model.contains_key(&tag), "contains {tag}");
                    let keep = model.split_off(&(tag + 1));
                    let want: Vec<String> = model.keys().map(|t| format!("q{t}")).collect();
                    model = keep;
                    assert_eq!(names(&m.take_through(tag)), want, "through {tag}");
                }
                _ => {
                    // An old delivery kept while newer ones are acked.
                    if let Some(&oldest) = model.keys().next() {
                        let newest = *model.keys().last().unwrap();
                        if newest != oldest {
                            assert!(m.remove(newest).is_some());
                            model.remove(&newest);
                        }
                    }
                }
            }
            assert_eq!(m.len(), model.len());
            assert!(m.slots.len() <= 2 * m.live + 33, "holes pile up");
        }
        let want: Vec<String> = model.keys().map(|t| format!("q{t}")).collect();
        assert_eq!(names(&m.take_all()), want);
        assert!(m.is_empty());
    }

    #[test]
    fn a_tag_out_of_order_goes_in_its_place() {
        let mut m = UnackedMap::default();
        m.insert(5, delivery(5));
        m.insert(9, delivery(9));
        m.insert(7, delivery(7));
        m.insert(5, delivery(5));
        assert_eq!(m.len(), 3);
        assert!(m.remove(9).is_some());
        m.insert(9, delivery(9));
        assert_eq!(m.len(), 3);
        assert_eq!(names(&m.take_all()), ["q5", "q7", "q9"]);
    }
}
