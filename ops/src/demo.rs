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
use shared::notification::ChannelKind;
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
        channel: ChannelKind,
        status: LedgerStatus,
    ) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(90);
        while tokio::time::Instant::now() < deadline {
            if let Some(entry) = ledger.get(event_id, Some(channel)).await?
                && entry.status == status
            {
                println!(
                    "ledger {} on {}: {} after {} failed attempt(s), last error: {}",
                    entry.event_id,
                    channel.name(),
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

    /// Waits until the data platform has `confirmed` sales (a minute at most)
    /// and prints what it holds; off when the feed is not configured.
    async fn data_platform(&self, confirmed: usize) -> Result<PlatformCount, Error> {
        if shared::config::optional("DATA_PLATFORM_URL").is_none() {
            return Ok(PlatformCount {
                off: true,
                sales: 0,
                resent: 0,
            });
        }
        step("11. the data platform, fed by its own consumer group: every sale once, no mail");
        let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
        loop {
            let body = crate::sandbox::platform(&self.http, self.sandbox).await?;
            let events = body["events"].as_array().cloned().unwrap_or_default();
            let sales = events
                .iter()
                .filter(|e| e["event"]["eventType"] == "PaymentCompleted")
                .count();
            if sales >= confirmed || std::time::Instant::now() > deadline {
                for e in &events {
                    println!(
                        "platform has {} {} (reservation {}, customer {})",
                        e["event"]["eventType"].as_str().unwrap_or("-"),
                        e["eventId"].as_str().unwrap_or("-"),
                        e["event"]["aggregateId"].as_str().unwrap_or("-"),
                        e["event"]["payload"]["customerPseudonym"]
                            .as_str()
                            .map_or("-".into(), |p| format!("{}…", &p[..12.min(p.len())])),
                    );
                }
                let resent = body["duplicates"].as_u64().unwrap_or(0) as usize;
                return Ok(PlatformCount {
                    off: false,
                    sales,
                    resent,
                });
            }
            tokio::time::sleep(StdDuration::from_millis(500)).await;
        }
    }

    /// What the sandbox received, on every channel or on `channel`.
    async fn sandbox_messages(&self, channel: Option<&str>) -> Result<Vec<Value>, Error> {
        crate::sandbox::messages(&self.http, self.sandbox, channel).await
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

/// The fans of the scenario: five who can pay (A, C, D, E, F) and one who cannot (B).
struct Cast {
    rich: Seeded,
    poor: Seeded,
}

impl Cast {
    fn fan(&self, index: usize) -> &SeededUser {
        &self.rich.users[index]
    }

    fn short_of_money(&self) -> &SeededUser {
        &self.poor.users[0]
    }

    fn seat(&self, index: usize) -> &shared::domain::Seat {
        &self.rich.seats[index]
    }
}

/// How the scenario ended: each check it makes, and the notifications counted.
#[derive(Default)]
struct Verdicts {
    relayed: bool,
    notified: bool,
    not_charged_twice: bool,
    refused_for_balance: bool,
    retried_after_outage: bool,
    parked: bool,
    hold_expiry: bool,
}

impl Verdicts {
    fn all_hold(&self) -> bool {
        self.relayed
            && self.notified
            && self.not_charged_twice
            && self.refused_for_balance
            && self.retried_after_outage
            && self.parked
            && self.hold_expiry
    }
}

/// What the data platform received of the run (the sandbox's platform).
struct PlatformCount {
    /// The feed is not running (no `DATA_PLATFORM_URL`).
    off: bool,
    /// PaymentCompleted events it holds, each once.
    sales: usize,
    /// Events it was sent again after it had them (a retry after a lost answer).
    resent: usize,
}

impl PlatformCount {
    fn holds(&self, confirmed: usize) -> bool {
        self.off || self.sales == confirmed
    }

    fn summary(&self) -> String {
        if self.off {
            return String::new();
        }
        format!(
            "; data platform: {} sales received once, {} sent again",
            self.sales, self.resent
        )
    }
}

/// How long a duplicate notification is given to show up before the count.
const DUPLICATE_GRACE: StdDuration = StdDuration::from_secs(3);

/// Runs the scenario; answers whether every confirmed payment was notified
/// exactly once and every step did what it shows.
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
    let ledger =
        DynamoFailureLedger::new(repo.client().clone(), repo.tables().failed_messages.clone());
    let cast = demo.seed(key).await?;
    let mut verdicts = Verdicts::default();
    let (paid, mut mails) = demo.two_fans_pay(&cast, &mut verdicts).await?;
    verdicts.not_charged_twice = demo.pay_again(&cast, &paid[0]).await?;
    verdicts.refused_for_balance = demo.pay_without_balance(&cast).await?;
    verdicts.retried_after_outage = demo.telegram_outage(&cast, &ledger).await?;
    mails.push(cast.fan(2).user.mail.as_str().into());
    verdicts.parked = demo.blocked_bot(&cast, &ledger).await?;
    verdicts.hold_expiry = demo.hold_expires(&cast, &ledger).await?;

    tokio::time::sleep(DUPLICATE_GRACE).await;
    let counts = demo.delivered(&mails).await?;
    let delivered = counts.iter().filter(|n| **n == 1).count();
    let duplicated = counts.iter().filter(|n| **n > 1).count();
    let failed_permanently = usize::from(verdicts.parked);
    let confirmed = mails.len() + 1;
    let lost = confirmed - delivered - duplicated - failed_permanently;
    if duplicated > 0 {
        println!("\n{duplicated} payments were notified more than once");
    }
    let platform = demo.data_platform(confirmed).await?;
    println!(
        "\ndemo: {confirmed} payments confirmed, {delivered} notifications delivered, \
         {failed_permanently} failed permanently, {lost} lost{}",
        platform.summary()
    );
    Ok(lost == 0 && duplicated == 0 && verdicts.all_hold() && platform.holds(confirmed))
}

impl Demo<'_> {
    async fn seed(&self, key: &JwtKey) -> Result<Cast, Error> {
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
        let rich = generate(&request(5, 200_000)?, key, now)?;
        let mut poor = generate(&request(1, 10_000)?, key, now)?;
        // B queued for the same concert as the others: its token admits to it.
        for fan in &mut poor.users {
            fan.token.concert_id = Some(rich.concert.id);
        }
        let cast = Cast { rich, poor };
        self.repo.seed(&cast.rich.data()).await?;
        self.repo.seed(&cast.poor.data()).await?;
        println!(
            "concert {} ({}); fans {}, {}, {}",
            cast.rich.concert.id,
            cast.rich.concert.title,
            cast.fan(0).user.mail,
            cast.fan(1).user.mail,
            cast.short_of_money().user.mail
        );
        Ok(cast)
    }

    /// Steps 2 to 5: fans A and C pay; their outbox items, Kafka records and
    /// Telegram messages. Answers the reservations and the mails notified.
    async fn two_fans_pay(
        &self,
        cast: &Cast,
        verdicts: &mut Verdicts,
    ) -> Result<([String; 2], Vec<String>), Error> {
        step("2. two fans hold a seat and pay");
        let paid = [
            self.hold_and_pay("fan A", cast.fan(0), cast.seat(0))
                .await?,
            self.hold_and_pay("fan C", cast.fan(1), cast.seat(1))
                .await?,
        ];
        let mails: Vec<String> = (0..2)
            .map(|i| cast.fan(i).user.mail.as_str().into())
            .collect();

        step("3. the outbox items, written in the payments' transactions");
        for reservation in &paid {
            println!(
                "outbox PaymentCompleted {} for reservation {reservation}",
                self.event_id(reservation).await?
            );
        }

        step("4. the relay published them to Kafka (read back with a consumer)");
        verdicts.relayed = read_keys(&TopicNames::from_env().payment_completed, &paid).await?;

        step("5. the notifier sent the Telegram messages (the sandbox's record)");
        verdicts.notified = self.each_told(&mails).await?;
        for message in self.sandbox_messages(Some("telegram")).await? {
            let text = message["text"].as_str().unwrap_or_default();
            if mails.iter().any(|m| text.contains(m.as_str())) {
                println!(
                    "telegram to chat {}:\n  {}",
                    message["chatId"],
                    text.replace('\n', "\n  ")
                );
            }
        }
        Ok((paid, mails))
    }

    /// Waits until the sandbox has a message for each of `mails` (or 60 s).
    async fn each_told(&self, mails: &[String]) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
        loop {
            let counts = self.delivered(mails).await?;
            if counts.iter().all(|n| *n >= 1) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                println!("NOT every fan was told within 60 s: {counts:?}");
                return Ok(false);
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
        }
    }

    async fn pay_again(&self, cast: &Cast, reservation: &str) -> Result<bool, Error> {
        step("6. fan A pays the same reservation again: the first receipt, no second charge");
        let a = cast.fan(0);
        let before = self.balance(a.user.id).await?;
        let (status, again) = self.pay(a, reservation).await?;
        let after = self.balance(a.user.id).await?;
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
        Ok(before == after && status == 200)
    }

    async fn pay_without_balance(&self, cast: &Cast) -> Result<bool, Error> {
        step("7. fan B holds a seat but has only 10,000원");
        let b = cast.short_of_money();
        let (status, held) = self.hold(b, cast.seat(2)).await?;
        println!("fan B holds seat 3 -> {status} {held}");
        let reservation = held["reservationId"].as_str().unwrap_or_default();
        let (status, refused) = self.pay(b, reservation).await?;
        println!("fan B pays -> {status} {refused}");
        println!(
            "fan B's balance is still {}",
            Money::krw(self.balance(b.user.id).await?)?.to_won_string()
        );
        Ok(status == 402)
    }

    async fn telegram_outage(
        &self,
        cast: &Cast,
        ledger: &DynamoFailureLedger,
    ) -> Result<bool, Error> {
        step("8. Telegram goes down: fan D still pays at once; the message waits in the DLQ");
        self.sandbox_failures(json!({"count": 1_000_000, "status": 502, "channel": "telegram"}))
            .await?;
        let started = std::time::Instant::now();
        let reservation = self
            .hold_and_pay("fan D", cast.fan(2), cast.seat(3))
            .await?;
        println!(
            "the hold and the payment took {} ms together: neither waits on Telegram",
            started.elapsed().as_millis()
        );
        let event = self.event_id(&reservation).await?;
        let pending = self
            .ledger_reaches(ledger, &event, ChannelKind::Telegram, LedgerStatus::Pending)
            .await?;
        println!("Telegram is back; dlq-retry delivers it on its next run");
        self.sandbox_failures(json!({"count": 0})).await?;
        let processed = self
            .ledger_reaches(
                ledger,
                &event,
                ChannelKind::Telegram,
                LedgerStatus::Processed,
            )
            .await?;
        println!("its whole story, step by step: `ops trace {reservation}`");
        Ok(pending && processed)
    }

    async fn blocked_bot(&self, cast: &Cast, ledger: &DynamoFailureLedger) -> Result<bool, Error> {
        step("9. the bot is blocked for the chat (HTTP 403): fan E's notification fails for good");
        self.sandbox_failures(json!({"count": 1, "status": 403, "channel": "telegram"}))
            .await?;
        let reservation = self
            .hold_and_pay("fan E", cast.fan(3), cast.seat(4))
            .await?;
        let event = self.event_id(&reservation).await?;
        let parked = self
            .ledger_reaches(ledger, &event, ChannelKind::Telegram, LedgerStatus::Failed)
            .await?;
        println!(
            "it is on {} for an operator: `ops failed show {event}`, `ops failed redrive {event}`",
            TopicNames::from_env().payment_completed_failed
        );
        Ok(parked)
    }

    async fn hold_expires(&self, cast: &Cast, ledger: &DynamoFailureLedger) -> Result<bool, Error> {
        step(
            "10. fan F holds seat 6 and never pays: the hold expires, the seat is released, \
             and fan F is told on Telegram and on Discord",
        );
        // Fan B's unpaid hold of step 7 expires first; its notices must not take
        // the Discord failure planned for fan F's.
        let b = cast.short_of_money();
        println!("fan B's unpaid hold of step 7 expires first:");
        self.message_for("discord", b.user.mail.as_str(), EXPIRED_TITLE)
            .await?;
        // Discord fails the first time: Telegram is told at once, Discord by a retry,
        // and neither twice.
        self.sandbox_failures(json!({"count": 1, "status": 503, "channel": "discord"}))
            .await?;
        let (status, held) = self.hold(cast.fan(4), cast.seat(5)).await?;
        println!("fan F holds seat 6 -> {status} {held}");
        let reservation = held["reservationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let released = self.seat_released(cast.seat(5).id).await?;
        let announced = read_keys(
            &TopicNames::from_env().seat_hold_expired,
            std::slice::from_ref(&reservation),
        )
        .await?;
        let told = self
            .told_of_expiry(cast.fan(4), &reservation, ledger)
            .await?;
        let (status_b, held_b) = self.hold(b, cast.seat(5)).await?;
        println!("fan B holds the released seat 6 -> {status_b} {held_b}");
        Ok(released && announced && told && status_b == 201)
    }

    /// Fan F is told of the expiry once on Telegram, and once on Discord after
    /// its retry.
    async fn told_of_expiry(
        &self,
        fan: &SeededUser,
        reservation: &str,
        ledger: &DynamoFailureLedger,
    ) -> Result<bool, Error> {
        let mail = fan.user.mail.as_str();
        let telegram = self.message_for("telegram", mail, EXPIRED_TITLE).await?;
        let event = self.event_id(reservation).await?;
        println!(
            "Discord answered 503: its message waits in the DLQ; Telegram's is not sent again"
        );
        let retried = self
            .ledger_reaches(
                ledger,
                &event,
                ChannelKind::Discord,
                LedgerStatus::Processed,
            )
            .await?;
        let discord = self.message_for("discord", mail, EXPIRED_TITLE).await?;
        let once_each = self
            .messages_for("telegram", mail, EXPIRED_TITLE)
            .await?
            .len()
            == 1
            && self
                .messages_for("discord", mail, EXPIRED_TITLE)
                .await?
                .len()
                == 1;
        println!(
            "fan F was told {} on each channel",
            if once_each { "once" } else { "NOT once" }
        );
        Ok(telegram && retried && discord && once_each)
    }
}

/// The title of the notice of an expired hold.
const EXPIRED_TITLE: &str = "[좌석 선점 만료]";
