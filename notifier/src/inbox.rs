//! What the notifier keeps: every booking event it heard, once, as one JSON line in a file
//! that is synced before the event is acknowledged, so an event Dapr was told is taken
//! survives a crash. Lines are written by one thread that syncs each batch once (group
//! commit). A repeat of an event already kept (pub/sub delivers at least once) is
//! recognised by the change it announces (kind and reservation id), counted, and not
//! written again.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use appkit::wire::{BookingEvent, EventKind, now_rfc3339};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line} is not an event this notifier wrote: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("keeping an event: {0}")]
    Write(String),
}

/// One line of the file: the event, the id of the CloudEvent that carried it first, and
/// when it was heard.
#[derive(Debug, Serialize, Deserialize)]
pub struct Heard {
    pub id: String,
    #[serde(flatten)]
    pub event: BookingEvent,
    pub received_at: String,
}

/// What the inbox has heard: kept changes since its file began; repeats and other
/// messages since this process started.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub confirmed: usize,
    pub cancelled: usize,
    /// Deliveries of an event already kept.
    pub duplicates: usize,
    /// Messages on the topic that are not booking events (the outbox publishes every
    /// write of a booking's transaction; only the one with the event counts).
    pub ignored: usize,
}

/// Whether an event was new.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    New,
    Duplicate,
}

type Batch = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// The notifier's file of events and what it holds, shared by every delivery.
#[derive(Clone)]
pub struct Inbox {
    path: Arc<PathBuf>,
    index: Arc<Mutex<Index>>,
    lines: mpsc::Sender<Batch>,
}

/// A change an event announces: what happened to which reservation.
type Change = (EventKind, String);

#[derive(Default)]
struct Index {
    /// Changes kept on disk.
    heard: HashSet<Change>,
    /// Changes being written, with the repeats that wait for how that ends.
    writing: HashMap<Change, Vec<oneshot::Sender<bool>>>,
    counts: Counts,
}

impl Index {
    fn count(&mut self, kind: EventKind) {
        match kind {
            EventKind::Confirmed => self.counts.confirmed += 1,
            EventKind::Cancelled => self.counts.cancelled += 1,
        }
    }
}

impl Inbox {
    /// Opens (or creates) the file at `path` and learns what it holds. A last line cut
    /// short by a crash was never acknowledged: it is cut off. Any other line that is not
    /// an event is refused, rather than written after.
    pub fn open(path: &Path) -> Result<Inbox, InboxError> {
        let open_err = |source| InboxError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(open_err)?;
        let mut index = Index::default();
        let mut whole = 0u64;
        let mut reader = BufReader::new(&file);
        // Bytes, not text: a line cut short may end inside a character.
        let mut line = Vec::new();
        for n in 1.. {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(open_err)?;
            if read == 0 || !line.ends_with(b"\n") {
                break;
            }
            whole += read as u64;
            let heard: Heard = serde_json::from_slice(&line).map_err(|e| InboxError::Corrupt {
                path: path.to_path_buf(),
                line: n,
                reason: e.to_string(),
            })?;
            let event = heard.event;
            index.heard.insert((event.kind, event.reservation.id));
            index.count(event.kind);
        }
        if file.seek(SeekFrom::End(0)).map_err(open_err)? > whole {
            tracing::warn!(path = %path.display(), "cutting off a last line left unfinished");
            file.set_len(whole).map_err(open_err)?;
        }
        // What an earlier process wrote but never synced is trusted from here on: sync it,
        // and the folder's entry of a file just made.
        file.sync_data().map_err(open_err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(open_err)?;
        }
        let (lines, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || write_batches(file, whole, &queue))
            .map_err(open_err)?;
        Ok(Inbox {
            path: Arc::new(path.to_path_buf()),
            index: Arc::new(Mutex::new(index)),
            lines,
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event`, carried by the CloudEvent `id`; returns once it is on disk. A repeat
    /// of a change being written waits for that write: it is acknowledged only once the
    /// change is on disk, and refused if the write failed.
    pub async fn keep(&self, id: &str, event: BookingEvent) -> Result<Kept, InboxError> {
        let change = (event.kind, event.reservation.id.clone());
        let wait = {
            let mut index = self.index();
            if index.heard.contains(&change) {
                index.counts.duplicates += 1;
                return Ok(Kept::Duplicate);
            }
            match index.writing.get_mut(&change) {
                Some(waiting) => {
                    let (tell, told) = oneshot::channel();
                    waiting.push(tell);
                    Some(told)
                }
                None => {
                    index.writing.insert(change.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(told) = wait {
            return match told.await {
                Ok(true) => {
                    self.index().counts.duplicates += 1;
                    Ok(Kept::Duplicate)
                }
                _ => Err(InboxError::Write(
                    "the first delivery of this event was not kept".into(),
                )),
            };
        }
        let kind = event.kind;
        let heard = Heard {
            id: id.to_string(),
            event,
            received_at: now_rfc3339(),
        };
        let written = self.write(&heard).await;
        let mut index = self.index();
        let waiting = index.writing.remove(&change).unwrap_or_default();
        if written.is_ok() {
            index.heard.insert(change);
            index.count(kind);
        }
        for tell in waiting {
            let _ = tell.send(written.is_ok());
        }
        // Not kept: the delivery is refused, and the event comes again.
        written.map(|()| Kept::New)
    }

    async fn write(&self, heard: &Heard) -> Result<(), InboxError> {
        let mut line = serde_json::to_vec(heard).map_err(|e| InboxError::Write(e.to_string()))?;
        line.push(b'\n');
        let (done, synced) = oneshot::channel();
        let gone = || InboxError::Write(format!("the writer of {} stopped", self.path.display()));
        self.lines.send((line, done)).map_err(|_| gone())?;
        synced.await.map_err(|_| gone())?.map_err(InboxError::Write)
    }

    /// A message on the topic that is not a booking event.
    pub fn ignored(&self) {
        self.index().counts.ignored += 1;
    }

    pub fn counts(&self) -> Counts {
        self.index().counts
    }
}

/// The writer thread: takes every line waiting, writes them, syncs once, answers each.
/// A failed write or sync fails the whole batch (none of it is acknowledged) and cuts the
/// file back to its last synced length, so no half line is left for the next batch to
/// follow. If even that fails, the file can no longer be trusted: every later batch fails
/// too (each delivery is refused, and Dapr offers it again) until a restart reads the file
/// anew. A sync is never retried: after a failed fsync the kernel may already have
/// dropped the pages it could not write.
fn write_batches(mut file: File, mut synced: u64, queue: &mpsc::Receiver<Batch>) {
    let mut broken: Option<String> = None;
    while let Ok(first) = queue.recv() {
        let batch: Vec<Batch> = std::iter::once(first).chain(queue.try_iter()).collect();
        let mut bytes = Vec::new();
        for (line, _) in &batch {
            bytes.extend_from_slice(line);
        }
        let result = match &broken {
            Some(why) => Err(why.clone()),
            None => match file.write_all(&bytes).and_then(|()| file.sync_data()) {
                Ok(()) => {
                    synced += bytes.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    let why = e.to_string();
                    if let Err(cut) = file.set_len(synced).and_then(|()| file.sync_data()) {
                        tracing::error!(error = %why, %cut, "the inbox could not be cut back; refusing every event until a restart");
                        broken = Some(format!("{why}; then cutting back: {cut}"));
                    }
                    Err(why)
                }
            },
        };
        for (_, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appkit::wire::{Day, Reservation};

    fn event(kind: EventKind, id: &str) -> BookingEvent {
        BookingEvent {
            kind,
            reservation: Reservation {
                id: id.into(),
                hotel_id: 1,
                user_id: "u".into(),
                name: "N".into(),
                check_in: Day::parse("2027-12-01").unwrap(),
                check_out: Day::parse("2027-12-02").unwrap(),
                rooms: 1,
                created_at: "2027-11-01T00:00:00Z".into(),
            },
            at: "2027-11-01T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn each_change_is_kept_once_and_known_again_after_a_restart() {
        let dir = testkit::TempDir::new("inbox");
        let path = dir.path().join("events.jsonl");
        let inbox = Inbox::open(&path).unwrap();
        assert_eq!(
            inbox
                .keep("e1", event(EventKind::Confirmed, "a"))
                .await
                .unwrap(),
            Kept::New
        );
        assert_eq!(
            inbox
                .keep("e2", event(EventKind::Confirmed, "a"))
                .await
                .unwrap(),
            Kept::Duplicate,
            "the same change under another CloudEvent id is a duplicate"
        );
        inbox
            .keep("e3", event(EventKind::Cancelled, "a"))
            .await
            .unwrap();
        assert_eq!(
            inbox.counts(),
            Counts {
                confirmed: 1,
                cancelled: 1,
                duplicates: 1,
                ignored: 0
            }
        );
        drop(inbox);
        // A crash in the middle of a line, inside a character: the line is cut off, the
        // rest known.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"e4\",\"name\":\"Jos\xc3").unwrap();
        drop(f);
        let again = Inbox::open(&path).unwrap();
        assert_eq!((again.counts().confirmed, again.counts().cancelled), (1, 1));
        assert_eq!(
            again
                .keep("e5", event(EventKind::Confirmed, "a"))
                .await
                .unwrap(),
            Kept::Duplicate
        );
        // Twins at once: one is written, the other waits for it and is a repeat.
        let (one, two) = tokio::join!(
            again.keep("e6", event(EventKind::Confirmed, "b")),
            again.keep("e7", event(EventKind::Confirmed, "b"))
        );
        assert_eq!((one.unwrap(), two.unwrap()), (Kept::New, Kept::Duplicate));
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Heard>(l).unwrap().id)
            .collect();
        assert_eq!(ids, ["e1", "e3", "e6"]);
    }

    #[test]
    fn a_file_of_something_else_is_refused() {
        let dir = testkit::TempDir::new("inbox");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "not an event\n").unwrap();
        let e = Inbox::open(&path).err().expect("refused");
        assert!(matches!(e, InboxError::Corrupt { line: 1, .. }), "{e}");
    }
}
