//! Local CA and server certificate bootstrap: creates, loads and persists `ca.*` and `server.*` in the TLS directory.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use super::config::{load_certs, read_file, verifier_trusting, TlsError};
use crate::fsutil::{ensure_private_dir, write_atomic};

/// Subject common name of the generated CA. The CA's subject is rebuilt from
/// this when signing with an existing CA, so it must never change.
const CA_COMMON_NAME: &str = "Warbler local CA";
/// Subject common name of issued server certificates (clients match on SANs).
const LEAF_COMMON_NAME: &str = "Warbler server";
const CA_VALIDITY_DAYS: i64 = 3650;
/// The longest validity Apple platforms accept for TLS server certificates.
pub(super) const LEAF_VALIDITY_DAYS: i64 = 825;
/// Backdating of `notBefore` so peers with slightly slow clocks accept new certificates.
const CLOCK_SKEW: Duration = Duration::hours(1);
pub(super) const KEY_MODE: u32 = 0o600;
pub(super) const CERT_MODE: u32 = 0o644;
/// Names every server certificate covers, in addition to the configured hostnames.
const BUILTIN_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Locations of the CA and server PEM files inside a TLS directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsPaths {
    /// The standard file names (`ca.crt`, `ca.key`, `server.crt`, `server.key`) under `tls_dir`.
    #[must_use]
    pub fn in_dir(tls_dir: &Path) -> Self {
        Self {
            ca_cert: tls_dir.join("ca.crt"),
            ca_key: tls_dir.join("ca.key"),
            server_cert: tls_dir.join("server.crt"),
            server_key: tls_dir.join("server.key"),
        }
    }
}

/// What [`ensure_bootstrap`] had to create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootstrapOutcome {
    /// A new CA was generated; clients must be given the new `ca.crt`.
    pub created_ca: bool,
    /// A new server certificate and key were issued.
    pub created_leaf: bool,
}

/// Makes sure `tls_dir` holds a local CA and a server certificate signed by it.
///
/// A missing CA (both `ca.crt` and `ca.key` absent) is generated; if only one
/// of the two exists this fails rather than overwrite it. A missing server
/// certificate or key (or a freshly generated CA) leads to a new server
/// certificate covering `localhost`, `127.0.0.1`, `::1` and `hostnames`. Existing
/// complete files are left untouched.
pub fn ensure_bootstrap(
    tls_dir: &Path,
    hostnames: &[String],
) -> Result<BootstrapOutcome, TlsError> {
    // Validate configuration before touching the disk.
    let paths = TlsPaths::in_dir(tls_dir);
    let sans = subject_alt_names(hostnames, &paths.server_cert)?;

    ensure_private_dir(tls_dir).map_err(|source| TlsError::CreateDir {
        path: tls_dir.to_path_buf(),
        source,
    })?;
    warn_if_not_private(tls_dir);

    let need_ca = match (exists(&paths.ca_cert)?, exists(&paths.ca_key)?) {
        (true, true) => false,
        (false, false) => true,
        (true, false) => {
            return Err(TlsError::IncompleteCa {
                present: paths.ca_cert,
                missing: paths.ca_key,
            })
        }
        (false, true) => {
            return Err(TlsError::IncompleteCa {
                present: paths.ca_key,
                missing: paths.ca_cert,
            })
        }
    };
    let leaf_present = exists(&paths.server_cert)? && exists(&paths.server_key)?;
    if !need_ca && leaf_present {
        return Ok(BootstrapOutcome::default());
    }

    let issuer = if need_ca {
        // A leaf from an earlier CA must not survive an interrupted run.
        remove_if_exists(&paths.server_cert)?;
        create_ca(&paths)?
    } else {
        load_ca(&paths)?
    };
    let leaf = issue_leaf(&paths, &issuer, sans)?;

    // Remove the old certificate before writing the new pair: if this run is
    // interrupted, the missing certificate triggers a fresh issue on the next
    // start instead of leaving a certificate that does not match its key.
    remove_if_exists(&paths.server_cert)?;
    write_file(&paths.server_key, leaf.key_pem.as_bytes(), KEY_MODE)?;
    write_file(&paths.server_cert, leaf.cert_pem.as_bytes(), CERT_MODE)?;
    tracing::info!(
        cert = %paths.server_cert.display(),
        key = %paths.server_key.display(),
        "issued TLS server certificate"
    );

    Ok(BootstrapOutcome {
        created_ca: need_ca,
        created_leaf: true,
    })
}

/// A freshly issued, verified but not yet written server certificate and key.
pub(super) struct IssuedLeaf {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

/// The CA's certificate parameters. The subject DN is the part a signature
/// depends on, so this is also how an existing CA is reconstructed for signing.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Generates and writes a new CA, returning it ready to sign.
fn create_ca(paths: &TlsPaths) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| TlsError::Generate {
            path: paths.ca_key.clone(),
            source,
        })?;
    let mut params = ca_params();
    params.not_before = OffsetDateTime::now_utc() - CLOCK_SKEW;
    params.not_after = params.not_before + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            path: paths.ca_cert.clone(),
            source,
        })?;

    write_file(&paths.ca_key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_file(&paths.ca_cert, cert.pem().as_bytes(), CERT_MODE)?;
    tracing::info!(
        cert = %paths.ca_cert.display(),
        "created local TLS CA; clients must trust this certificate"
    );
    Ok(Issuer::new(params, key))
}

/// Loads the CA key from disk and pairs it with the reconstructed CA subject.
///
/// Whether the pair really matches `ca.crt` is checked by verifying the
/// issued leaf against it (see [`issue_leaf`]).
pub(super) fn load_ca(paths: &TlsPaths) -> Result<Issuer<'static, KeyPair>, TlsError> {
    load_certs(&paths.ca_cert)?;
    let pem = read_file(&paths.ca_key)?;
    let key =
        KeyPair::from_pem(&String::from_utf8_lossy(&pem)).map_err(|source| TlsError::CaKey {
            path: paths.ca_key.clone(),
            source,
        })?;
    Ok(Issuer::new(ca_params(), key))
}

/// Issues a server certificate for `sans` and checks it chains to `ca.crt`.
pub(super) fn issue_leaf(
    paths: &TlsPaths,
    issuer: &Issuer<'_, KeyPair>,
    sans: Vec<SanType>,
) -> Result<IssuedLeaf, TlsError> {
    let generate_err = |source| TlsError::Generate {
        path: paths.server_cert.clone(),
        source,
    };
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| TlsError::Generate {
            path: paths.server_key.clone(),
            source,
        })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(LEAF_COMMON_NAME);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = OffsetDateTime::now_utc() - CLOCK_SKEW;
    params.not_after = params.not_before + Duration::days(LEAF_VALIDITY_DAYS);
    let cert = params.signed_by(&key, issuer).map_err(generate_err)?;

    verify_leaf(paths, cert.der())?;
    Ok(IssuedLeaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Checks that `leaf` verifies as a server certificate against the CA file on disk.
fn verify_leaf(paths: &TlsPaths, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let verifier = verifier_trusting(&paths.ca_cert)?;
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map_err(|source| TlsError::ChainMismatch {
            cert: paths.server_cert.clone(),
            ca: paths.ca_cert.clone(),
            source,
        })?;
    Ok(())
}

/// Builtin names plus `hostnames`, as IP or DNS SANs, deduplicated.
///
/// Names may be wildcards (`*.example.com`); bracketed IPv6 literals are accepted.
pub(super) fn subject_alt_names(
    hostnames: &[String],
    server_cert: &Path,
) -> Result<Vec<SanType>, TlsError> {
    let mut sans: Vec<SanType> = Vec::new();
    let all = BUILTIN_NAMES
        .iter()
        .copied()
        .chain(hostnames.iter().map(String::as_str));
    for raw in all {
        let name = raw.trim();
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let san = if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else {
            let lower = name.to_ascii_lowercase();
            let checked = lower.strip_prefix("*.").unwrap_or(&lower);
            DnsName::try_from(checked).map_err(|source| TlsError::InvalidHostname {
                name: raw.to_string(),
                source,
            })?;
            let ia5 = lower.try_into().map_err(|source| TlsError::Generate {
                path: server_cert.to_path_buf(),
                source,
            })?;
            SanType::DnsName(ia5)
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A positive, non-zero 128-bit serial number from a CSPRNG.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn remove_if_exists(path: &Path) -> Result<(), TlsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TlsError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(super) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    write_atomic(path, contents, mode).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Private keys live in `tls_dir`; warn when others can list or enter it.
fn warn_if_not_private(tls_dir: &Path) {
    if let Ok(meta) = fs::metadata(tls_dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %tls_dir.display(),
                mode = format_args!("{mode:o}"),
                "TLS directory is accessible to other users; expected mode 700"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn names(hostnames: &[&str]) -> Vec<String> {
        hostnames.iter().map(ToString::to_string).collect()
    }

    fn snapshot(paths: &TlsPaths) -> [Vec<u8>; 4] {
        [
            fs::read(&paths.ca_cert).expect("ca.crt"),
            fs::read(&paths.ca_key).expect("ca.key"),
            fs::read(&paths.server_cert).expect("server.crt"),
            fs::read(&paths.server_key).expect("server.key"),
        ]
    }

    /// Verifies the server certificate on disk against `ca_pem` for `name`.
    fn verify_on_disk(
        ca_pem: &Path,
        server_cert: &Path,
        name: ServerName<'static>,
    ) -> Result<(), rustls::Error> {
        let verifier = verifier_trusting(ca_pem).expect("verifier");
        let leaf = load_certs(server_cert).expect("leaf");
        verifier
            .verify_server_cert(&leaf[0], &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_string()).expect("server name")
    }

    #[test]
    fn creates_four_files_with_private_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_dir = dir.path().join("state/tls");
        let outcome = ensure_bootstrap(&tls_dir, &[]).expect("bootstrap");
        assert_eq!(
            outcome,
            BootstrapOutcome {
                created_ca: true,
                created_leaf: true
            }
        );

        let paths = TlsPaths::in_dir(&tls_dir);
        assert_eq!(mode_of(&tls_dir), 0o700);
        assert_eq!(mode_of(&paths.ca_cert), 0o644);
        assert_eq!(mode_of(&paths.ca_key), 0o600);
        assert_eq!(mode_of(&paths.server_cert), 0o644);
        assert_eq!(mode_of(&paths.server_key), 0o600);

        let mut entries: Vec<String> = fs::read_dir(&tls_dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["ca.crt", "ca.key", "server.crt", "server.key"]);

        let ca = fs::read_to_string(&paths.ca_cert).expect("ca");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = fs::read_to_string(&paths.server_key).expect("key");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn second_call_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = names(&["push.corp.internal"]);
        ensure_bootstrap(dir.path(), &hosts).expect("first");
        let paths = TlsPaths::in_dir(dir.path());
        let before = snapshot(&paths);

        let outcome = ensure_bootstrap(dir.path(), &hosts).expect("second");
        assert_eq!(outcome, BootstrapOutcome::default());
        assert_eq!(snapshot(&paths), before);
    }

    #[test]
    fn missing_leaf_is_reissued_under_the_same_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("first");
        let paths = TlsPaths::in_dir(dir.path());
        let [ca_cert, ca_key, old_cert, old_key] = snapshot(&paths);

        fs::remove_file(&paths.server_cert).expect("rm cert");
        fs::remove_file(&paths.server_key).expect("rm key");
        let outcome = ensure_bootstrap(dir.path(), &[]).expect("reissue");
        assert_eq!(
            outcome,
            BootstrapOutcome {
                created_ca: false,
                created_leaf: true
            }
        );

        let [ca_cert2, ca_key2, new_cert, new_key] = snapshot(&paths);
        assert_eq!(ca_cert, ca_cert2);
        assert_eq!(ca_key, ca_key2);
        assert_ne!(old_cert, new_cert);
        assert_ne!(old_key, new_key);
        assert_eq!(mode_of(&paths.server_key), 0o600);
        verify_on_disk(&paths.ca_cert, &paths.server_cert, dns("localhost")).expect("chains to CA");
    }

    #[test]
    fn half_a_leaf_is_reissued() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("first");
        let paths = TlsPaths::in_dir(dir.path());
        fs::remove_file(&paths.server_key).expect("rm key");

        let outcome = ensure_bootstrap(dir.path(), &[]).expect("reissue");
        assert!(outcome.created_leaf && !outcome.created_ca);
        assert!(paths.server_key.exists());
        crate::tls::server_config(&paths.server_cert, &paths.server_key).expect("pair matches");
    }

    #[test]
    fn incomplete_ca_is_an_error_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = TlsPaths::in_dir(dir.path());
        fs::write(&paths.ca_cert, b"operator's cert").expect("write");

        let err = ensure_bootstrap(dir.path(), &[]).expect_err("half a CA");
        assert!(matches!(err, TlsError::IncompleteCa { .. }), "{err:?}");
        assert!(err.to_string().contains("ca.key"), "{err}");
        assert_eq!(fs::read(&paths.ca_cert).expect("read"), b"operator's cert");
        assert!(!paths.ca_key.exists());
        assert!(!paths.server_cert.exists());
        assert!(!paths.server_key.exists());

        fs::remove_file(&paths.ca_cert).expect("rm");
        fs::write(&paths.ca_key, b"operator's key").expect("write");
        let err = ensure_bootstrap(dir.path(), &[]).expect_err("other half");
        assert!(matches!(err, TlsError::IncompleteCa { .. }), "{err:?}");
        assert_eq!(fs::read(&paths.ca_key).expect("read"), b"operator's key");
        assert!(!paths.ca_cert.exists());
    }

    #[test]
    fn leaf_covers_builtin_and_configured_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = names(&[
            "Push.Corp.Internal",
            "10.1.2.3",
            "[fd00::7]",
            "*.push.example",
        ]);
        ensure_bootstrap(dir.path(), &hosts).expect("bootstrap");
        let paths = TlsPaths::in_dir(dir.path());
        let ok = |name: ServerName<'static>| {
            verify_on_disk(&paths.ca_cert, &paths.server_cert, name.clone())
                .unwrap_or_else(|e| panic!("{name:?} should be accepted: {e}"));
        };
        ok(dns("localhost"));
        ok(ServerName::IpAddress(
            IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
        ));
        ok(ServerName::IpAddress(
            IpAddr::V6(Ipv6Addr::LOCALHOST).into(),
        ));
        ok(dns("push.corp.internal"));
        ok(ServerName::IpAddress(
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)).into(),
        ));
        ok(ServerName::IpAddress(
            IpAddr::V6("fd00::7".parse::<Ipv6Addr>().expect("ipv6")).into(),
        ));
        ok(dns("eu.push.example"));

        for bad in [dns("other.example"), dns("10.1.2.3.example")] {
            assert!(verify_on_disk(&paths.ca_cert, &paths.server_cert, bad).is_err());
        }
    }

    #[test]
    fn san_list_separates_ips_and_names_and_dedupes() {
        let sans = subject_alt_names(
            &names(&[
                "localhost",
                "::1",
                "push.corp.internal",
                "PUSH.corp.internal",
            ]),
            Path::new("server.crt"),
        )
        .expect("sans");
        let dns_names: Vec<String> = sans
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(n) => Some(n.as_str().to_string()),
                _ => None,
            })
            .collect();
        let ips: Vec<IpAddr> = sans
            .iter()
            .filter_map(|s| match s {
                SanType::IpAddress(ip) => Some(*ip),
                _ => None,
            })
            .collect();
        assert_eq!(dns_names, ["localhost", "push.corp.internal"]);
        assert_eq!(
            ips,
            [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ]
        );
    }

    #[test]
    fn invalid_hostname_is_rejected_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_dir = dir.path().join("tls");
        for bad in ["", "push corp", "push.corp:8443", "bad_über.example"] {
            let err = ensure_bootstrap(&tls_dir, &names(&[bad])).expect_err(bad);
            assert!(
                matches!(err, TlsError::InvalidHostname { .. }),
                "{bad:?}: {err:?}"
            );
        }
        assert!(!tls_dir.exists());
    }

    #[test]
    fn mismatched_ca_key_is_detected_before_writing_a_leaf() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("first");
        let paths = TlsPaths::in_dir(dir.path());

        let other = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(other.path(), &[]).expect("other");
        fs::copy(TlsPaths::in_dir(other.path()).ca_key, &paths.ca_key).expect("swap key");
        fs::remove_file(&paths.server_cert).expect("rm cert");
        fs::remove_file(&paths.server_key).expect("rm key");

        let err = ensure_bootstrap(dir.path(), &[]).expect_err("mismatch");
        assert!(matches!(err, TlsError::ChainMismatch { .. }), "{err:?}");
        assert!(!paths.server_cert.exists());
        assert!(!paths.server_key.exists());
    }

    #[test]
    fn corrupt_ca_key_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_bootstrap(dir.path(), &[]).expect("first");
        let paths = TlsPaths::in_dir(dir.path());
        fs::write(&paths.ca_key, b"not a key").expect("write");
        fs::remove_file(&paths.server_cert).expect("rm cert");

        let err = ensure_bootstrap(dir.path(), &[]).expect_err("corrupt key");
        assert!(matches!(err, TlsError::CaKey { .. }), "{err:?}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }
}
