//! User tokens: HS256 JWTs signed with the app's signing secret, binding a device to a
//! user and topics. The signature is verified before any claim is read; only HS256 is
//! allowed, `exp` is required.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The claims Warbler reads from a verified user token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct UserClaims {
    pub sub: String,
    #[serde(default)]
    pub topics: Vec<String>,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserTokenError {
    #[error("user_token has expired")]
    Expired,
    #[error("user_token is invalid: {0}")]
    Invalid(String),
}

/// Verifies a user token against the app's signing secret.
///
/// # Errors
/// `Expired` past `exp`; `Invalid` for a bad signature, another algorithm (`none`
/// included), missing claims or an oversized token.
pub fn verify_user_token(token: &str, secret: &str) -> Result<UserClaims, UserTokenError> {
    if token.len() > 4096 {
        return Err(UserTokenError::Invalid("longer than 4096 bytes".into()));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 5;
    let data = decode::<UserClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => UserTokenError::Expired,
        _ => UserTokenError::Invalid(e.to_string()),
    })?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn sign(alg: Algorithm, secret: &str, claims: &serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp_in(secs: i64) -> i64 {
        i64::try_from(crate::domain::now_ms() / 1000).unwrap() + secs
    }

    #[test]
    fn valid_tokens_yield_user_and_topics() {
        let t = sign(
            Algorithm::HS256,
            "s3cret",
            &serde_json::json!({"sub":"alice","topics":["news"],"exp":exp_in(60)}),
        );
        let c = verify_user_token(&t, "s3cret").unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.topics, vec!["news".to_string()]);
    }

    #[test]
    fn forged_expired_and_foreign_algorithms_are_refused() {
        let claims = serde_json::json!({"sub":"alice","exp":exp_in(60)});
        let forged = sign(Algorithm::HS256, "other", &claims);
        assert!(matches!(
            verify_user_token(&forged, "s3cret"),
            Err(UserTokenError::Invalid(_))
        ));
        let hs512 = sign(Algorithm::HS512, "s3cret", &claims);
        assert!(verify_user_token(&hs512, "s3cret").is_err());
        let expired = sign(
            Algorithm::HS256,
            "s3cret",
            &serde_json::json!({"sub":"a","exp":exp_in(-3600)}),
        );
        assert_eq!(
            verify_user_token(&expired, "s3cret"),
            Err(UserTokenError::Expired)
        );
        let no_exp = sign(Algorithm::HS256, "s3cret", &serde_json::json!({"sub":"a"}));
        assert!(verify_user_token(&no_exp, "s3cret").is_err());
        // alg: none, unsigned.
        use base64_like::b64;
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        assert!(verify_user_token(&none, "s3cret").is_err());
    }

    mod base64_like {
        /// Unpadded base64url, enough to build an unsigned token by hand in a test.
        pub fn b64(input: &[u8]) -> String {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
                let chars = chunk.len() + 1;
                for i in 0..chars {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            out
        }
    }
}
