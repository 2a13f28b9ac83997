//! `flush-floor`: what one durable commit per booking costs on this machine's disk by
//! itself, with no database, no HTTP and no sidecar: a constant rate of small overwrites
//! of a preallocated file (as a WAL is overwritten once started over), each followed by
//! `fdatasync`, the one flush `synchronous=FULL` adds to a commit. The limit probe
//! syncs nothing per booking, so this estimates what our FULL rows pay that it does not;
//! `scripts/against-probe` runs it beside them (timed apart from the probe, on a VM whose
//! speed moves: an estimate, not a floor).
//!
//! `inline`: written and flushed where asked, on the async runtime's own thread (no
//! hand-off). `handoff`: sent to a thread of its own and answered through a
//! oneshot, as the SQLite store sends a write that syncs (writes that queue meanwhile
//! share one flush), so the difference is what that hand-off adds. `unsynced`: `inline`
//! without the flush, the write a commit with `synchronous=NORMAL` makes as well.
//!
//! `flush-floor DIR [inline|handoff|unsynced] [RATE] [SECS] [BYTES]` (1000/s, 10 s, 12,288 bytes:
//! about three WAL frames, a booking's commit). The file is removed at the end.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The file's length: the writes cycle through it, so none extends it.
const FILE_BYTES: u64 = 4 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "flush-floor DIR [inline|handoff|unsynced] [RATE] [SECS] [BYTES]";
    let dir = PathBuf::from(args.first().context(usage)?);
    let mode = args.get(1).map_or("handoff", String::as_str);
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("{v}: {usage}"))
        })
    };
    let (rate, secs, bytes) = (number(2, 1000)?, number(3, 10)?, number(4, 12_288)?);
    if rate == 0 || secs == 0 || bytes == 0 || bytes > FILE_BYTES {
        bail!("RATE, SECS and BYTES must be above 0, BYTES at most {FILE_BYTES}: {usage}");
    }
    let (inline, sync) = match mode {
        "inline" => (true, true),
        "handoff" => (false, true),
        "unsynced" => (true, false),
        other => bail!("{other}: {usage}"),
    };
    let path = dir.join(format!("flush-floor-{}.bin", std::process::id()));
    let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let result = measure(&file, inline, sync, rate, secs, bytes);
    let _ = std::fs::remove_file(&path);
    let m = result?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let per = |s: f64| s * 1e6 / m.latencies.len() as f64;
    println!(
        "flush floor ({mode}): {} writes of {bytes} bytes at {rate}/s, {} flushes; p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {:.3} ms; CPU per write {:.0} us (user {:.0}, sys {:.0})",
        m.latencies.len(),
        m.flushes,
        ms(quantile(&m.latencies, 0.5)),
        ms(quantile(&m.latencies, 0.99)),
        ms(quantile(&m.latencies, 0.999)),
        ms(quantile(&m.latencies, 1.0)),
        per(m.user + m.sys),
        per(m.user),
        per(m.sys),
    );
    Ok(())
}

struct Measured {
    /// From when each write was sent (tokio's timer, which paces them, is only as exact as
    /// a millisecond, so time from when it was due would measure the timer).
    latencies: Vec<Duration>,
    flushes: u64,
    user: f64,
    sys: f64,
}

fn measure(
    file: &File,
    inline: bool,
    sync: bool,
    rate: u64,
    secs: u64,
    bytes: u64,
) -> anyhow::Result<Measured> {
    // Allocate the blocks and put them on disk once, so that every measured write is an
    // overwrite whose flush carries no metadata.
    let zeros = vec![0u8; 1 << 20];
    for at in (0..FILE_BYTES).step_by(zeros.len()) {
        file.write_all_at(&zeros, at)?;
    }
    file.sync_all()?;
    let page = vec![7u8; bytes as usize];
    let mut writer = Writer {
        file: file.try_clone()?,
        page,
        at: 0,
        flushes: 0,
        sync,
    };
    let count = rate * secs;
    let runtime = appkit::process::runtime(1)?;
    let before = cpu_seconds()?;
    let (mut latencies, flushes) = if inline {
        runtime.block_on(async {
            let mut latencies = Vec::with_capacity(count as usize);
            let mut tick = pacer(rate);
            for _ in 0..count {
                tick.tick().await;
                let sent = Instant::now();
                writer.write_and_flush(1)?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok((latencies, writer.flushes))
        })?
    } else {
        let (jobs, queue) = mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        let thread = std::thread::Builder::new().name("flush".into()).spawn(
            move || -> std::io::Result<u64> {
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    group.extend(queue.try_iter());
                    writer.write_and_flush(group.len())?;
                    for done in group {
                        let _ = done.send(());
                    }
                }
                Ok(writer.flushes)
            },
        )?;
        let latencies = runtime.block_on(async {
            let mut tick = pacer(rate);
            let mut answers = Vec::with_capacity(count as usize);
            for _ in 0..count {
                tick.tick().await;
                let sent = Instant::now();
                let (done, answer) = tokio::sync::oneshot::channel();
                jobs.send(done).context("the flush thread stopped")?;
                answers.push(tokio::spawn(async move {
                    answer.await.map(|()| sent.elapsed())
                }));
            }
            let mut latencies = Vec::with_capacity(answers.len());
            for a in answers {
                latencies.push(a.await?.context("the flush thread failed")?);
            }
            anyhow::Ok(latencies)
        })?;
        drop(jobs);
        let flushes = thread
            .join()
            .map_err(|_| anyhow::anyhow!("the flush thread panicked"))??;
        (latencies, flushes)
    };
    let after = cpu_seconds()?;
    latencies.sort_unstable();
    Ok(Measured {
        latencies,
        flushes,
        user: after.0 - before.0,
        sys: after.1 - before.1,
    })
}

struct Writer {
    file: File,
    page: Vec<u8>,
    at: u64,
    flushes: u64,
    /// Off: the write alone, which a commit with `synchronous=NORMAL` makes too.
    sync: bool,
}

impl Writer {
    /// One write per booking in the group, then one flush for all of them.
    fn write_and_flush(&mut self, bookings: usize) -> std::io::Result<()> {
        for _ in 0..bookings {
            if self.at + self.page.len() as u64 > FILE_BYTES {
                self.at = 0;
            }
            self.file.write_all_at(&self.page, self.at)?;
            self.at += self.page.len() as u64;
        }
        if self.sync {
            self.file.sync_data()?;
            self.flushes += 1;
        }
        Ok(())
    }
}

/// Due times `1/rate` apart; a late one is sent at once, as a constant-rate load does.
fn pacer(rate: u64) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    tick
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// This process's user and system CPU seconds so far.
fn cpu_seconds() -> anyhow::Result<(f64, f64)> {
    appkit::process::cpu_times(std::process::id()).context("read /proc/self/stat")
}
