//! The ledger check: after a load, with or without faults, do the stored nights agree with
//! the stored reservations, does no night sell more rooms than the hotel has, is every
//! acknowledged booking stored as it was answered, and (given the notifier's events) was
//! exactly what committed announced?
//!
//! It reads what the store holds (the lines of `sidecar dump-state`), not what the
//! services say, and knows the backend's key layout from `booking`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use appkit::wire::{BookingEvent, Day, EventKind, Reservation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::booking::{KeyRecord, Night, cancellation_key, parse_night_key};

/// One line of `sidecar dump-state`.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// The state store it came from.
    #[serde(default)]
    pub store: String,
    pub key: String,
    #[serde(default)]
    pub value: Value,
}

/// What the store holds for the backend.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (hotel, night) → rooms booked.
    nights: BTreeMap<(u32, Day), u64>,
    /// Reservation id → the stored reservation.
    reservations: HashMap<String, Reservation>,
    keys: KeyCounts,
    /// Reservation id → the event kept of its cancellation (while its TTL lasts).
    cancellations: HashMap<String, BookingEvent>,
    /// Entries that belong to the layout but cannot be read: each is a violation.
    unreadable: Vec<String>,
}

/// Idempotency keys by how they were decided.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct KeyCounts {
    pub booked: usize,
    pub refused: usize,
    pub cancelled: usize,
    /// Created by a request that has not been decided (or whose change was refused by a
    /// conflict and not retried).
    pub pending: usize,
}

/// What the check found; `violations` empty means the ledger is right.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub nights: usize,
    pub reservations: usize,
    pub keys: KeyCounts,
    /// Nights booked beyond the hotel's rooms.
    pub oversold_nights: usize,
    /// Nights whose count is not the rooms of the reservations covering them.
    pub miscounted_nights: usize,
    /// Acknowledged (201) bookings missing or changed in the store.
    pub lost: usize,
    /// Stored reservations no acknowledged answer names: only an answer lost to a fault
    /// may leave one. Counted only when acknowledged answers are given.
    pub unheard: Option<usize>,
    /// Requests booked more than once, when every request had its own `user_id`.
    pub doubled: Option<usize>,
    /// Cancellations on record (kept when the backend announces events).
    pub cancellations: usize,
    /// What the events heard say, when they are given.
    pub events: Option<EventCounts>,
}

/// The events heard against the store.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct EventCounts {
    /// Distinct bookings announced confirmed, and cancelled.
    pub confirmed: usize,
    pub cancelled: usize,
    /// Lines that repeat a change (delivery is at least once; the notifier keeps each
    /// change once, so from its file this stays 0).
    pub duplicates: usize,
    /// Stored bookings never announced (or announced otherwise than stored), and
    /// cancellations on record never announced.
    pub unannounced: usize,
    /// Changes announced that did not commit: a booking neither stored nor cancelled, a
    /// cancellation of a booking still stored or never announced.
    pub phantom: usize,
}

impl Ledger {
    /// Sorts the dumped entries into nights, reservations and key records; other keys are
    /// not the ledger's.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Ledger {
        let mut ledger = Ledger::default();
        for Entry { key, value, .. } in entries {
            if let Some(night) = parse_night_key(&key) {
                match serde_json::from_value::<Night>(value) {
                    Ok(n) => {
                        ledger.nights.insert(night, n.booked.into());
                    }
                    Err(e) => ledger.unreadable.push(format!("{key}: {e}")),
                }
            } else if let Some(id) = key.strip_prefix("reservation-") {
                match serde_json::from_value::<Reservation>(value) {
                    Ok(r) if r.id == id => {
                        ledger.reservations.insert(r.id.clone(), r);
                    }
                    Ok(r) => ledger
                        .unreadable
                        .push(format!("{key} holds reservation {}", r.id)),
                    Err(e) => ledger.unreadable.push(format!("{key}: {e}")),
                }
            } else if let Some(id) = key.strip_prefix("cancelled-") {
                match serde_json::from_value::<BookingEvent>(value) {
                    Ok(e) if e.reservation.id == id && e.kind == EventKind::Cancelled => {
                        ledger.cancellations.insert(id.to_string(), e);
                    }
                    Ok(e) => ledger.unreadable.push(format!(
                        "{key} holds a {} of reservation {}",
                        e.kind.as_str(),
                        e.reservation.id
                    )),
                    Err(e) => ledger.unreadable.push(format!("{key}: {e}")),
                }
            } else if key.starts_with("idempotency-") {
                match serde_json::from_value::<KeyRecord>(value) {
                    Ok(r) if r.answer.is_some() && r.is_cancel() => ledger.keys.cancelled += 1,
                    Ok(KeyRecord {
                        answer: Some(_), ..
                    }) => ledger.keys.booked += 1,
                    Ok(KeyRecord {
                        refused: Some(_), ..
                    }) => ledger.keys.refused += 1,
                    Ok(_) => ledger.keys.pending += 1,
                    Err(e) => ledger.unreadable.push(format!("{key}: {e}")),
                }
            }
        }
        ledger
    }

    /// Checks the ledger against the hotels' rooms (`None` for a hotel the catalogue does
    /// not have) and, when given, the answers clients were told (201 bodies).
    /// `unique_users` says every request had its own `user_id`, so two reservations with
    /// one are one request booked twice.
    pub fn check(
        &self,
        rooms_of: impl Fn(u32) -> Option<u32>,
        acknowledged: Option<&[Reservation]>,
        unique_users: bool,
    ) -> Verdict {
        let mut v = Verdict {
            violations: self.unreadable.clone(),
            nights: self.nights.len(),
            reservations: self.reservations.len(),
            keys: self.keys,
            ..Verdict::default()
        };
        v.cancellations = self.cancellations.len();
        for id in self.cancellations.keys() {
            if self.reservations.contains_key(id) {
                v.violations.push(format!(
                    "reservation {id} is stored and recorded cancelled ({})",
                    cancellation_key(id)
                ));
            }
        }
        let mut covered: BTreeMap<(u32, Day), u64> = BTreeMap::new();
        for r in self.reservations.values() {
            for night in r.check_in.nights_until(r.check_out) {
                *covered.entry((r.hotel_id, night)).or_default() += u64::from(r.rooms);
            }
        }
        let all: BTreeSet<(u32, Day)> = self.nights.keys().chain(covered.keys()).copied().collect();
        for (hotel, night) in all {
            let booked = self.nights.get(&(hotel, night)).copied().unwrap_or(0);
            let held = covered.get(&(hotel, night)).copied().unwrap_or(0);
            if booked != held {
                v.miscounted_nights += 1;
                v.violations.push(format!(
                    "hotel {hotel} night {night}: booked {booked}, reservations hold {held}"
                ));
            }
            let sold = booked.max(held);
            match rooms_of(hotel) {
                Some(rooms) if sold <= u64::from(rooms) => {}
                Some(rooms) => {
                    v.oversold_nights += 1;
                    v.violations.push(format!(
                        "hotel {hotel} night {night}: {sold} rooms sold of {rooms}"
                    ));
                }
                None if sold == 0 => {}
                None => v.violations.push(format!(
                    "hotel {hotel} night {night}: {sold} rooms sold of a hotel not in the catalogue"
                )),
            }
        }
        if let Some(acknowledged) = acknowledged {
            for a in acknowledged {
                if self.reservations.get(&a.id) != Some(a) {
                    v.lost += 1;
                    v.violations.push(format!(
                        "acknowledged reservation {} is not stored as answered",
                        a.id
                    ));
                }
            }
            let heard: HashSet<&str> = acknowledged.iter().map(|a| a.id.as_str()).collect();
            v.unheard = Some(
                self.reservations
                    .keys()
                    .filter(|id| !heard.contains(id.as_str()))
                    .count(),
            );
        }
        if unique_users {
            let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
            for r in self.reservations.values() {
                *per_user.entry(&r.user_id).or_default() += 1;
            }
            let doubled: Vec<_> = per_user.into_iter().filter(|(_, n)| *n > 1).collect();
            v.doubled = Some(doubled.len());
            for (user, n) in doubled {
                v.violations
                    .push(format!("the request of user {user:?} was booked {n} times"));
            }
        }
        v
    }
}

impl Ledger {
    /// Checks the events the notifier heard against the store: every stored booking
    /// announced confirmed as stored and not cancelled; every booking announced and not
    /// stored announced cancelled; every cancellation on record announced, and of an
    /// announced booking.
    pub fn check_events(&self, heard: &[BookingEvent], v: &mut Verdict) {
        let mut counts = EventCounts::default();
        let mut confirmed: HashMap<&str, &Reservation> = HashMap::new();
        let mut cancelled: HashSet<&str> = HashSet::new();
        for e in heard {
            let id = e.reservation.id.as_str();
            let new = match e.kind {
                EventKind::Confirmed => confirmed.insert(id, &e.reservation).is_none(),
                EventKind::Cancelled => cancelled.insert(id),
            };
            if !new {
                counts.duplicates += 1;
            }
        }
        counts.confirmed = confirmed.len();
        counts.cancelled = cancelled.len();
        for (id, stored) in &self.reservations {
            match confirmed.get(id.as_str()) {
                Some(announced) if *announced == stored => {}
                Some(_) => {
                    counts.unannounced += 1;
                    v.violations.push(format!(
                        "reservation {id} was announced otherwise than it is stored"
                    ));
                }
                None => {
                    counts.unannounced += 1;
                    v.violations.push(format!(
                        "reservation {id} is stored but was never announced"
                    ));
                }
            }
            if cancelled.contains(id.as_str()) {
                counts.phantom += 1;
                v.violations.push(format!(
                    "reservation {id} was announced cancelled but is stored"
                ));
            }
        }
        for id in confirmed.keys() {
            if !self.reservations.contains_key(*id) && !cancelled.contains(id) {
                counts.phantom += 1;
                v.violations.push(format!(
                    "reservation {id} was announced confirmed but is neither stored nor cancelled"
                ));
            }
        }
        for id in self.cancellations.keys() {
            if !cancelled.contains(id.as_str()) {
                counts.unannounced += 1;
                v.violations.push(format!(
                    "reservation {id} is recorded cancelled but was never announced cancelled"
                ));
            }
        }
        for id in &cancelled {
            if !confirmed.contains_key(id) {
                counts.phantom += 1;
                v.violations.push(format!(
                    "reservation {id} was announced cancelled but never confirmed"
                ));
            }
        }
        v.events = Some(counts);
    }
}

impl Verdict {
    /// A few readable lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} nights, {} reservations; idempotency keys: {} booked, {} refused, {} cancelled, \
             {} pending\n\
             oversold nights: {}\nnights whose count differs from their reservations: {}\n",
            self.nights,
            self.reservations,
            self.keys.booked,
            self.keys.refused,
            self.keys.cancelled,
            self.keys.pending,
            self.oversold_nights,
            self.miscounted_nights,
        );
        if let Some(unheard) = self.unheard {
            s += &format!(
                "acknowledged bookings lost or changed: {}\nstored bookings no answer names: {unheard}\n",
                self.lost
            );
        }
        if let Some(doubled) = self.doubled {
            s += &format!("requests booked twice: {doubled}\n");
        }
        if let Some(e) = self.events {
            s += &format!(
                "events heard: {} bookings confirmed, {} cancelled, {} heard again; \
                 stored bookings not announced: {}; announced changes that did not commit: {}\n",
                e.confirmed, e.cancelled, e.duplicates, e.unannounced, e.phantom
            );
        }
        for line in self.violations.iter().take(20) {
            s += &format!("  violation: {line}\n");
        }
        if self.violations.len() > 20 {
            s += &format!("  ... and {} more\n", self.violations.len() - 20);
        }
        s += if self.violations.is_empty() {
            "ledger OK\n"
        } else {
            "ledger VIOLATED\n"
        };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(key: &str, value: Value) -> Entry {
        Entry {
            store: "statestore".into(),
            key: key.into(),
            value,
        }
    }

    fn reservation(id: &str, user: &str, rooms: u32) -> Value {
        json!({"id": id, "hotel_id": 7, "user_id": user, "name": "N",
               "check_in": "2027-12-01", "check_out": "2027-12-03", "rooms": rooms,
               "created_at": "2027-11-01T00:00:00Z"})
    }

    fn two_rooms_booked() -> Vec<Entry> {
        vec![
            entry("hotel-7-2027-12-01", json!({"booked": 2})),
            entry("hotel-7-2027-12-02", json!({"booked": 2})),
            entry("reservation-a", reservation("a", "u1", 1)),
            entry("reservation-b", reservation("b", "u2", 1)),
            entry(
                "idempotency-k1",
                json!({"request": {}, "answer": reservation("a", "u1", 1)}),
            ),
            entry(
                "idempotency-k2",
                json!({"request": {}, "refused": "sold out"}),
            ),
            entry(
                "idempotency-k3",
                json!({"request": {"cancel": "c"}, "answer": reservation("c", "u3", 1)}),
            ),
            entry("other", json!("not the ledger's")),
        ]
    }

    #[test]
    fn a_consistent_ledger_passes() {
        let ledger = Ledger::from_entries(two_rooms_booked());
        let acked: Reservation = serde_json::from_value(reservation("a", "u1", 1)).unwrap();
        let v = ledger.check(|_| Some(2), Some(&[acked]), true);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.nights, v.reservations), (2, 2));
        assert_eq!(
            v.keys,
            KeyCounts {
                booked: 1,
                refused: 1,
                cancelled: 1,
                pending: 0
            }
        );
        assert_eq!((v.unheard, v.doubled), (Some(1), Some(0)));
    }

    #[test]
    fn each_kind_of_wrong_is_found() {
        type Change = fn(&mut Vec<Entry>);
        type Found = fn(&Verdict) -> bool;
        let none: Change = |_| {};
        // (what is wrong, rooms for sale, the store made wrong, answers acknowledged, found)
        #[rustfmt::skip]
        let cases: [(&str, u32, Change, Value, Found); 6] = [
            ("one room too many", 1, none, json!([]),
                |v| v.oversold_nights == 2),
            ("a count that no reservation explains", 9, |e| e[0].value = json!({"booked": 3}),
                json!([]), |v| v.miscounted_nights == 1 && v.oversold_nights == 0),
            ("an acknowledged booking missing", 9, none, json!([reservation("c", "u3", 1)]),
                |v| v.lost == 1),
            ("an acknowledged booking stored otherwise", 9, none,
                json!([reservation("a", "u1", 2)]), |v| v.lost == 1),
            ("one request booked twice", 9, |e| e[3].value = reservation("b", "u1", 1),
                json!([]), |v| v.doubled == Some(1)),
            ("an unreadable night", 9, |e| e[1].value = json!("x"), json!([]),
                |v| v.violations.iter().any(|l| l.starts_with("hotel-7-2027-12-02"))),
        ];
        for (what, rooms, change, acknowledged, found) in cases {
            let mut entries = two_rooms_booked();
            change(&mut entries);
            let acked: Vec<Reservation> = serde_json::from_value(acknowledged).unwrap();
            let v = Ledger::from_entries(entries).check(|_| Some(rooms), Some(&acked), true);
            assert!(!v.violations.is_empty(), "{what}: no violation");
            assert!(found(&v), "{what}: {v:?}");
        }
    }

    fn heard(kind: &str, id: &str, user: &str) -> BookingEvent {
        serde_json::from_value(
            json!({"type": kind, "reservation": reservation(id, user, 1), "at": "t"}),
        )
        .unwrap()
    }

    /// The store of `two_rooms_booked` (a and b stored) after c was booked and cancelled.
    fn events_of_two_rooms_booked() -> Vec<BookingEvent> {
        vec![
            heard("booking.confirmed", "a", "u1"),
            heard("booking.confirmed", "b", "u2"),
            heard("booking.confirmed", "a", "u1"),
            heard("booking.confirmed", "c", "u3"),
            heard("booking.cancelled", "c", "u3"),
        ]
    }

    /// `two_rooms_booked` with the record of c's cancellation.
    fn c_cancelled() -> Ledger {
        let mut entries = two_rooms_booked();
        entries.push(entry(
            "cancelled-c",
            serde_json::to_value(heard("booking.cancelled", "c", "u3")).unwrap(),
        ));
        Ledger::from_entries(entries)
    }

    #[test]
    fn events_that_match_what_committed_pass() {
        let ledger = c_cancelled();
        let mut v = ledger.check(|_| Some(2), None, true);
        ledger.check_events(&events_of_two_rooms_booked(), &mut v);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.cancellations, 1);
        assert_eq!(
            v.events,
            Some(EventCounts {
                confirmed: 3,
                cancelled: 1,
                duplicates: 1,
                unannounced: 0,
                phantom: 0
            })
        );
    }

    #[test]
    fn each_kind_of_wrong_event_is_found() {
        type Change = fn(&mut Vec<BookingEvent>);
        type Found = fn(&EventCounts) -> bool;
        #[rustfmt::skip]
        let cases: [(&str, Change, Found); 5] = [
            ("a stored booking never announced", |e| { e.remove(1); }, |c| c.unannounced == 1),
            ("a booking announced otherwise", |e| e[1].reservation.rooms = 2, |c| c.unannounced == 1),
            ("a booking announced that never committed", |e| { e.remove(4); }, |c| c.phantom == 1),
            ("a cancellation of a stored booking", |e| e.push(heard("booking.cancelled", "a", "u1")),
                |c| c.phantom == 1),
            ("a cancellation never confirmed", |e| { e.remove(3); }, |c| c.phantom == 1),
        ];
        for (what, change, found) in cases {
            let ledger = Ledger::from_entries(two_rooms_booked());
            let mut v = ledger.check(|_| Some(2), None, true);
            let mut events = events_of_two_rooms_booked();
            change(&mut events);
            ledger.check_events(&events, &mut v);
            assert!(!v.violations.is_empty(), "{what}: no violation");
            let counts = v.events.unwrap();
            assert!(found(&counts), "{what}: {counts:?}");
        }
        // A cancellation on record that was never announced.
        let ledger = c_cancelled();
        let mut v = ledger.check(|_| Some(2), None, true);
        let mut events = events_of_two_rooms_booked();
        events.retain(|e| e.reservation.id != "c");
        ledger.check_events(&events, &mut v);
        assert_eq!(v.events.map(|c| c.unannounced), Some(1), "{v:?}");
        // A cancellation on record of a booking still stored.
        let mut entries = two_rooms_booked();
        entries.push(entry(
            "cancelled-a",
            serde_json::to_value(heard("booking.cancelled", "a", "u1")).unwrap(),
        ));
        let v = Ledger::from_entries(entries).check(|_| Some(2), None, true);
        assert!(
            v.violations.iter().any(|l| l.contains("cancelled-a")),
            "{v:?}"
        );
    }

    #[test]
    fn night_keys_parse_back() {
        let day = Day::parse("2027-12-01").unwrap();
        assert_eq!(
            parse_night_key(&crate::booking::night_key(12, day)),
            Some((12, day))
        );
        assert_eq!(parse_night_key("hotel-x-2027-12-01"), None);
        assert_eq!(parse_night_key("reservation-1"), None);
    }
}
