use super::items::{
    self, Item, Reader, concert_from, concert_key, n, reservation_from, reservation_key, s,
    seat_from, seat_key, token_from, token_key, user_from, user_key,
};
use super::sdk_error;
use crate::Error;
use crate::clock::to_millis;
use crate::config::TableNames;
use crate::domain::PaymentOutcome;
use crate::domain::{
    Checkout, Concert, ConcertId, EventId, PaymentId, PaymentReceipt, QueueToken, Reservation,
    ReservationId, ReservationStatus, Seat, SeatId, TokenId, User, UserId, pay,
};
use crate::events::{EventEnvelope, SeatHoldExpired};
use crate::outbox::OutboxItem;
use crate::seed::SeedData;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    CancellationReason, ConditionCheck, KeysAndAttributes, Put, PutRequest,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A held seat whose hold expired, as the held-seats index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredHold {
    pub seat_id: SeatId,
    pub reservation_id: ReservationId,
    pub expires_at: DateTime<Utc>,
}

/// What releasing an expired hold did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    Released,
    /// The seat was paid, re-held or released meanwhile: not an error.
    Skipped,
}

/// Reads and transactional writes of the ticketing entities.
#[derive(Clone, Debug)]
pub struct TicketingRepository {
    client: Client,
    tables: TableNames,
}

/// The cancellation reason of item `index`, when it failed its condition.
fn failed_condition(reasons: &[CancellationReason], index: usize) -> Option<Option<&Item>> {
    let reason = reasons.get(index)?;
    (reason.code() == Some("ConditionalCheckFailed")).then(|| reason.item())
}

fn any_conflict(reasons: &[CancellationReason]) -> bool {
    reasons
        .iter()
        .any(|r| matches!(r.code(), Some("TransactionConflict")))
}

fn cancellation_reasons(err: &TransactWriteItemsError) -> Option<&[CancellationReason]> {
    match err {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(e.cancellation_reasons()),
        _ => None,
    }
}

impl TicketingRepository {
    pub fn new(client: Client, tables: TableNames) -> Self {
        TicketingRepository { client, tables }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.ticketing)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    async fn get_as<T>(
        &self,
        key: Item,
        parse: fn(&Item) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        self.get(key).await?.as_ref().map(parse).transpose()
    }

    pub async fn seat(&self, id: SeatId) -> Result<Option<Seat>, Error> {
        self.get_as(seat_key(id), seat_from).await
    }

    pub async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, Error> {
        self.get_as(reservation_key(id), reservation_from).await
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, Error> {
        self.get_as(user_key(id), user_from).await
    }

    pub async fn token(&self, id: TokenId) -> Result<Option<QueueToken>, Error> {
        self.get_as(token_key(id), token_from).await
    }

    pub async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, Error> {
        self.get_as(concert_key(id), concert_from).await
    }

    /// A page of held seats of `shard` whose hold expired at or before `now`,
    /// oldest first, from the sparse held-seats index (no table scan).
    pub async fn expired_holds(
        &self,
        shard: &str,
        now: DateTime<Utc>,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<ExpiredHold>, Option<Item>), Error> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.ticketing)
            .index_name(items::HELD_SEATS_INDEX)
            .key_condition_expression("heldShard = :shard AND holdExpiresAt <= :now")
            .expression_attribute_values(":shard", s(shard))
            .expression_attribute_values(":now", n(to_millis(now)))
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk_error("Query (held seats)", e))?;
        let holds = out
            .items()
            .iter()
            .map(|item| {
                let r = Reader::new(item, "held seat");
                Ok(ExpiredHold {
                    seat_id: r.id("seatId")?,
                    reservation_id: r.id("heldBy")?,
                    expires_at: r.time("holdExpiresAt")?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok((holds, out.last_evaluated_key().cloned()))
    }

    /// Releases an expired hold in ONE transaction: the seat AVAILABLE, the
    /// reservation EXPIRED and a SeatHoldExpired outbox item, each conditioned on
    /// the hold still being this reservation's and expired at `now`. A seat paid
    /// or re-held meanwhile is `Skipped`.
    pub async fn release_expired_hold(
        &self,
        hold: &ExpiredHold,
        now: DateTime<Utc>,
        event_id: EventId,
    ) -> Result<Release, Error> {
        let Some(reservation) = self.reservation(hold.reservation_id).await? else {
            return Err(Error::NotFound {
                kind: "reservation",
                id: hold.reservation_id.to_string(),
            });
        };
        if reservation.expire(now).is_err() {
            return Ok(Release::Skipped);
        }
        let user = self
            .user(reservation.user_id)
            .await?
            .ok_or(Error::NotFound {
                kind: "user",
                id: reservation.user_id.to_string(),
            })?;
        let concert = self
            .concert(reservation.concert_id)
            .await?
            .ok_or(Error::NotFound {
                kind: "concert",
                id: reservation.concert_id.to_string(),
            })?;
        let payload = SeatHoldExpired::new(&reservation, &user.mail, &concert, now);
        let event = EventEnvelope::seat_hold_expired(event_id, &payload)?;
        let table = &self.tables.ticketing;
        let rid = s(reservation.id.to_string());
        let now_ms = n(to_millis(now));
        let build_err = |e| Error::storage("building the release", e);
        let seat_update = Update::builder()
            .table_name(table)
            .set_key(Some(seat_key(hold.seat_id)))
            .update_expression("SET #status = :available REMOVE heldBy, holdExpiresAt, heldShard")
            .condition_expression("#status = :held AND heldBy = :rid AND holdExpiresAt <= :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":available", s("AVAILABLE"))
            .expression_attribute_values(":held", s("HELD"))
            .expression_attribute_values(":rid", rid.clone())
            .expression_attribute_values(":now", now_ms.clone())
            .build()
            .map_err(build_err)?;
        let reservation_update = Update::builder()
            .table_name(table)
            .set_key(Some(reservation_key(reservation.id)))
            .update_expression("SET #status = :expired, expiredAt = :now")
            .condition_expression("#status = :pending AND holdExpiresAt <= :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":expired", s("EXPIRED"))
            .expression_attribute_values(":pending", s("PENDING"))
            .expression_attribute_values(":now", now_ms)
            .build()
            .map_err(build_err)?;
        let outbox = serde_dynamo::to_item(OutboxItem::new(&event, now))
            .map_err(|e| Error::storage("serialising the outbox item", e))?;
        let outbox_put = Put::builder()
            .table_name(&self.tables.outbox)
            .set_item(Some(outbox))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_err)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(seat_update).build())
            .transact_items(
                TransactWriteItem::builder()
                    .update(reservation_update)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().put(outbox_put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Release::Released),
            Err(err) => match err.as_service_error().and_then(cancellation_reasons) {
                // Paid, re-held or released by another run meanwhile.
                Some(_) => Ok(Release::Skipped),
                None => Err(sdk_error("TransactWriteItems (release)", err)),
            },
        }
    }

    /// The receipt stored with a payment, for a retry that must get the first answer.
    pub async fn receipt(&self, id: PaymentId) -> Result<Option<PaymentReceipt>, Error> {
        let Some(item) = self.get(items::payment_key(id)).await? else {
            return Ok(None);
        };
        let text = Reader::new(&item, "payment").str("receipt")?;
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Error::CorruptItem(format!("payment {id} receipt: {e}")))
    }

    /// Writes a PENDING reservation and the seat HELD for it, only if the seat is
    /// still AVAILABLE and the caller's queue token still ACTIVE.
    pub async fn hold(
        &self,
        reservation: &Reservation,
        held: &Seat,
        token_id: TokenId,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let crate::domain::SeatStatus::Held { expires_at, .. } = held.status else {
            return Err(Error::Conflict(format!("seat {} is not held", held.id)));
        };
        let table = &self.tables.ticketing;
        let seat_update = Update::builder()
            .table_name(table)
            .set_key(Some(seat_key(held.id)))
            .update_expression(
                "SET #status = :held, heldBy = :rid, holdExpiresAt = :exp, heldShard = :shard",
            )
            .expression_attribute_values(":shard", s(items::held_shard(held.id)))
            .condition_expression("#status = :available")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":held", s("HELD"))
            .expression_attribute_values(":available", s("AVAILABLE"))
            .expression_attribute_values(":rid", s(reservation.id.to_string()))
            .expression_attribute_values(":exp", n(to_millis(expires_at)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Error::storage("building the hold", e))?;
        let token_check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(token_key(token_id)))
            .condition_expression("#status = :active AND userId = :uid AND expiresAt > :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s("ACTIVE"))
            .expression_attribute_values(":uid", s(reservation.user_id.to_string()))
            .expression_attribute_values(":now", n(to_millis(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Error::storage("building the hold", e))?;
        let reservation_put = Put::builder()
            .table_name(table)
            .set_item(Some(items::reservation_item(reservation)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| Error::storage("building the hold", e))?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(seat_update).build())
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(token_check)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().put(reservation_put).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let Some(reasons) = err.as_service_error().and_then(cancellation_reasons) else {
            return Err(sdk_error("TransactWriteItems (hold)", err));
        };
        // Tell the caller the real reason, judged by the domain on the items as
        // they were when the transaction ran.
        if let Some(old) = failed_condition(reasons, 1) {
            let token = old
                .map(token_from)
                .transpose()?
                .ok_or_else(|| Error::InvalidToken("the queue token is unknown".into()))?;
            token.ensure_usable(reservation.user_id, now)?;
        }
        if let Some(old) = failed_condition(reasons, 0) {
            let seat = old.map(seat_from).transpose()?.ok_or(Error::NotFound {
                kind: "seat",
                id: held.id.to_string(),
            })?;
            seat.hold(reservation.id, now, expires_at - now)?;
        }
        Err(Error::Conflict(format!("seat {}", held.id)))
    }

    /// Reads, in one round trip, what a payment of `reservation` needs.
    pub async fn checkout(
        &self,
        reservation: Reservation,
        token_id: TokenId,
    ) -> Result<Checkout, Error> {
        let keys = vec![
            user_key(reservation.user_id),
            seat_key(reservation.seat_id),
            token_key(token_id),
            concert_key(reservation.concert_id),
        ];
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| Error::storage("building the checkout read", e))?,
        );
        let mut found: Vec<Item> = Vec::with_capacity(4);
        while let Some(request) = pending.take() {
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.tables.ticketing, request)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", e))?;
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.tables.ticketing).unwrap_or_default());
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.tables.ticketing))
                .filter(|k| !k.keys().is_empty());
        }
        let by_pk: HashMap<String, Item> = found
            .into_iter()
            .filter_map(|item| match item.get(items::PK) {
                Some(aws_sdk_dynamodb::types::AttributeValue::S(pk)) => Some((pk.clone(), item)),
                _ => None,
            })
            .collect();
        let pick = |pk: String, kind: &'static str, id: String| {
            by_pk.get(&pk).ok_or(Error::NotFound { kind, id })
        };
        let user = user_from(pick(
            format!("USER#{}", reservation.user_id),
            "user",
            reservation.user_id.to_string(),
        )?)?;
        let seat = seat_from(pick(
            format!("SEAT#{}", reservation.seat_id),
            "seat",
            reservation.seat_id.to_string(),
        )?)?;
        let token = match by_pk.get(&format!("TOKEN#{token_id}")) {
            Some(item) => token_from(item)?,
            None => return Err(Error::InvalidToken("the queue token is unknown".into())),
        };
        let concert = concert_from(pick(
            format!("CONCERT#{}", reservation.concert_id),
            "concert",
            reservation.concert_id.to_string(),
        )?)?;
        Ok(Checkout {
            user,
            seat,
            reservation,
            token,
            concert,
        })
    }

    /// Commits a payment in ONE transaction: balance, seat, reservation, token,
    /// payment, history and the outbox item, each guarded by a condition that
    /// restates the domain rule, so a concurrent change cancels the whole of it.
    pub async fn pay(
        &self,
        checkout: &Checkout,
        outcome: &PaymentOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let table = &self.tables.ticketing;
        let reservation = &checkout.reservation;
        let receipt = &outcome.receipt;
        let rid = s(reservation.id.to_string());
        let uid = s(reservation.user_id.to_string());
        let now_ms = n(to_millis(now));
        let amount = n(reservation.amount.amount());
        let build_err = |e| Error::storage("building the payment", e);
        let all_old = ReturnValuesOnConditionCheckFailure::AllOld;

        let reservation_update = Update::builder()
            .table_name(table)
            .set_key(Some(reservation_key(reservation.id)))
            .update_expression("SET #status = :confirmed, paymentId = :pid, paidAt = :now")
            .condition_expression("#status = :pending AND userId = :uid AND holdExpiresAt > :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":confirmed", s("CONFIRMED"))
            .expression_attribute_values(":pending", s("PENDING"))
            .expression_attribute_values(":pid", s(receipt.payment_id.to_string()))
            .expression_attribute_values(":uid", uid.clone())
            .expression_attribute_values(":now", now_ms.clone())
            .return_values_on_condition_check_failure(all_old.clone())
            .build()
            .map_err(build_err)?;
        let token_update = Update::builder()
            .table_name(table)
            .set_key(Some(token_key(checkout.token.id)))
            .update_expression("SET #status = :done, usedAt = :now")
            .condition_expression("#status = :active AND userId = :uid AND expiresAt > :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":done", s("DONE"))
            .expression_attribute_values(":active", s("ACTIVE"))
            .expression_attribute_values(":uid", uid.clone())
            .expression_attribute_values(":now", now_ms.clone())
            .return_values_on_condition_check_failure(all_old.clone())
            .build()
            .map_err(build_err)?;
        let seat_update = Update::builder()
            .table_name(table)
            .set_key(Some(seat_key(reservation.seat_id)))
            .update_expression(
                "SET #status = :sold, soldTo = :rid REMOVE heldBy, holdExpiresAt, heldShard",
            )
            .condition_expression("#status = :held AND heldBy = :rid AND holdExpiresAt > :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":sold", s("SOLD"))
            .expression_attribute_values(":held", s("HELD"))
            .expression_attribute_values(":rid", rid.clone())
            .expression_attribute_values(":now", now_ms.clone())
            .return_values_on_condition_check_failure(all_old.clone())
            .build()
            .map_err(build_err)?;
        let balance_update = Update::builder()
            .table_name(table)
            .set_key(Some(user_key(reservation.user_id)))
            .update_expression("SET balance = balance - :amount")
            .condition_expression("attribute_exists(pk) AND balance >= :amount")
            .expression_attribute_values(":amount", amount.clone())
            .return_values_on_condition_check_failure(all_old)
            .build()
            .map_err(build_err)?;

        let mut payment = items::payment_key(receipt.payment_id);
        payment.insert("entity".into(), s("Payment"));
        payment.insert("paymentId".into(), s(receipt.payment_id.to_string()));
        payment.insert("reservationId".into(), rid.clone());
        payment.insert("userId".into(), uid.clone());
        payment.insert("amount".into(), amount.clone());
        payment.insert("paidAt".into(), now_ms.clone());
        payment.insert(
            "receipt".into(),
            s(serde_json::to_string(receipt).map_err(|e| Error::storage("receipt", e))?),
        );
        let payment_put = Put::builder()
            .table_name(table)
            .set_item(Some(payment))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_err)?;

        let mut history = items::key(
            format!("USER#{}", reservation.user_id),
            &format!("HISTORY#{:013}#{}", to_millis(now), receipt.payment_id),
        );
        history.insert("entity".into(), s("PaymentHistory"));
        history.insert("kind".into(), s("PAYMENT"));
        history.insert("paymentId".into(), s(receipt.payment_id.to_string()));
        history.insert("reservationId".into(), rid);
        history.insert("amount".into(), amount);
        history.insert("at".into(), now_ms);
        let history_put = Put::builder()
            .table_name(table)
            .set_item(Some(history))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_err)?;

        let outbox = serde_dynamo::to_item(OutboxItem::new(&outcome.event, now))
            .map_err(|e| Error::storage("serialising the outbox item", e))?;
        let outbox_put = Put::builder()
            .table_name(&self.tables.outbox)
            .set_item(Some(outbox))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_err)?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(reservation_update)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().update(token_update).build())
            .transact_items(TransactWriteItem::builder().update(seat_update).build())
            .transact_items(TransactWriteItem::builder().update(balance_update).build())
            .transact_items(TransactWriteItem::builder().put(payment_put).build())
            .transact_items(TransactWriteItem::builder().put(history_put).build())
            .transact_items(TransactWriteItem::builder().put(outbox_put).build())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let Some(reasons) = err.as_service_error().and_then(cancellation_reasons) else {
            return Err(sdk_error("TransactWriteItems (payment)", err));
        };
        if any_conflict(reasons) {
            return Err(Error::Conflict(format!("reservation {}", reservation.id)));
        }
        // Re-judge with the items as they were when the transaction ran, so the
        // caller hears the same reason the domain gives.
        let mut seen = checkout.clone();
        if let Some(old) = failed_condition(reasons, 0) {
            seen.reservation = old
                .map(reservation_from)
                .transpose()?
                .ok_or(Error::NotFound {
                    kind: "reservation",
                    id: reservation.id.to_string(),
                })?;
        }
        if let Some(old) = failed_condition(reasons, 1) {
            seen.token = old
                .map(token_from)
                .transpose()?
                .ok_or_else(|| Error::InvalidToken("the queue token is unknown".into()))?;
        }
        if let Some(old) = failed_condition(reasons, 2) {
            seen.seat = old.map(seat_from).transpose()?.ok_or(Error::NotFound {
                kind: "seat",
                id: reservation.seat_id.to_string(),
            })?;
        }
        if let Some(old) = failed_condition(reasons, 3) {
            seen.user = old.map(user_from).transpose()?.ok_or(Error::NotFound {
                kind: "user",
                id: reservation.user_id.to_string(),
            })?;
        }
        pay(
            &seen,
            reservation.user_id,
            receipt.payment_id,
            outcome.event.event_id,
            now,
        )?;
        Err(Error::Conflict(format!("reservation {}", reservation.id)))
    }

    /// Writes seed data, 25 items per batch, retrying what DynamoDB left unprocessed.
    pub async fn seed(&self, data: &SeedData) -> Result<(), Error> {
        let items: Vec<Item> = data
            .concerts
            .iter()
            .map(items::concert_item)
            .chain(data.seats.iter().map(items::seat_item))
            .chain(data.users.iter().map(items::user_item))
            .chain(data.tokens.iter().map(items::token_item))
            .collect();
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(|e| Error::storage("building the seed", e))
                })
                .collect::<Result<_, _>>()?;
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.tables.ticketing, requests)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.tables.ticketing))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    /// A reservation that is CONFIRMED for `caller`, with its receipt: what a
    /// retried payment answers.
    pub async fn confirmed_receipt(
        &self,
        reservation: &Reservation,
    ) -> Result<Option<PaymentReceipt>, Error> {
        match reservation.status {
            ReservationStatus::Confirmed { payment_id, .. } => self.receipt(payment_id).await,
            _ => Ok(None),
        }
    }
}
