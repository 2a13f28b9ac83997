//! What a request carries from hop to hop besides its body: a deadline from one budget,
//! and an optional idempotency key that makes retrying a change safe.
//!
//! The deadline travels as the time left, in milliseconds, in `x-request-timeout-ms`
//! (relative, like gRPC's `grpc-timeout`, so no two clocks need to agree). Each hop takes
//! the earlier of what it was given and its own budget, and hands the next hop a little
//! less, so that the inner hop answers 504 before the outer one gives up on it.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName};

use crate::error::AppError;
use crate::wire::Day;

/// The header that carries the time a request has left. Names as `HeaderName`s: a map
/// looked up by `&str` parses the name first, each time.
pub const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");
/// The header of an idempotent change (`POST /book`, `DELETE /reservations/{id}`).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 128;
/// What a hop keeps for itself before passing the deadline on: time to answer.
const HANDOFF_MARGIN: Duration = Duration::from_millis(50);

/// The time the caller gave this request (`x-request-timeout-ms`), if it said.
pub fn time_given(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// When this request must be answered: `budget` from now, or sooner if the caller said so.
pub fn deadline(headers: &HeaderMap, budget: Duration) -> Instant {
    Instant::now() + time_given(headers).map_or(budget, |g| g.min(budget))
}

/// The `x-request-timeout-ms` value to hand the next hop, which must answer before us.
pub fn timeout_for_next_hop(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    left.saturating_sub(HANDOFF_MARGIN).as_millis() as u64
}

/// The `Idempotency-Key` header, if any: 1 to 128 characters of letters, digits and
/// `-_.:` (a UUID fits), since the key becomes part of a state key.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v.to_str().unwrap_or_default();
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !ok {
        return Err(AppError::bad_request(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} letters, digits or -_.: (a UUID fits)"
            ),
        ));
    }
    Ok(Some(key.to_string()))
}

/// The first day a stay may start: today (UTC). A keyed request may be a retry of one
/// first sent before midnight, so it may start yesterday; the backend answers it from its
/// key's record.
pub fn first_bookable_day(keyed: bool) -> Day {
    let today = Day::today();
    if keyed {
        today.plus(-1).unwrap_or(today)
    } else {
        today
    }
}

/// 504 for a request whose budget ran out.
pub fn deadline_exceeded(message: impl Into<String>) -> AppError {
    AppError::new(
        axum::http::StatusCode::GATEWAY_TIMEOUT,
        "deadline_exceeded",
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let budget = Duration::from_secs(5);
        let own = deadline(&HeaderMap::new(), budget);
        let given = deadline(&headers(&[(TIMEOUT_HEADER, "200")]), budget);
        assert!(given < own);
        let longer = deadline(&headers(&[(TIMEOUT_HEADER, "60000")]), budget);
        assert!(longer <= Instant::now() + budget);
        let junk = deadline(&headers(&[(TIMEOUT_HEADER, "soon")]), budget);
        assert!(junk > given, "an unreadable header is ignored");
    }

    #[test]
    fn the_next_hop_gets_less_time() {
        let d = Instant::now() + Duration::from_millis(1000);
        let next = timeout_for_next_hop(d);
        assert!(next <= 950 && next > 800, "{next}");
        assert_eq!(timeout_for_next_hop(Instant::now()), 0);
    }

    #[test]
    fn a_keyed_stay_may_start_a_day_earlier() {
        assert_eq!(first_bookable_day(false), Day::today());
        assert_eq!(Some(first_bookable_day(true)), Day::today().plus(-1));
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(
            idempotency_key(&headers(&[(IDEMPOTENCY_KEY, uuid)])).unwrap(),
            Some(uuid.to_string())
        );
        for bad in ["", "a||b", "white space", &"x".repeat(129)] {
            let e = idempotency_key(&headers(&[(IDEMPOTENCY_KEY, bad)])).unwrap_err();
            assert_eq!(e.code, "invalid_idempotency_key", "{bad:?}");
        }
    }
}
