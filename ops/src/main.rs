//! `ops`: the operator's CLI.
//!
//! - `ops provision`: creates the tables and topics (safe to run twice);
//! - `ops seed`: creates a concert with seats and users with a balance and an
//!   ACTIVE queue token, and prints them as one JSON object.

use chrono::{Duration, Utc};
use clap::{Parser, Subcommand};
use serde_json::json;
use shared::auth::{Admission, JwtKey};
use shared::config::{TableNames, TopicNames};
use shared::domain::{
    Concert, ConcertId, Mail, Money, QueueToken, Seat, SeatId, SeatStatus, TokenId, TokenStatus,
    User, UserId,
};
use shared::dynamodb::{SeedData, TicketingRepository, create_tables};
use shared::kafka::{KafkaSettings, create_topics};

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Domain(#[from] shared::Error),
    #[error(
        "JWT_SECRET must be set to sign the queue tokens (the same key the functions verify with)"
    )]
    MissingJwtSecret,
}

#[derive(Parser)]
#[command(about = "Operate the ticketing pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the tables (TICKETING_TABLE, OUTBOX_TABLE, IDEMPOTENCY_TABLE) and the topics.
    Provision {
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// Create a concert with seats, and users with a balance and an ACTIVE queue token.
    Seed {
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
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("ops: {}", shared::error_chain(&e));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let aws = aws_config::load_from_env().await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let tables = TableNames::from_env();
    match cli.command {
        Command::Provision { partitions } => {
            create_tables(&client, &tables).await?;
            let topics = TopicNames::from_env();
            create_topics(&KafkaSettings::from_env()?, &topics.all(), partitions).await?;
            println!(
                "{}",
                json!({"tables": [tables.ticketing, tables.outbox, tables.idempotency],
                       "topics": topics.all()})
            );
        }
        Command::Seed {
            seats,
            users,
            balance,
            price,
            title,
            token_minutes,
        } => {
            let secret = std::env::var("JWT_SECRET").map_err(|_| Error::MissingJwtSecret)?;
            let key = JwtKey::from_secret(secret.as_bytes())?;
            let now = Utc::now();
            let concert = Concert {
                id: ConcertId::random(),
                title,
                starts_at: now + Duration::days(30),
            };
            let price = Money::krw(price)?;
            let balance = Money::krw(balance)?;
            let mut data = SeedData {
                concerts: vec![concert.clone()],
                ..SeedData::default()
            };
            for number in 1..=seats {
                data.seats.push(Seat {
                    id: SeatId::random(),
                    concert_id: concert.id,
                    number,
                    price,
                    status: SeatStatus::Available,
                });
            }
            let mut printed_users = Vec::new();
            for _ in 0..users {
                let id = UserId::random();
                let user = User {
                    id,
                    mail: Mail::parse(&format!("user-{}@example.com", &id.to_string()[..8]))?,
                    balance,
                };
                let token = QueueToken {
                    id: TokenId::random(),
                    user_id: id,
                    status: TokenStatus::Active,
                    expires_at: now + Duration::minutes(token_minutes),
                };
                let jwt = key.issue(
                    Admission {
                        user_id: id,
                        token_id: token.id,
                    },
                    now,
                    token.expires_at,
                )?;
                printed_users.push(json!({
                    "id": id, "mail": user.mail.as_str(), "balance": balance.amount(),
                    "token": jwt, "tokenId": token.id,
                }));
                data.users.push(user);
                data.tokens.push(token);
            }
            TicketingRepository::new(client, tables).seed(&data).await?;
            let seats: Vec<_> = data
                .seats
                .iter()
                .map(|s| json!({"id": s.id, "price": s.price.amount(), "number": s.number}))
                .collect();
            println!(
                "{}",
                json!({
                    "concert": {"id": concert.id, "title": concert.title, "startsAt": concert.starts_at},
                    "seats": seats,
                    "users": printed_users,
                })
            );
        }
    }
    Ok(())
}
