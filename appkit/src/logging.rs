//! Logging set-up for every binary of the workspace: a level word (uvicorn's, which the
//! services take, or Dapr's, which the sidecar takes) mapped onto a `tracing` filter, text
//! or JSON lines on stderr. `RUST_LOG` overrides the filter.

use tracing_subscriber::EnvFilter;

/// The `tracing` level for a level word of uvicorn (critical, error, warning, info, debug,
/// trace) or Dapr (debug, info, warn, error, fatal, panic); `None` for any other word.
pub fn level_filter(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "critical" | "error" | "fatal" | "panic" => "error",
        "warning" | "warn" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

/// Installs the global subscriber. The HTTP and gRPC libraries stay at `warn` unless
/// `RUST_LOG` says otherwise: at `debug` they would drown the process's own lines.
pub fn init(level_word: &str, json: bool) -> Result<(), String> {
    let level = level_filter(level_word).ok_or_else(|| {
        format!(
            "unknown log level {level_word:?}; use critical, error, warning, info, debug or \
             trace (or Dapr's fatal, panic, warn)"
        )
    })?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvicorn_and_dapr_words_map_to_tracing_levels() {
        for (word, level) in [
            ("critical", Some("error")),
            ("fatal", Some("error")),
            ("WARNING", Some("warn")),
            ("warn", Some("warn")),
            ("info", Some("info")),
            ("debug", Some("debug")),
            ("trace", Some("trace")),
            ("loud", None),
        ] {
            assert_eq!(level_filter(word), level, "{word}");
        }
    }
}
