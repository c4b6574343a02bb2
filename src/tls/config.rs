//! rustls server and client configuration (ring provider, TLS 1.2/1.3, ALPN) and the TLS error type.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN identifier for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN identifier for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The only protocol versions Warbler speaks, on both the server and client side.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Everything that can go wrong while bootstrapping or loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A required PEM file does not exist.
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    /// A file exists but could not be read.
    #[error("failed to read {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A file could not be written atomically.
    #[error("failed to write {}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// The TLS directory could not be created or inspected.
    #[error("failed to create TLS directory {}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    /// The file is not well-formed PEM.
    #[error("invalid PEM in {}", path.display())]
    Pem { path: PathBuf, source: pem::Error },
    /// The file is PEM but holds no `CERTIFICATE` section.
    #[error("no PEM certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    /// The file is PEM but holds no private key section.
    #[error("no PEM private key found in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    /// rustls cannot use the private key (unsupported algorithm or corrupt encoding).
    #[error("unusable private key in {}", path.display())]
    InvalidPrivateKey {
        path: PathBuf,
        source: rustls::Error,
    },
    /// rustls cannot use the certificate chain.
    #[error("unusable certificate in {}", path.display())]
    InvalidCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("CA certificate in {} cannot be used as a trust anchor", path.display())]
    InvalidCaCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    /// A certificate verifier could not be built from the CA file.
    #[error("cannot build a certificate verifier from {}", path.display())]
    Verifier {
        path: PathBuf,
        source: rustls::client::VerifierBuilderError,
    },
    /// Only one half of the CA (certificate or key) is on disk.
    #[error(
        "incomplete local CA: {} exists but {} does not; restore the missing file, \
         or remove {} to generate a new CA (clients must then trust the new ca.crt)",
        present.display(), missing.display(), present.display()
    )]
    IncompleteCa { present: PathBuf, missing: PathBuf },
    /// The CA private key on disk cannot be loaded for signing.
    #[error("cannot load CA private key {}", path.display())]
    CaKey { path: PathBuf, source: rcgen::Error },
    /// A configured hostname is neither an IP address nor a valid DNS name.
    #[error("invalid TLS hostname {name:?}: expected a DNS name or an IP address")]
    InvalidHostname {
        name: String,
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// Key generation or certificate signing failed.
    #[error("failed to generate {}", path.display())]
    Generate { path: PathBuf, source: rcgen::Error },
    /// A freshly issued leaf does not verify against the CA certificate on disk.
    #[error(
        "newly issued {} does not verify against {}; the CA key and certificate do not \
         belong together or the CA was not created by Warbler",
        cert.display(), ca.display()
    )]
    ChainMismatch {
        cert: PathBuf,
        ca: PathBuf,
        source: rustls::Error,
    },
    /// A certificate file's DER could not be parsed as X.509 (to read its dates and names).
    #[error("cannot parse the certificate in {}: {message}", path.display())]
    ParseCertificate { path: PathBuf, message: String },
    /// rustls rejected the protocol configuration itself.
    #[error("rustls rejected the TLS configuration")]
    Config { source: rustls::Error },
}

/// Builds the HTTPS server configuration from a PEM certificate chain and private key.
///
/// Uses the ring provider, TLS 1.2 and 1.3 only, no client authentication and
/// ALPN `h2` then `http/1.1`, stateless session tickets for resumption.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = ring_provider();
    let certs = load_certs(cert_pem)?;
    let key = load_private_key(key_pem)?;

    // Parse the key up front so a bad key is reported against the key file
    // rather than as a generic certificate problem.
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| TlsError::InvalidPrivateKey {
            path: key_pem.to_path_buf(),
            source,
        })?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Config { source })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert_pem.to_path_buf(),
                    key: key_pem.to_path_buf(),
                }
            }
            source => TlsError::InvalidCertificate {
                path: cert_pem.to_path_buf(),
                source,
            },
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    // After a TLS 1.3 handshake the stream hands the traffic keys to its own record layer
    // (`records.rs`) and drops rustls's connection state: ~2 KiB less per idle connection.
    config.enable_secret_extraction = true;
    // Stateless session tickets, so a device that reconnects (after a network change, or
    // all at once after a load balancer dropped them) resumes without a certificate
    // signature on our side or a chain check on its own. The server keeps nothing per
    // ticket (rustls's default is a 256-session cache, useless at 10,000 devices); the key
    // rotates every 6 hours and lives with this configuration, so a new certificate also
    // means new tickets. TLS 1.3 resumption still runs an (EC)DHE exchange: forward
    // secrecy holds.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Config { source })?;
    Ok(Arc::new(config))
}

/// Builds a client configuration that trusts only the certificates in `ca_pem`.
///
/// Uses the ring provider and TLS 1.2/1.3, and offers `alpn` in the given order
/// (pass `&[]` to offer no ALPN).
pub fn client_config_trusting(
    ca_pem: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_root_store(ca_pem)?;
    let mut config = ClientConfig::builder_with_provider(client_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Config { source })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The ring provider with AES-128-GCM suites offered first, as browsers, Android and Go
/// do (rustls offers AES-256 with SHA-384 first). The server follows the client's order;
/// SHA-384 has no instruction on x86, so a handshake's key schedule and record
/// encryption both cost less this way, on both ends.
fn client_provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// The ring crypto provider, chosen explicitly rather than via the process default.
pub(super) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file, reporting a missing file distinctly from other I/O failures.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TlsError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Loads every `CERTIFICATE` section of a PEM file; at least one is required.
pub(super) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// A root store holding exactly the certificates in `ca_pem`.
fn load_root_store(ca_pem: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::InvalidCaCertificate {
                path: ca_pem.to_path_buf(),
                source,
            })?;
    }
    Ok(roots)
}

/// A `WebPKI` server-certificate verifier that trusts only the certificates in `ca_pem`.
pub(super) fn verifier_trusting(ca_pem: &Path) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let roots = load_root_store(ca_pem)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider())
        .build()
        .map_err(|source| TlsError::Verifier {
            path: ca_pem.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::stream::TlsStream;
    use crate::tls::{ensure_bootstrap, TlsPaths};
    use rustls::{PeerIncompatible, ProtocolVersion, ServerConnection};
    use rustls_pki_types::ServerName;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    const STEP_TIMEOUT: Duration = Duration::from_secs(10);

    #[derive(Debug)]
    struct Negotiated {
        alpn: Option<Vec<u8>>,
        version: Option<ProtocolVersion>,
        suite: Option<rustls::CipherSuite>,
    }

    fn bootstrapped(hostnames: &[&str]) -> (tempfile::TempDir, TlsPaths) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_dir = dir.path().join("tls");
        let names: Vec<String> = hostnames.iter().map(ToString::to_string).collect();
        ensure_bootstrap(&tls_dir, &names).expect("bootstrap");
        (dir, TlsPaths::in_dir(&tls_dir))
    }

    /// Runs one TLS handshake over a real loopback socket and exchanges a few bytes.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Negotiated, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = TlsStream::accept(tcp, server)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });

        let client_side = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut tls = TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            if &buf != b"ok" {
                return Err(format!("unexpected payload {buf:?}"));
            }
            let conn = tls.get_ref().1;
            Ok(Negotiated {
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                version: conn.protocol_version(),
                suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            })
        };
        let negotiated = tokio::time::timeout(STEP_TIMEOUT, client_side)
            .await
            .map_err(|_| "client timed out".to_string())??;
        tokio::time::timeout(STEP_TIMEOUT, server_task)
            .await
            .map_err(|_| "server timed out".to_string())?
            .map_err(|e| e.to_string())??;
        Ok(negotiated)
    }

    fn client_with_versions(
        ca: &Path,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let roots = load_root_store(ca).expect("roots");
        let config = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_string()).expect("server name")
    }

    #[tokio::test]
    async fn handshake_succeeds_for_localhost_ip_and_configured_hostname() {
        let (_dir, paths) = bootstrapped(&["push.corp.internal"]);
        let server = server_config(&paths.server_cert, &paths.server_key).expect("server config");
        let client = client_config_trusting(&paths.ca_cert, &[]).expect("client config");

        for name in [
            dns("localhost"),
            ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
            dns("push.corp.internal"),
        ] {
            let shown = format!("{name:?}");
            handshake(server.clone(), client.clone(), name)
                .await
                .unwrap_or_else(|e| panic!("handshake for {shown} failed: {e}"));
        }

        let err = handshake(server, client, dns("evil.example"))
            .await
            .expect_err("a name outside the SANs must be rejected");
        assert!(err.contains("certificate"), "unexpected error: {err}");
    }

    #[tokio::test]
    async fn our_clients_get_aes_128_gcm_and_a_rustls_default_client_still_gets_its_choice() {
        let (_dir, paths) = bootstrapped(&[]);
        let server = server_config(&paths.server_cert, &paths.server_key).expect("server config");
        let ours = client_config_trusting(&paths.ca_cert, &[]).expect("client config");
        let got = handshake(server.clone(), ours, dns("localhost"))
            .await
            .expect("handshake");
        assert_eq!(
            got.suite,
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        let default_order = client_with_versions(&paths.ca_cert, &[&rustls::version::TLS13]);
        let got = handshake(server, default_order, dns("localhost"))
            .await
            .expect("handshake");
        assert_eq!(
            got.suite,
            Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
        );
    }

    #[tokio::test]
    async fn handshake_fails_when_client_trusts_another_ca() {
        let (_dir, paths) = bootstrapped(&[]);
        let (_other_dir, other) = bootstrapped(&[]);
        let server = server_config(&paths.server_cert, &paths.server_key).expect("server config");
        let client = client_config_trusting(&other.ca_cert, &[]).expect("client config");
        let err = handshake(server, client, dns("localhost"))
            .await
            .expect_err("foreign CA must not be trusted");
        // Every Warbler CA has the same subject, so webpki finds the foreign
        // CA by name and then rejects the signature.
        assert!(
            err.contains("invalid peer certificate"),
            "unexpected error: {err}"
        );
    }

    #[tokio::test]
    async fn alpn_prefers_h2_and_falls_back() {
        let (_dir, paths) = bootstrapped(&[]);
        let server = server_config(&paths.server_cert, &paths.server_key).expect("server config");
        assert_eq!(
            server.alpn_protocols,
            vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
        );

        type Case<'a> = (&'a [&'a [u8]], Option<&'a [u8]>);
        let cases: [Case<'_>; 4] = [
            (&[ALPN_H2, ALPN_HTTP11], Some(ALPN_H2)),
            (&[ALPN_HTTP11, ALPN_H2], Some(ALPN_H2)),
            (&[ALPN_HTTP11], Some(ALPN_HTTP11)),
            (&[], None),
        ];
        for (offered, expected) in cases {
            let client = client_config_trusting(&paths.ca_cert, offered).expect("client config");
            let negotiated = handshake(server.clone(), client, dns("localhost"))
                .await
                .expect("handshake");
            assert_eq!(negotiated.alpn.as_deref(), expected, "offered {offered:?}");
        }
    }

    #[tokio::test]
    async fn only_tls12_and_tls13_are_enabled() {
        let mut versions: Vec<ProtocolVersion> =
            PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
        versions.sort_by_key(|v| u16::from(*v));
        assert_eq!(
            versions,
            vec![ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3]
        );

        let (_dir, paths) = bootstrapped(&[]);
        let server = server_config(&paths.server_cert, &paths.server_key).expect("server config");
        for (version, expected) in [
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        ] {
            let client = client_with_versions(&paths.ca_cert, &[version]);
            let negotiated = handshake(server.clone(), client, dns("localhost"))
                .await
                .expect("handshake");
            assert_eq!(negotiated.version, Some(expected));
        }

        // rustls has no TLS 1.1 client, so feed the server a hand-built
        // TLS 1.1 ClientHello (no supported_versions extension). rustls insists
        // on signature_algorithms before it looks at the version.
        let mut body = vec![0x03, 0x02];
        body.extend_from_slice(&[0x42; 32]); // random
        body.push(0); // empty session id
        body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // cipher suites
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]); // signature_algorithms: ecdsa_secp256r1_sha256
        let mut handshake_msg = vec![0x01, 0x00, 0x00, u8::try_from(body.len()).expect("len")];
        handshake_msg.extend_from_slice(&body);
        let mut record = vec![
            0x16,
            0x03,
            0x01,
            0x00,
            u8::try_from(handshake_msg.len()).expect("len"),
        ];
        record.extend_from_slice(&handshake_msg);

        let mut conn = ServerConnection::new(server).expect("server connection");
        conn.read_tls(&mut record.as_slice()).expect("read_tls");
        let err = conn
            .process_new_packets()
            .expect_err("a TLS 1.1 ClientHello must be rejected");
        assert_eq!(
            err,
            rustls::Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered)
        );
    }

    #[test]
    fn server_config_errors_name_the_file() {
        let (dir, paths) = bootstrapped(&[]);

        let missing = dir.path().join("absent.crt");
        let err = server_config(&missing, &paths.server_key).expect_err("missing cert");
        assert!(matches!(err, TlsError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("absent.crt"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, b"this is not pem\n").expect("write");
        let err = server_config(&garbage, &paths.server_key).expect_err("garbage cert");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        let truncated = dir.path().join("truncated.crt");
        fs::write(&truncated, b"-----BEGIN CERTIFICATE-----\nMIIB\n").expect("write");
        let err = server_config(&truncated, &paths.server_key).expect_err("truncated cert");
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated.crt"), "{err}");

        let err =
            server_config(&paths.server_cert, &paths.server_cert).expect_err("cert used as key");
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
        assert!(err.to_string().contains("server.crt"), "{err}");

        let err = server_config(&paths.server_cert, &paths.ca_key).expect_err("mismatched key");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("ca.key") && msg.contains("server.crt"),
            "{msg}"
        );

        let err = client_config_trusting(&missing, &[]).expect_err("missing CA");
        assert!(err.to_string().contains("absent.crt"), "{err}");
    }
}
