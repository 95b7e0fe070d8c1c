//! `ops seed`: a concert with seats and users with a balance and an ACTIVE
//! queue token each; or, with `--sample-events`, exactly the world the sample
//! events of `events/` name, so `sam local invoke -e events/reservation-hold.json`
//! answers 201 on a fresh stack and `events/payment.json` then 200.

use crate::{Error, concert_start, jwt_key};
use chrono::{Duration, Utc};
use clap::Args;
use serde_json::{Value, json};
use shared::config::TableNames;
use shared::domain::Money;
use shared::dynamodb::TicketingRepository;
use shared::seed::{SeedData, SeedRequest, generate, sample_world};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SeedArgs {
    #[arg(long, default_value_t = 10)]
    seats: u32,
    #[arg(long, default_value_t = 2)]
    users: u32,
    /// Each user's balance, in KRW.
    #[arg(long, default_value_t = 200_000)]
    balance: i64,
    /// Each seat's price, in KRW.
    #[arg(long, default_value_t = 50_000)]
    price: i64,
    #[arg(long, default_value = "아이유 콘서트 2026")]
    title: String,
    /// How long the queue tokens stay valid.
    #[arg(long, default_value_t = 120)]
    token_minutes: i64,
    /// Instead: the items the sample events in this folder name (its
    /// reservation-hold.json and payment.json): their token's user and token,
    /// the seat the hold asks for, the PENDING reservation the payment pays.
    /// Seeding again puts them back as they were.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "events",
          conflicts_with_all = ["seats", "users", "balance", "price", "title", "token_minutes"])]
    sample_events: Option<PathBuf>,
}

pub async fn run(
    args: SeedArgs,
    client: aws_sdk_dynamodb::Client,
    tables: TableNames,
) -> Result<(), Error> {
    let repo = TicketingRepository::new(client, tables);
    if let Some(dir) = &args.sample_events {
        let data = sample_world(
            &sample(dir, "reservation-hold.json")?,
            &sample(dir, "payment.json")?,
            &jwt_key()?,
            Utc::now(),
        )?;
        repo.seed(&data).await?;
        println!("{}", sample_world_json(dir, &data));
        return Ok(());
    }
    let now = Utc::now();
    let request = SeedRequest {
        seats: args.seats,
        users: args.users,
        balance: Money::krw(args.balance)?,
        price: Money::krw(args.price)?,
        title: args.title,
        starts_at: concert_start(now),
        token_ttl: Duration::minutes(args.token_minutes),
        mail_prefix: "user".into(),
    };
    let seeded = generate(&request, &jwt_key()?, now)?;
    repo.seed(&seeded.data()).await?;
    println!("{}", seeded.to_json());
    Ok(())
}

/// `dir/name`, parsed.
fn sample(dir: &Path, name: &str) -> Result<Value, Error> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Message(format!(
            "cannot read the sample event {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Message(format!(
            "the sample event {} is not JSON: {e}",
            path.display()
        ))
    })
}

/// What `--sample-events` wrote, by id.
fn sample_world_json(dir: &Path, data: &SeedData) -> Value {
    json!({
        "sampleEvents": dir.display().to_string(),
        "users": data.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        "tokens": data.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        "seats": data.seats.iter().map(|s| json!({"id": s.id, "status": s.status.name()})).collect::<Vec<_>>(),
        "reservations": data.reservations.iter().map(|r| json!({"id": r.id, "status": r.status.name()})).collect::<Vec<_>>(),
    })
}
