//! Identifier generation and validation: random ids, secrets, app names, user aliases.

use rand::Rng;

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const BASE62: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Why an identifier was refused; the message is safe to show to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct IdError(pub String);

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A random id `prefix_` + 20 lowercase alphanumerics (~103 bits).
#[must_use]
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_from(LOWER_ALNUM, 20))
}

/// A time-ordered id: `prefix_` + 9 characters of the creation time in milliseconds (base 32,
/// in an alphabet that sorts like the numbers) + 11 random lowercase alphanumerics (~56 bits).
/// Ids made later sort later, so new rows land at the end of the store's B-trees instead of
/// dirtying a random page each.
#[must_use]
pub fn time_ordered_id(prefix: &str) -> String {
    const SORTED32: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let ms = super::now_ms();
    let mut out = String::with_capacity(prefix.len() + 21);
    out.push_str(prefix);
    out.push('_');
    for i in (0..9).rev() {
        let digit = (ms >> (i * 5)) & 31;
        out.push(char::from(SORTED32[usize::try_from(digit).unwrap_or(0)]));
    }
    out.push_str(&random_from(LOWER_ALNUM, 11));
    out
}

/// A random secret of 32 base62 characters (~190 bits), never containing `_`.
#[must_use]
pub fn random_secret() -> String {
    random_from(BASE62, 32)
}

/// App names are also their ids: 1–32 of `a-z 0-9 -`, starting with a letter or digit.
///
/// # Errors
/// When the name breaks that rule.
pub fn validate_app_name(name: &str) -> Result<(), IdError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdError(
            "app name must be 1-32 characters of a-z, 0-9 and '-', not starting with '-'".into(),
        ))
    }
}

fn validate_prefixed(value: &str, prefix: &str, what: &str) -> Result<(), IdError> {
    let ok = value.len() <= 64
        && value.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(IdError(format!("{what} must look like {prefix}…")))
    }
}

/// Device ids look like `dev_` + alphanumerics, at most 64 bytes.
///
/// # Errors
/// When the id has another shape.
pub fn validate_device_id(id: &str) -> Result<(), IdError> {
    validate_prefixed(id, "dev_", "device id")
}

/// Message ids look like `msg_` + alphanumerics, at most 64 bytes.
///
/// # Errors
/// When the id has another shape.
pub fn validate_message_id(id: &str) -> Result<(), IdError> {
    validate_prefixed(id, "msg_", "message id")
}

/// A user alias (the app's own user id): 1–128 bytes, no control characters.
///
/// # Errors
/// When the alias is empty, too long or holds control characters.
pub fn validate_user(user: &str) -> Result<(), IdError> {
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(IdError(
            "user must be 1-128 bytes with no control characters".into(),
        ));
    }
    Ok(())
}

/// A topic name: 1–64 of `A-Z a-z 0-9 - _ .` (so the reserved `$all` cannot be named).
///
/// # Errors
/// When the name breaks that rule.
pub fn validate_topic(topic: &str) -> Result<(), IdError> {
    let ok = !topic.is_empty()
        && topic.len() <= 64
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdError(format!(
            "{topic:?} is not a topic name (1-64 of A-Z a-z 0-9 - _ .)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_prefix_and_fixed_length() {
        let id = random_id("dev");
        assert!(id.starts_with("dev_"));
        assert_eq!(id.len(), 24);
        assert!(validate_device_id(&id).is_ok());
        assert_ne!(random_id("dev"), random_id("dev"));
        assert!(!random_secret().contains('_'));
    }

    #[test]
    fn time_ordered_ids_sort_by_creation_time() {
        let a = time_ordered_id("msg");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = time_ordered_id("msg");
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.len(), 24);
        assert!(validate_message_id(&a).is_ok());
    }

    #[test]
    fn app_names_are_slugs() {
        assert!(validate_app_name("shop-2").is_ok());
        for bad in ["", "-x", "Shop", "a_b", "a b", &"x".repeat(33)] {
            assert!(validate_app_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn device_and_user_ids_are_bounded() {
        assert!(validate_device_id("dev_").is_err());
        assert!(validate_device_id("msg_abc").is_err());
        assert!(validate_device_id("dev_a/b").is_err());
        assert!(validate_user("alice").is_ok());
        assert!(validate_user("a\nb").is_err());
        assert!(validate_user(&"a".repeat(129)).is_err());
    }
}
