//! Console sessions, kept in memory: a random 256-bit id in an HttpOnly, Secure,
//! SameSite=Strict cookie; only its SHA-256 is kept here, with the login, a CSRF token and
//! two expiries (idle and absolute). A restart logs every console user out. The user's role
//! and apps are read from the store on every request, so a change applies at once.

use crate::auth::hex;
use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::rate_limit::Throttle;

/// The session cookie. `__Host-` makes browsers insist on Secure, `Path=/` and no Domain.
pub const COOKIE: &str = "__Host-warbler_session";
/// A session unused this long ends.
pub const IDLE_MS: u64 = 2 * 3600 * 1000;
/// A session ends this long after login, used or not (the cookie's Max-Age too).
pub const ABSOLUTE_MS: u64 = 12 * 3600 * 1000;
/// Most live sessions; past it the oldest go.
pub const MAX_SESSIONS: usize = 10_000;
/// Most live sessions of one user; past it, that user's oldest goes.
pub const MAX_SESSIONS_PER_USER: usize = 32;
/// Failed logins (or password changes) one login name may have per minute.
pub const LOGIN_FAILURES_PER_USER: u32 = 10;

/// One console session.
#[derive(Debug, Clone)]
pub struct Session {
    pub login: String,
    pub csrf: String,
    pub created_ms: u64,
    pub last_ms: u64,
}

/// The SHA-256 of a session id: what the map is keyed by.
pub type SessionKey = [u8; 32];

/// All live sessions, and the per-login-name throttle on failed logins. The std mutex is
/// held only for one map operation.
#[derive(Default)]
pub struct ConsoleSessions {
    sessions: Mutex<HashMap<SessionKey, Session>>,
    pub login_failures: Throttle<String>,
}

/// The key a cookie value is stored under.
#[must_use]
pub fn key_of(cookie_value: &str) -> SessionKey {
    Sha256::digest(cookie_value.as_bytes()).into()
}

impl ConsoleSessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session; returns the cookie value and the CSRF token.
    pub fn create(&self, login: &str, now_ms: u64) -> (String, String) {
        let id = hex(&rand::random::<[u8; 32]>());
        let csrf = hex(&rand::random::<[u8; 32]>());
        let mut map = self.map();
        let mine: Vec<(SessionKey, u64)> = map
            .iter()
            .filter(|(_, s)| s.login == login)
            .map(|(k, s)| (*k, s.last_ms))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_USER {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, last)| *last) {
                map.remove(oldest);
            }
        }
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| live(s, now_ms));
            while map.len() >= MAX_SESSIONS {
                let oldest = map.iter().min_by_key(|(_, s)| s.last_ms).map(|(k, _)| *k);
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
        }
        map.insert(
            key_of(&id),
            Session {
                login: login.to_owned(),
                csrf: csrf.clone(),
                created_ms: now_ms,
                last_ms: now_ms,
            },
        );
        (id, csrf)
    }

    /// The live session of a cookie value, marked used now; an expired one is removed.
    pub fn touch(&self, key: &SessionKey, now_ms: u64) -> Option<Session> {
        let mut map = self.map();
        let session = map.get_mut(key)?;
        if !live(session, now_ms) {
            map.remove(key);
            return None;
        }
        session.last_ms = now_ms;
        Some(session.clone())
    }

    /// Ends one session.
    pub fn remove(&self, key: &SessionKey) {
        self.map().remove(key);
    }

    /// Ends every session of a login, except `keep`.
    pub fn remove_user(&self, login: &str, keep: Option<&SessionKey>) {
        self.map()
            .retain(|k, s| s.login != login || Some(k) == keep);
    }
}

fn live(s: &Session, now_ms: u64) -> bool {
    now_ms.saturating_sub(s.last_ms) < IDLE_MS && now_ms.saturating_sub(s.created_ms) < ABSOLUTE_MS
}

/// The `Set-Cookie` value that starts a session.
#[must_use]
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        ABSOLUTE_MS / 1000
    )
}

/// The `Set-Cookie` value that ends it in the browser.
#[must_use]
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session cookie's value among the request's `Cookie` headers.
#[must_use]
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_or_too_old_and_with_its_user() {
        let s = ConsoleSessions::default();
        let (id, csrf) = s.create("alice", 1_000);
        assert_eq!(csrf.len(), 64);
        let key = key_of(&id);
        assert!(s.touch(&key, 1_000 + IDLE_MS - 1).is_some());
        assert!(
            s.touch(&key, 1_000 + 2 * IDLE_MS).is_none(),
            "idle too long"
        );
        let (id2, _) = s.create("alice", 0);
        let mut t = 0;
        while t + IDLE_MS / 2 < ABSOLUTE_MS {
            t += IDLE_MS / 2;
            assert!(s.touch(&key_of(&id2), t).is_some());
        }
        assert!(
            s.touch(&key_of(&id2), ABSOLUTE_MS).is_none(),
            "absolute expiry"
        );
        let (a, _) = s.create("bob", 0);
        let (b, _) = s.create("bob", 0);
        s.remove_user("bob", Some(&key_of(&a)));
        assert!(s.touch(&key_of(&a), 1).is_some());
        assert!(s.touch(&key_of(&b), 1).is_none());
        let first = s.create("carol", 0).0;
        for i in 1..=MAX_SESSIONS_PER_USER as u64 {
            s.create("carol", i);
        }
        assert!(
            s.touch(&key_of(&first), 100).is_none(),
            "the oldest of too many went"
        );
        assert!(
            s.touch(&key_of(&a), 100).is_some(),
            "other users keep theirs"
        );
    }
}
