//! Renewal of the bootstrapped server certificate (`tls.mode = "auto"`): it is re-issued
//! under the same CA, with a new key, when it is within [`RENEW_BEFORE`] of expiry or when
//! its names no longer equal `localhost`, `127.0.0.1`, `::1` plus `server.hostnames`.
//! Checked at start and every [`CHECK_EVERY`] while serving; a renewed certificate is
//! published on the same `watch` channel as a `files`-mode swap, so new connections get it
//! and open ones keep theirs. Never used in `files` mode.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::SanType;
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x509_parser::extensions::GeneralName;

use super::bootstrap::{
    issue_leaf, load_ca, remove_if_exists, subject_alt_names, write_file, CERT_MODE, KEY_MODE,
};
use super::config::{load_certs, TlsError};
use super::TlsPaths;
use crate::metrics::{Metrics, ReasonLabel};

/// A leaf that expires sooner than this is re-issued.
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// How often a running server checks its leaf.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Why a leaf was re-issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewReason {
    /// Within [`RENEW_BEFORE`] of its `notAfter` (or past it).
    Expiry,
    /// Its subject alternative names differ from the configured ones.
    Hostnames,
}

impl RenewReason {
    /// The metric label and log word.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Expiry => "expiry",
            Self::Hostnames => "hostnames",
        }
    }
}

/// A name a certificate is valid for, compared as a set (DNS names lower-case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum CertName {
    Dns(String),
    Ip(IpAddr),
}

/// The expiry and names of the first certificate in `path`.
fn read_leaf(path: &Path) -> Result<(OffsetDateTime, BTreeSet<CertName>), TlsError> {
    let bad = |message: String| TlsError::ParseCertificate {
        path: path.to_path_buf(),
        message,
    };
    let certs = load_certs(path)?;
    let first = certs.first().ok_or_else(|| TlsError::NoCertificate {
        path: path.to_path_buf(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| bad(e.to_string()))?;
    let not_after = cert.validity().not_after.to_datetime();
    let mut names = BTreeSet::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    names.insert(CertName::Dns(dns.to_ascii_lowercase()));
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(CertName::Ip));
                }
                _ => {}
            }
        }
    }
    Ok((not_after, names))
}

fn wanted_names(sans: &[SanType]) -> BTreeSet<CertName> {
    sans.iter()
        .filter_map(|san| match san {
            SanType::DnsName(n) => Some(CertName::Dns(n.as_str().to_ascii_lowercase())),
            SanType::IpAddress(ip) => Some(CertName::Ip(*ip)),
            _ => None,
        })
        .collect()
}

/// Why the leaf in `tls_dir` must be re-issued at `now`, if it must.
///
/// # Errors
/// When the certificate cannot be read or parsed, or a hostname is not valid.
pub fn renewal_due(
    tls_dir: &Path,
    hostnames: &[String],
    now: OffsetDateTime,
) -> Result<Option<RenewReason>, TlsError> {
    let paths = TlsPaths::in_dir(tls_dir);
    let wanted = wanted_names(&subject_alt_names(hostnames, &paths.server_cert)?);
    let (not_after, names) = read_leaf(&paths.server_cert)?;
    Ok(if names != wanted {
        Some(RenewReason::Hostnames)
    } else if not_after - now < RENEW_BEFORE {
        Some(RenewReason::Expiry)
    } else {
        None
    })
}

/// Re-issues the leaf in `tls_dir` when [`renewal_due`] says so: same CA, a new key.
/// The certificate is removed first, then the key and the certificate are each written
/// atomically (key 0600): an interrupted renewal leaves no certificate, and the next start
/// issues one. Logs at INFO what was renewed and why.
///
/// # Errors
/// When the leaf or the CA cannot be read, or the new files cannot be written.
pub fn renew_if_due(tls_dir: &Path, hostnames: &[String]) -> Result<Option<RenewReason>, TlsError> {
    let Some(reason) = renewal_due(tls_dir, hostnames, OffsetDateTime::now_utc())? else {
        return Ok(None);
    };
    let paths = TlsPaths::in_dir(tls_dir);
    let (old_not_after, _) = read_leaf(&paths.server_cert)?;
    let issuer = load_ca(&paths)?;
    let leaf = issue_leaf(
        &paths,
        &issuer,
        subject_alt_names(hostnames, &paths.server_cert)?,
    )?;
    remove_if_exists(&paths.server_cert)?;
    write_file(&paths.server_key, leaf.key_pem.as_bytes(), KEY_MODE)?;
    write_file(&paths.server_cert, leaf.cert_pem.as_bytes(), CERT_MODE)?;
    tracing::info!(
        reason = reason.label(),
        cert = %paths.server_cert.display(),
        old_not_after = %old_not_after,
        hostnames = ?hostnames,
        "renewed the TLS server certificate (same CA, new key)"
    );
    Ok(Some(reason))
}

/// [`renew_if_due`], then the renewed pair loaded for serving.
fn renew_and_load(
    tls_dir: &Path,
    hostnames: &[String],
) -> Result<Option<(RenewReason, Arc<rustls::ServerConfig>)>, TlsError> {
    let Some(reason) = renew_if_due(tls_dir, hostnames)? else {
        return Ok(None);
    };
    let paths = TlsPaths::in_dir(tls_dir);
    let config = super::server_config(&paths.server_cert, &paths.server_key)?;
    Ok(Some((reason, config)))
}

/// Counts one renewal in `warbler_tls_renewals_total{reason}`.
pub fn count_renewal(metrics: &Metrics, reason: &'static str) {
    metrics
        .tls_renewals
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// Checks the leaf every `every` until shutdown; a renewed one is published on `tx`.
pub async fn renew_periodically(
    tls_dir: PathBuf,
    hostnames: Vec<String>,
    every: std::time::Duration,
    tx: watch::Sender<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let (dir, names) = (tls_dir.clone(), hostnames.clone());
        match tokio::task::spawn_blocking(move || renew_and_load(&dir, &names)).await {
            Ok(Ok(Some((reason, config)))) => {
                tx.send_replace(config);
                count_renewal(&metrics, reason.label());
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                count_renewal(&metrics, "error");
                tracing::error!(error = %e, "TLS certificate renewal failed; the running certificate stays");
            }
            Err(e) => {
                count_renewal(&metrics, "error");
                tracing::error!(error = %e, "TLS certificate renewal task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ensure_bootstrap;
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    /// Replaces the leaf with one valid for `days`, signed by the data dir's CA.
    fn write_short_leaf(tls_dir: &Path, days: i64) {
        let paths = TlsPaths::in_dir(tls_dir);
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&paths.ca_key).expect("ca key"))
            .expect("key");
        let mut ca = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Warbler local CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names(&["localhost", "127.0.0.1", "::1"])).expect("params");
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        std::fs::write(&paths.server_cert, cert.pem()).expect("cert");
        std::fs::write(&paths.server_key, key.serialize_pem()).expect("key");
    }

    #[test]
    fn a_fresh_leaf_with_the_configured_names_is_not_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = names(&["push.example", "10.0.0.7"]);
        ensure_bootstrap(dir.path(), &hosts).expect("bootstrap");
        let due = renewal_due(dir.path(), &hosts, OffsetDateTime::now_utc()).expect("check");
        assert_eq!(due, None);
        // Case and duplicates do not matter.
        let same = names(&["PUSH.example", "10.0.0.7", "localhost"]);
        let due = renewal_due(dir.path(), &same, OffsetDateTime::now_utc()).expect("check");
        assert_eq!(due, None);
    }

    #[test]
    fn added_or_removed_hostnames_make_it_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &names(&["a.example"])).expect("bootstrap");
        let now = OffsetDateTime::now_utc();
        let added = names(&["a.example", "b.example"]);
        assert_eq!(
            renewal_due(dir.path(), &added, now).expect("check"),
            Some(RenewReason::Hostnames)
        );
        assert_eq!(
            renewal_due(dir.path(), &[], now).expect("check"),
            Some(RenewReason::Hostnames)
        );
    }

    #[test]
    fn the_window_before_expiry_makes_it_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("bootstrap");
        let now = OffsetDateTime::now_utc();
        assert_eq!(renewal_due(dir.path(), &[], now).expect("check"), None);
        let later = now + Duration::days(super::super::bootstrap::LEAF_VALIDITY_DAYS)
            - RENEW_BEFORE
            + Duration::days(1);
        assert_eq!(
            renewal_due(dir.path(), &[], later).expect("check"),
            Some(RenewReason::Expiry)
        );
    }

    #[test]
    fn renewing_keeps_the_ca_changes_the_key_and_writes_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("bootstrap");
        write_short_leaf(dir.path(), 1);
        let paths = TlsPaths::in_dir(dir.path());
        let ca_before = std::fs::read(&paths.ca_cert).expect("ca");
        let key_before = std::fs::read(&paths.server_key).expect("key");

        let reason = renew_if_due(dir.path(), &[]).expect("renew");
        assert_eq!(reason, Some(RenewReason::Expiry));
        assert_eq!(std::fs::read(&paths.ca_cert).expect("ca"), ca_before);
        assert_ne!(std::fs::read(&paths.server_key).expect("key"), key_before);
        let mode = std::fs::metadata(&paths.server_key)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        crate::tls::server_config(&paths.server_cert, &paths.server_key).expect("pair matches");
        assert_eq!(renew_if_due(dir.path(), &[]).expect("again"), None);
    }

    #[tokio::test]
    async fn the_periodic_check_publishes_a_renewed_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("bootstrap");
        let paths = TlsPaths::in_dir(dir.path());
        let first = crate::tls::server_config(&paths.server_cert, &paths.server_key).expect("tls");
        let (tx, mut rx) = watch::channel(first);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(renew_periodically(
            dir.path().to_path_buf(),
            names(&["new.example"]),
            std::time::Duration::from_millis(50),
            tx,
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
            .await
            .expect("renewed within the first check")
            .expect("a renewed certificate is published");
        assert!(metrics
            .render()
            .contains("warbler_tls_renewals_total{reason=\"hostnames\"} 1"));
        shutdown.cancel();
        task.await.expect("task");
    }
}
