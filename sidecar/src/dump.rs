//! `sidecar dump-state`: prints, for one app id, every live key of the state stores that a
//! resources folder names, as JSON lines, read straight from the store (SQLite file or
//! Redis) rather than through a sidecar. Tools that check a store after a load (the
//! booking ledger) read this instead of knowing each store's layout.

use std::io::Write as _;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::cli::StoreArgs;
use crate::components::Components;

/// Keys are read back in batches of this many.
const BATCH: usize = 500;

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let components = Components::open_offline(&args.resources_path, &args.app_id).await?;
    anyhow::ensure!(
        !components.state.is_empty(),
        "no state store in {:?} for app {}",
        args.resources_path,
        args.app_id
    );
    let mut names: Vec<&String> = components.state.keys().collect();
    names.sort();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for name in names {
        let c = &components.state[name];
        let Some(prefix) = &c.prefix else {
            anyhow::bail!(
                "{name}: keyPrefix is none, so app {}'s keys cannot be told from others'",
                args.app_id
            );
        };
        let prefix = format!("{prefix}||");
        let keys = c
            .store
            .keys_with_prefix(&prefix)
            .await
            .map_err(|e| anyhow::anyhow!("{name} ({}): {e}", c.store.location()))?;
        for batch in keys.chunks(BATCH) {
            let found = c.store.bulk_get(batch).await?;
            for (key, item) in batch.iter().zip(found) {
                // A key that expired or went away between the scan and the read is skipped;
                // one that cannot be read is an error, never a silent gap.
                let Some(item) = item.map_err(|e| anyhow::anyhow!("{key}: {e}"))? else {
                    continue;
                };
                let mut line = json!({"store": name, "key": &key[prefix.len()..]});
                match serde_json::from_slice::<Value>(&item.data) {
                    Ok(value) => line["value"] = value,
                    Err(_) => {
                        line["value_base64"] = base64::engine::general_purpose::STANDARD
                            .encode(&item.data)
                            .into();
                    }
                }
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        eprintln!(
            "{name} ({}): {} keys of {prefix}",
            c.store.location(),
            keys.len()
        );
    }
    out.flush()?;
    Ok(())
}
