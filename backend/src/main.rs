//! `backend`: serves `POST /book_hotel/{id}` and the booking queries on :5001.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use appkit::dapr::SidecarClient;
use appkit::process::{runtime, shutdown_signal};
use appkit::service::ServiceArgs;
use appkit::settings::{ApiProtocol, DaprSettings, app_port};
use backend::booking::{Booker, Consistency, Policy, Work};
use backend::catalogue::Catalogue;
use backend::routes::{AppState, app};
use clap::Parser;

/// Every request allocates and frees buffers of a few KiB (HTTP/2 frames, codec and body
/// buffers); glibc's malloc served them at a measured 20% of the CPU per booking more
/// than mimalloc's per-size free lists do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "backend", about = "Hotel booking backend (a Dapr app)")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// How concurrent bookings are kept from overselling.
    #[arg(long, env = "CONSISTENCY", value_enum, default_value = "lock")]
    consistency: Consistency,
    /// How much of the Dapr path a booking takes (benchmark configurations).
    #[arg(long, env = "BACKEND_WORK", value_enum, default_value = "full")]
    work: Work,
    /// Lock lease in seconds: how long a crashed backend can block a hotel.
    #[arg(long, env = "LOCK_LEASE_SECONDS", default_value_t = 5)]
    lock_lease: i32,
    /// How long a booking waits for a busy hotel before answering 503, in milliseconds.
    #[arg(long, env = "BUSY_WAIT_MS", default_value_t = 5000)]
    busy_wait_ms: u64,
    /// The most time one request may take, in milliseconds (a caller's
    /// `x-request-timeout-ms` can only shorten it); past it the answer is 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    request_timeout_ms: u64,
    /// How long an Idempotency-Key's record (and so its answer) is kept, in seconds.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECONDS", default_value_t = 86_400)]
    idempotency_ttl: u32,
    /// Fault injection: milliseconds to stay inside each lock, between read and commit (to
    /// kill or pause a backend holding one).
    #[arg(long, env = "BACKEND_HOLD_LOCK_MS", default_value_t = 0, hide = true)]
    hold_lock_ms: u64,
    /// Unsafe, for the fault suite's proof only: write under the lock without ETags and
    /// without the lease bound, as before fencing.
    #[arg(
        long,
        env = "BACKEND_UNSAFE_NO_FENCING",
        default_value_t = false,
        hide = true
    )]
    unsafe_no_fencing: bool,
    /// The sidecar API the state and lock calls use: Dapr's HTTP API (the default: it
    /// measured 40% fewer instructions per booking here and 30% fewer in the sidecar than
    /// gRPC, see docs/benchmarks.md), or gRPC.
    #[arg(long, env = "DAPR_API_PROTOCOL", value_enum, default_value = "http")]
    dapr_api_protocol: ApiProtocol,
    /// Announce booking.confirmed and booking.cancelled through the state store's outbox
    /// (the store needs outboxPublishPubsub and outboxPublishTopic).
    #[arg(long, env = "BOOKING_EVENTS", default_value_t = false)]
    booking_events: bool,
    /// Hotel catalogue CSV (id,name,city,rooms); default: the one built in.
    #[arg(long, env = "HOTEL_CATALOGUE")]
    catalogue: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    appkit::logging::init(&args.service.log_level, args.service.log_json)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.lock_lease > 0,
        "--lock-lease must be at least 1 second"
    );
    let catalogue = Arc::new(match &args.catalogue {
        Some(path) => Catalogue::from_file(path)?,
        None => Catalogue::shipped()?,
    });
    let settings = DaprSettings {
        api_protocol: args.dapr_api_protocol,
        ..DaprSettings::from_env()
    };
    let port = args.service.port.unwrap_or_else(|| app_port(5001));
    runtime(args.service.workers)?.block_on(async move {
        let state = match args.work {
            Work::NoDapr => None,
            Work::ClientOnly => Some(
                SidecarClient::connect(&settings)
                    .await
                    .context("connecting to the Dapr sidecar")?,
            ),
            Work::Full => Some(SidecarClient::new(&settings)?),
        };
        let policy = Policy {
            consistency: args.consistency,
            lease_secs: args.lock_lease,
            wait_budget: Duration::from_millis(args.busy_wait_ms),
            hold_lock: Duration::from_millis(args.hold_lock_ms),
            fencing: !args.unsafe_no_fencing,
            key_ttl_secs: args.idempotency_ttl.max(1),
            events: args.booking_events,
        };
        if args.unsafe_no_fencing {
            tracing::warn!(
                "fencing is off: a stalled lock holder can oversell (fault-suite proof only)"
            );
        }
        let booker = Booker::new(catalogue.clone(), state, policy, args.work);
        let app_state = AppState {
            booker: Arc::new(booker),
            app_token: settings.app_token.as_deref().map(Arc::from),
            budget: Duration::from_millis(args.request_timeout_ms.max(1)),
        };
        let listener = appkit::server::listen((args.service.host, port).into())
            .with_context(|| format!("binding {}:{port}", args.service.host))?;
        tracing::info!(
            port,
            hotels = catalogue.len(),
            consistency = ?args.consistency,
            work = ?args.work,
            statestore = %settings.statestore,
            lockstore = %settings.lockstore,
            api = ?settings.api_protocol,
            events = args.booking_events,
            "backend listening"
        );
        appkit::server::serve_http1(
            appkit::server::nodelay(listener),
            app(app_state),
            shutdown_signal(),
        )
        .await;
        Ok(())
    })
}
