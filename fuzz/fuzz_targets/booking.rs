//! The booking bodies (`reservation.json` for the frontend, `user.json` for the backend) as
//! the services read them: parsed, then checked against the booking rules.
#![no_main]

use appkit::wire::{BookingRequest, Day, ReservationRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let today = Day::today();
    let body = bytes::Bytes::copy_from_slice(data);
    if let Ok(req) = appkit::http::parse_json::<ReservationRequest>(Ok(body.clone())) {
        if let Ok(stay) = req.user.validate(today) {
            assert!(stay.check_out > stay.check_in && stay.check_in >= today);
            assert!(!stay.nights().is_empty());
        }
    }
    if let Ok(user) = appkit::http::parse_json::<BookingRequest>(Ok(body)) {
        let _ = user.validate(today);
    }
});
