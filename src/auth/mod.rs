//! Authentication material: secrets and their hashes, credential tokens (API keys, client
//! keys, admin tokens, device tokens), console passwords and HS256 user tokens.

mod password;
mod tokens;
mod user_token;

pub use password::{hash_password, verify_password};
pub use tokens::{
    hex, mint_credential, mint_device_token, parse_token, sha256_hex, verify_secret, TokenKind,
};
pub use user_token::{verify_user_token, UserClaims, UserTokenError};
