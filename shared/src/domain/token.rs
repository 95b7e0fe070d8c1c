use super::Refusal;
use super::{TokenId, UserId};
use chrono::{DateTime, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    Done,
    Expired,
}

impl TokenStatus {
    pub fn name(self) -> &'static str {
        match self {
            TokenStatus::Active => "ACTIVE",
            TokenStatus::Done => "DONE",
            TokenStatus::Expired => "EXPIRED",
        }
    }

    /// The status a stored name stands for; `None` for a name no status has.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ACTIVE" => Some(TokenStatus::Active),
            "DONE" => Some(TokenStatus::Done),
            "EXPIRED" => Some(TokenStatus::Expired),
            _ => None,
        }
    }
}

/// The server-side state of a queue token: the JWT proves who the caller is, this
/// row says whether the queue still admits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueToken {
    pub id: TokenId,
    pub user_id: UserId,
    pub status: TokenStatus,
    pub expires_at: DateTime<Utc>,
}

impl QueueToken {
    /// An ACTIVE, unexpired token of `caller`.
    pub fn ensure_usable(&self, caller: UserId, now: DateTime<Utc>) -> Result<(), Refusal> {
        if self.user_id != caller {
            return Err(Refusal::InvalidToken(
                "it was issued to another user".into(),
            ));
        }
        match self.status {
            TokenStatus::Done => Err(Refusal::TokenUsed),
            TokenStatus::Expired => Err(Refusal::TokenExpired),
            TokenStatus::Active if now >= self.expires_at => Err(Refusal::TokenExpired),
            TokenStatus::Active => Ok(()),
        }
    }

    /// The payment finishes the token: it cannot admit another payment.
    pub fn finish(&self, caller: UserId, now: DateTime<Utc>) -> Result<QueueToken, Refusal> {
        self.ensure_usable(caller, now)?;
        Ok(QueueToken {
            status: TokenStatus::Done,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn token(status: TokenStatus) -> QueueToken {
        QueueToken {
            id: TokenId::random(),
            user_id: UserId::random(),
            status,
            expires_at: at(600),
        }
    }

    #[test]
    fn an_active_token_is_finished_by_the_payment() {
        let t = token(TokenStatus::Active);
        assert_eq!(
            t.finish(t.user_id, at(0)).unwrap().status,
            TokenStatus::Done
        );
    }

    #[test]
    fn a_finished_token_is_refused_as_used() {
        let t = token(TokenStatus::Done);
        let err = t.finish(t.user_id, at(0)).unwrap_err();
        assert!(matches!(err, Refusal::TokenUsed));
        assert_eq!(err.code(), "TOKEN_USED");
    }

    #[test]
    fn an_expired_token_is_refused_with_401() {
        let t = token(TokenStatus::Active);
        let err = t.ensure_usable(t.user_id, at(600)).unwrap_err();
        assert!(matches!(err, Refusal::TokenExpired));
        assert_eq!(err.code(), "TOKEN_EXPIRED");
        let t = token(TokenStatus::Expired);
        assert!(matches!(
            t.ensure_usable(t.user_id, at(0)),
            Err(Refusal::TokenExpired)
        ));
    }

    #[test]
    fn a_token_of_another_user_is_invalid() {
        let t = token(TokenStatus::Active);
        assert!(matches!(
            t.ensure_usable(UserId::random(), at(0)),
            Err(Refusal::InvalidToken(_))
        ));
    }

    #[test]
    fn status_names_round_trip() {
        for s in [TokenStatus::Active, TokenStatus::Done, TokenStatus::Expired] {
            assert_eq!(TokenStatus::parse(s.name()).unwrap(), s);
        }
        assert!(TokenStatus::parse("LOST").is_none());
    }
}
