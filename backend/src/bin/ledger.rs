//! `ledger`: checks a store after a load. Reads the lines of `sidecar dump-state` (a file
//! or standard input) and, optionally, the 201 answers clients were given; prints what it
//! found and exits 1 when a night is oversold or miscounted, an acknowledged booking is
//! missing, a request was booked twice, or (with the notifier's events) what was announced
//! is not what committed. `scripts/ledger` runs both steps.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;

use anyhow::Context as _;
use appkit::wire::{BookingEvent, Reservation};
use backend::catalogue::Catalogue;
use backend::ledger::{Entry, Ledger};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ledger",
    about = "Check the booking ledger of a store: sidecar dump-state --resources-path DIR | ledger"
)]
struct Args {
    /// The lines of `sidecar dump-state`; `-` is standard input.
    #[arg(long, default_value = "-")]
    state: PathBuf,
    /// The 201 bodies clients were given (JSON lines or one JSON array): each must be
    /// stored as answered, and stored bookings none of them names are counted.
    #[arg(long)]
    acknowledged: Option<PathBuf>,
    /// The events the notifier kept (its inbox file, JSON lines): every stored booking must
    /// have been announced confirmed as stored, and every other announced change must have
    /// committed.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Every request had its own user_id, so two reservations with one are a double booking.
    #[arg(long)]
    unique_users: bool,
    /// Hotel catalogue CSV (id,name,city,rooms); default: the one built into the backend.
    #[arg(long, env = "HOTEL_CATALOGUE")]
    catalogue: Option<PathBuf>,
    /// Print the verdict as one JSON object instead of lines for a terminal.
    #[arg(long)]
    json: bool,
    /// The state store whose keys are checked (`STATESTORE_NAME`, as the backend names it).
    #[arg(long, env = "STATESTORE_NAME", default_value = "statestore")]
    store: String,
    /// Accept a store with none of the backend's keys (otherwise a mistake: a wrong
    /// folder or path reads as an empty store, which would pass every check).
    #[arg(long)]
    allow_empty: bool,
}

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("ledger: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// True when the ledger is right.
fn run(args: &Args) -> anyhow::Result<bool> {
    let catalogue = match &args.catalogue {
        Some(path) => Catalogue::from_file(path)?,
        None => Catalogue::shipped()?,
    };
    let input: Box<dyn std::io::Read> = if args.state.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.state)
                .with_context(|| format!("opening {}", args.state.display()))?,
        )
    };
    let mut entries = Vec::new();
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line.context("reading the state lines")?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line)
            .with_context(|| format!("state line {}: not a dump-state line", n + 1))?;
        if entry.store == args.store {
            entries.push(entry);
        }
    }
    anyhow::ensure!(
        !entries.is_empty() || args.allow_empty,
        "store {:?} holds none of the backend's keys; a wrong components folder or path \
         reads as empty (--allow-empty to check an empty store)",
        args.store
    );
    let acknowledged = args.acknowledged.as_deref().map(read_answers).transpose()?;
    let ledger = Ledger::from_entries(entries);
    let mut verdict = ledger.check(
        |id| catalogue.get(id).map(|h| h.rooms),
        acknowledged.as_deref(),
        args.unique_users,
    );
    if let Some(path) = &args.events {
        ledger.check_events(&read_events(path)?, &mut verdict);
    }
    if args.json {
        println!("{}", serde_json::to_string(&verdict)?);
    } else {
        print!("{}", verdict.summary());
    }
    Ok(verdict.violations.is_empty())
}

fn read_answers(path: &std::path::Path) -> anyhow::Result<Vec<Reservation>> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not an array of reservations", path.display()));
    }
    parse_lines(&text, path, "a reservation")
}

/// The notifier's file: one event a line. A last line without its newline is one the
/// notifier is still writing (or a crash cut short, never acknowledged): left out.
fn read_events(path: &std::path::Path) -> anyhow::Result<Vec<BookingEvent>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..whole])
        .with_context(|| format!("{}: not UTF-8", path.display()))?;
    parse_lines(text, path, "an event")
}

fn parse_lines<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &std::path::Path,
    what: &str,
) -> anyhow::Result<Vec<T>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not {what}", path.display(), n + 1))
        })
        .collect()
}
