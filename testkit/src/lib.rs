//! The test harness every black-box test of the workspace uses: a real `redis-server` on a
//! free loopback port, real `sidecar run` processes with their own name registry, temporary
//! component folders, and health polling instead of sleeps. Everything started here is
//! stopped when its handle is dropped.

mod apps;
mod components;
mod http;
mod ledger;
mod netns;
mod notifier;
mod pki;
mod process;
pub mod redis;
mod sidecar;
mod stack;
mod stores;

pub use apps::{
    Collected, HELLO, fetch_hello_through, serve, spawn_static_app, start_collector, start_echo_app,
};
pub use components::ComponentsDir;
pub use http::{get_json, post_reading_early};
pub use ledger::{Verdict, check_ledger, check_ledger_and_events};
pub use netns::{Host, Net};
pub use notifier::NotifierProcess;
pub use pki::Pki;
pub use process::{ChildGuard, TempDir, free_port, wait_until};
pub use redis::{RedisServer, Silenced};
pub use sidecar::{SidecarBuilder, SidecarProcess};
pub use stack::{Stack, StackBuilder, workspace_bin};
pub use stores::{StoreFixture, StoreKind};
