//! A hold's and a payment's DynamoDB work, in as few round trips as the rules
//! allow. A hold reads its seat (which carries its concert) and its customer
//! in one BatchGetItem, then writes. A payment reads its reservation (which
//! carries everything its receipt and event say) and, when asked under an
//! `Idempotency-Key`, that key's record in one BatchGetItem, then writes ONE
//! transaction; whatever its conditions refuse is judged from the items as
//! the transaction found them, so no read happens before the write to check.

use super::batch;
use super::idempotency::record_from;
use super::items::{self, Item, reservation_from, seat_from, token_from, user_from};
use super::repository::TicketingRepository;
use super::transaction::{Cancelled, Refused, Slot, Transaction};
use super::writes;
use crate::Error;
use crate::domain::{
    Concert, PaymentOutcome, PaymentReceipt, Refusal, Refuted, Reservation, ReservationId, Seat,
    SeatId, User, UserId, refusal,
};
use crate::idempotency::{Claim, IdempotencyRecord, IdempotencyStatus};
use chrono::{DateTime, Utc};

/// The `Idempotency-Key` a payment was asked under, scoped to its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentKey {
    /// The stored key (`payment:<user>:key:<the header>`).
    pub key: String,
    /// The hash of what was asked ([`crate::idempotency::payload_hash`]).
    pub payload_hash: String,
    /// Until when the key answers with the payment's receipt.
    pub expires_at: DateTime<Utc>,
}

/// What a payment's first round trip found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentStart {
    /// The key was used before for this very request: its receipt.
    PaidUnderKey(PaymentReceipt),
    /// The reservation to pay (or to answer from, if it is paid).
    Reservation(Reservation),
}

/// How a payment's transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Paid {
    /// Charged by this request.
    Now,
    /// Charged by another request first (a double click, a retry, a
    /// concurrent duplicate that won): its receipt, and no second charge.
    Before(PaymentReceipt),
}

/// The payment's writes whose failed condition is judged.
struct PaymentSlots {
    reservation: Slot,
    token: Slot,
    seat: Slot,
    user: Slot,
    key: Option<Slot>,
}

impl TicketingRepository {
    /// The seat to hold with the concert its item carries, and the customer,
    /// read in one round trip.
    pub async fn hold_listing(
        &self,
        seat_id: SeatId,
        user_id: UserId,
    ) -> Result<(Seat, Concert, User), Error> {
        let table = self.tables().ticketing.as_str();
        let (seat_key, user_key) = (items::seat_key(seat_id), items::user_key(user_id));
        let keys = vec![(table, seat_key.clone()), (table, user_key.clone())];
        let mut found = batch::get_items(self.client(), keys).await?;
        let seat = found.take(table, &seat_key).ok_or(Refusal::NotFound {
            kind: "seat",
            id: seat_id.to_string(),
        })?;
        let user = found.take(table, &user_key).ok_or(Refusal::NotFound {
            kind: "user",
            id: user_id.to_string(),
        })?;
        let (seat, concert) = items::seat_listing_from(&seat)?;
        Ok((seat, concert, user_from(&user)?))
    }

    /// A payment's first round trip: the reservation and, under a key, the
    /// key's record. A key used before for this request answers with its
    /// receipt; for another request it is refused (`IdempotencyKeyReused`).
    pub async fn payment_start(
        &self,
        reservation_id: ReservationId,
        key: Option<&PaymentKey>,
        now: DateTime<Utc>,
    ) -> Result<PaymentStart, Error> {
        let tables = self.tables();
        let reservation_key = items::reservation_key(reservation_id);
        let mut keys = vec![(tables.ticketing.as_str(), reservation_key.clone())];
        if let Some(key) = key {
            keys.push((tables.idempotency.as_str(), key_item(&key.key)));
        }
        let mut found = batch::get_items(self.client(), keys).await?;
        if let Some(key) = key
            && let Some(item) = found.take(&tables.idempotency, &key_item(&key.key))
        {
            let record = record_from(&item)?;
            if !record.is_stale(now) {
                return receipt_under(&record, key).map(PaymentStart::PaidUnderKey);
            }
        }
        let item = found
            .take(&tables.ticketing, &reservation_key)
            .ok_or(Refusal::NotFound {
                kind: "reservation",
                id: reservation_id.to_string(),
            })?;
        Ok(PaymentStart::Reservation(reservation_from(&item)?))
    }

    /// Commits the payment of `reservation` (as it was read, PENDING) in ONE
    /// transaction: balance, seat, reservation, token, payment, history, the
    /// outbox item and, under a key, the key's record with the receipt. Each
    /// write is guarded by a condition that restates the domain rule, so a
    /// concurrent change cancels the whole of it.
    pub async fn pay(
        &self,
        reservation: &Reservation,
        outcome: &PaymentOutcome,
        key: Option<&PaymentKey>,
        now: DateTime<Utc>,
    ) -> Result<Paid, Error> {
        let (tx, slots) = self.payment_transaction(outcome, key, now)?;
        match tx
            .commit(self.client(), "TransactWriteItems (payment)")
            .await
        {
            Ok(()) => Ok(Paid::Now),
            Err(Refused::Failed(e)) => Err(e),
            Err(Refused::Cancelled(cancelled)) => slots.judge(reservation, key, &cancelled, now),
        }
    }

    /// The payment's writes, and the slots of those whose failure is judged.
    fn payment_transaction(
        &self,
        outcome: &PaymentOutcome,
        key: Option<&PaymentKey>,
        now: DateTime<Utc>,
    ) -> Result<(Transaction, PaymentSlots), Error> {
        let tables = self.tables();
        let table = tables.ticketing.as_str();
        let (reservation, receipt) = (&outcome.reservation, &outcome.receipt);
        let user = reservation.user_id;
        let mut tx = Transaction::default();
        let reservation_slot = tx.update(writes::confirm_reservation(
            table,
            reservation.id,
            user,
            receipt.payment_id,
            now,
        )?);
        let token = tx.update(writes::finish_token(table, outcome.token_id, user, now)?);
        let seat = tx.update(writes::sell_seat(
            table,
            reservation.seat_id,
            reservation.id,
            now,
        )?);
        let user = tx.update(writes::debit_balance(table, user, reservation.amount)?);
        let payment = items::payment_item(receipt, reservation, now)?;
        tx.put(writes::put_new(table, payment)?);
        let history = items::history_item(receipt, reservation, now);
        tx.put(writes::put_new(table, history)?);
        let outbox = writes::put_outbox(&tables.outbox, &outcome.event, now, self.trace())?;
        tx.put(outbox);
        let key = match key {
            Some(key) => Some(tx.put(writes::put_idempotency_record(
                &tables.idempotency,
                &completed_record(key, receipt, now)?,
                now,
            )?)),
            None => None,
        };
        let slots = PaymentSlots {
            reservation: reservation_slot,
            token,
            seat,
            user,
            key,
        };
        Ok((tx, slots))
    }
}

impl PaymentSlots {
    /// What a cancelled payment means, from the items as the transaction
    /// found them: the key used before, the reservation paid by a duplicate
    /// that won, a race to retry, or the rule the customer broke.
    fn judge(
        &self,
        reservation: &Reservation,
        key: Option<&PaymentKey>,
        cancelled: &Cancelled,
        now: DateTime<Utc>,
    ) -> Result<Paid, Error> {
        if let (Some(slot), Some(key)) = (self.key, key)
            && let Some(old) = cancelled.failed(slot)
        {
            let record = old.map(record_from).transpose()?;
            let record = record.ok_or(Refusal::InProgress)?;
            return receipt_under(&record, key).map(Paid::Before);
        }
        let found = self.found(reservation, cancelled)?;
        if let Some(paid) = found.reservation.as_ref().and_then(PaymentReceipt::of)
            && paid.user_id == reservation.user_id
        {
            return Ok(Paid::Before(paid));
        }
        if cancelled.conflict() {
            // Another request is changing these items right now: most likely
            // a duplicate of this payment, whose receipt a retry will get.
            return Err(Refusal::InProgress.into());
        }
        let caller = reservation.user_id;
        Err(refusal(reservation, caller, now, &found)
            .unwrap_or_else(|| Refusal::Conflict(format!("reservation {}", reservation.id)))
            .into())
    }

    /// The items whose condition failed, as they were; one that did not exist
    /// is refused as unknown.
    fn found(&self, reservation: &Reservation, cancelled: &Cancelled) -> Result<Refuted, Error> {
        let missing = |kind: &'static str, id: String| Refusal::NotFound { kind, id };
        let old = |slot: Slot, refusal: Refusal| -> Result<Option<&Item>, Error> {
            match cancelled.failed(slot) {
                None => Ok(None),
                Some(Some(item)) => Ok(Some(item)),
                Some(None) => Err(refusal.into()),
            }
        };
        let unknown_token = Refusal::InvalidToken("the queue token is unknown".into());
        Ok(Refuted {
            reservation: old(
                self.reservation,
                missing("reservation", reservation.id.to_string()),
            )?
            .map(reservation_from)
            .transpose()?,
            token: old(self.token, unknown_token)?
                .map(token_from)
                .transpose()?,
            seat: old(self.seat, missing("seat", reservation.seat_id.to_string()))?
                .map(seat_from)
                .transpose()?,
            user: old(self.user, missing("user", reservation.user_id.to_string()))?
                .map(user_from)
                .transpose()?,
        })
    }
}

/// The key of an idempotency record.
fn key_item(key: &str) -> Item {
    Item::from([("pk".to_owned(), items::s(key))])
}

/// The record a payment leaves under its key: COMPLETED, with the receipt.
fn completed_record(
    key: &PaymentKey,
    receipt: &PaymentReceipt,
    now: DateTime<Utc>,
) -> Result<IdempotencyRecord, Error> {
    let response =
        serde_json::to_string(receipt).map_err(|e| Error::storage("serialising a receipt", e))?;
    Ok(IdempotencyRecord {
        key: key.key.clone(),
        status: IdempotencyStatus::Completed,
        payload_hash: key.payload_hash.clone(),
        expires_at: key.expires_at,
        in_progress_until: None,
        response: Some(response),
        completed_at: Some(now),
    })
}

/// The receipt a live record of `key` answers with, or why it cannot:
/// another request's key, or one still in progress.
fn receipt_under(record: &IdempotencyRecord, key: &PaymentKey) -> Result<PaymentReceipt, Error> {
    let Claim::Completed { response } = record.judge(&key.payload_hash)? else {
        return Err(Refusal::InProgress.into());
    };
    response
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| Error::corrupt(format!("{} has no receipt", key.key)))
}
