use super::items::{
    self, Item, Reader, concert_from, concert_key, n, reservation_from, reservation_key, s,
    seat_from, seat_key, token_from, token_key, user_from, user_key,
};
use super::transaction::{Refused, Transaction};
use super::writes;
use super::{UnprocessedRetries, sdk_error};
use crate::Error;
use crate::clock::to_millis;
use crate::config::TableNames;
use crate::domain::Refusal;
use crate::domain::{
    Concert, ConcertId, EventId, PaymentId, PaymentReceipt, QueueToken, Reservation, ReservationId,
    Seat, SeatId, TokenId, User, UserId,
};
use crate::events::{EventEnvelope, SeatHoldExpired};
use crate::seed::SeedData;
use crate::trace::TraceContext;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::{DateTime, Utc};

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
    /// The trace the outbox items it writes carry (see [`Self::traced`]).
    trace: Option<TraceContext>,
}

impl TicketingRepository {
    pub fn new(client: Client, tables: TableNames) -> Self {
        TicketingRepository {
            client,
            tables,
            trace: None,
        }
    }

    /// The same repository, writing outbox items that carry `trace`: one per
    /// request or run, so the event it writes can be followed to its message.
    pub fn traced(&self, trace: TraceContext) -> Self {
        TicketingRepository {
            trace: Some(trace),
            ..self.clone()
        }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The trace the outbox items it writes carry, if any.
    pub(crate) fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
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
            return Err(Refusal::NotFound {
                kind: "reservation",
                id: hold.reservation_id.to_string(),
            }
            .into());
        };
        if reservation.expire(now).is_err() {
            return Ok(Release::Skipped);
        }
        // The reservation carries its customer and concert: nothing else to read.
        let payload = SeatHoldExpired::new(&reservation, now);
        let event = EventEnvelope::seat_hold_expired(event_id, &payload);
        let table = &self.tables.ticketing;
        let mut tx = Transaction::default();
        tx.update(writes::release_seat(
            table,
            hold.seat_id,
            reservation.id,
            now,
        )?);
        tx.update(writes::expire_reservation(table, reservation.id, now)?);
        let trace = self.trace.as_ref();
        tx.put(writes::put_outbox(&self.tables.outbox, &event, now, trace)?);
        match tx
            .commit(&self.client, "TransactWriteItems (release)")
            .await
        {
            Ok(()) => Ok(Release::Released),
            // Paid, re-held or released by another run meanwhile.
            Err(Refused::Cancelled(_)) => Ok(Release::Skipped),
            Err(Refused::Failed(e)) => Err(e),
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
            .map_err(|e| Error::corrupt(format!("payment {id} receipt: {e}")))
    }

    /// Writes a PENDING reservation and the seat HELD for it, and records the
    /// hold on the caller's queue token, only if the seat is still AVAILABLE and
    /// the token ACTIVE, of the seat's concert and holding no other seat.
    pub async fn hold(
        &self,
        reservation: &Reservation,
        held: &Seat,
        token_id: TokenId,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let crate::domain::SeatStatus::Held { expires_at, .. } = held.status else {
            return Err(Refusal::Conflict(format!("seat {} is not held", held.id)).into());
        };
        let table = &self.tables.ticketing;
        let mut tx = Transaction::default();
        let seat_held = tx.update(writes::hold_seat(
            table,
            held.id,
            reservation.id,
            expires_at,
        )?);
        let token_held = tx.update(writes::hold_on_token(
            table,
            token_id,
            &writes::TokenUse {
                user: reservation.user_id,
                concert: reservation.concert.id,
                reservation: reservation.id,
                until: expires_at,
            },
            now,
        )?);
        tx.put(writes::put_new(
            table,
            items::reservation_item(reservation),
        )?);
        let cancelled = match tx.commit(&self.client, "TransactWriteItems (hold)").await {
            Ok(()) => return Ok(()),
            Err(Refused::Failed(e)) => return Err(e),
            Err(Refused::Cancelled(c)) => c,
        };
        // Tell the caller the real reason, judged by the domain on the items as
        // they were when the transaction ran.
        if let Some(old) = cancelled.failed(token_held) {
            let token = old
                .map(token_from)
                .transpose()?
                .ok_or_else(|| Refusal::InvalidToken("the queue token is unknown".into()))?;
            token.ensure_can_hold(reservation.user_id, reservation.concert.id, now)?;
        }
        if let Some(old) = cancelled.failed(seat_held) {
            let seat = old.map(seat_from).transpose()?.ok_or(Refusal::NotFound {
                kind: "seat",
                id: held.id.to_string(),
            })?;
            seat.hold(reservation.id, now, expires_at - now)?;
        }
        Err(Refusal::Conflict(format!("seat {}", held.id)).into())
    }

    /// Writes seed data, 25 items per batch, retrying what DynamoDB left unprocessed.
    pub async fn seed(&self, data: &SeedData) -> Result<(), Error> {
        let seats = data
            .seats
            .iter()
            .map(|seat| {
                let concert = data.concerts.iter().find(|c| c.id == seat.concert_id);
                let concert = concert.ok_or_else(|| {
                    Error::corrupt(format!("seed seat {} has no concert", seat.id))
                })?;
                items::seat_item(seat, concert)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let items: Vec<Item> = data
            .concerts
            .iter()
            .map(items::concert_item)
            .chain(seats)
            .chain(data.users.iter().map(items::user_item))
            .chain(data.tokens.iter().map(items::token_item))
            .chain(data.reservations.iter().map(items::reservation_item))
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
            let mut retries = UnprocessedRetries::new("BatchWriteItem");
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
                if !requests.is_empty() {
                    retries.wait().await?;
                }
            }
        }
        Ok(())
    }
}
