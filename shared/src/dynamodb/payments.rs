//! Reading the payments made in a time window, through the ticketing table's
//! sparse `paid-at` index: what `ops reconcile` starts from.

use super::items::{PAID_AT_INDEX, Reader};
use super::window::{WindowIndex, query_window};
use crate::Error;
use crate::domain::{PaymentId, ReservationId};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

/// A payment as the index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentMade {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub paid_at: DateTime<Utc>,
}

/// The payments made in `from..=to`, oldest first (ties by payment id).
pub async fn payments_between(
    client: &Client,
    table: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PaymentMade>, Error> {
    let index = WindowIndex {
        table,
        index: PAID_AT_INDEX,
        bucket: "paidBucket",
        time: "paidAt",
        operation: "Query (payments by time)",
    };
    let mut payments = query_window(client, &index, from, to)
        .await?
        .iter()
        .map(|item| {
            let r = Reader::new(item, "payment");
            Ok(PaymentMade {
                payment_id: r.id("paymentId")?,
                reservation_id: r.id("reservationId")?,
                paid_at: r.time("paidAt")?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    payments.sort_by_key(|p| (p.paid_at, p.payment_id.to_string()));
    Ok(payments)
}
