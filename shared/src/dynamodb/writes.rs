//! The conditional writes of the ticketing transactions. Each is named after
//! the rule its condition restates, so a concurrent change that breaks the
//! rule cancels the whole transaction.

use super::idempotency;
use super::items::{self, Item, n, reservation_key, s, seat_key, token_key, user_key};
use crate::Error;
use crate::clock::to_millis;
use crate::domain::{
    ConcertId, Money, PaymentId, ReservationId, ReservationStatus, SeatId, SeatStatus, TokenId,
    TokenStatus, UserId,
};
use crate::events::EventEnvelope;
use crate::idempotency::IdempotencyRecord;
use crate::outbox::OutboxItem;
use crate::trace::TraceContext;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure as ReturnOld, Update,
};
use chrono::{DateTime, Utc};

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::storage("building a transaction item", e)
}

/// An update of `key` by `set`, guarded by `condition`; `#status` stands for
/// the status attribute, `values` for the placeholders. When `return_old`,
/// the item as it was comes back if the condition fails (to be re-judged by
/// the domain rules).
fn guarded_update(
    table: &str,
    key: Item,
    (set, condition): (&str, &str),
    values: Vec<(&str, AttributeValue)>,
    return_old: bool,
) -> Result<Update, Error> {
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(set)
        .condition_expression(condition)
        .expression_attribute_names("#status", "status");
    for (name, value) in values {
        update = update.expression_attribute_values(name, value);
    }
    if return_old {
        update = update.return_values_on_condition_check_failure(ReturnOld::AllOld);
    }
    update.build().map_err(build_error)
}

/// The reservation CONFIRMED with its payment, only while it is PENDING, the
/// caller's, and its hold has not expired.
pub(crate) fn confirm_reservation(
    table: &str,
    reservation: ReservationId,
    user: UserId,
    payment: PaymentId,
    now: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        reservation_key(reservation),
        (
            "SET #status = :confirmed, paymentId = :pid, paidAt = :now",
            "#status = :pending AND userId = :uid AND holdExpiresAt > :now",
        ),
        vec![
            (":confirmed", s(ReservationStatus::CONFIRMED)),
            (":pending", s(ReservationStatus::PENDING)),
            (":pid", s(payment.to_string())),
            (":uid", s(user.to_string())),
            (":now", n(to_millis(now))),
        ],
        true,
    )
}

/// The reservation EXPIRED, only while it is PENDING and its hold expired.
pub(crate) fn expire_reservation(
    table: &str,
    reservation: ReservationId,
    now: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        reservation_key(reservation),
        (
            "SET #status = :expired, expiredAt = :now",
            "#status = :pending AND holdExpiresAt <= :now",
        ),
        vec![
            (":expired", s(ReservationStatus::EXPIRED)),
            (":pending", s(ReservationStatus::PENDING)),
            (":now", n(to_millis(now))),
        ],
        false,
    )
}

/// The queue token DONE, only while it is ACTIVE, the caller's and unexpired.
pub(crate) fn finish_token(
    table: &str,
    token: TokenId,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        token_key(token),
        (
            "SET #status = :done, usedAt = :now",
            "#status = :active AND userId = :uid AND expiresAt > :now",
        ),
        vec![
            (":done", s(TokenStatus::Done.name())),
            (":active", s(TokenStatus::Active.name())),
            (":uid", s(user.to_string())),
            (":now", n(to_millis(now))),
        ],
        true,
    )
}

/// The hold recorded on the queue token, only while the token is ACTIVE, the
/// caller's, unexpired, of the seat's concert and holding nothing else.
pub(crate) fn hold_on_token(
    table: &str,
    token: TokenId,
    hold: &TokenUse,
    now: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        token_key(token),
        (
            "SET heldReservation = :rid, heldUntil = :until",
            "#status = :active AND userId = :uid AND expiresAt > :now AND concertId = :cid \
             AND (attribute_not_exists(heldUntil) OR heldUntil <= :now)",
        ),
        vec![
            (":rid", s(hold.reservation.to_string())),
            (":until", n(to_millis(hold.until))),
            (":active", s(TokenStatus::Active.name())),
            (":uid", s(hold.user.to_string())),
            (":cid", s(hold.concert.to_string())),
            (":now", n(to_millis(now))),
        ],
        true,
    )
}

/// Who holds what with a queue token, and until when.
pub(crate) struct TokenUse {
    pub user: UserId,
    pub concert: ConcertId,
    pub reservation: ReservationId,
    pub until: DateTime<Utc>,
}

/// The seat HELD for the reservation until `expires_at`, only while AVAILABLE.
pub(crate) fn hold_seat(
    table: &str,
    seat: SeatId,
    reservation: ReservationId,
    expires_at: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        seat_key(seat),
        (
            "SET #status = :held, heldBy = :rid, holdExpiresAt = :exp, heldShard = :shard",
            "#status = :available",
        ),
        vec![
            (":held", s(SeatStatus::HELD)),
            (":available", s(SeatStatus::AVAILABLE)),
            (":rid", s(reservation.to_string())),
            (":exp", n(to_millis(expires_at))),
            (":shard", s(items::held_shard(seat))),
        ],
        true,
    )
}

/// The seat SOLD to the reservation, only while HELD by it and unexpired.
pub(crate) fn sell_seat(
    table: &str,
    seat: SeatId,
    reservation: ReservationId,
    now: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        seat_key(seat),
        (
            "SET #status = :sold, soldTo = :rid REMOVE heldBy, holdExpiresAt, heldShard",
            "#status = :held AND heldBy = :rid AND holdExpiresAt > :now",
        ),
        vec![
            (":sold", s(SeatStatus::SOLD)),
            (":held", s(SeatStatus::HELD)),
            (":rid", s(reservation.to_string())),
            (":now", n(to_millis(now))),
        ],
        true,
    )
}

/// The seat AVAILABLE again, only while HELD by the reservation and expired.
pub(crate) fn release_seat(
    table: &str,
    seat: SeatId,
    reservation: ReservationId,
    now: DateTime<Utc>,
) -> Result<Update, Error> {
    guarded_update(
        table,
        seat_key(seat),
        (
            "SET #status = :available REMOVE heldBy, holdExpiresAt, heldShard",
            "#status = :held AND heldBy = :rid AND holdExpiresAt <= :now",
        ),
        vec![
            (":available", s(SeatStatus::AVAILABLE)),
            (":held", s(SeatStatus::HELD)),
            (":rid", s(reservation.to_string())),
            (":now", n(to_millis(now))),
        ],
        false,
    )
}

/// The user's balance debited by `amount`, only while it covers it.
pub(crate) fn debit_balance(table: &str, user: UserId, amount: Money) -> Result<Update, Error> {
    Update::builder()
        .table_name(table)
        .set_key(Some(user_key(user)))
        .update_expression("SET balance = balance - :amount")
        .condition_expression("attribute_exists(pk) AND balance >= :amount")
        .expression_attribute_values(":amount", n(amount.amount()))
        .return_values_on_condition_check_failure(ReturnOld::AllOld)
        .build()
        .map_err(build_error)
}

/// `item` written only if nothing has its key yet.
pub(crate) fn put_new(table: &str, item: Item) -> Result<Put, Error> {
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(build_error)
}

/// The event's outbox item, written once, with the trace of the work that wrote it.
pub(crate) fn put_outbox(
    outbox_table: &str,
    event: &EventEnvelope,
    now: DateTime<Utc>,
    trace: Option<&TraceContext>,
) -> Result<Put, Error> {
    let item = serde_dynamo::to_item(OutboxItem::new(event, now).traced(trace))
        .map_err(|e| Error::storage("serialising the outbox item", e))?;
    put_new(outbox_table, item)
}

/// An idempotency key's record, written only where the key is free, expired
/// or abandoned; the record found comes back if it is not (to be judged).
pub(crate) fn put_idempotency_record(
    table: &str,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
) -> Result<Put, Error> {
    Put::builder()
        .table_name(table)
        .set_item(Some(idempotency::record_item(record)))
        .condition_expression(idempotency::TAKE_CONDITION)
        .expression_attribute_names("#status", "status")
        .set_expression_attribute_values(Some(idempotency::take_values(now)))
        .return_values_on_condition_check_failure(ReturnOld::AllOld)
        .build()
        .map_err(build_error)
}
