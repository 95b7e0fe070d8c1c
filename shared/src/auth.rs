//! Queue tokens as JWTs (HS256). The JWT proves who the caller is and which queue
//! token admitted them; whether that token is still ACTIVE is the table's word.

use crate::config::ConfigError;
use crate::domain::{Refusal, TokenId, UserId};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The variable that stands for the queue tokens' HS256 key (see
/// `config::secret`): read by the reservation and payment functions.
pub const JWT_SECRET: &str = "JWT_SECRET";

/// HS256 keys shorter than the hash are weak (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
struct QueueClaims {
    sub: String,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Who is calling, and with which queue token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub user_id: UserId,
    pub token_id: TokenId,
}

pub struct JwtKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(<redacted>)")
    }
}

impl JwtKey {
    pub fn from_secret(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::invalid(
                JWT_SECRET,
                format!(
                    "the key must be at least {MIN_SECRET_BYTES} bytes, got {}",
                    secret.len()
                ),
            ));
        }
        Ok(JwtKey {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    pub fn issue(
        &self,
        admission: Admission,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<String, ConfigError> {
        let claims = QueueClaims {
            sub: admission.user_id.to_string(),
            jti: admission.token_id.to_string(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ConfigError::setup(format!("sign a queue token with {JWT_SECRET}"), e))
    }

    /// Checks signature, algorithm and expiry (against `now`, from the clock port).
    pub fn verify(&self, jwt: &str, now: DateTime<Utc>) -> Result<Admission, Refusal> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the injected clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["sub", "exp", "jti"]);
        let data = jsonwebtoken::decode::<QueueClaims>(jwt, &self.decoding, &validation)
            .map_err(|e| Refusal::InvalidToken(e.to_string()))?;
        if now.timestamp() >= data.claims.exp {
            return Err(Refusal::TokenExpired);
        }
        let user_id = UserId::parse(&data.claims.sub)
            .map_err(|_| Refusal::InvalidToken("its subject is not a user id".into()))?;
        let token_id = TokenId::parse(&data.claims.jti)
            .map_err(|_| Refusal::InvalidToken("its jti is not a token id".into()))?;
        Ok(Admission { user_id, token_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn admission() -> Admission {
        Admission {
            user_id: UserId::random(),
            token_id: TokenId::random(),
        }
    }

    #[test]
    fn an_issued_token_verifies_to_its_user_and_token_ids() {
        let key = JwtKey::from_secret(SECRET).unwrap();
        let a = admission();
        let jwt = key.issue(a, now(), now() + Duration::hours(1)).unwrap();
        assert_eq!(key.verify(&jwt, now()).unwrap(), a);
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let key = JwtKey::from_secret(SECRET).unwrap();
        let jwt = key
            .issue(admission(), now(), now() + Duration::seconds(10))
            .unwrap();
        assert!(matches!(
            key.verify(&jwt, now() + Duration::seconds(10)),
            Err(Refusal::TokenExpired)
        ));
    }

    #[test]
    fn a_token_signed_with_another_key_is_invalid() {
        let other = JwtKey::from_secret(b"another-secret-another-secret-1234").unwrap();
        let jwt = other
            .issue(admission(), now(), now() + Duration::hours(1))
            .unwrap();
        let key = JwtKey::from_secret(SECRET).unwrap();
        let err = key.verify(&jwt, now()).unwrap_err();
        assert!(matches!(err, Refusal::InvalidToken(_)), "{err}");
    }

    #[test]
    fn garbage_is_an_invalid_token() {
        let key = JwtKey::from_secret(SECRET).unwrap();
        assert!(matches!(
            key.verify("not.a.jwt", now()),
            Err(Refusal::InvalidToken(_))
        ));
    }

    #[test]
    fn a_short_secret_is_a_configuration_error() {
        assert!(matches!(
            JwtKey::from_secret(b"short"),
            Err(ConfigError::Invalid { .. })
        ));
    }
}
