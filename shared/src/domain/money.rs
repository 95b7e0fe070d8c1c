use super::Refusal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of Korean won. KRW has no minor unit, so it is a whole number, never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn krw(amount: i64) -> Result<Self, Refusal> {
        if amount < 0 {
            return Err(Refusal::invalid("amount", format!("{amount} is negative")));
        }
        Ok(Money(amount))
    }

    pub fn amount(self) -> i64 {
        self.0
    }

    /// `None` when the subtraction would go below zero.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Money)
    }

    /// Thousands separated, as Korean receipts print it: `150,000원`.
    pub fn to_won_string(self) -> String {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 3);
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out.push('원');
        out
    }
}

impl TryFrom<i64> for Money {
    type Error = Refusal;
    fn try_from(value: i64) -> Result<Self, Refusal> {
        Money::krw(value)
    }
}

impl From<Money> for i64 {
    fn from(m: Money) -> i64 {
        m.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KRW", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_refuses_negative_amounts() {
        assert!(Money::krw(-1).is_err());
        assert_eq!(Money::krw(0).unwrap(), Money::ZERO);
    }

    #[test]
    fn won_string_groups_thousands() {
        assert_eq!(Money::krw(0).unwrap().to_won_string(), "0원");
        assert_eq!(Money::krw(999).unwrap().to_won_string(), "999원");
        assert_eq!(Money::krw(1000).unwrap().to_won_string(), "1,000원");
        assert_eq!(Money::krw(150000).unwrap().to_won_string(), "150,000원");
        assert_eq!(Money::krw(1234567).unwrap().to_won_string(), "1,234,567원");
    }

    #[test]
    fn checked_sub_stops_at_zero() {
        let ten = Money::krw(10).unwrap();
        assert_eq!(ten.checked_sub(ten), Some(Money::ZERO));
        assert_eq!(Money::ZERO.checked_sub(ten), None);
    }

    #[test]
    fn money_deserialises_only_non_negative_numbers() {
        assert!(serde_json::from_str::<Money>("-5").is_err());
        assert_eq!(serde_json::from_str::<Money>("5").unwrap().amount(), 5);
    }
}
