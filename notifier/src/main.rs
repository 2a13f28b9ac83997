//! `notifier`: hears the backend's booking events on :5003 and keeps them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use appkit::process::{runtime, shutdown_signal};
use appkit::service::ServiceArgs;
use appkit::settings::{DaprSettings, app_port};
use clap::Parser;
use notifier::inbox::Inbox;
use notifier::routes::{Notifier, app};

#[derive(Parser, Debug)]
#[command(name = "notifier", about = "Booking event subscriber (a Dapr app)")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// The pub/sub component the backend's state store publishes its events to
    /// (its outboxPublishPubsub).
    #[arg(long, env = "PUBSUB_NAME", default_value = "pubsub")]
    pubsub: String,
    /// The topic (the state store's outboxPublishTopic).
    #[arg(long, env = "BOOKING_TOPIC", default_value = "bookings")]
    topic: String,
    /// Where the events heard are kept, one JSON line each (`ledger --events` reads it).
    #[arg(
        long,
        env = "NOTIFIER_INBOX",
        default_value = "data/notifications.jsonl"
    )]
    inbox: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    appkit::logging::init(&args.service.log_level, args.service.log_json)
        .map_err(anyhow::Error::msg)?;
    let inbox = Inbox::open(&args.inbox)?;
    let port = args.service.port.unwrap_or_else(|| app_port(5003));
    let app_token = DaprSettings::from_env().app_token.map(Arc::from);
    runtime(args.service.workers)?.block_on(async move {
        let listener = appkit::server::listen((args.service.host, port).into())
            .with_context(|| format!("binding {}:{port}", args.service.host))?;
        tracing::info!(port, pubsub = %args.pubsub, topic = %args.topic, inbox = %args.inbox.display(), heard = ?inbox.counts(), "notifier listening");
        let notifier = Notifier {
            inbox,
            pubsub: args.pubsub.into(),
            topic: args.topic.into(),
            app_token,
        };
        axum::serve(listener, app(notifier))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok(())
    })
}
