//! `sidecar reset-state`: empties, for one app id, the state and lock stores that a
//! resources folder names, with the same key prefixing the sidecar uses: only that app's
//! keys (`<app>||...`, `lock||<app>||...`), never a whole shared Redis. In-memory stores
//! hold nothing once their sidecar stops, so restarting it is their reset.

use crate::cli::StoreArgs;
use crate::components::Components;

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let components = Components::open_offline(&args.resources_path, &args.app_id).await?;
    if components.state.is_empty() && components.lock.is_empty() {
        println!(
            "no state or lock store in {:?} for app {}",
            args.resources_path, args.app_id
        );
    }
    let mut names: Vec<&String> = components.state.keys().collect();
    names.sort();
    for name in names {
        let c = &components.state[name];
        let Some(prefix) = &c.prefix else {
            println!(
                "{name}: keyPrefix is none, so this app's keys cannot be told from others'; left as is"
            );
            continue;
        };
        let removed = c.store.delete_prefix(&format!("{prefix}||")).await?;
        match c.store {
            crate::state::StateStore::Memory(_) => {
                println!(
                    "{name} ({}): in-memory; restart its sidecar to empty it",
                    c.store.location()
                );
            }
            _ => println!(
                "{name} ({}): removed {removed} keys of {prefix}",
                c.store.location()
            ),
        }
    }
    let mut names: Vec<&String> = components.lock.keys().collect();
    names.sort();
    for name in names {
        let c = &components.lock[name];
        if let crate::lock::LockStore::Memory(_) = c.store {
            println!("{name}: in-process locks end with their sidecar; nothing to remove");
            continue;
        }
        let removed = c.store.delete_prefix(&c.prefix).await?;
        println!("{name}: removed {removed} held locks under {}", c.prefix);
    }
    Ok(())
}
