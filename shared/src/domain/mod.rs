//! Entities and their state transitions. Every rule the DynamoDB conditions enforce
//! is stated here first, as a function with unit tests.

pub mod events;
mod ids;
mod money;
mod payment;
mod refusal;
mod reservation;
mod seat;
mod token;
mod user;

pub use ids::{ConcertId, EventId, PaymentId, ReservationId, SeatId, TokenId, UserId};
pub use money::Money;
pub use payment::{PaymentOutcome, PaymentReceipt, PaymentStatus, Refuted, pay, refusal};
pub use refusal::Refusal;
pub use reservation::{Reservation, ReservationStatus};
pub use seat::{Seat, SeatStatus};
pub use token::{QueueToken, TokenHold, TokenStatus};
pub use user::{Concert, Mail, User};
