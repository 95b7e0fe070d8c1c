use super::Refusal;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Identifiers are UUIDs wrapped in their own type, parsed once at the edge.
macro_rules! id_type {
    ($name:ident, $field:literal) => {
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// Parses the text form, naming the field in the error.
            pub fn parse(text: &str) -> Result<Self, Refusal> {
                Uuid::parse_str(text.trim())
                    .map(Self)
                    .map_err(|_| Refusal::invalid($field, format!("{text:?} is not a UUID")))
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Refusal;
            fn from_str(s: &str) -> Result<Self, Refusal> {
                Self::parse(s)
            }
        }
    };
}

id_type!(UserId, "userId");
id_type!(ConcertId, "concertId");
id_type!(SeatId, "seatId");
id_type!(ReservationId, "reservationId");
id_type!(PaymentId, "paymentId");
id_type!(TokenId, "tokenId");
id_type!(EventId, "eventId");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_an_id_accepts_a_uuid_and_names_the_field_when_it_is_not_one() {
        let id = SeatId::random();
        assert_eq!(SeatId::parse(&id.to_string()).unwrap(), id);
        let err = SeatId::parse("seat-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "seatId is invalid: \"seat-1\" is not a UUID"
        );
        assert_eq!(err.code(), "INVALID_INPUT");
    }
}
