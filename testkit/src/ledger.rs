//! The ledger check: after a load, with or without faults, do the stored nights agree with
//! the stored reservations, and is every acknowledged booking there as it was answered?
//!
//! It reads the backend's keys straight from Redis in Dapr's layout (one hash per key,
//! the value in its `data` field; see DAPR_API.md §12), so it checks what the store holds,
//! not what the services say.

use std::collections::{BTreeMap, HashMap};

use appkit::wire::Day;
use redis::AsyncCommands as _;
use serde_json::Value;

/// What the store holds for one app: booked counts per night, and every reservation.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (hotel, night) → booked rooms, from `hotel-{id}-{YYYY-MM-DD}`.
    pub nights: BTreeMap<(u32, String), u64>,
    /// Reservation id → the stored reservation, from `reservation-{id}`.
    pub reservations: HashMap<String, Value>,
}

/// What the check found. `violations` empty means the ledger is right.
#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    /// Nights booked beyond the hotel's rooms.
    pub oversold_nights: usize,
    /// Acknowledged (201) bookings missing or changed in the store.
    pub lost: usize,
    /// Stored reservations no client heard of: only an answer lost to a fault may leave one.
    pub unheard: usize,
    /// Requests booked more than once. Drivers give every request its own `user_id`, so
    /// two reservations with one `user_id` are one request booked twice.
    pub doubled: usize,
}

impl Ledger {
    /// Reads every night and reservation of `app_id` from the Redis on `port`.
    pub async fn read_redis(port: u16, app_id: &str) -> anyhow::Result<Ledger> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let prefix = format!("{app_id}||");
        let keys: Vec<String> = conn.keys(format!("{prefix}*")).await?;
        let mut ledger = Ledger::default();
        for full in keys {
            let key = &full[prefix.len()..];
            let Ok(data) = conn.hget::<_, _, Option<Vec<u8>>>(&full, "data").await else {
                continue; // not a state hash (a lock is a plain string)
            };
            let Some(data) = data else { continue };
            if let Some(id) = key.strip_prefix("reservation-") {
                ledger
                    .reservations
                    .insert(id.to_string(), serde_json::from_slice(&data)?);
            } else if let Some(rest) = key.strip_prefix("hotel-") {
                // hotel-{id}-{YYYY-MM-DD}: the date is the last ten characters.
                let (hotel, day) = rest.split_at(rest.len().saturating_sub(11));
                let night: Value = serde_json::from_slice(&data)?;
                ledger.nights.insert(
                    (hotel.parse()?, day.trim_start_matches('-').to_string()),
                    night["booked"].as_u64().unwrap_or(0),
                );
            }
        }
        Ok(ledger)
    }

    /// Checks the ledger against the hotels' rooms and the bookings clients were told
    /// about (201 answers). Every night's count must equal the rooms of the reservations
    /// that cover it and never exceed the hotel's rooms; every acknowledged reservation
    /// must be stored as answered.
    pub fn check(&self, rooms_of: impl Fn(u32) -> u64, acknowledged: &[Value]) -> Verdict {
        let mut v = Verdict::default();
        let mut covered: BTreeMap<(u32, String), u64> = BTreeMap::new();
        for r in self.reservations.values() {
            let hotel = r["hotel_id"].as_u64().unwrap_or(0) as u32;
            let rooms = r["rooms"].as_u64().unwrap_or(0);
            for night in nights(r) {
                *covered.entry((hotel, night)).or_default() += rooms;
            }
        }
        let all: std::collections::BTreeSet<_> =
            self.nights.keys().chain(covered.keys()).cloned().collect();
        for (hotel, night) in all {
            let booked = self
                .nights
                .get(&(hotel, night.clone()))
                .copied()
                .unwrap_or(0);
            let held = covered.get(&(hotel, night.clone())).copied().unwrap_or(0);
            if booked != held {
                v.violations.push(format!(
                    "hotel {hotel} night {night}: booked {booked}, reservations hold {held}"
                ));
            }
            if booked.max(held) > rooms_of(hotel) {
                v.oversold_nights += 1;
                v.violations.push(format!(
                    "hotel {hotel} night {night}: {} rooms sold of {}",
                    booked.max(held),
                    rooms_of(hotel)
                ));
            }
        }
        for a in acknowledged {
            let id = a["id"].as_str().unwrap_or_default();
            if self.reservations.get(id) != Some(a) {
                v.lost += 1;
                v.violations.push(format!(
                    "acknowledged reservation {id} is not stored as answered"
                ));
            }
        }
        let mut per_user: HashMap<&str, usize> = HashMap::new();
        for r in self.reservations.values() {
            *per_user
                .entry(r["user_id"].as_str().unwrap_or_default())
                .or_default() += 1;
        }
        for (user, n) in per_user.into_iter().filter(|(_, n)| *n > 1) {
            v.doubled += 1;
            v.violations
                .push(format!("request of user {user:?} was booked {n} times"));
        }
        let heard: std::collections::HashSet<&str> = acknowledged
            .iter()
            .filter_map(|a| a["id"].as_str())
            .collect();
        v.unheard = self
            .reservations
            .keys()
            .filter(|id| !heard.contains(id.as_str()))
            .count();
        v
    }
}

/// The nights a stored reservation covers (check-in up to, not including, check-out).
fn nights(r: &Value) -> Vec<String> {
    let day = |k: &str| r[k].as_str().and_then(Day::parse);
    let (Some(from), Some(to)) = (day("check_in"), day("check_out")) else {
        return Vec::new();
    };
    from.nights_until(to).iter().map(Day::to_string).collect()
}
