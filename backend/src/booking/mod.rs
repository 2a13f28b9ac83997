//! Booking rules and how they are kept consistent.
//!
//! A stay touches several keys (one per night, `hotel-{id}-{date}` holding `{"booked": n}`,
//! plus `reservation-{uuid}`). Three ways to keep concurrent bookings of one hotel from
//! selling a room twice, chosen at start:
//! - `lock` (default): the Dapr lock on `hotel-{id}` around read-check-write, released on
//!   every path; a busy lock is retried with backoff for a bounded time, then 503. The lock
//!   only keeps bookers from getting in each other's way: a lease can run out under a
//!   holder that stalls, so the writes also carry the ETags read under the lock (fencing),
//!   and the work stops before its commit once the lease is nearly over.
//! - `etag`: no lock; nights are written with first-write ETags in one transaction, and a
//!   conflict re-reads and retries, within bounds.
//! - `none`: no protection at all, to show what goes wrong.
//!
//! Every call to the sidecar carries the request's deadline. A commit whose answer is lost
//! (an error or a timeout after the store may have applied it) is ambiguous: the
//! reservation is read back before anything is done again. A change made under an
//! `Idempotency-Key` writes the key's record in the same transaction, guarded by the
//! record's ETag, so one key makes at most one booking, and a retry is answered from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use appkit::dapr::{DaprError, Item, NewItem, Op, SidecarClient, Unlocked};
use appkit::request::first_bookable_day;
use appkit::wire::{
    Availability, BookingEvent, BookingRequest, Day, EventKind, Hotel, NightAvailability,
    Reservation, ReservationId, now_rfc3339,
};
use serde::{Deserialize, Serialize};

use crate::catalogue::Catalogue;
use crate::store::Store;

mod error;
#[cfg(test)]
mod tests;

pub use error::BookingError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    Lock,
    Etag,
    None,
}

/// How much of the Dapr path a booking takes (the configurations of the original study).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Work {
    /// Validate and answer; no Dapr client at all.
    NoDapr,
    /// Dapr client connected at start; bookings answer without calling it.
    ClientOnly,
    /// The whole booking through Dapr state and locks.
    Full,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub consistency: Consistency,
    /// Lock lease: how long a crashed backend can block a hotel.
    pub lease_secs: i32,
    /// How long a booking waits for a busy lock (or retries ETag conflicts) before 503.
    pub wait_budget: Duration,
    /// Fault injection for tests and demos: stay this long inside the lock, between the
    /// read and the commit, so a backend can be killed or paused while it holds one. Zero
    /// in normal runs.
    pub hold_lock: Duration,
    /// In `lock` mode, write with the ETags read under the lock and stop before a commit
    /// once the lease is nearly over. Off only to show the hole it closes.
    pub fencing: bool,
    /// How long an idempotency key's record is kept, in seconds (and a cancellation's
    /// record, when events are announced).
    pub key_ttl_secs: u32,
    /// Announce `booking.confirmed` and `booking.cancelled` through the state store's
    /// outbox: each commit carries its event as an `outbox.projection`, so the event is
    /// published exactly when the change commits. The store must have an outbox
    /// (`outboxPublishPubsub`, `outboxPublishTopic`).
    pub events: bool,
}

/// What one request brings to the booking rules besides its body.
#[derive(Debug, Clone)]
pub struct Call {
    /// When the answer is due; every sidecar call gives up then.
    pub deadline: Instant,
    /// The `Idempotency-Key`, already checked.
    pub key: Option<String>,
}

/// The value of a night key: rooms sold that night.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Night {
    pub(crate) booked: u32,
}

pub fn night_key(hotel: u32, day: Day) -> String {
    format!("hotel-{hotel}-{day}")
}

/// The hotel and night of a `night_key`, or `None` for another kind of key.
pub fn parse_night_key(key: &str) -> Option<(u32, Day)> {
    let rest = key.strip_prefix("hotel-")?;
    let (hotel, day) = rest.split_once('-')?;
    Some((hotel.parse().ok()?, Day::parse(day)?))
}

pub fn reservation_key(id: &str) -> String {
    format!("reservation-{id}")
}

/// What is kept of a cancellation when events are announced: its event, under a TTL. Its
/// write is the one the outbox publishes `booking.cancelled` for, as a delete publishes
/// nothing.
pub fn cancellation_key(id: &str) -> String {
    format!("cancelled-{id}")
}

pub fn idempotency_record_key(key: &str) -> String {
    format!("idempotency-{key}")
}

/// What an idempotency key stands for: the request it was first used with and, once that
/// request is decided, its answer: the change it made (written in the change's own
/// transaction), or the refusal (sold out) it got. A key is decided once: every later
/// use gets the same answer, so a client never hears "sold out" for a booking that a lost
/// first answer had made.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct KeyRecord {
    request: serde_json::Value,
    #[serde(default)]
    pub(crate) answer: Option<Reservation>,
    /// The sold-out message this request was refused with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refused: Option<String>,
}

impl KeyRecord {
    /// Whether the key was used to cancel (its request is `{"cancel": id}`).
    pub(crate) fn is_cancel(&self) -> bool {
        self.request.get("cancel").is_some()
    }
}

/// A key in use by this request.
struct KeyUse {
    record_key: String,
    request: serde_json::Value,
}

impl KeyUse {
    /// The key's record for this request: pending (neither given), or decided.
    fn record(&self, answer: Option<&Reservation>, refused: Option<&str>) -> Vec<u8> {
        json_bytes(&KeyRecord {
            request: self.request.clone(),
            answer: answer.cloned(),
            refused: refused.map(str::to_string),
        })
    }
}

/// The end of a request's budget kept for reading an ambiguous commit back: the work
/// stops this much before the deadline, so the read-back still reaches the caller.
const READ_BACK_GRACE: Duration = Duration::from_millis(300);

/// Rounds of creating missing entries before a read gives up: one in the common case, a
/// second when a store refused a whole batch for one entry another writer made first.
const CREATE_ROUNDS: usize = 3;

fn booked_of(item: &Item) -> Result<u32, BookingError> {
    if item.data.is_empty() {
        return Ok(0);
    }
    serde_json::from_slice::<Night>(&item.data)
        .map(|n| n.booked)
        .map_err(|e| BookingError::Store(format!("night {} holds unreadable data: {e}", item.key)))
}

/// The outcome of one optimistic attempt.
enum Attempt<T> {
    Done(T),
    /// Someone else changed what was read (or the lease ran out first): read again.
    Conflict,
}

/// How the writes of one attempt are guarded.
#[derive(Clone, Copy)]
struct Guard {
    /// Write nights (and the reservation on cancel) with the ETags read.
    etags: bool,
    /// Do not start the commit after this instant (the lock's lease is nearly over).
    commit_by: Option<Instant>,
    /// The request's own deadline, which the read-back of an ambiguous commit may use.
    read_back_by: Instant,
}

impl Guard {
    fn new(etags: bool, call: &Call) -> Guard {
        Guard {
            etags,
            commit_by: None,
            read_back_by: call.deadline,
        }
    }
}

impl Call {
    /// When the work of this request stops, leaving time to read an ambiguous commit back.
    fn work_until(&self) -> Instant {
        self.deadline
            .checked_sub(READ_BACK_GRACE)
            .unwrap_or(self.deadline)
    }
}

/// How to tell, after an error, whether a commit took effect.
enum Expect<'a> {
    /// The key's record holds this reservation as its answer (a keyed change).
    Answer { record_key: &'a str, id: &'a str },
    /// This key (the new reservation) exists.
    Present(&'a str),
    /// This key (the cancelled reservation) is gone.
    Absent(&'a str),
}

/// The booking rules over a state and lock store: the Dapr sidecar in the service
/// (`SidecarClient`), an in-memory fake in the unit tests.
pub struct Booker<S = SidecarClient> {
    pub catalogue: Arc<Catalogue>,
    state: Option<S>,
    policy: Policy,
    work: Work,
}

impl<S: Store> Booker<S> {
    pub fn new(catalogue: Arc<Catalogue>, state: Option<S>, policy: Policy, work: Work) -> Self {
        Booker {
            catalogue,
            state,
            policy,
            work,
        }
    }

    /// 404 for an unknown hotel, before the body is even parsed.
    pub fn hotel_exists(&self, id: u32) -> Result<(), BookingError> {
        self.hotel(id).map(|_| ())
    }

    fn hotel(&self, id: u32) -> Result<&Hotel, BookingError> {
        self.catalogue
            .get(id)
            .ok_or(BookingError::HotelNotFound(id))
    }

    fn state(&self) -> Result<&S, BookingError> {
        self.state.as_ref().ok_or(BookingError::DaprDisabled)
    }

    /// Books a stay; with a key already used for the same request, answers that booking
    /// again instead.
    pub async fn book(
        &self,
        hotel_id: u32,
        req: BookingRequest,
        call: &Call,
    ) -> Result<Reservation, BookingError> {
        let hotel = self.hotel(hotel_id)?.clone();
        let nights = req
            .validate(first_bookable_day(call.key.is_some()))?
            .nights();
        let key = call.key.as_ref().map(|k| KeyUse {
            record_key: idempotency_record_key(k),
            request: serde_json::json!({"book": {"hotel_id": hotel_id, "user": &req}}),
        });
        let reservation = Reservation {
            id: uuid::Uuid::new_v4().to_string(),
            hotel_id,
            user_id: req.user_id,
            name: req.name,
            check_in: req.check_in,
            check_out: req.check_out,
            rooms: req.rooms,
            created_at: now_rfc3339(),
        };
        if self.work != Work::Full {
            return Ok(reservation);
        }
        let state = self.state()?;
        let within = state.until(call.work_until());
        // Learned before any lock is taken (and kept), so no lock waits on the question.
        within.transactions_create().await;
        let key = key.as_ref();
        let attempt = |guard: Guard, s: S| {
            let (hotel, nights, reservation) = (&hotel, &nights, &reservation);
            async move {
                self.book_once(&s, hotel, nights, reservation, key, guard)
                    .await
            }
        };
        // A keyed request is decided under the lock only, where its record is read: its
        // twin in flight may already have booked.
        let while_busy = || async {
            if key.is_some() {
                return Ok(());
            }
            self.check_capacity(&within, &hotel, &nights, reservation.rooms)
                .await
        };
        self.protected(&within, hotel_id, call, while_busy, attempt)
            .await
    }

    /// Runs `attempt` as the consistency mode says: under the hotel's lock (fenced),
    /// optimistically with ETags, or bare; retried on conflict within the budget.
    async fn protected<T, B, BFut, A, AFut>(
        &self,
        within: &S,
        hotel_id: u32,
        call: &Call,
        while_busy: B,
        attempt: A,
    ) -> Result<T, BookingError>
    where
        B: Fn() -> BFut + Copy,
        BFut: Future<Output = Result<(), BookingError>>,
        A: Fn(Guard, S) -> AFut + Copy,
        AFut: Future<Output = Result<Attempt<T>, BookingError>>,
    {
        let until = call.work_until();
        match self.policy.consistency {
            Consistency::Lock => {
                self.retrying(until, || {
                    self.with_lock(within, hotel_id, call, while_busy, attempt)
                })
                .await
            }
            Consistency::Etag => {
                let guard = Guard::new(true, call);
                self.retrying(until, || attempt(guard, within.clone()))
                    .await
            }
            Consistency::None => match attempt(Guard::new(false, call), within.clone()).await? {
                Attempt::Done(r) => Ok(r),
                Attempt::Conflict => Err(BookingError::Store(
                    "a concurrent change got in the way (consistency none has no protection)"
                        .into(),
                )),
            },
        }
    }

    /// A read outside the lock, made only while the lock is busy: a stay that is already
    /// sold out is refused at once instead of queueing for the lock. (Only the check under
    /// the lock can accept a booking.)
    async fn check_capacity(
        &self,
        state: &S,
        hotel: &Hotel,
        nights: &[Day],
        rooms: u32,
    ) -> Result<(), BookingError> {
        let keys: Vec<String> = nights.iter().map(|d| night_key(hotel.id, *d)).collect();
        let items = state.bulk_get(&keys).await?;
        for (day, item) in nights.iter().zip(&items) {
            sold_out(hotel, *day, booked_of(item)?, rooms)?;
        }
        Ok(())
    }

    /// Reads the nights (and the key's record), answers again a change the key already
    /// made, checks every night has the rooms, and writes nights, reservation and record
    /// in one transaction.
    async fn book_once(
        &self,
        state: &S,
        hotel: &Hotel,
        nights: &[Day],
        reservation: &Reservation,
        key: Option<&KeyUse>,
        guard: Guard,
    ) -> Result<Attempt<Reservation>, BookingError> {
        let read = match self
            .read_guarded(state, hotel.id, nights, key, guard)
            .await?
        {
            Read::Answered(r) => return Ok(Attempt::Done(r)),
            Read::Guarded(read) => read,
            Read::Contended => return Ok(Attempt::Conflict),
        };
        let record = read.record();
        let mut ops = Vec::with_capacity(read.items.len() + 1);
        for (day, item) in nights.iter().zip(read.nights()) {
            let booked = booked_of(item)?;
            if let Err(refusal) = sold_out(hotel, *day, booked, reservation.rooms) {
                return match (key, record) {
                    (Some(k), Some(record)) => self.refuse(state, k, record, refusal).await,
                    _ => Err(refusal),
                };
            }
            let night = json_bytes(&Night {
                booked: booked + reservation.rooms,
            });
            ops.push(write_op(item, night, guard.etags, None));
        }
        let mine = reservation_key(&reservation.id);
        if self.policy.events {
            // The event rides on the reservation's write (see `Op::Projection`).
            ops.push(Op::Projection {
                key: mine.clone(),
                value: event(
                    EventKind::Confirmed,
                    reservation,
                    reservation.created_at.clone(),
                ),
            });
        }
        ops.push(Op::Upsert {
            key: mine.clone(),
            value: json_bytes(reservation),
            etag: None,
            ttl: None,
        });
        if let (Some(k), Some(record)) = (key, record) {
            ops.push(self.record_op(record, k.record(Some(reservation), None)));
        }
        if !self.policy.hold_lock.is_zero() {
            tokio::time::sleep(self.policy.hold_lock).await;
        }
        if guard.commit_by.is_some_and(|by| Instant::now() >= by) {
            tracing::warn!(
                hotel_id = hotel.id,
                "the lock's lease ran out before the commit; trying again"
            );
            return Ok(Attempt::Conflict);
        }
        let expect = match key {
            Some(k) => Expect::Answer {
                record_key: &k.record_key,
                id: &reservation.id,
            },
            None => Expect::Present(&mine),
        };
        match self.commit(state, ops, &read.items, expect, guard).await? {
            Commit::Applied => Ok(Attempt::Done(reservation.clone())),
            Commit::Conflict => Ok(Attempt::Conflict),
        }
    }

    /// Decides a keyed request as refused: the refusal is written to the key's record under
    /// the ETag it was read with, so that a twin of this request still in flight cannot
    /// book after all. If the record changed meanwhile, read again.
    async fn refuse<T>(
        &self,
        state: &S,
        key: &KeyUse,
        record: &Item,
        refusal: BookingError,
    ) -> Result<Attempt<T>, BookingError> {
        let op = self.record_op(record, key.record(None, Some(&refusal.to_string())));
        match state.transact(vec![op]).await {
            Ok(()) => Err(refusal),
            // A stale ETag (Dapr reports it in a transaction as a plain failure): the
            // record changed, and the next read of it tells how.
            Err(DaprError::Conflict(_) | DaprError::Failed { .. }) => Ok(Attempt::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// The key's record, now decided as `value` says, written under the ETag it was read
    /// with (created, when it was read missing).
    fn record_op(&self, record: &Item, value: Vec<u8>) -> Op {
        write_op(record, value, true, Some(self.policy.key_ttl_secs))
    }

    /// Reads `keys` plus the key's record. A record that already holds an answer for the
    /// same request ends the attempt with it; one for another request is a 422. Missing
    /// entries that must be written under an ETag (nights when the guard writes with ETags,
    /// the record always) are created in the commit where the store's transactions refuse
    /// a create of a key that exists (SQLite, in-memory); elsewhere (Redis) they are
    /// created first, first-write, and read again for their ETags.
    async fn read_guarded(
        &self,
        state: &S,
        hotel_id: u32,
        nights: &[Day],
        key: Option<&KeyUse>,
        guard: Guard,
    ) -> Result<Read, BookingError> {
        let mut keys: Vec<String> = nights.iter().map(|d| night_key(hotel_id, *d)).collect();
        if let Some(k) = key {
            keys.push(k.record_key.clone());
        }
        let mut items = state.bulk_get(&keys).await?;
        if let Some(answer) = self.answered(key, items.last())? {
            return Ok(Read::Answered(answer));
        }
        if state.transactions_create().await {
            return Guarded::new(items, &keys, key).map(Read::Guarded);
        }
        let night_count = keys.len() - usize::from(key.is_some());
        let must_exist = |i: usize| guard.etags || i >= night_count;
        // One save creates every missing entry. A store that saves a batch all or nothing
        // creates none when another writer made one of them first: then the entries still
        // missing are created again, without it; past the rounds, the attempt starts over.
        let mut rounds = 0;
        loop {
            let missing: Vec<usize> = (0..items.len())
                .filter(|&i| !items[i].exists() && must_exist(i))
                .collect();
            let Some(&first) = missing.first() else {
                return Guarded::new(items, &keys, key).map(Read::Guarded);
            };
            if rounds == CREATE_ROUNDS {
                // Each refused round means some writer made one of these entries meanwhile.
                tracing::debug!(key = %items[first].key, "entries still missing after every round");
                return Ok(Read::Contended);
            }
            rounds += 1;
            let create = missing
                .iter()
                .map(|&i| {
                    let (value, ttl) = match key {
                        Some(k) if i >= night_count => {
                            (k.record(None, None), Some(self.policy.key_ttl_secs))
                        }
                        _ => (br#"{"booked":0}"#.to_vec(), None),
                    };
                    NewItem {
                        key: items[i].key.clone(),
                        value,
                        ttl,
                    }
                })
                .collect();
            state.create(create).await?;
            items = state.bulk_get(&keys).await?;
            if let Some(answer) = self.answered(key, items.last())? {
                return Ok(Read::Answered(answer));
            }
        }
    }

    /// What the key's record says: the answer of the change it already made, a 422 when it
    /// was made for another request, or nothing yet.
    fn answered(
        &self,
        key: Option<&KeyUse>,
        record: Option<&Item>,
    ) -> Result<Option<Reservation>, BookingError> {
        let (Some(k), Some(item)) = (key, record) else {
            return Ok(None);
        };
        if !item.exists() {
            return Ok(None);
        }
        let rec: KeyRecord = serde_json::from_slice(&item.data)
            .map_err(|e| BookingError::Store(format!("{} holds unreadable data: {e}", item.key)))?;
        if rec.request != k.request {
            return Err(BookingError::KeyReused);
        }
        if let Some(message) = rec.refused {
            return Err(BookingError::SoldOut(message));
        }
        Ok(rec.answer)
    }

    /// Writes `ops` in one transaction. When the answer is an error, the write may still
    /// have happened (a lost reply, a timeout): read back what `expect` names before
    /// deciding. Not applied, it is a conflict if anything read changed since; else a
    /// store failure, or an unknown outcome when the write may still land.
    async fn commit(
        &self,
        state: &S,
        ops: Vec<Op>,
        read: &[Item],
        expect: Expect<'_>,
        guard: Guard,
    ) -> Result<Commit, BookingError> {
        let err = match state.transact(ops).await {
            Ok(()) => return Ok(Commit::Applied),
            Err(e) => e,
        };
        let by = guard
            .read_back_by
            .max(Instant::now() + Duration::from_millis(100));
        let mut keys: Vec<String> = read.iter().map(|i| i.key.clone()).collect();
        keys.push(match &expect {
            Expect::Answer { record_key, .. } => record_key.to_string(),
            Expect::Present(k) | Expect::Absent(k) => k.to_string(),
        });
        let now = match state.until(by).bulk_get(&keys).await {
            Ok(now) => now,
            Err(read_err) => {
                tracing::error!(error = %err, read_back = %read_err, "commit outcome unknown");
                return Err(BookingError::OutcomeUnknown(err.to_string()));
            }
        };
        let Some(last) = now.last() else {
            return Err(BookingError::OutcomeUnknown(err.to_string()));
        };
        let applied = match expect {
            Expect::Answer { id, .. } => serde_json::from_slice::<KeyRecord>(&last.data)
                .ok()
                .and_then(|r| r.answer)
                .is_some_and(|a| a.id == id),
            Expect::Present(_) => last.exists(),
            Expect::Absent(_) => !last.exists(),
        };
        if applied {
            tracing::warn!(error = %err, "the commit's answer was an error, but it was applied");
            return Ok(Commit::Applied);
        }
        if now.iter().zip(read).any(|(a, b)| a.etag != b.etag) {
            // Someone else changed what was read: this write can no longer land.
            return Ok(Commit::Conflict);
        }
        match err {
            DaprError::DeadlineExceeded(_) | DaprError::Unavailable(_) => {
                Err(BookingError::OutcomeUnknown(err.to_string()))
            }
            other => Err(other.into()),
        }
    }

    /// Retries an attempt on conflict, with jittered backoff, within the wait budget and
    /// the request's deadline.
    async fn retrying<T, F, Fut>(
        &self,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, BookingError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Attempt<T>, BookingError>>,
    {
        let give_up = (Instant::now() + self.policy.wait_budget).min(deadline);
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Attempt::Done(v) = attempt().await? {
                return Ok(v);
            }
            if Instant::now() >= give_up {
                return Err(BookingError::Busy(
                    "too many concurrent changes to this hotel; try again".into(),
                ));
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }

    /// Runs `work` holding the lock on the hotel; the lock is released whatever `work`
    /// returns. While the lock is busy, `while_busy` may refuse early (e.g. sold out).
    /// With fencing, `work` gets a guard that writes under ETags and stops before its
    /// commit when the lease (less a margin) is over, and a client whose calls end then.
    async fn with_lock<T, B, BFut, F, Fut>(
        &self,
        state: &S,
        hotel_id: u32,
        call: &Call,
        mut while_busy: B,
        work: F,
    ) -> Result<Attempt<T>, BookingError>
    where
        B: FnMut() -> BFut,
        BFut: Future<Output = Result<(), BookingError>>,
        F: FnOnce(Guard, S) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, BookingError>>,
    {
        let deadline = call.work_until();
        let resource = format!("hotel-{hotel_id}");
        let owner = uuid::Uuid::new_v4().to_string();
        let give_up = (Instant::now() + self.policy.wait_budget).min(deadline);
        let mut backoff = Duration::from_micros(500);
        let lease = Duration::from_secs(self.policy.lease_secs.max(1) as u64);
        let taken_at = loop {
            // The lease may start as soon as the request leaves: count from before it.
            let asked_at = Instant::now();
            match state
                .try_lock(&resource, &owner, self.policy.lease_secs)
                .await
            {
                Ok(true) => break asked_at,
                Ok(false) => {}
                Err(e) => {
                    // The lock may have been granted all the same (a lost answer): let it
                    // go rather than leave the hotel locked for a whole lease.
                    self.release(state, hotel_id, resource, owner, lease);
                    return Err(e.into());
                }
            }
            if Instant::now() >= give_up {
                return Err(BookingError::Busy(format!(
                    "hotel {hotel_id} is busy; try again"
                )));
            }
            while_busy().await?;
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_millis(20));
        };
        let result = if self.policy.fencing {
            let commit_by = taken_at + lease - lease_margin(lease);
            let guard = Guard {
                commit_by: Some(commit_by),
                ..Guard::new(true, call)
            };
            match work(guard, state.until(commit_by.min(deadline))).await {
                // The lease, not the request, ran out: the writes are fenced, so take the
                // lock again and read again.
                Err(BookingError::DeadlineExceeded(_)) if Instant::now() < deadline => {
                    Ok(Attempt::Conflict)
                }
                other => other,
            }
        } else {
            work(Guard::new(false, call), state.clone()).await
        };
        self.release(state, hotel_id, resource, owner, lease);
        result
    }

    /// Releases a lock in the background, so the answer does not wait for it. It may take
    /// up to the lease, after which the lock is gone anyway (a short deadline would, on a
    /// loaded machine, leave the hotel locked for the rest of the lease).
    fn release(&self, state: &S, hotel_id: u32, resource: String, owner: String, lease: Duration) {
        let release = state.until(Instant::now() + lease);
        let fencing = self.policy.fencing;
        tokio::spawn(async move {
            match release.unlock(&resource, &owner).await {
                Ok(Unlocked::Released) => {}
                Ok(other) => tracing::warn!(
                    hotel_id,
                    ?other,
                    fenced = fencing,
                    "the lock's lease ran out before the work finished"
                ),
                Err(e) => {
                    tracing::warn!(hotel_id, error = %e, "unlock failed; the lease will free the hotel");
                }
            }
        });
    }

    pub async fn reservation(
        &self,
        id: &ReservationId,
        call: &Call,
    ) -> Result<Reservation, BookingError> {
        let state = self.state()?.until(call.deadline);
        read_reservation(&state, id.as_str()).await
    }

    /// Cancels a reservation and frees its nights, under the same protection as booking.
    pub async fn cancel(
        &self,
        id: &ReservationId,
        call: &Call,
    ) -> Result<Reservation, BookingError> {
        let id = id.as_str();
        let state = self.state()?;
        let within = state.until(call.work_until());
        let key = call.key.as_ref().map(|k| KeyUse {
            record_key: idempotency_record_key(k),
            request: serde_json::json!({"cancel": id}),
        });
        let key = key.as_ref();
        // The hotel's id (for its lock) comes from the reservation; a key that already
        // cancelled it answers from its record.
        let first = read_with_record(&within, reservation_key(id), key).await?;
        if let Some(answer) = self.answered(key, first.get(1))? {
            return Ok(answer);
        }
        let hotel_id = parse_reservation(id, &first[0])?.hotel_id;
        within.transactions_create().await;
        let attempt =
            |guard: Guard, s: S| async move { self.cancel_once(&s, id, key, guard).await };
        self.protected(&within, hotel_id, call, || async { Ok(()) }, attempt)
            .await
    }

    async fn cancel_once(
        &self,
        state: &S,
        id: &str,
        key: Option<&KeyUse>,
        guard: Guard,
    ) -> Result<Attempt<Reservation>, BookingError> {
        // The record first: a twin of this keyed cancel may have made it already.
        let first = read_with_record(state, reservation_key(id), key).await?;
        if let Some(answer) = self.answered(key, first.get(1))? {
            return Ok(Attempt::Done(answer));
        }
        let r = parse_reservation(id, &first[0])?;
        let r_etag = first[0].etag.clone();
        let nights = r.check_in.nights_until(r.check_out);
        let read = match self
            .read_guarded(state, r.hotel_id, &nights, key, guard)
            .await?
        {
            Read::Answered(done) => return Ok(Attempt::Done(done)),
            Read::Guarded(read) => read,
            Read::Contended => return Ok(Attempt::Conflict),
        };
        let record = read.record();
        let mut ops = Vec::with_capacity(read.items.len() + 1);
        for item in read.nights() {
            let booked = booked_of(item)?.saturating_sub(r.rooms);
            ops.push(write_op(
                item,
                json_bytes(&Night { booked }),
                guard.etags,
                None,
            ));
        }
        let mine = reservation_key(id);
        ops.push(Op::Delete {
            key: mine.clone(),
            etag: guard.etags.then(|| r_etag.clone()),
        });
        if self.policy.events {
            let record = cancellation_key(id);
            let value = event(EventKind::Cancelled, &r, now_rfc3339());
            ops.push(Op::Projection {
                key: record.clone(),
                value: value.clone(),
            });
            ops.push(Op::Upsert {
                key: record,
                value,
                etag: None,
                ttl: Some(self.policy.key_ttl_secs),
            });
        }
        if let (Some(k), Some(record)) = (key, record) {
            ops.push(self.record_op(record, k.record(Some(&r), None)));
        }
        if guard.commit_by.is_some_and(|by| Instant::now() >= by) {
            return Ok(Attempt::Conflict);
        }
        // The reservation as read is part of what must not have changed.
        let mut seen = read.items.clone();
        seen.push(Item {
            key: mine.clone(),
            data: Vec::new(),
            etag: r_etag,
        });
        let expect = match key {
            Some(k) => Expect::Answer {
                record_key: &k.record_key,
                id,
            },
            None => Expect::Absent(&mine),
        };
        match self.commit(state, ops, &seen, expect, guard).await? {
            Commit::Applied => Ok(Attempt::Done(r)),
            Commit::Conflict => Ok(Attempt::Conflict),
        }
    }

    pub async fn availability(
        &self,
        hotel_id: u32,
        from: Day,
        to: Day,
        call: &Call,
    ) -> Result<Availability, BookingError> {
        let hotel = self.hotel(hotel_id)?.clone();
        if to <= from {
            return Err(BookingError::Invalid {
                code: "invalid_dates",
                message: format!("check_out {to} must be after check_in {from}"),
            });
        }
        if (to.0 - from.0).whole_days() > 366 {
            return Err(BookingError::Invalid {
                code: "invalid_dates",
                message: "ask for at most 366 nights at a time".into(),
            });
        }
        let nights = from.nights_until(to);
        let keys: Vec<String> = nights.iter().map(|d| night_key(hotel_id, *d)).collect();
        let items = self.state()?.until(call.deadline).bulk_get(&keys).await?;
        let mut out = Vec::with_capacity(nights.len());
        for (day, item) in nights.into_iter().zip(&items) {
            let booked = booked_of(item)?;
            out.push(NightAvailability {
                date: day,
                booked,
                available: hotel.rooms.saturating_sub(booked),
            });
        }
        Ok(Availability {
            hotel_id,
            rooms: hotel.rooms,
            nights: out,
        })
    }
}

/// What `read_guarded` found.
enum Read {
    /// The key's record already holds the answer.
    Answered(Reservation),
    Guarded(Guarded),
    /// Other writers kept creating what this read needed: try the whole attempt again.
    Contended,
}

/// A guarded read: the nights in order, then the key's record when there is a key. The
/// commit checks all of it again, so it stays one list.
struct Guarded {
    items: Vec<Item>,
    has_record: bool,
}

impl Guarded {
    /// The read of `keys` (the nights, then the key's record when there is a key): one
    /// item a key, or the store answered something else and nothing may be decided on it.
    fn new(items: Vec<Item>, keys: &[String], key: Option<&KeyUse>) -> Result<Self, BookingError> {
        if items.len() != keys.len() {
            return Err(BookingError::Store(format!(
                "asked for {} keys, the store answered {} items",
                keys.len(),
                items.len()
            )));
        }
        Ok(Guarded {
            items,
            has_record: key.is_some(),
        })
    }

    fn nights(&self) -> &[Item] {
        &self.items[..self.items.len() - usize::from(self.has_record)]
    }

    fn record(&self) -> Option<&Item> {
        self.items.last().filter(|_| self.has_record)
    }
}

/// What a commit did, once any doubt is read away.
enum Commit {
    Applied,
    Conflict,
}

/// The write of `value` over `item` as read: under its ETag when `guarded` (a create when
/// it was missing, which the transaction refuses if another writer made it meanwhile);
/// else last write wins.
fn write_op(item: &Item, value: Vec<u8>, guarded: bool, ttl: Option<u32>) -> Op {
    let key = item.key.clone();
    match (guarded, item.exists()) {
        (true, true) => Op::Upsert {
            key,
            value,
            etag: Some(item.etag.clone()),
            ttl,
        },
        (true, false) => Op::Create { key, value, ttl },
        (false, _) => Op::Upsert {
            key,
            value,
            etag: None,
            ttl,
        },
    }
}

fn event(kind: EventKind, reservation: &Reservation, at: String) -> Vec<u8> {
    json_bytes(&BookingEvent {
        kind,
        reservation: reservation.clone(),
        at,
    })
}

/// Our own wire types always serialize; an empty value would read back as zero rooms.
fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("booking types serialize to JSON")
}

/// Reads `key` and, with an idempotency key, its record, in one round trip.
async fn read_with_record<S: Store>(
    state: &S,
    key: String,
    idempotency: Option<&KeyUse>,
) -> Result<Vec<Item>, BookingError> {
    let mut keys = vec![key];
    if let Some(k) = idempotency {
        keys.push(k.record_key.clone());
    }
    Ok(state.bulk_get(&keys).await?)
}

async fn read_reservation<S: Store>(state: &S, id: &str) -> Result<Reservation, BookingError> {
    let item = state.get(&reservation_key(id)).await?;
    parse_reservation(id, &item)
}

fn parse_reservation(id: &str, item: &Item) -> Result<Reservation, BookingError> {
    if !item.exists() {
        return Err(BookingError::ReservationNotFound(id.to_string()));
    }
    serde_json::from_slice(&item.data)
        .map_err(|e| BookingError::Store(format!("reservation {id} is unreadable: {e}")))
}

/// What is kept of a lease for the unlock and the clock's slack: a fifth, at least 200 ms.
fn lease_margin(lease: Duration) -> Duration {
    (lease / 5).max(Duration::from_millis(200)).min(lease / 2)
}

/// 409 naming the night when it lacks the rooms.
fn sold_out(hotel: &Hotel, day: Day, booked: u32, rooms: u32) -> Result<(), BookingError> {
    let left = hotel.rooms.saturating_sub(booked);
    if left < rooms {
        return Err(BookingError::SoldOut(format!(
            "hotel {} has {left} of {} rooms left on {day}; {rooms} requested",
            hotel.id, hotel.rooms
        )));
    }
    Ok(())
}

fn jitter(d: Duration) -> Duration {
    let micros = d.as_micros() as u64;
    Duration::from_micros(micros / 2 + fastrand::u64(0..=micros))
}
