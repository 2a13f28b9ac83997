//! The JSON bodies of the booking API: `reservation.json` (frontend `POST /book`),
//! `user.json` (backend `POST /book_hotel/{id}`), and what the services answer.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::Date;
use time::macros::format_description;

/// Longest stay one booking may cover.
pub const MAX_NIGHTS: i64 = 30;
/// Most rooms one booking may take.
pub const MAX_ROOMS: u32 = 20;

/// A calendar day, written `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub Date);

impl Day {
    pub fn parse(s: &str) -> Option<Day> {
        Date::parse(s, format_description!("[year]-[month]-[day]"))
            .ok()
            .map(Day)
    }

    /// Today in the hotels' calendar, which is UTC.
    pub fn today() -> Day {
        Day(time::OffsetDateTime::now_utc().date())
    }

    /// `days` after this one (before it when negative); `None` past the calendar's end.
    pub fn plus(self, days: i64) -> Option<Day> {
        self.0.checked_add(time::Duration::days(days)).map(Day)
    }

    pub fn next(self) -> Option<Day> {
        self.0.next_day().map(Day)
    }

    /// Nights from `self` up to, not including, `end`.
    pub fn nights_until(self, end: Day) -> Vec<Day> {
        let mut out = Vec::new();
        let mut d = self;
        while d < end {
            out.push(d);
            match d.next() {
                Some(n) => d = n,
                None => break,
            }
        }
        out
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.0.year(),
            self.0.month() as u8,
            self.0.day()
        )
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Day::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a date like 2026-12-01")))
    }
}

/// `user.json`: who books, the stay, and how many rooms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    /// 1 to 128 characters, not all blank.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S", example = "u-42")]
    pub user_id: String,
    /// 1 to 256 characters, not all blank.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"\S",
        example = "Ada Lovelace"
    )]
    pub name: String,
    /// The first night, today (UTC) or later.
    #[schema(value_type = String, format = Date, example = "2027-01-10")]
    pub check_in: Day,
    /// The morning of leaving: after check-in, at most 30 nights later.
    #[schema(value_type = String, format = Date, example = "2027-01-12")]
    pub check_out: Day,
    #[schema(minimum = 1, maximum = 20, example = 1)]
    pub rooms: u32,
}

/// Why a request is refused before any work is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

/// A hotel id as a path names it: a number. Both services parse it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotelId(pub u32);

impl HotelId {
    pub fn parse(raw: &str) -> Result<HotelId, Invalid> {
        raw.parse().map(HotelId).map_err(|_| Invalid {
            code: "invalid_hotel_id",
            message: format!("hotel id {raw:?} is not a number"),
        })
    }
}

/// A reservation id: a UUID, kept in its lowercase hyphenated form, so that one
/// reservation has one key whatever the case a client writes it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationId(String);

impl ReservationId {
    /// `None` for anything that is not a UUID: no such reservation can exist, and the
    /// text must not reach the store.
    pub fn parse(raw: &str) -> Option<ReservationId> {
        let id = uuid::Uuid::try_parse(raw).ok()?;
        Some(ReservationId(id.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid stay: check-out after check-in, at most `MAX_NIGHTS` nights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stay {
    pub check_in: Day,
    pub check_out: Day,
}

impl Stay {
    /// The nights booked: check-in up to, not including, check-out.
    pub fn nights(&self) -> Vec<Day> {
        self.check_in.nights_until(self.check_out)
    }
}

impl BookingRequest {
    /// The rules a booking must meet whatever the hotel: a real stay that starts `today`
    /// or later, a sane room count.
    pub fn validate(&self, today: Day) -> Result<Stay, Invalid> {
        let bad = |code, message: String| Err(Invalid { code, message });
        // Lengths in characters, as the published schema's maxLength counts them.
        if self.user_id.trim().is_empty() || self.user_id.chars().count() > 128 {
            return bad(
                "invalid_field",
                "user_id must be 1 to 128 characters".into(),
            );
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 256 {
            return bad("invalid_field", "name must be 1 to 256 characters".into());
        }
        if self.check_out <= self.check_in {
            return bad(
                "invalid_dates",
                format!(
                    "check_out {} must be after check_in {}",
                    self.check_out, self.check_in
                ),
            );
        }
        if self.check_in < today {
            return bad(
                "invalid_dates",
                format!(
                    "check_in {} is in the past (today is {today}, UTC)",
                    self.check_in
                ),
            );
        }
        let nights = (self.check_out.0 - self.check_in.0).whole_days();
        if nights > MAX_NIGHTS {
            return bad(
                "invalid_dates",
                format!("a stay is at most {MAX_NIGHTS} nights; this one is {nights}"),
            );
        }
        if self.rooms == 0 || self.rooms > MAX_ROOMS {
            return bad(
                "invalid_rooms",
                format!("rooms must be 1 to {MAX_ROOMS}, not {}", self.rooms),
            );
        }
        Ok(Stay {
            check_in: self.check_in,
            check_out: self.check_out,
        })
    }
}

/// `reservation.json`: a hotel and the user part the backend books.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    pub hotel_id: u32,
    pub user: BookingRequest,
}

/// Now, as the booking API writes its times (`created_at`, an event's `at`): RFC 3339 in
/// UTC, to the nanosecond.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A booking as stored and answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Reservation {
    #[schema(format = Uuid)]
    pub id: String,
    pub hotel_id: u32,
    pub user_id: String,
    pub name: String,
    #[schema(value_type = String, format = Date)]
    pub check_in: Day,
    #[schema(value_type = String, format = Date)]
    pub check_out: Day,
    pub rooms: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// What happened to a booking, as the backend announces it through its state store's
/// outbox (the `data` of the CloudEvent) and the notifier keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BookingEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub reservation: Reservation,
    /// When it happened (RFC 3339, UTC): the booking's `created_at`, or the cancellation.
    pub at: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    #[serde(rename = "booking.confirmed")]
    Confirmed,
    #[serde(rename = "booking.cancelled")]
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Confirmed => "booking.confirmed",
            EventKind::Cancelled => "booking.cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Hotel {
    pub id: u32,
    pub name: String,
    pub city: String,
    /// Rooms for sale each night.
    pub rooms: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NightAvailability {
    #[schema(value_type = String, format = Date)]
    pub date: Day,
    pub booked: u32,
    pub available: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Availability {
    pub hotel_id: u32,
    pub rooms: u32,
    pub nights: Vec<NightAvailability>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    /// A fixed "today" so the cases below never age.
    const TODAY: &str = "2026-06-01";

    fn req(check_in: &str, check_out: &str, rooms: u32) -> BookingRequest {
        BookingRequest {
            user_id: "u1".into(),
            name: "Ada".into(),
            check_in: Day::parse(check_in).unwrap(),
            check_out: Day::parse(check_out).unwrap(),
            rooms,
        }
    }

    #[test]
    fn nights_cover_the_stay_without_the_last_day() {
        let stay = req("2026-12-30", "2027-01-02", 1)
            .validate(day(TODAY))
            .unwrap();
        let s: Vec<String> = stay.nights().iter().map(ToString::to_string).collect();
        assert_eq!(s, ["2026-12-30", "2026-12-31", "2027-01-01"]);
    }

    #[test]
    fn stays_and_rooms_are_checked() {
        // (check_in, check_out, rooms, the refusal's code or None when valid)
        let cases = [
            (TODAY, "2026-06-02", 1, None),
            ("2026-12-01", "2026-12-31", 20, None),
            ("2026-12-03", "2026-12-01", 1, Some("invalid_dates")),
            ("2026-12-01", "2026-12-01", 1, Some("invalid_dates")),
            ("2026-07-01", "2026-09-01", 1, Some("invalid_dates")),
            ("2026-05-31", "2026-06-02", 1, Some("invalid_dates")),
            ("2026-12-01", "2026-12-02", 0, Some("invalid_rooms")),
            ("2026-12-01", "2026-12-02", 21, Some("invalid_rooms")),
        ];
        for (check_in, check_out, rooms, refused) in cases {
            let got = req(check_in, check_out, rooms).validate(day(TODAY));
            assert_eq!(
                got.err().map(|e| e.code),
                refused,
                "{check_in}..{check_out}, {rooms} rooms"
            );
        }
        let past = req("2026-05-31", "2026-06-02", 1)
            .validate(day(TODAY))
            .unwrap_err();
        assert!(past.message.contains("past"), "{}", past.message);
    }

    #[test]
    fn ids_parse_as_both_services_need() {
        assert_eq!(HotelId::parse("42"), Ok(HotelId(42)));
        for raw in ["", "x", "-1", "4294967296"] {
            assert_eq!(
                HotelId::parse(raw).unwrap_err().code,
                "invalid_hotel_id",
                "{raw:?}"
            );
        }
        let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        assert_eq!(
            ReservationId::parse(id).unwrap().as_str(),
            id.to_ascii_lowercase()
        );
        for raw in [
            "",
            "x",
            "6f9619ff-8b86-d011-b42d-00c04fc964f",
            "../etc/passwd",
        ] {
            assert_eq!(ReservationId::parse(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn dates_parse_strictly() {
        assert!(Day::parse("2026-02-30").is_none());
        assert!(Day::parse("2026-2-3").is_none());
        assert_eq!(Day::parse("2028-02-29").unwrap().to_string(), "2028-02-29");
    }
}
