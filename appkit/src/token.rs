//! The `dapr-api-token` check that the sidecar's HTTP and gRPC APIs and the services make.
//! Compared in constant time, so that how long a refusal takes tells nothing about how
//! much of a guess was right.

use subtle::ConstantTimeEq;

/// The header (HTTP) or metadata key (gRPC) that carries an API token.
pub const HEADER: &str = "dapr-api-token";
/// The same as an HTTP header name, for lookups that need not parse it each time.
pub const HEADER_NAME: http::HeaderName = http::HeaderName::from_static(HEADER);

/// Whether `given` (the raw header value, if any) is `expected`.
pub fn matches(given: Option<&[u8]>, expected: &str) -> bool {
    given.is_some_and(|g| bool::from(g.ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        for (given, ok) in [
            (Some(&b"s3cret"[..]), true),
            (Some(b"s3cre"), false),
            (Some(b"s3cret!"), false),
            (Some(b"S3cret"), false),
            (Some(b""), false),
            (None, false),
        ] {
            assert_eq!(matches(given, "s3cret"), ok, "{given:?}");
        }
    }
}
