//! The scalar values that arrive as text: component durations, `ttlInSeconds`, body sizes,
//! and the ids and dates of the booking API's paths and bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(d) = sidecar::components::parse_duration(text) {
        // Whatever is read must be usable as a deadline from now without overflow, once
        // the component bound (24 h) lets it through.
        if d <= std::time::Duration::from_secs(24 * 3600) {
            let _ = std::time::Instant::now() + d;
        }
    }
    if let Ok(Some(ttl)) = sidecar::state::parse_ttl(text) {
        assert!(i32::try_from(ttl).is_ok(), "{ttl} passed the TTL bound");
    }
    let _ = sidecar::config::parse_size(text);
    let _ = appkit::wire::Day::parse(text);
    let _ = appkit::wire::HotelId::parse(text);
    let _ = appkit::wire::ReservationId::parse(text);
});
