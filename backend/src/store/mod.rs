//! What the booking rules need of Dapr, and nothing more: a state store with ETags,
//! first-write creates and all-or-nothing transactions, and a lock store with leases,
//! every call bounded by a deadline. The Dapr sidecar (`SidecarClient`) is the real one; `memory` is a fake with the same rules for the booking's unit tests.

use std::future::Future;
use std::time::Instant;

use appkit::dapr::{DaprError, Item, NewItem, Op, SidecarClient, Unlocked};

#[cfg(test)]
pub mod memory;

pub trait Store: Clone + Send + Sync + 'static {
    /// The same store, with every call given up at `deadline`.
    #[must_use]
    fn until(&self, deadline: Instant) -> Self;

    /// The value and ETag of `key`; a missing key is an item that does not `exist()`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Item, DaprError>> + Send;

    /// One item per key, in order.
    fn bulk_get(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Item>, DaprError>> + Send;

    /// Creates each item whose key does not exist yet, in one call, leaving existing keys
    /// as they are; a read tells which were created.
    fn create(&self, items: Vec<NewItem>) -> impl Future<Output = Result<(), DaprError>> + Send;

    /// All of `ops` or none; an ETag that no longer matches fails the whole transaction.
    fn transact(&self, ops: Vec<Op>) -> impl Future<Output = Result<(), DaprError>> + Send;

    /// Whether an `Op::Create` of a key that exists fails its transaction, so a missing
    /// entry can be created in the commit itself instead of by a `create` and a read
    /// before it.
    fn transactions_create(&self) -> impl Future<Output = bool> + Send;

    /// Takes the lock on `resource` for `owner` for `lease_secs`, unless someone holds it.
    fn try_lock(
        &self,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> impl Future<Output = Result<bool, DaprError>> + Send;

    fn unlock(
        &self,
        resource: &str,
        owner: &str,
    ) -> impl Future<Output = Result<Unlocked, DaprError>> + Send;
}

impl Store for SidecarClient {
    fn until(&self, deadline: Instant) -> Self {
        SidecarClient::until(self, deadline)
    }

    fn get(&self, key: &str) -> impl Future<Output = Result<Item, DaprError>> + Send {
        SidecarClient::get(self, key)
    }

    fn bulk_get(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Item>, DaprError>> + Send {
        SidecarClient::bulk_get(self, keys)
    }

    fn create(&self, items: Vec<NewItem>) -> impl Future<Output = Result<(), DaprError>> + Send {
        SidecarClient::create(self, items)
    }

    fn transact(&self, ops: Vec<Op>) -> impl Future<Output = Result<(), DaprError>> + Send {
        SidecarClient::transact(self, ops)
    }

    fn transactions_create(&self) -> impl Future<Output = bool> + Send {
        SidecarClient::transactions_create(self)
    }

    fn try_lock(
        &self,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> impl Future<Output = Result<bool, DaprError>> + Send {
        SidecarClient::try_lock(self, resource, owner, lease_secs)
    }

    fn unlock(
        &self,
        resource: &str,
        owner: &str,
    ) -> impl Future<Output = Result<Unlocked, DaprError>> + Send {
        SidecarClient::unlock(self, resource, owner)
    }
}
