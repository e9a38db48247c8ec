//! A bounded cache with CLOCK (second-chance) eviction, used for metadata blocks and inodes.
//!
//! CLOCK keeps LRU's behaviour on repeated lookups at the cost of one bit per entry, and a hit only sets
//! that bit, so the lock is held for a hash lookup and nothing more.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

struct Slot<K, V> {
    key: K,
    value: V,
    referenced: bool,
}

struct Inner<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    hand: usize,
}

/// A map of at most `capacity` entries; inserting into a full cache evicts one not recently used.
pub struct ClockCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V: Clone> ClockCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        ClockCache {
            inner: Mutex::new(Inner { index: HashMap::new(), slots: Vec::new(), hand: 0 }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // A panic elsewhere while holding the lock leaves the cache consistent (every update is a single
        // assignment), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        let i = *inner.index.get(key)?;
        let slot = inner.slots.get_mut(i)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut inner = self.lock();
        if let Some(&i) = inner.index.get(&key) {
            if let Some(slot) = inner.slots.get_mut(i) {
                slot.value = value;
                slot.referenced = true;
            }
            return;
        }
        if inner.slots.len() < self.capacity {
            let i = inner.slots.len();
            inner.slots.push(Slot { key, value, referenced: false });
            inner.index.insert(key, i);
            return;
        }
        // Sweep: clear reference bits until an unreferenced slot comes up (at most two turns).
        let n = inner.slots.len();
        let mut victim = inner.hand.checked_rem(n).unwrap_or(0);
        for _ in 0..n.saturating_mul(2) {
            victim = inner.hand.checked_rem(n).unwrap_or(0);
            inner.hand = victim.saturating_add(1).checked_rem(n).unwrap_or(0);
            let slot = &mut inner.slots[victim];
            if !slot.referenced {
                break;
            }
            slot.referenced = false;
        }
        let old = inner.slots[victim].key;
        inner.index.remove(&old);
        inner.slots[victim] = Slot { key, value, referenced: false };
        inner.index.insert(key, victim);
    }

    pub fn remove(&self, key: &K) {
        let mut inner = self.lock();
        if let Some(i) = inner.index.remove(key) {
            // Keep the slot vector dense: move the last slot into the hole.
            let last = inner.slots.len().saturating_sub(1);
            inner.slots.swap(i, last);
            inner.slots.pop();
            if i < inner.slots.len() {
                let moved = inner.slots[i].key;
                inner.index.insert(moved, i);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_hot_entries() {
        let c = ClockCache::new(3);
        c.insert(1, "a");
        c.insert(2, "b");
        c.insert(3, "c");
        assert_eq!(c.get(&1), Some("a")); // 1 is now referenced
        c.insert(4, "d");
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&4), Some("d"));
        c.remove(&4);
        assert_eq!(c.get(&4), None);
        assert_eq!(c.len(), 2);
    }
}
