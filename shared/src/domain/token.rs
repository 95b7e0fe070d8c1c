use super::Refusal;
use super::{ConcertId, ReservationId, TokenId, UserId};
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
/// row says whether the queue still admits them, to which concert, and which
/// hold the token has made (one at a time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueToken {
    pub id: TokenId,
    pub user_id: UserId,
    /// The concert whose queue admitted the caller: the only one it holds seats
    /// of. `None` on a token issued before tokens named their concert: it holds
    /// nothing (its holder enters the queue again).
    pub concert_id: Option<ConcertId>,
    pub status: TokenStatus,
    pub expires_at: DateTime<Utc>,
    /// The last hold made with the token; it blocks another until it ends.
    pub hold: Option<TokenHold>,
}

/// A hold made with a queue token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHold {
    pub reservation: ReservationId,
    pub until: DateTime<Utc>,
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

    /// Whether `caller` may hold a seat of `concert` with this token at `now`:
    /// a usable token of that concert with no unexpired hold.
    pub fn ensure_can_hold(
        &self,
        caller: UserId,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        self.ensure_usable(caller, now)?;
        match self.concert_id {
            None => {
                return Err(Refusal::InvalidToken(
                    "it names no concert (it was issued before tokens carried one); enter the concert's queue again".into(),
                ));
            }
            Some(admits) if admits != concert => {
                return Err(Refusal::TokenForAnotherConcert {
                    admits,
                    asked: concert,
                });
            }
            Some(_) => {}
        }
        match self.hold {
            Some(hold) if hold.until > now => Err(Refusal::HoldLimit {
                reservation: hold.reservation,
                until: hold.until,
            }),
            _ => Ok(()),
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
            concert_id: Some(ConcertId::random()),
            status,
            expires_at: at(600),
            hold: None,
        }
    }

    #[test]
    fn a_token_holds_one_seat_of_its_own_concert_at_a_time() {
        let mut t = token(TokenStatus::Active);
        assert_eq!(
            t.ensure_can_hold(t.user_id, t.concert_id.unwrap(), at(0)),
            Ok(())
        );
        let hold = TokenHold {
            reservation: ReservationId::random(),
            until: at(300),
        };
        t.hold = Some(hold);
        let refused = t
            .ensure_can_hold(t.user_id, t.concert_id.unwrap(), at(10))
            .unwrap_err();
        assert_eq!(
            refused,
            Refusal::HoldLimit {
                reservation: hold.reservation,
                until: hold.until
            }
        );
        assert_eq!(refused.code(), "HOLD_LIMIT");
        // Once the hold has ended, the token may hold again.
        assert_eq!(
            t.ensure_can_hold(t.user_id, t.concert_id.unwrap(), at(300)),
            Ok(())
        );
    }

    #[test]
    fn a_token_that_names_no_concert_holds_nothing() {
        let t = QueueToken {
            concert_id: None,
            ..token(TokenStatus::Active)
        };
        let refused = t
            .ensure_can_hold(t.user_id, ConcertId::random(), at(0))
            .unwrap_err();
        assert!(matches!(refused, Refusal::InvalidToken(_)), "{refused}");
        assert!(refused.to_string().contains("queue again"), "{refused}");
    }

    #[test]
    fn a_token_of_another_concert_is_refused_naming_both() {
        let t = token(TokenStatus::Active);
        let other = ConcertId::random();
        let refused = t.ensure_can_hold(t.user_id, other, at(0)).unwrap_err();
        assert_eq!(
            refused,
            Refusal::TokenForAnotherConcert {
                admits: t.concert_id.unwrap(),
                asked: other
            }
        );
        assert!(refused.to_string().contains(&other.to_string()));
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
