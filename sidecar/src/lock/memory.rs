//! `lock.in-memory`: leases in a map inside the sidecar. Not reentrant, owner-checked
//! release, expiry by lease time: the semantics of `lock.redis` without a server.
//! Only processes behind this one sidecar share it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Lease, LockError, UnlockStatus};

/// Live leases held at once; past it a new lock is refused with an error (and each lease's
/// key and owner are capped by the API, `MAX_LOCK_ID`). Expired leases leave in the order
/// they end (a heap), O(log n) each; the heap is rebuilt from the map only once released
/// leases' stale entries outnumber the live ones, so the cost per call stays O(log n)
/// amortised.
const MAX_LEASES: usize = 100_000;

#[derive(Default)]
pub struct MemoryLock {
    leases: Mutex<Leases>,
}

#[derive(Default)]
struct Leases {
    held: HashMap<String, (String, Instant)>,
    /// When each lease taken ends, soonest first. An entry whose lease was released or
    /// taken again since is stale, and skipped when it comes up.
    ends: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Leases {
    /// Drops the leases that ended by `now`: O(log n) each.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((end, _))) = self.ends.peek()
            && *end <= now
        {
            let Some(Reverse((end, key))) = self.ends.pop() else {
                break;
            };
            if self.held.get(&key).is_some_and(|(_, until)| *until == end) {
                self.held.remove(&key);
            }
        }
        // Released leases leave stale entries; rebuild before they outnumber the live.
        if self.ends.len() > 2 * self.held.len() + 1024 {
            self.ends = self
                .held
                .iter()
                .map(|(key, (_, until))| Reverse((*until, key.clone())))
                .collect();
        }
    }
}

impl MemoryLock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn try_lock(&self, lease: &Lease<'_>) -> Result<bool, LockError> {
        self.try_lock_at(lease, Instant::now())
    }

    fn try_lock_at(
        &self,
        &Lease {
            key,
            owner,
            expiry_secs,
        }: &Lease<'_>,
        now: Instant,
    ) -> Result<bool, LockError> {
        let mut leases = self.leases();
        leases.expire(now);
        if leases.held.contains_key(key) {
            return Ok(false);
        }
        if leases.held.len() >= MAX_LEASES {
            return Err(LockError(format!(
                "too many locks held at once ({MAX_LEASES})"
            )));
        }
        let until = now + Duration::from_secs(u64::from(expiry_secs.max(1).unsigned_abs()));
        leases
            .held
            .insert(key.to_string(), (owner.to_string(), until));
        leases.ends.push(Reverse((until, key.to_string())));
        Ok(true)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn unlock(&self, key: &str, owner: &str) -> UnlockStatus {
        let now = Instant::now();
        let leases = &mut self.leases().held;
        match leases.get(key) {
            Some((_, until)) if *until <= now => {
                leases.remove(key);
                UnlockStatus::LockDoesNotExist
            }
            None => UnlockStatus::LockDoesNotExist,
            Some((holder, _)) if holder != owner => UnlockStatus::LockBelongsToOthers,
            Some(_) => {
                leases.remove(key);
                UnlockStatus::Success
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lock_is_refused_even_to_its_owner_and_released_only_by_it() {
        let l = MemoryLock::new();
        let lease = |owner| Lease {
            key: "r",
            owner,
            expiry_secs: 10,
        };
        assert!(l.try_lock(&lease("a")).unwrap());
        assert!(!l.try_lock(&lease("a")).unwrap());
        assert!(!l.try_lock(&lease("b")).unwrap());
        assert_eq!(l.unlock("r", "b"), UnlockStatus::LockBelongsToOthers);
        assert_eq!(l.unlock("r", "a"), UnlockStatus::Success);
        assert_eq!(l.unlock("r", "a"), UnlockStatus::LockDoesNotExist);
        assert!(l.try_lock(&lease("b")).unwrap());
    }

    /// A lease released and taken again is not ended by the first one's expiry; the stale
    /// entries that releases leave are dropped once they outnumber the live leases.
    #[test]
    fn a_lease_taken_again_outlives_the_released_one() {
        let l = MemoryLock::new();
        let now = Instant::now();
        let lease = |key, expiry_secs| Lease {
            key,
            owner: "o",
            expiry_secs,
        };
        assert!(l.try_lock_at(&lease("r", 10), now).unwrap());
        assert_eq!(l.unlock("r", "o"), UnlockStatus::Success);
        assert!(l.try_lock_at(&lease("r", 100), now).unwrap());
        let later = now + Duration::from_secs(11);
        assert!(l.try_lock_at(&lease("other", 100), later).unwrap());
        assert!(
            !l.try_lock_at(&lease("r", 100), later).unwrap(),
            "the second lease on r ended with the first one's time"
        );
        for _ in 0..3000 {
            assert!(l.try_lock_at(&lease("churn", 100), now).unwrap());
            assert_eq!(l.unlock("churn", "o"), UnlockStatus::Success);
        }
        let leases = l.leases();
        assert!(
            leases.ends.len() <= 2 * leases.held.len() + 1025,
            "{} heap entries for {} leases",
            leases.ends.len(),
            leases.held.len()
        );
    }

    /// Live leases are capped; expired ones make room again.
    #[test]
    fn live_leases_are_capped_and_expired_ones_make_room() {
        let l = MemoryLock::new();
        let now = Instant::now();
        let keys: Vec<String> = (0..=MAX_LEASES).map(|i| format!("k{i}")).collect();
        let lease = |key| Lease {
            key,
            owner: "o",
            expiry_secs: 10,
        };
        for key in &keys[..MAX_LEASES] {
            assert!(l.try_lock_at(&lease(key), now).unwrap());
        }
        let full = l.try_lock_at(&lease(&keys[MAX_LEASES]), now);
        assert!(full.is_err(), "one lease past the cap");
        assert!(
            !l.try_lock_at(&lease("k0"), now).unwrap(),
            "a held key is just busy"
        );
        let later = now + Duration::from_secs(11);
        assert!(l.try_lock_at(&lease(&keys[MAX_LEASES]), later).unwrap());
        assert_eq!(l.leases().held.len(), 1, "the expired leases were swept");
    }
}
