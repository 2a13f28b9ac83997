//! `lock.in-memory`: leases in a map inside the sidecar. Not reentrant, owner-checked
//! release, expiry by lease time: the semantics of `lock.redis` without a server.
//! Only processes behind this one sidecar share it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Lease, UnlockStatus};

#[derive(Default)]
pub struct MemoryLock {
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryLock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn try_lock(
        &self,
        &Lease {
            key,
            owner,
            expiry_secs,
        }: &Lease<'_>,
    ) -> bool {
        let now = Instant::now();
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, until)) = leases.get(key)
            && *until > now
        {
            return false;
        }
        if leases.len() >= 4096 {
            leases.retain(|_, (_, until)| *until > now);
        }
        let lease = Duration::from_secs(expiry_secs.max(1) as u64);
        leases.insert(key.to_string(), (owner.to_string(), now + lease));
        true
    }

    pub fn unlock(&self, key: &str, owner: &str) -> UnlockStatus {
        let now = Instant::now();
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        assert!(l.try_lock(&lease("a")));
        assert!(!l.try_lock(&lease("a")));
        assert!(!l.try_lock(&lease("b")));
        assert_eq!(l.unlock("r", "b"), UnlockStatus::LockBelongsToOthers);
        assert_eq!(l.unlock("r", "a"), UnlockStatus::Success);
        assert_eq!(l.unlock("r", "a"), UnlockStatus::LockDoesNotExist);
        assert!(l.try_lock(&lease("b")));
    }
}
