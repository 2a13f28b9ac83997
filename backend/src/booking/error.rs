//! What can go wrong with a booking, in the booking's own words. The HTTP edge
//! (`routes`) gives each its status and code; the rules never speak HTTP.

use appkit::dapr::DaprError;
use appkit::wire::Invalid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// The request breaks a rule of the API (dates, rooms, ...): `code` names which.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("no hotel with id {0}")]
    HotelNotFound(u32),
    #[error("no reservation {0}")]
    ReservationNotFound(String),
    /// A night lacks the rooms; the message names it.
    #[error("{0}")]
    SoldOut(String),
    #[error("this Idempotency-Key was already used with another request")]
    KeyReused,
    /// The hotel stayed locked, or changed under every attempt, for the whole wait budget.
    #[error("{0}")]
    Busy(String),
    /// The request's budget ran out before anything was committed.
    #[error("the request's time ran out: {0}")]
    DeadlineExceeded(String),
    /// A commit was sent and its answer lost; it could not be read back in time.
    #[error(
        "the change may or may not have been made ({0}); retry with the same \
         Idempotency-Key, or read it back, to know"
    )]
    OutcomeUnknown(String),
    /// The sidecar could not be reached.
    #[error("{0}")]
    DaprUnavailable(String),
    /// The store failed a call (through the sidecar), out of reach or erring, and nothing
    /// the booking relies on was committed; a retry later may find it back.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The store holds data the rules cannot read, or answered against its own rules.
    #[error("{0}")]
    Store(String),
    /// This backend was started without Dapr state (a benchmark configuration).
    #[error("this backend runs without Dapr state")]
    DaprDisabled,
}

impl From<DaprError> for BookingError {
    fn from(e: DaprError) -> Self {
        match e {
            DaprError::Unavailable(m) => BookingError::DaprUnavailable(m),
            DaprError::DeadlineExceeded(m) => BookingError::DeadlineExceeded(m),
            e if e.is_store_failure() => BookingError::StoreUnavailable(e.to_string()),
            other => BookingError::Store(other.to_string()),
        }
    }
}

impl From<Invalid> for BookingError {
    fn from(i: Invalid) -> Self {
        BookingError::Invalid {
            code: i.code,
            message: i.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failing_store_is_worth_a_retry_later() {
        let failed = |code| {
            BookingError::from(DaprError::Failed {
                code,
                message: "m".into(),
            })
        };
        assert!(matches!(
            failed(tonic::Code::Internal),
            BookingError::StoreUnavailable(_)
        ));
        for code in [
            tonic::Code::Unknown,
            tonic::Code::InvalidArgument,
            tonic::Code::Unauthenticated,
            tonic::Code::FailedPrecondition,
            tonic::Code::DataLoss,
        ] {
            assert!(matches!(failed(code), BookingError::Store(_)), "{code:?}");
        }
        assert!(matches!(
            BookingError::from(DaprError::Unavailable("m".into())),
            BookingError::DaprUnavailable(_)
        ));
    }
}
