//! Booking rules and how they are kept consistent.
//!
//! A stay touches several keys (one per night, `hotel-{id}-{date}` holding `{"booked": n}`,
//! plus `reservation-{uuid}`). Three ways to keep concurrent bookings of one hotel from
//! selling a room twice, chosen at start:
//! - `lock` (default): the Dapr lock on `hotel-{id}` around read-check-write, released on
//!   every path; a busy lock is retried with backoff for a bounded time, then 503.
//! - `etag`: no lock; nights are written with first-write ETags in one transaction, and a
//!   conflict re-reads and retries, within bounds.
//! - `none`: no protection at all, to show what goes wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use appkit::dapr::{DaprError, Item, Op, StateClient, Unlocked};
use appkit::error::AppError;
use appkit::wire::{Availability, BookingRequest, Day, Hotel, NightAvailability, Reservation};
use serde::{Deserialize, Serialize};

use crate::catalogue::Catalogue;

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
    /// Fault injection for tests and demos: stay this long inside the lock, so a backend
    /// can be killed while it holds one. Zero in normal runs.
    pub hold_lock: Duration,
}

#[derive(Serialize, Deserialize, Default)]
struct Night {
    booked: u32,
}

pub fn night_key(hotel: u32, day: Day) -> String {
    format!("hotel-{hotel}-{day}")
}

pub fn reservation_key(id: &str) -> String {
    format!("reservation-{id}")
}

fn store_error(e: DaprError) -> AppError {
    match e {
        DaprError::Unavailable(m) => AppError::unavailable("dapr_unavailable", m),
        other => AppError::bad_gateway("store_error", other.to_string()),
    }
}

fn booked_of(item: &Item) -> Result<u32, AppError> {
    if item.data.is_empty() {
        return Ok(0);
    }
    serde_json::from_slice::<Night>(&item.data)
        .map(|n| n.booked)
        .map_err(|e| {
            AppError::bad_gateway(
                "store_error",
                format!("night {} holds unreadable data: {e}", item.key),
            )
        })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The outcome of one optimistic attempt.
enum Attempt<T> {
    Done(T),
    Conflict,
}

pub struct Booker {
    pub catalogue: Arc<Catalogue>,
    state: Option<StateClient>,
    policy: Policy,
    work: Work,
}

impl Booker {
    pub fn new(
        catalogue: Arc<Catalogue>,
        state: Option<StateClient>,
        policy: Policy,
        work: Work,
    ) -> Self {
        Booker {
            catalogue,
            state,
            policy,
            work,
        }
    }

    /// 404 for an unknown hotel, before the body is even parsed.
    pub fn hotel_exists(&self, id: u32) -> Result<(), AppError> {
        self.hotel(id).map(|_| ())
    }

    fn hotel(&self, id: u32) -> Result<&Hotel, AppError> {
        self.catalogue
            .get(id)
            .ok_or_else(|| AppError::not_found("hotel_not_found", format!("no hotel with id {id}")))
    }

    fn state(&self) -> Result<&StateClient, AppError> {
        self.state.as_ref().ok_or_else(|| {
            AppError::unavailable("dapr_disabled", "this backend runs without Dapr state")
        })
    }

    pub async fn book(&self, hotel_id: u32, req: BookingRequest) -> Result<Reservation, AppError> {
        let hotel = self.hotel(hotel_id)?.clone();
        let nights = req
            .validate(Day::today())
            .map_err(|i| AppError::bad_request(i.code, i.message))?;
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
        match self.policy.consistency {
            Consistency::Lock => {
                let while_busy = || self.check_capacity(state, &hotel, &nights, reservation.rooms);
                self.with_lock(state, hotel_id, while_busy, || async {
                    match self
                        .book_once(state, &hotel, &nights, &reservation, false)
                        .await?
                    {
                        Attempt::Done(()) => Ok(()),
                        Attempt::Conflict => Err(AppError::bad_gateway(
                            "store_error",
                            "unexpected conflict under the lock",
                        )),
                    }
                })
                .await?
            }
            Consistency::Etag => {
                self.optimistic(|| self.book_once(state, &hotel, &nights, &reservation, true))
                    .await?
            }
            Consistency::None => {
                if let Attempt::Conflict = self
                    .book_once(state, &hotel, &nights, &reservation, false)
                    .await?
                {
                    return Err(AppError::bad_gateway("store_error", "unexpected conflict"));
                }
            }
        }
        Ok(reservation)
    }

    /// A read outside the lock, made only while the lock is busy: a stay that is already
    /// sold out is refused at once instead of queueing for the lock. (Only the check under
    /// the lock can accept a booking.)
    async fn check_capacity(
        &self,
        state: &StateClient,
        hotel: &Hotel,
        nights: &[Day],
        rooms: u32,
    ) -> Result<(), AppError> {
        let keys: Vec<String> = nights.iter().map(|d| night_key(hotel.id, *d)).collect();
        let items = state.bulk_get(&keys).await.map_err(store_error)?;
        for (day, item) in nights.iter().zip(&items) {
            sold_out(hotel, *day, booked_of(item)?, rooms)?;
        }
        Ok(())
    }

    /// Reads the nights (creating missing ones first when `etags` so they have an ETag),
    /// checks every night has the rooms, and writes nights and reservation in one transaction.
    async fn book_once(
        &self,
        state: &StateClient,
        hotel: &Hotel,
        nights: &[Day],
        reservation: &Reservation,
        etags: bool,
    ) -> Result<Attempt<()>, AppError> {
        let keys: Vec<String> = nights.iter().map(|d| night_key(hotel.id, *d)).collect();
        let mut items = state.bulk_get(&keys).await.map_err(store_error)?;
        if etags && items.iter().any(|i| !i.exists()) {
            for item in items.iter().filter(|i| !i.exists()) {
                state
                    .create(&item.key, br#"{"booked":0}"#.to_vec())
                    .await
                    .map_err(store_error)?;
            }
            items = state.bulk_get(&keys).await.map_err(store_error)?;
            if let Some(missing) = items.iter().find(|i| !i.exists()) {
                return Err(AppError::bad_gateway(
                    "store_error",
                    format!("night {} could not be created", missing.key),
                ));
            }
        }
        let mut ops = Vec::with_capacity(items.len() + 1);
        for (day, item) in nights.iter().zip(&items) {
            let booked = booked_of(item)?;
            sold_out(hotel, *day, booked, reservation.rooms)?;
            ops.push(Op::Upsert {
                key: item.key.clone(),
                value: serde_json::to_vec(&Night {
                    booked: booked + reservation.rooms,
                })
                .unwrap_or_default(),
                etag: etags.then(|| item.etag.clone()),
            });
        }
        ops.push(Op::Upsert {
            key: reservation_key(&reservation.id),
            value: serde_json::to_vec(reservation).unwrap_or_default(),
            etag: None,
        });
        self.commit(state, ops, etags, &keys, &items).await
    }

    /// Writes `ops`; with ETags, a failure is a conflict if any night changed since it was
    /// read (Dapr reports a stale ETag in a transaction as a plain failure, not ABORTED).
    async fn commit(
        &self,
        state: &StateClient,
        ops: Vec<Op>,
        etags: bool,
        keys: &[String],
        read: &[Item],
    ) -> Result<Attempt<()>, AppError> {
        match state.transact(ops).await {
            Ok(()) => Ok(Attempt::Done(())),
            Err(e @ DaprError::Unavailable(_)) => Err(store_error(e)),
            Err(e) if etags => {
                let now = state.bulk_get(keys).await.map_err(store_error)?;
                if now.iter().zip(read).any(|(a, b)| a.etag != b.etag) {
                    Ok(Attempt::Conflict)
                } else {
                    Err(store_error(e))
                }
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Retries an optimistic attempt on conflict, with jittered backoff, within the budget.
    async fn optimistic<T, F, Fut>(&self, mut attempt: F) -> Result<T, AppError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Attempt<T>, AppError>>,
    {
        let deadline = Instant::now() + self.policy.wait_budget;
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Attempt::Done(v) = attempt().await? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(AppError::busy(
                    "too many concurrent changes to this hotel; try again",
                    1,
                ));
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }

    /// Runs `work` holding the lock on the hotel; the lock is released whatever `work`
    /// returns. While the lock is busy, `while_busy` may refuse early (e.g. sold out).
    async fn with_lock<T, B, BFut, F, Fut>(
        &self,
        state: &StateClient,
        hotel_id: u32,
        mut while_busy: B,
        work: F,
    ) -> Result<T, AppError>
    where
        B: FnMut() -> BFut,
        BFut: Future<Output = Result<(), AppError>>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, AppError>>,
    {
        let resource = format!("hotel-{hotel_id}");
        let owner = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + self.policy.wait_budget;
        let mut backoff = Duration::from_micros(500);
        loop {
            if state
                .try_lock(&resource, &owner, self.policy.lease_secs)
                .await
                .map_err(store_error)?
            {
                break;
            }
            if Instant::now() >= deadline {
                return Err(AppError::busy(
                    format!("hotel {hotel_id} is busy; try again"),
                    1,
                ));
            }
            while_busy().await?;
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
        if !self.policy.hold_lock.is_zero() {
            tokio::time::sleep(self.policy.hold_lock).await;
        }
        let result = work().await;
        match state.unlock(&resource, &owner).await {
            Ok(Unlocked::Released) => {}
            Ok(other) => tracing::error!(
                hotel_id,
                ?other,
                "the lock lease ran out before the booking finished; raise --lock-lease"
            ),
            Err(e) => {
                tracing::warn!(hotel_id, error = %e, "unlock failed; the lease will free the hotel")
            }
        }
        result
    }

    pub async fn reservation(&self, id: &str) -> Result<Reservation, AppError> {
        Ok(self.read_reservation(id).await?.0)
    }

    async fn read_reservation(&self, id: &str) -> Result<(Reservation, String), AppError> {
        let state = self.state()?;
        let item = state.get(&reservation_key(id)).await.map_err(store_error)?;
        if !item.exists() {
            return Err(AppError::not_found(
                "reservation_not_found",
                format!("no reservation {id}"),
            ));
        }
        let r = serde_json::from_slice(&item.data).map_err(|e| {
            AppError::bad_gateway(
                "store_error",
                format!("reservation {id} is unreadable: {e}"),
            )
        })?;
        Ok((r, item.etag))
    }

    /// Cancels a reservation and frees its nights, under the same protection as booking.
    pub async fn cancel(&self, id: &str) -> Result<Reservation, AppError> {
        let state = self.state()?;
        let (first, _) = self.read_reservation(id).await?;
        let hotel_id = first.hotel_id;
        match self.policy.consistency {
            Consistency::Lock => {
                self.with_lock(
                    state,
                    hotel_id,
                    || async { Ok(()) },
                    || async {
                        match self.cancel_once(state, id, false).await? {
                            Attempt::Done(r) => Ok(r),
                            Attempt::Conflict => Err(AppError::bad_gateway(
                                "store_error",
                                "unexpected conflict under the lock",
                            )),
                        }
                    },
                )
                .await
            }
            Consistency::Etag => self.optimistic(|| self.cancel_once(state, id, true)).await,
            Consistency::None => match self.cancel_once(state, id, false).await? {
                Attempt::Done(r) => Ok(r),
                Attempt::Conflict => {
                    Err(AppError::bad_gateway("store_error", "unexpected conflict"))
                }
            },
        }
    }

    async fn cancel_once(
        &self,
        state: &StateClient,
        id: &str,
        etags: bool,
    ) -> Result<Attempt<Reservation>, AppError> {
        let (r, r_etag) = self.read_reservation(id).await?;
        let nights = r.check_in.nights_until(r.check_out);
        let keys: Vec<String> = nights.iter().map(|d| night_key(r.hotel_id, *d)).collect();
        let items = state.bulk_get(&keys).await.map_err(store_error)?;
        let mut ops = Vec::with_capacity(items.len() + 1);
        for item in &items {
            let booked = booked_of(item)?.saturating_sub(r.rooms);
            ops.push(Op::Upsert {
                key: item.key.clone(),
                value: serde_json::to_vec(&Night { booked }).unwrap_or_default(),
                etag: etags.then(|| item.etag.clone()).filter(|e| !e.is_empty()),
            });
        }
        ops.push(Op::Delete {
            key: reservation_key(id),
            etag: etags.then_some(r_etag),
        });
        Ok(match self.commit(state, ops, etags, &keys, &items).await? {
            Attempt::Done(()) => Attempt::Done(r),
            Attempt::Conflict => Attempt::Conflict,
        })
    }

    pub async fn availability(
        &self,
        hotel_id: u32,
        from: Day,
        to: Day,
    ) -> Result<Availability, AppError> {
        let hotel = self.hotel(hotel_id)?.clone();
        if to <= from {
            return Err(AppError::bad_request(
                "invalid_dates",
                format!("check_out {to} must be after check_in {from}"),
            ));
        }
        if (to.0 - from.0).whole_days() > 366 {
            return Err(AppError::bad_request(
                "invalid_dates",
                "ask for at most 366 nights at a time",
            ));
        }
        let nights = from.nights_until(to);
        let keys: Vec<String> = nights.iter().map(|d| night_key(hotel_id, *d)).collect();
        let items = self.state()?.bulk_get(&keys).await.map_err(store_error)?;
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

/// 409 naming the night when it lacks the rooms.
fn sold_out(hotel: &Hotel, day: Day, booked: u32, rooms: u32) -> Result<(), AppError> {
    let left = hotel.rooms.saturating_sub(booked);
    if left < rooms {
        return Err(AppError::conflict(
            "sold_out",
            format!(
                "hotel {} has {left} of {} rooms left on {day}; {rooms} requested",
                hotel.id, hotel.rooms
            ),
        ));
    }
    Ok(())
}

fn jitter(d: Duration) -> Duration {
    let micros = d.as_micros() as u64;
    Duration::from_micros(micros / 2 + fastrand::u64(0..=micros))
}
