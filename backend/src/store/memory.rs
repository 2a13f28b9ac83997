//! An in-memory `Store` with the rules of this project's sidecar that the booking relies
//! on, for its unit tests: an ETag per key that changes on every write, first-write
//! creates, transactions that check every ETag before writing anything (and fail as the
//! sidecar does, INTERNAL), an outbox that publishes every upsert of a transaction that
//! commits (its projection in place of its value), and locks whose leases run out. TTLs are not kept. Every
//! call yields to the scheduler first, so concurrent bookings interleave as they would
//! over the network. Faults a test can turn on: commits applied whose answer is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appkit::dapr::{DaprError, Item, NewItem, Op, Unlocked};

use super::Store;

#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    /// Key → (value, ETag).
    items: HashMap<String, (Vec<u8>, String)>,
    next_etag: u64,
    /// Resource → (owner, lease end).
    locks: HashMap<String, (String, Instant)>,
    /// How many of the next transactions are applied but answered with an error.
    answers_to_lose: usize,
    transactions: usize,
    /// Creates save a batch all or nothing, as a store with a transactional bulk save.
    batch_all_or_nothing: bool,
    /// Keys another writer creates just before the next create lands.
    created_first: Vec<String>,
    /// Transactions refuse an `Op::Create` of a key that exists (as on SQLite), so the
    /// booking creates missing entries in its commit.
    creating_transactions: bool,
    /// Entries another writer makes just before the next transaction lands.
    written_first: Vec<(String, Vec<u8>)>,
    /// What the outbox published, in order: for each upsert of a committed transaction,
    /// its projection when it has one, else its value.
    published: Vec<Vec<u8>>,
    /// No outbox: projections are written as plain values, in their place.
    no_outbox: bool,
}

impl Shared {
    fn etag(&mut self) -> String {
        self.next_etag += 1;
        self.next_etag.to_string()
    }

    fn item(&self, key: &str) -> Item {
        let (data, etag) = self.items.get(key).cloned().unwrap_or_default();
        Item {
            key: key.to_string(),
            data,
            etag,
        }
    }

    /// The ETag an operation names matches (or it names none).
    fn matches(&self, key: &str, etag: Option<&String>) -> bool {
        etag.is_none_or(|e| self.items.get(key).is_some_and(|(_, now)| now == e))
    }
}

impl MemoryStore {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets other tasks run, then refuses the call if its deadline has passed.
    async fn enter(&self, call: &str) -> Result<(), DaprError> {
        tokio::task::yield_now().await;
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(DaprError::DeadlineExceeded(format!(
                "{call}: the deadline passed"
            ))),
            _ => Ok(()),
        }
    }

    /// The next `n` transactions are applied, then answered as if the reply were lost.
    pub fn lose_answers(&self, n: usize) {
        self.shared().answers_to_lose = n;
    }

    /// Creates save their batch all or nothing, and the next one finds `key` made by
    /// another writer just before it.
    pub fn race_next_create(&self, key: &str) {
        let mut shared = self.shared();
        shared.batch_all_or_nothing = true;
        shared.created_first.push(key.to_string());
    }

    /// Transactions refuse an `Op::Create` of a key that exists, as on SQLite: the booking
    /// then creates missing entries in its commit.
    pub fn with_creating_transactions(self) -> Self {
        self.shared().creating_transactions = true;
        self
    }

    /// Another writer makes `key` (with `value`) just before the next transaction lands.
    pub fn write_before_next_transaction(&self, key: &str, value: &[u8]) {
        self.shared()
            .written_first
            .push((key.to_string(), value.to_vec()));
    }

    /// How many transactions were applied.
    pub fn transactions(&self) -> usize {
        self.shared().transactions
    }

    /// Transactions write projections as plain values and publish nothing, as on a
    /// store without an outbox.
    pub fn without_outbox(self) -> Self {
        self.shared().no_outbox = true;
        self
    }

    /// What the outbox published, as JSON, in order.
    pub fn published(&self) -> Vec<serde_json::Value> {
        let shared = self.shared();
        shared
            .published
            .iter()
            .map(|p| serde_json::from_slice(p).expect("projections are JSON"))
            .collect()
    }

    /// The value stored under `key`, as JSON.
    pub fn value(&self, key: &str) -> Option<serde_json::Value> {
        let shared = self.shared();
        let (data, _) = shared.items.get(key)?;
        serde_json::from_slice(data).ok()
    }

    /// Every key that starts with `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .shared()
            .items
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Takes the lock at once, as `try_lock` does (for a test to hold one itself).
    pub fn try_lock_now(&self, resource: &str, owner: &str, lease_secs: i32) -> bool {
        let mut shared = self.shared();
        let now = Instant::now();
        if shared
            .locks
            .get(resource)
            .is_some_and(|(_, until)| now < *until)
        {
            return false;
        }
        let lease = Duration::from_secs(u64::try_from(lease_secs.max(1)).unwrap_or(1));
        shared
            .locks
            .insert(resource.to_string(), (owner.to_string(), now + lease));
        true
    }

    /// Who holds the lock on `resource` now (a lease that ran out holds nothing).
    pub fn holder(&self, resource: &str) -> Option<String> {
        let shared = self.shared();
        let (owner, until) = shared.locks.get(resource)?;
        (Instant::now() < *until).then(|| owner.clone())
    }
}

impl Store for MemoryStore {
    fn until(&self, deadline: Instant) -> Self {
        MemoryStore {
            shared: self.shared.clone(),
            deadline: Some(deadline),
        }
    }

    async fn get(&self, key: &str) -> Result<Item, DaprError> {
        self.enter("get").await?;
        Ok(self.shared().item(key))
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Item>, DaprError> {
        self.enter("bulk_get").await?;
        let shared = self.shared();
        Ok(keys.iter().map(|k| shared.item(k)).collect())
    }

    async fn create(&self, items: Vec<NewItem>) -> Result<(), DaprError> {
        self.enter("create").await?;
        let mut shared = self.shared();
        for key in std::mem::take(&mut shared.created_first) {
            let etag = shared.etag();
            shared
                .items
                .insert(key, (br#"{"booked":0}"#.to_vec(), etag));
        }
        if shared.batch_all_or_nothing && items.iter().any(|i| shared.items.contains_key(&i.key)) {
            // Refused whole; like the sidecar's client, that is no error to the caller.
            return Ok(());
        }
        for item in items {
            if !shared.items.contains_key(&item.key) {
                let etag = shared.etag();
                shared.items.insert(item.key, (item.value, etag));
            }
        }
        Ok(())
    }

    async fn transact(&self, ops: Vec<Op>) -> Result<(), DaprError> {
        self.enter("transact").await?;
        let mut shared = self.shared();
        for (key, value) in std::mem::take(&mut shared.written_first) {
            let etag = shared.etag();
            shared.items.insert(key, (value, etag));
        }
        // The outbox takes the projections out, and publishes each upsert (its projection
        // in place of its value) when the transaction commits. Without an outbox, a
        // projection is an upsert like any other.
        let mut projections = HashMap::new();
        let ops: Vec<Op> = ops
            .into_iter()
            .filter_map(|op| match op {
                Op::Projection { key, value } if !shared.no_outbox => {
                    projections.insert(key, value);
                    None
                }
                Op::Projection { key, value } => Some(Op::Upsert {
                    key,
                    value,
                    etag: None,
                    ttl: None,
                }),
                other => Some(other),
            })
            .collect();
        let events: Vec<Vec<u8>> = if shared.no_outbox {
            Vec::new()
        } else {
            ops.iter()
                .filter_map(|op| match op {
                    Op::Upsert { key, value, .. } | Op::Create { key, value, .. } => {
                        Some(projections.get(key).unwrap_or(value).clone())
                    }
                    _ => None,
                })
                .collect()
        };
        for op in &ops {
            let refused = match op {
                Op::Upsert { key, etag, .. } | Op::Delete { key, etag } => {
                    !shared.matches(key, etag.as_ref())
                }
                // Without creating transactions (as on Redis, for a key a transaction
                // wrote) a create overwrites: a booking must not rely on it then.
                Op::Create { key, .. } => {
                    shared.creating_transactions && shared.items.contains_key(key)
                }
                Op::Projection { .. } => false,
            };
            if refused {
                let key = op.key();
                // As the sidecar answers a transaction refused for an ETag: a plain
                // failure (INTERNAL), never the ABORTED of a single save.
                return Err(DaprError::Failed {
                    code: tonic::Code::Internal,
                    message: format!("possible etag mismatch on {key}"),
                });
            }
        }
        for op in ops {
            match op {
                Op::Upsert { key, value, .. } | Op::Create { key, value, .. } => {
                    let etag = shared.etag();
                    shared.items.insert(key, (value, etag));
                }
                Op::Delete { key, .. } => {
                    shared.items.remove(&key);
                }
                Op::Projection { .. } => {}
            }
        }
        shared.published.extend(events);
        shared.transactions += 1;
        if shared.answers_to_lose > 0 {
            shared.answers_to_lose -= 1;
            return Err(DaprError::DeadlineExceeded("the answer was lost".into()));
        }
        Ok(())
    }

    async fn transactions_create(&self) -> bool {
        self.shared().creating_transactions
    }

    async fn try_lock(
        &self,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> Result<bool, DaprError> {
        self.enter("try_lock").await?;
        Ok(self.try_lock_now(resource, owner, lease_secs))
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<Unlocked, DaprError> {
        self.enter("unlock").await?;
        let mut shared = self.shared();
        let now = Instant::now();
        match shared.locks.get(resource) {
            Some((_, until)) if now >= *until => {
                shared.locks.remove(resource);
                Ok(Unlocked::DidNotExist)
            }
            None => Ok(Unlocked::DidNotExist),
            Some((held_by, _)) if held_by != owner => Ok(Unlocked::HeldByOther),
            Some(_) => {
                shared.locks.remove(resource);
                Ok(Unlocked::Released)
            }
        }
    }
}
