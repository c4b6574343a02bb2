//! Bearer tokens: `<prefix><id>_<secret>`. The id finds the stored record; the secret is
//! stored only as SHA-256 and compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{now_ms, random_id, random_secret};
use crate::store::records::{CredentialKind, CredentialRecord, Scope};

/// Which kind of token a string claims to be, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    ApiKey,
    ClientKey,
    AdminToken,
    Device,
}

impl TokenKind {
    const fn prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "wak_",
            Self::ClientKey => "wck_",
            Self::AdminToken => "wat_",
            Self::Device => "wdt_",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "key",
            Self::ClientKey => "ck",
            Self::AdminToken => "at",
            Self::Device => "dev",
        }
    }

    #[must_use]
    pub fn credential_kind(self) -> Option<CredentialKind> {
        match self {
            Self::ApiKey => Some(CredentialKind::ApiKey),
            Self::ClientKey => Some(CredentialKind::ClientKey),
            Self::AdminToken => Some(CredentialKind::AdminToken),
            Self::Device => None,
        }
    }
}

/// Hex SHA-256 of a secret.
#[must_use]
pub fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex of `bytes`, by table: every API request hex-encodes its key's hash, and
/// `write!` per byte cost as much as the hash.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Compares a presented secret with a stored hash in constant time.
#[must_use]
pub fn verify_secret(presented: &str, stored_sha256: &str) -> bool {
    let computed = sha256_hex(presented);
    computed.as_bytes().ct_eq(stored_sha256.as_bytes()).into()
}

/// Splits a token into its kind, id and secret; `None` if it has no known shape.
#[must_use]
pub fn parse_token(token: &str) -> Option<(TokenKind, &str, &str)> {
    if token.len() > 200 {
        return None;
    }
    for kind in [
        TokenKind::ApiKey,
        TokenKind::ClientKey,
        TokenKind::AdminToken,
        TokenKind::Device,
    ] {
        if let Some(rest) = token.strip_prefix(kind.prefix()) {
            let (id, secret) = rest.rsplit_once('_')?;
            let id_ok = id
                .strip_prefix(kind.id_prefix())
                .and_then(|r| r.strip_prefix('_'))
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !id_ok || secret.is_empty() {
                return None;
            }
            return Some((kind, id, secret));
        }
    }
    None
}

/// Creates a new credential: the record to store and the token to show once.
#[must_use]
pub fn mint_credential(
    kind: TokenKind,
    app: Option<&str>,
    name: &str,
    scopes: Vec<Scope>,
) -> (CredentialRecord, String) {
    let id = random_id(kind.id_prefix());
    let secret = random_secret();
    let token = format!("{}{id}_{secret}", kind.prefix());
    let record = CredentialRecord {
        id,
        kind: kind.credential_kind().unwrap_or(CredentialKind::ApiKey),
        app: app.map(str::to_owned),
        name: name.to_owned(),
        scopes,
        secret_sha256: sha256_hex(&secret),
        created_at_ms: now_ms(),
    };
    (record, token)
}

/// A new device id, its token, and the hash to store.
#[must_use]
pub fn mint_device_token() -> (String, String, String) {
    let id = random_id(TokenKind::Device.id_prefix());
    let secret = random_secret();
    let token = format!("{}{id}_{secret}", TokenKind::Device.prefix());
    (id, token, sha256_hex(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_matches_the_published_vectors() {
        // FIPS 180-2 test vectors; stored credential hashes depend on this exact form.
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn minted_tokens_parse_back_and_verify() {
        let (rec, token) = mint_credential(TokenKind::ApiKey, Some("demo"), "k", vec![Scope::Push]);
        let (kind, id, secret) = parse_token(&token).unwrap();
        assert_eq!(kind, TokenKind::ApiKey);
        assert_eq!(id, rec.id);
        assert!(verify_secret(secret, &rec.secret_sha256));
        assert!(!verify_secret("other", &rec.secret_sha256));

        let (dev, token, hash) = mint_device_token();
        let (kind, id, secret) = parse_token(&token).unwrap();
        assert_eq!((kind, id), (TokenKind::Device, dev.as_str()));
        assert!(verify_secret(secret, &hash));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for bad in [
            "",
            "wak_",
            "wak_key_",
            "wak_nokey_abc",
            "xyz_key_a_b",
            "wak_key_a!_s",
            &"a".repeat(300),
        ] {
            assert!(parse_token(bad).is_none(), "{bad:?}");
        }
    }
}
