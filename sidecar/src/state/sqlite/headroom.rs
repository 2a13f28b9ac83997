//! Room in the WAL file ahead of its writer, while commits that sync keep coming.
//!
//! A sync after overwriting the file flushes the blocks written; after extending it, the
//! file's new length too (`fdatasync` p50 on this project's VM: 142-146 µs against
//! 190-245 µs). The WAL extends its file from a fresh start until it first starts over
//! (several seconds at 1,000 bookings/s) and whenever a cycle outgrows the earlier ones, so
//! while it grows, the store's thread writes zeros past its end, ahead of the commits.
//! SQLite reads a WAL only up to its first frame that does not check out (a zero page
//! number never does), as it stops before the stale frames it leaves itself after a
//! restart: the zeros are never taken for data.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use super::control;

/// Written per job: the writes queued behind one wait for it (4 MiB and a sync: about
/// 7 ms on this project's VM, where `dd` wrote 8 MiB and synced in 13 ms).
const CHUNK: u64 = 4 << 20;
/// The WAL's own header, and each frame's ahead of its page (SQLite's file format).
const WAL_HEADER: u64 = 32;
pub(super) const FRAME_HEADER: u64 = 24;

/// How long the WAL file should be, shared by the checkpointer (which raises it) and the
/// store's thread (which writes toward it).
#[derive(Default)]
pub(super) struct Room {
    to: AtomicU64,
    /// A chain of jobs is writing toward `to`: the checkpointer starts no second one.
    running: AtomicBool,
    /// The store is closing: its last checkpoint empties the WAL, and no chunk follows it.
    stopped: AtomicBool,
    /// Bytes of zeros written so far.
    pub(super) written: AtomicU64,
}

/// The bytes of a WAL holding `frames` frames of `frame` bytes each (header included).
pub(super) fn wal_bytes(frames: u64, frame: u64) -> u64 {
    WAL_HEADER + frames * frame
}

/// The checkpointer's view: the WAL's path, its frame size, how much growth in one round
/// counts as writes that keep coming, and the frames at which the WAL starts over.
pub(super) struct Headroom {
    wal: PathBuf,
    frame: u64,
    sustained: i64,
    restart: i64,
    last: i64,
}

impl Headroom {
    pub(super) fn new(db: &str, page_size: u64, sustained: i64, restart: i64) -> Self {
        Headroom {
            wal: PathBuf::from(format!("{db}-wal")),
            frame: page_size + FRAME_HEADER,
            sustained,
            restart,
            last: 0,
        }
    }

    pub(super) fn wal(&self) -> &PathBuf {
        &self.wal
    }

    /// After a checkpoint found `frames` in the WAL, `rounds` rounds after the last one:
    /// raises `room`'s length to two more rounds of the growth it saw per round, or to
    /// where the WAL starts over (in whole chunks), and says whether a chain of jobs must
    /// start writing toward it. Nothing while the WAL grows slowly: a store with a few
    /// writes keeps a small WAL file.
    pub(super) fn after_round(&mut self, frames: i64, rounds: i64, room: &Room) -> bool {
        // -1: the checkpoint was turned away as busy, and saw nothing.
        if frames < 0 {
            return false;
        }
        // A WAL that started over since the last round grew by what it now holds.
        let grown = if frames >= self.last {
            frames - self.last
        } else {
            frames
        } / rounds.max(1);
        self.last = frames;
        if grown < self.sustained {
            return false;
        }
        // A round that finds `restart` frames starts the WAL over: it holds at most one
        // round's growth more (unless the restart is put off, when this asks again).
        let ahead = (frames + 2 * grown).min(self.restart.max(frames).saturating_add(grown));
        let want = wal_bytes(ahead as u64, self.frame).div_ceil(CHUNK) * CHUNK;
        let Ok(len) = std::fs::metadata(&self.wal).map(|m| m.len()) else {
            return false;
        };
        if len >= want {
            return false;
        }
        if room.running.swap(true, Ordering::AcqRel) {
            room.to.fetch_max(want, Ordering::AcqRel);
            false
        } else {
            // A new chain: the file may have been emptied since the last one.
            room.to.store(want, Ordering::Release);
            true
        }
    }
}

impl Room {
    /// No chunk runs from now on (the running one finishes).
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// As the checkpointer does when a chain must start toward `to`.
    #[cfg(test)]
    pub(super) fn start(&self, to: u64) {
        self.to.store(to, Ordering::Release);
        self.running.store(true, Ordering::Release);
    }
}

/// On the store's thread, between groups: holding the database's write lock (so that no
/// writer, in this process or another, appends to the WAL meanwhile), writes one chunk of
/// zeros at the WAL's end toward `room`'s length and syncs it. Whether more is left; when
/// not, or when the database is busy (then the next round asks again), the chain ends.
pub(super) fn lengthen(conn: &Connection, wal: &Path, room: &Room, busy: Duration) -> bool {
    let _ = conn.busy_timeout(Duration::ZERO);
    let more =
        !room.stopped.load(Ordering::Acquire) && control(conn, "BEGIN IMMEDIATE").is_ok() && {
            let more = write_chunk(wal, room).unwrap_or_else(|e| {
                tracing::warn!(error = %e, wal = %wal.display(), "lengthening the WAL failed");
                false
            });
            let _ = control(conn, "ROLLBACK");
            more
        };
    let _ = conn.busy_timeout(busy);
    if !more {
        room.running.store(false, Ordering::Release);
    }
    more
}

fn write_chunk(wal: &Path, room: &Room) -> std::io::Result<bool> {
    // Never created here: a WAL that is not there has nothing to run ahead of.
    let file = OpenOptions::new().write(true).open(wal)?;
    let len = file.metadata()?.len();
    let to = room.to.load(Ordering::Acquire);
    if len >= to {
        return Ok(false);
    }
    let end = (len + CHUNK).min(to);
    let zeros = vec![0u8; (end - len) as usize];
    file.write_all_at(&zeros, len)?;
    file.sync_data()?;
    room.written.fetch_add(end - len, Ordering::Relaxed);
    Ok(end < to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(room: &Room) -> u64 {
        room.to.load(Ordering::Acquire)
    }

    /// Two rounds of growth ahead, no further than where the WAL starts over; nothing
    /// while it grows slowly or when the file is long enough already; one chain at a time.
    #[test]
    fn the_room_follows_the_growth_up_to_the_restart() {
        let dir = testkit::TempDir::new("sqlite-headroom");
        let db = dir.path().join("state.db").display().to_string();
        let wal = PathBuf::from(format!("{db}-wal"));
        std::fs::write(&wal, b"").unwrap();
        let frame = 4096 + FRAME_HEADER;
        let bytes = |frames: u64| wal_bytes(frames, frame).div_ceil(CHUNK) * CHUNK;
        let mut h = Headroom::new(&db, 4096, 1_024, 16_384);
        let room = Room::default();

        assert!(!h.after_round(1_000, 1, &room), "slow growth: no room");
        assert!(
            !h.after_round(4_000, 3, &room),
            "3,000 frames over three rounds: slow growth too"
        );
        h.last = 1_000;
        assert!(
            h.after_round(4_000, 1, &room),
            "3,000 frames in a round: a chain starts"
        );
        assert_eq!(to(&room), bytes(4_000 + 2 * 3_000));
        assert!(
            !h.after_round(8_000, 1, &room),
            "a chain is running: no second one"
        );
        assert_eq!(to(&room), bytes(8_000 + 2 * 4_000));
        // Near the restart: one round's growth past it, not two.
        room.running.store(false, Ordering::Release);
        assert!(h.after_round(14_000, 1, &room));
        assert_eq!(to(&room), bytes(16_384 + 6_000));

        // A file already that long: nothing to do.
        let mut long = Headroom::new(&db, 4096, 1_024, i64::MAX);
        std::fs::File::options()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(bytes(100_000))
            .unwrap();
        let room = Room::default();
        assert!(!long.after_round(2_000, 1, &room));
        assert_eq!(to(&room), 0);
    }
}
