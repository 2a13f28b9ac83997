//! Answers of a name lookup kept for a short time, for a bounded number of names: what
//! the registry folder and DNS name resolution both keep, so that the hot path of an
//! invocation neither reads files nor asks DNS.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub struct LookupCache<V> {
    ttl: Duration,
    /// Names kept at once: past it, stale answers are dropped first, and a full cache of
    /// fresh ones takes no new name (those lookups are made each time).
    cap: usize,
    answers: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> LookupCache<V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        LookupCache {
            ttl,
            cap,
            answers: Mutex::new(HashMap::new()),
        }
    }

    fn answers(&self) -> MutexGuard<'_, HashMap<String, (V, Instant)>> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for `name`, while it is fresh.
    pub fn get(&self, name: &str) -> Option<V> {
        self.answers()
            .get(name)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(answer, _)| answer.clone())
    }

    /// Keeps `answer` for `name`, found at `at`.
    pub fn put(&self, name: &str, answer: V, at: Instant) {
        let mut answers = self.answers();
        if answers.len() >= self.cap {
            answers.retain(|_, (_, found)| at.duration_since(*found) < self.ttl);
        }
        if answers.len() < self.cap || answers.contains_key(name) {
            answers.insert(name.to_string(), (answer, at));
        }
    }

    /// Drops the answer for `name` (it led to a failed call), so the next lookup is made.
    pub fn forget(&self, name: &str) {
        self.answers().remove(name);
    }

    pub fn is_empty(&self) -> bool {
        self.answers().is_empty()
    }
}
