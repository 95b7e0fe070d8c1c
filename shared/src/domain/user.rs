use super::Refusal;
use super::{ConcertId, Money, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A customer's mail address. Its `Debug` and `Display` mask it, so it never reaches
/// a log in full; `as_str` gives the real address to the code that must send it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mail(String);

impl TryFrom<String> for Mail {
    type Error = Refusal;
    fn try_from(value: String) -> Result<Self, Refusal> {
        Mail::parse(&value)
    }
}

impl From<Mail> for String {
    fn from(m: Mail) -> String {
        m.0
    }
}

impl Mail {
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let text = text.trim();
        match text.split_once('@') {
            Some((local, domain)) if !local.is_empty() && domain.contains('.') => {
                Ok(Mail(text.to_owned()))
            }
            _ => Err(Refusal::invalid(
                "mail",
                "expected an address like name@example.com",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `ki***@example.com`: enough to tell two customers apart in a log.
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let head: String = local.chars().take(2).collect();
                format!("{head}***@{domain}")
            }
            None => "***".to_owned(),
        }
    }
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mail({})", self.masked())
    }
}

impl fmt::Display for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub mail: Mail,
    pub balance: Money,
}

impl User {
    /// The user after paying `price`, or `InsufficientBalance`.
    pub fn debit(&self, price: Money) -> Result<User, Refusal> {
        let balance = self
            .balance
            .checked_sub(price)
            .ok_or(Refusal::InsufficientBalance {
                price,
                balance: self.balance,
            })?;
        Ok(User {
            balance,
            ..self.clone()
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
    pub starts_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(balance: i64) -> User {
        User {
            id: UserId::random(),
            mail: Mail::parse("kim@example.com").unwrap(),
            balance: Money::krw(balance).unwrap(),
        }
    }

    #[test]
    fn debit_takes_the_price_from_the_balance() {
        let after = user(100_000).debit(Money::krw(40_000).unwrap()).unwrap();
        assert_eq!(after.balance, Money::krw(60_000).unwrap());
    }

    #[test]
    fn debit_of_the_whole_balance_leaves_zero() {
        let after = user(40_000).debit(Money::krw(40_000).unwrap()).unwrap();
        assert_eq!(after.balance, Money::ZERO);
    }

    #[test]
    fn debit_above_the_balance_is_refused_with_both_amounts() {
        let err = user(10).debit(Money::krw(11).unwrap()).unwrap_err();
        assert!(matches!(err, Refusal::InsufficientBalance { .. }));
        assert_eq!(err.code(), "INSUFFICIENT_BALANCE");
        assert!(err.to_string().contains("11 KRW"), "{err}");
    }

    #[test]
    fn mail_is_masked_in_debug_and_display() {
        let mail = Mail::parse("kimchi@example.com").unwrap();
        assert_eq!(mail.to_string(), "ki***@example.com");
        assert_eq!(format!("{mail:?}"), "Mail(ki***@example.com)");
        assert_eq!(mail.as_str(), "kimchi@example.com");
    }

    #[test]
    fn mail_without_a_domain_is_refused() {
        assert!(Mail::parse("kim").is_err());
        assert!(Mail::parse("@example.com").is_err());
    }
}
