//! The booking rules over the in-memory store: no room sold twice under contention, in
//! both protected modes; a lost commit answer read back, not redone; a lock holder past
//! its lease fenced off (and, with fencing off, the oversell it prevents); idempotency keys
//! deciding a request once. Fast, and with no process or network: the end-to-end tests
//! prove the same through the real sidecar.

use std::sync::Arc;
use std::time::{Duration, Instant};

use appkit::wire::{BookingRequest, Day, ReservationId};

use test_case::test_case;

use super::{
    Booker, BookingError, Call, Consistency, Policy, Work, cancellation_key, night_key,
    reservation_key,
};
use crate::catalogue::Catalogue;
use crate::store::memory::MemoryStore;

/// A store whose transactions refuse a create of a key that exists (`creating`: missing
/// entries are created in the commit, as on SQLite), or one where they do not (created
/// and read first, as on Redis).
fn store_of(creating: bool) -> MemoryStore {
    if creating {
        MemoryStore::default().with_creating_transactions()
    } else {
        MemoryStore::default()
    }
}

/// Hotel 1 has 3 rooms, hotel 2 one.
fn catalogue() -> Arc<Catalogue> {
    Arc::new(
        Catalogue::parse(
            "id,name,city,rooms\n1,Three Rooms,Lisbon,3\n2,One Room,Porto,1\n",
            "test",
        )
        .unwrap(),
    )
}

fn policy(consistency: Consistency) -> Policy {
    Policy {
        consistency,
        lease_secs: 5,
        wait_budget: Duration::from_secs(10),
        hold_lock: Duration::ZERO,
        fencing: true,
        key_ttl_secs: 60,
        events: false,
    }
}

fn booker(store: &MemoryStore, policy: Policy) -> Arc<Booker<MemoryStore>> {
    Arc::new(Booker::new(
        catalogue(),
        Some(store.clone()),
        policy,
        Work::Full,
    ))
}

fn night() -> Day {
    Day::today().plus(10).unwrap()
}

fn stay(user: &str, rooms: u32) -> BookingRequest {
    BookingRequest {
        user_id: user.into(),
        name: "Test".into(),
        check_in: night(),
        check_out: night().plus(1).unwrap(),
        rooms,
    }
}

fn call(key: Option<&str>) -> Call {
    Call {
        deadline: Instant::now() + Duration::from_secs(20),
        key: key.map(str::to_string),
    }
}

fn id_of(id: &str) -> ReservationId {
    ReservationId::parse(id).unwrap()
}

/// Rooms sold on `night()` of `hotel`, as stored.
fn booked(store: &MemoryStore, hotel: u32) -> u64 {
    store
        .value(&night_key(hotel, night()))
        .and_then(|v| v["booked"].as_u64())
        .unwrap_or(0)
}

fn reservations(store: &MemoryStore) -> usize {
    store.keys("reservation-").len()
}

/// `n` one-room bookings of hotel 1 at once; the answers, in any order.
async fn rush(booker: &Arc<Booker<MemoryStore>>, n: usize) -> Vec<Result<(), BookingError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let booker = booker.clone();
            tokio::spawn(async move {
                booker
                    .book(1, stay(&format!("u{i}"), 1), &call(None))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bookings_never_oversell(creating: bool) {
    for consistency in [Consistency::Lock, Consistency::Etag] {
        let store = store_of(creating);
        let answers = rush(&booker(&store, policy(consistency)), 24).await;
        let sold = answers.iter().filter(|a| a.is_ok()).count();
        for a in &answers {
            assert!(
                matches!(a, Ok(()) | Err(BookingError::SoldOut(_))),
                "{consistency:?}: {a:?}"
            );
        }
        assert_eq!(sold, 3, "{consistency:?}: all three rooms, no more");
        assert_eq!(booked(&store, 1), 3, "{consistency:?}");
        assert_eq!(reservations(&store), 3, "{consistency:?}");
    }
}

/// The proof that the rush above can fail: with no protection, the interleaved reads
/// of the same count sell more rooms than there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_protection_the_same_rush_oversells() {
    let store = MemoryStore::default();
    let answers = rush(&booker(&store, policy(Consistency::None)), 24).await;
    assert!(
        reservations(&store) > 3,
        "{} reservations for 3 rooms: {answers:?}",
        reservations(&store)
    );
}

#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_read_back_not_redone(creating: bool) {
    for (consistency, key) in [
        (Consistency::Lock, None),
        (Consistency::Lock, Some("k1")),
        (Consistency::Etag, None),
        (Consistency::Etag, Some("k1")),
    ] {
        let store = store_of(creating);
        let booker = booker(&store, policy(consistency));
        store.lose_answers(1);
        let r = booker.book(1, stay("ann", 2), &call(key)).await;
        let what = format!("{consistency:?} key {key:?}");
        let r = r.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(booked(&store, 1), 2, "{what}: booked once");
        assert_eq!(
            store.keys("reservation-"),
            [format!("reservation-{}", r.id)]
        );
    }
}

/// A retry after an answer lost for good is answered from the key's record: the same
/// reservation, and the nights counted once.
#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test]
async fn a_retry_under_the_same_key_gets_the_first_answer(creating: bool) {
    let store = store_of(creating);
    let booker = booker(&store, policy(Consistency::Lock));
    let first = booker
        .book(1, stay("ann", 1), &call(Some("k")))
        .await
        .unwrap();
    let again = booker
        .book(1, stay("ann", 1), &call(Some("k")))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(booked(&store, 1), 1);
    assert_eq!(
        booker.book(1, stay("bob", 1), &call(Some("k"))).await,
        Err(BookingError::KeyReused)
    );
    // Twelve twins at once still book once.
    let twins: Vec<_> = (0..12)
        .map(|_| {
            let booker = booker.clone();
            tokio::spawn(async move { booker.book(1, stay("cy", 1), &call(Some("k2"))).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in twins {
        ids.push(t.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one reservation for one key");
    assert_eq!(booked(&store, 1), 2);
}

/// A keyed request refused as sold out stays refused, also once a room is free again:
/// a key is decided once.
#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test]
async fn a_refusal_is_decided_once(creating: bool) {
    let store = store_of(creating);
    let booker = booker(&store, policy(Consistency::Lock));
    let taken = booker.book(2, stay("ann", 1), &call(None)).await.unwrap();
    let refused = booker.book(2, stay("bob", 1), &call(Some("b"))).await;
    assert!(
        matches!(refused, Err(BookingError::SoldOut(_))),
        "{refused:?}"
    );
    booker.cancel(&id_of(&taken.id), &call(None)).await.unwrap();
    assert_eq!(booked(&store, 2), 0, "the cancel freed the room");
    let again = booker.book(2, stay("bob", 1), &call(Some("b"))).await;
    assert_eq!(again, refused);
    assert!(booker.book(2, stay("cy", 1), &call(None)).await.is_ok());
}

#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test]
async fn a_keyed_cancel_frees_the_nights_once(creating: bool) {
    let store = store_of(creating);
    let booker = booker(&store, policy(Consistency::Etag));
    let r = booker.book(1, stay("ann", 2), &call(None)).await.unwrap();
    booker.book(1, stay("bob", 1), &call(None)).await.unwrap();
    let first = booker
        .cancel(&id_of(&r.id), &call(Some("c")))
        .await
        .unwrap();
    let second = booker
        .cancel(&id_of(&r.id), &call(Some("c")))
        .await
        .unwrap();
    assert_eq!(
        (first.id.as_str(), second.id.as_str()),
        (r.id.as_str(), r.id.as_str())
    );
    assert_eq!(booked(&store, 1), 1, "two rooms freed, once");
    assert_eq!(
        booker.cancel(&id_of(&r.id), &call(None)).await,
        Err(BookingError::ReservationNotFound(r.id.clone()))
    );
}

/// With events on, each change that commits carries exactly one event, and nothing else
/// does: not a refusal, not a retry answered from its key, not a commit read back after
/// its answer was lost. The stored records stay what they were (the event rides beside
/// them as an outbox projection).
#[test_case(Consistency::Lock, false ; "lock_create_then_read")]
#[test_case(Consistency::Lock, true ; "lock_create_in_commit")]
#[test_case(Consistency::Etag, true ; "etag_create_in_commit")]
#[tokio::test]
async fn events_announce_exactly_what_commits(consistency: Consistency, creating: bool) {
    let store = store_of(creating);
    let booker = booker(
        &store,
        Policy {
            events: true,
            ..policy(consistency)
        },
    );
    let ann = booker.book(2, stay("ann", 1), &call(None)).await.unwrap();
    let refused = booker.book(2, stay("bob", 1), &call(Some("b"))).await;
    assert!(
        matches!(refused, Err(BookingError::SoldOut(_))),
        "{refused:?}"
    );
    let cy = booker
        .book(1, stay("cy", 1), &call(Some("c")))
        .await
        .unwrap();
    let again = booker
        .book(1, stay("cy", 1), &call(Some("c")))
        .await
        .unwrap();
    assert_eq!(cy, again);
    store.lose_answers(1);
    let di = booker.book(1, stay("di", 1), &call(None)).await.unwrap();
    let cancelled = booker.cancel(&id_of(&ann.id), &call(None)).await.unwrap();
    assert_eq!(cancelled, ann);

    // The outbox publishes every write; the booking events are the ones with a type.
    let published: Vec<serde_json::Value> = store
        .published()
        .into_iter()
        .filter(|e| e.get("type").is_some())
        .collect();
    let seen: Vec<(&str, &str)> = published
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["reservation"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("booking.confirmed", ann.id.as_str()),
            ("booking.confirmed", cy.id.as_str()),
            ("booking.confirmed", di.id.as_str()),
            ("booking.cancelled", ann.id.as_str()),
        ]
    );
    assert_eq!(
        published[1]["reservation"],
        serde_json::to_value(&cy).unwrap()
    );
    assert_eq!(published[1]["at"], cy.created_at.as_str());
    // The stored reservation is the reservation, not its event.
    assert_eq!(
        store.value(&reservation_key(&cy.id)),
        Some(serde_json::to_value(&cy).unwrap())
    );
    assert_eq!(store.value(&reservation_key(&ann.id)), None);
    assert_eq!(
        store.value(&cancellation_key(&ann.id)).as_ref(),
        published.get(3)
    );
}

/// On a store without an outbox the events change nothing that is kept: each projection is
/// written before the record it rides on, which then overwrites it.
#[tokio::test]
async fn without_an_outbox_the_records_stay_whole() {
    let store = store_of(true).without_outbox();
    let booker = booker(
        &store,
        Policy {
            events: true,
            ..policy(Consistency::Lock)
        },
    );
    let r = booker.book(1, stay("ann", 1), &call(None)).await.unwrap();
    assert_eq!(
        store.value(&reservation_key(&r.id)),
        Some(serde_json::to_value(&r).unwrap())
    );
    booker.cancel(&id_of(&r.id), &call(None)).await.unwrap();
    let record = store.value(&cancellation_key(&r.id)).unwrap();
    assert_eq!(
        (&record["type"], &record["reservation"]),
        (
            &serde_json::json!("booking.cancelled"),
            &serde_json::to_value(&r).unwrap()
        )
    );
    assert!(store.published().is_empty());
}

/// A night read as missing, then made by another writer (a lock holder whose lease ran
/// out, or an `etag`-mode booker) before this booking's commit lands: the commit's create
/// of it is refused, and the booking reads again and finds the room sold.
#[test_case(Consistency::Lock ; "lock")]
#[test_case(Consistency::Etag ; "etag")]
#[tokio::test]
async fn a_night_made_before_the_commit_lands_refuses_it(consistency: Consistency) {
    let store = store_of(true);
    let booker = booker(&store, policy(consistency));
    store.write_before_next_transaction(&night_key(2, night()), br#"{"booked":1}"#);
    let r = booker.book(2, stay("late", 1), &call(None)).await;
    assert!(matches!(r, Err(BookingError::SoldOut(_))), "{r:?}");
    assert_eq!(booked(&store, 2), 1, "the other writer's room, no more");
    assert_eq!(reservations(&store), 0);
}

/// Replica A takes the one-room hotel's lock, reads the night, and lingers past its
/// lease; B takes the lock and sells the room. Returns A's answer and the reservations
/// stored.
async fn a_holder_outlives_its_lease(
    fencing: bool,
    creating: bool,
) -> (Result<(), BookingError>, usize) {
    let store = store_of(creating);
    let mut slow = policy(Consistency::Lock);
    slow.lease_secs = 1;
    slow.hold_lock = Duration::from_millis(2000);
    slow.fencing = fencing;
    let a = booker(&store, slow);
    let b = booker(&store, policy(Consistency::Lock));
    let first = tokio::spawn(async move { a.book(2, stay("a", 1), &call(None)).await });
    let lock = "hotel-2";
    while store.holder(lock).is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while store.holder(lock).is_some() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.book(2, stay("b", 1), &call(None)).await.unwrap();
    let a_answer = first.await.unwrap().map(|_| ());
    (a_answer, reservations(&store))
}

#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test]
async fn a_lock_holder_past_its_lease_is_fenced_off(creating: bool) {
    let (a, sold) = a_holder_outlives_its_lease(true, creating).await;
    assert!(matches!(a, Err(BookingError::SoldOut(_))), "{a:?}");
    assert_eq!(sold, 1);
}

/// The proof for the case above: without fencing, the late holder's blind write lands too.
#[test_case(false ; "create_then_read")]
#[test_case(true ; "create_in_commit")]
#[tokio::test]
async fn without_fencing_a_holder_past_its_lease_oversells(creating: bool) {
    let (a, sold) = a_holder_outlives_its_lease(false, creating).await;
    assert_eq!(a, Ok(()), "the late holder is told 201");
    assert_eq!(sold, 2, "two reservations of the one room");
}

#[tokio::test]
async fn a_lock_held_past_the_wait_budget_is_busy() {
    let store = MemoryStore::default();
    let mut impatient = policy(Consistency::Lock);
    impatient.wait_budget = Duration::from_millis(100);
    let booker = booker(&store, impatient);
    assert!(store.try_lock_now("hotel-1", "someone else", 5));
    let r = booker.book(1, stay("ann", 1), &call(None)).await;
    assert!(matches!(r, Err(BookingError::Busy(_))), "{r:?}");
    assert_eq!(store.transactions(), 0, "nothing written");
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_work() {
    let store = MemoryStore::default();
    let booker = booker(&store, policy(Consistency::Lock));
    let mut backwards = stay("ann", 1);
    backwards.check_out = backwards.check_in;
    for (hotel, req, expect) in [
        (9, stay("ann", 1), BookingError::HotelNotFound(9)),
        (
            1,
            backwards,
            BookingError::Invalid {
                code: "invalid_dates",
                message: String::new(),
            },
        ),
    ] {
        let got = booker.book(hotel, req, &call(None)).await.unwrap_err();
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&expect),
            "{got:?}"
        );
    }
    assert_eq!(store.transactions(), 0);
}

/// A store that saves a batch all or nothing refuses the batch of missing nights when
/// another writer made one of them first: the booking creates the rest again and goes on.
#[tokio::test]
async fn missing_nights_are_created_again_when_a_batch_is_refused_whole() {
    for consistency in [Consistency::Lock, Consistency::Etag] {
        let store = MemoryStore::default();
        let booker = booker(&store, policy(consistency));
        store.race_next_create(&night_key(1, night()));
        let two_nights = BookingRequest {
            check_out: night().plus(2).unwrap(),
            ..stay("ann", 2)
        };
        booker
            .book(1, two_nights, &call(Some("k1")))
            .await
            .unwrap_or_else(|e| panic!("{consistency:?}: {e:?}"));
        assert_eq!(booked(&store, 1), 2, "{consistency:?}");
        let second = store.value(&night_key(1, night().plus(1).unwrap()));
        assert_eq!(second.unwrap()["booked"], 2, "{consistency:?}");
    }
}
