//! `ops demo`: drives the running pipeline as customers would and shows every
//! step: the hold, the payment, the outbox item, the Kafka record, the Telegram
//! message; then a double payment and a payment without enough balance.

use crate::Error;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Duration;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};
use shared::auth::JwtKey;
use shared::config::TopicNames;
use shared::domain::{Money, UserId};
use shared::dynamodb::{DynamoFailureLedger, TicketingRepository};
use shared::kafka::KafkaSettings;
use shared::ledger::LedgerStatus;
use shared::seed::{SeedRequest, Seeded, SeededUser, generate};
use std::collections::HashSet;
use std::time::Duration as StdDuration;

struct Demo<'a> {
    http: reqwest::Client,
    api: &'a str,
    sandbox: &'a str,
    repo: &'a TicketingRepository,
}

fn step(title: &str) {
    println!("\n== {title}");
}

impl Demo<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        jwt: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Error> {
        let mut request = self.http.request(method, &url).bearer_auth(jwt);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| Error::Http { url, source })?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn hold(
        &self,
        user: &SeededUser,
        seat: &shared::domain::Seat,
    ) -> Result<(u16, Value), Error> {
        self.call(
            reqwest::Method::POST,
            format!("{}/reservations", self.api),
            &user.jwt,
            Some(json!({"seatId": seat.id})),
        )
        .await
    }

    async fn pay(&self, user: &SeededUser, reservation: &str) -> Result<(u16, Value), Error> {
        self.call(
            reqwest::Method::POST,
            format!("{}/payments", self.api),
            &user.jwt,
            Some(json!({"reservationId": reservation})),
        )
        .await
    }

    async fn balance(&self, user: UserId) -> Result<i64, Error> {
        Ok(self
            .repo
            .user(user)
            .await?
            .map(|u| u.balance.amount())
            .unwrap_or_default())
    }

    /// Holds and pays; answers the reservation id of a confirmed payment.
    async fn hold_and_pay(
        &self,
        who: &str,
        user: &SeededUser,
        seat: &shared::domain::Seat,
    ) -> Result<String, Error> {
        let (status, held) = self.hold(user, seat).await?;
        println!("{who} holds seat {} -> {status} {held}", seat.number);
        if status != 201 {
            return Err(Error::Message(format!("the hold was refused: {held}")));
        }
        let reservation = held["reservationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (status, paid) = self.pay(user, &reservation).await?;
        println!("{who} pays -> {status} {paid}");
        if status != 200 {
            return Err(Error::Message(format!("the payment was refused: {paid}")));
        }
        println!(
            "{who}'s balance is now {}",
            Money::krw(self.balance(user.user.id).await?)?.to_won_string()
        );
        Ok(reservation)
    }

    /// Tells the channel sandbox how to fail (`count` 0 makes it healthy again).
    async fn sandbox_failures(&self, plan: Value) -> Result<(), Error> {
        let url = format!("{}/sandbox/failures", self.sandbox);
        self.http
            .post(&url)
            .json(&plan)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|source| Error::Http { url, source })?;
        Ok(())
    }

    /// The event id of the reservation's outbox item.
    async fn event_id(&self, reservation: &str) -> Result<String, Error> {
        let out = self
            .repo
            .client()
            .scan()
            .table_name(&self.repo.tables().outbox)
            .filter_expression("aggregateId = :r")
            .expression_attribute_values(":r", AttributeValue::S(reservation.to_owned()))
            .send()
            .await
            .map_err(|e| Error::Message(format!("scanning the outbox: {e}")))?;
        out.items()
            .iter()
            .find_map(|item| match item.get("eventId") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            })
            .ok_or_else(|| Error::Message(format!("no outbox item for {reservation}")))
    }

    /// Waits until the ledger row of `event_id` on `channel` has `status`, printing it.
    async fn ledger_reaches(
        &self,
        ledger: &DynamoFailureLedger,
        event_id: &str,
        channel: &str,
        status: LedgerStatus,
    ) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(90);
        while tokio::time::Instant::now() < deadline {
            if let Some(entry) = ledger.get(event_id, Some(channel)).await?
                && entry.status == status
            {
                println!(
                    "ledger {} on {channel}: {} after {} failed attempt(s), last error: {}",
                    entry.event_id,
                    entry.status.name(),
                    entry.attempts,
                    entry.last_error
                );
                return Ok(true);
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
        }
        println!(
            "ledger {event_id} did NOT reach {} within 90 s",
            status.name()
        );
        Ok(false)
    }

    /// Waits until seat-expiration made the seat AVAILABLE again.
    async fn seat_released(&self, seat: shared::domain::SeatId) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(90);
        while tokio::time::Instant::now() < deadline {
            if let Some(s) = self.repo.seat(seat).await?
                && s.status == shared::domain::SeatStatus::Available
            {
                println!("seat-expiration released the seat: AVAILABLE, its reservation EXPIRED");
                return Ok(true);
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
        }
        println!("the seat was NOT released within 90 s");
        Ok(false)
    }

    /// The sandbox's messages on `channel` to `mail` that start with `title`.
    async fn messages_for(
        &self,
        channel: &str,
        mail: &str,
        title: &str,
    ) -> Result<Vec<String>, Error> {
        Ok(self
            .sandbox_messages(Some(channel))
            .await?
            .into_iter()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .filter(|t| t.contains(mail) && t.starts_with(title))
            .collect())
    }

    /// Waits for a message on `channel` to `mail` that starts with `title`, printing it.
    async fn message_for(&self, channel: &str, mail: &str, title: &str) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if let Some(text) = self.messages_for(channel, mail, title).await?.first() {
                println!("{channel}:\n  {}", text.replace('\n', "\n  "));
                return Ok(true);
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
        }
        println!("NO {channel} message for {mail} within 60 s");
        Ok(false)
    }

    /// What the sandbox received, on every channel or on `channel`.
    async fn sandbox_messages(&self, channel: Option<&str>) -> Result<Vec<Value>, Error> {
        let url = match channel {
            Some(channel) => format!("{}/sandbox/messages?channel={channel}", self.sandbox),
            None => format!("{}/sandbox/messages", self.sandbox),
        };
        let body: Value = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?
            .json()
            .await
            .map_err(|source| Error::Http { url, source })?;
        Ok(body["messages"].as_array().cloned().unwrap_or_default())
    }

    /// How many sandbox messages name each of `mails`.
    async fn delivered(&self, mails: &[String]) -> Result<Vec<usize>, Error> {
        let messages = self.sandbox_messages(None).await?;
        Ok(mails
            .iter()
            .map(|mail| {
                messages
                    .iter()
                    .filter(|m| {
                        m["text"]
                            .as_str()
                            .is_some_and(|t| t.contains(mail.as_str()))
                    })
                    .count()
            })
            .collect())
    }
}

/// Reads `topic` from the start until a record of each key arrived (or 60 s),
/// printing them; answers whether all arrived.
async fn read_keys(topic: &str, keys: &[String]) -> Result<bool, Error> {
    let consumer: StreamConsumer = KafkaSettings::from_env()?
        .client_config()
        .set("group.id", format!("demo-{}", UserId::random()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::Message(format!("Kafka consumer: {e}")))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| Error::Message(format!("Kafka subscribe: {e}")))?;
    let mut waiting: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
        let Ok(Ok(message)) =
            tokio::time::timeout(StdDuration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        if waiting.remove(key.as_str()) {
            let header = |name: &str| {
                message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == name))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            println!(
                "kafka {}[{}]@{} key={} event-id={} event-type={}",
                message.topic(),
                message.partition(),
                message.offset(),
                key,
                header("event-id"),
                header("event-type")
            );
        }
    }
    if !waiting.is_empty() {
        println!("NOT on {topic} within 60 s: {waiting:?}");
    }
    Ok(waiting.is_empty())
}

/// Runs the scenario; answers whether every confirmed payment was notified
/// exactly once.
pub async fn run(
    repo: &TicketingRepository,
    key: &JwtKey,
    api: &str,
    sandbox: &str,
) -> Result<bool, Error> {
    let demo = Demo {
        http: reqwest::Client::builder()
            .timeout(StdDuration::from_secs(30))
            .build()
            .map_err(|e| Error::Message(e.to_string()))?,
        api: api.trim_end_matches('/'),
        sandbox: sandbox.trim_end_matches('/'),
        repo,
    };

    step(
        "1. seed: a concert with 6 seats at 150,000원, five fans with 200,000원, one with 10,000원",
    );
    let now = chrono::Utc::now();
    let request = |users, balance| -> Result<SeedRequest, Error> {
        Ok(SeedRequest {
            seats: 6,
            users,
            balance: Money::krw(balance)?,
            price: Money::krw(150_000)?,
            title: "아이유 콘서트 2026".into(),
            starts_at: crate::concert_start(now),
            token_ttl: Duration::hours(2),
            mail_prefix: "fan".into(),
        })
    };
    let rich: Seeded = generate(&request(5, 200_000)?, key, now)?;
    let poor = generate(&request(1, 10_000)?, key, now)?;
    repo.seed(&rich.data()).await?;
    repo.seed(&poor.data()).await?;
    let (a, c, b) = (&rich.users[0], &rich.users[1], &poor.users[0]);
    let (d, e, f) = (&rich.users[2], &rich.users[3], &rich.users[4]);
    println!(
        "concert {} ({}); fans {}, {}, {}",
        rich.concert.id, rich.concert.title, a.user.mail, c.user.mail, b.user.mail
    );

    step("2. two fans hold a seat and pay");
    let paid = [
        demo.hold_and_pay("fan A", a, &rich.seats[0]).await?,
        demo.hold_and_pay("fan C", c, &rich.seats[1]).await?,
    ];
    let mails: Vec<String> = vec![a.user.mail.as_str().into(), c.user.mail.as_str().into()];

    step("3. the outbox items, written in the payments' transactions");
    for reservation in &paid {
        println!(
            "outbox PaymentCompleted {} for reservation {reservation}",
            demo.event_id(reservation).await?
        );
    }

    step("4. the relay published them to Kafka (read back with a consumer)");
    let topics = TopicNames::from_env();
    read_keys(&topics.payment_completed, &paid).await?;

    step("5. the notifier sent the Telegram messages (the sandbox's record)");
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        let counts = demo.delivered(&mails).await?;
        if counts.iter().all(|n| *n >= 1) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
    for message in demo.sandbox_messages(Some("telegram")).await? {
        let text = message["text"].as_str().unwrap_or_default();
        if mails.iter().any(|m| text.contains(m.as_str())) {
            println!(
                "telegram to chat {}:\n  {}",
                message["chatId"],
                text.replace('\n', "\n  ")
            );
        }
    }

    step("6. fan A pays the same reservation again: the first receipt, no second charge");
    let before = demo.balance(a.user.id).await?;
    let (status, again) = demo.pay(a, &paid[0]).await?;
    let after = demo.balance(a.user.id).await?;
    println!("fan A pays again -> {status} {again}");
    println!(
        "balance before {} and after {}: {}",
        Money::krw(before)?.to_won_string(),
        Money::krw(after)?.to_won_string(),
        if before == after {
            "not charged twice"
        } else {
            "CHARGED TWICE"
        }
    );

    step("7. fan B holds a seat but has only 10,000원");
    let (status, held) = demo.hold(b, &rich.seats[2]).await?;
    println!("fan B holds seat 3 -> {status} {held}");
    let reservation = held["reservationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, refused) = demo.pay(b, &reservation).await?;
    println!("fan B pays -> {status} {refused}");
    println!(
        "fan B's balance is still {}",
        Money::krw(demo.balance(b.user.id).await?)?.to_won_string()
    );

    let ledger =
        DynamoFailureLedger::new(repo.client().clone(), repo.tables().failed_messages.clone());

    step("8. Telegram goes down: fan D still pays at once; the message waits in the DLQ");
    demo.sandbox_failures(json!({"count": 1_000_000, "status": 502}))
        .await?;
    let started = std::time::Instant::now();
    let reservation_d = demo.hold_and_pay("fan D", d, &rich.seats[3]).await?;
    println!(
        "the hold and the payment took {} ms together: neither waits on Telegram",
        started.elapsed().as_millis()
    );
    let event_d = demo.event_id(&reservation_d).await?;
    let pending = demo
        .ledger_reaches(&ledger, &event_d, "telegram", LedgerStatus::Pending)
        .await?;
    println!("Telegram is back; dlq-retry delivers it on its next run");
    demo.sandbox_failures(json!({"count": 0})).await?;
    let processed = demo
        .ledger_reaches(&ledger, &event_d, "telegram", LedgerStatus::Processed)
        .await?;
    let mut mails = mails;
    mails.push(d.user.mail.as_str().into());

    step("9. the bot is blocked for the chat (HTTP 403): fan E's notification fails for good");
    demo.sandbox_failures(json!({"count": 1, "status": 403}))
        .await?;
    let reservation_e = demo.hold_and_pay("fan E", e, &rich.seats[4]).await?;
    let event_e = demo.event_id(&reservation_e).await?;
    let parked = demo
        .ledger_reaches(&ledger, &event_e, "telegram", LedgerStatus::Failed)
        .await?;
    println!(
        "it is on {} for an operator: `ops failed show {event_e}`, `ops failed redrive {event_e}`",
        TopicNames::from_env().payment_completed_failed
    );

    step(
        "10. fan F holds seat 6 and never pays: the hold expires, the seat is released, \
         and fan F is told on Telegram and on Discord",
    );
    // Fan B's unpaid hold of step 7 expires first; its notices must not take
    // the Discord failure planned for fan F's.
    let expired_title = "[좌석 선점 만료]";
    println!("fan B's unpaid hold of step 7 expires first:");
    demo.message_for("discord", b.user.mail.as_str(), expired_title)
        .await?;
    // Discord fails the first time: Telegram is told at once, Discord by a retry,
    // and neither twice.
    demo.sandbox_failures(json!({"count": 1, "status": 503, "channel": "discord"}))
        .await?;
    let (status_f, held_f) = demo.hold(f, &rich.seats[5]).await?;
    println!("fan F holds seat 6 -> {status_f} {held_f}");
    let reservation_f = held_f["reservationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let released = demo.seat_released(rich.seats[5].id).await?;
    let announced = read_keys(
        &topics.seat_hold_expired,
        std::slice::from_ref(&reservation_f),
    )
    .await?;
    let mail_f = f.user.mail.as_str();
    let told = demo.message_for("telegram", mail_f, expired_title).await?;
    let event_f = demo.event_id(&reservation_f).await?;
    println!("Discord answered 503: its message waits in the DLQ; Telegram's is not sent again");
    let retried = demo
        .ledger_reaches(&ledger, &event_f, "discord", LedgerStatus::Processed)
        .await?;
    let told_discord = demo.message_for("discord", mail_f, expired_title).await?;
    let once_each = demo
        .messages_for("telegram", mail_f, expired_title)
        .await?
        .len()
        == 1
        && demo
            .messages_for("discord", mail_f, expired_title)
            .await?
            .len()
            == 1;
    println!(
        "fan F was told {} on each channel",
        if once_each { "once" } else { "NOT once" }
    );
    let (status_b, held_b) = demo.hold(b, &rich.seats[5]).await?;
    println!("fan B holds the released seat 6 -> {status_b} {held_b}");
    let expiry_ok =
        released && announced && told && retried && told_discord && once_each && status_b == 201;

    // Give a duplicate every chance to arrive before counting.
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    let counts = demo.delivered(&mails).await?;
    let delivered = counts.iter().filter(|n| **n == 1).count();
    let duplicated = counts.iter().filter(|n| **n > 1).count();
    let failed_permanently = usize::from(parked);
    let confirmed = mails.len() + 1;
    let lost = confirmed - delivered - duplicated - failed_permanently;
    let ok = lost == 0
        && duplicated == 0
        && before == after
        && status == 402
        && pending
        && processed
        && parked
        && expiry_ok;
    if duplicated > 0 {
        println!("\n{duplicated} payments were notified more than once");
    }
    println!(
        "\ndemo: {confirmed} payments confirmed, {delivered} notifications delivered, \
         {failed_permanently} failed permanently, {lost} lost"
    );
    Ok(ok)
}
