//! Renewal of the bootstrapped server certificate, through the real binary: a restart with
//! more `server.hostnames` serves a certificate for the new name, and a certificate close
//! to expiry is re-issued at start; the CA never changes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::spawned::Spawned;

fn start(dir: &Path, hostnames: &[&str]) -> (Spawned, String) {
    let config = dir.join("warbler.toml");
    let list: Vec<String> = hostnames.iter().map(|h| format!("{h:?}")).collect();
    std::fs::write(
        &config,
        format!("[server]\nhostnames = [{}]\n", list.join(", ")),
    )
    .expect("config");
    let mut server = Spawned::start(
        [
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--data".as_ref(),
            dir.join("data").as_os_str(),
        ],
        &[],
    );
    let url = server.url(Duration::from_secs(30));
    let addr = url.strip_prefix("https://").expect("https").to_owned();
    (server, addr)
}

/// The leaf served to a client that trusts `ca` and checks the name `name`.
async fn served_leaf(addr: &str, ca: &Path, name: &str) -> Result<Vec<u8>, std::io::Error> {
    let config = warbler::tls::client_config_trusting(ca, &[]).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await?;
    Ok(tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec())
}

fn not_after(der: &[u8]) -> OffsetDateTime {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
    cert.validity().not_after.to_datetime()
}

#[tokio::test]
async fn a_restart_with_a_new_hostname_serves_a_certificate_for_it_under_the_same_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("data/tls/ca.crt");

    let (mut first, addr) = start(dir.path(), &["a.example"]);
    served_leaf(&addr, &ca, "a.example")
        .await
        .expect("a is served");
    assert!(
        served_leaf(&addr, &ca, "b.example").await.is_err(),
        "b is not in the first certificate"
    );
    assert_eq!(first.terminate().code(), Some(0));
    let ca_before = std::fs::read(&ca).expect("ca");

    let (mut second, addr) = start(dir.path(), &["a.example", "b.example"]);
    served_leaf(&addr, &ca, "b.example")
        .await
        .expect("b verifies against the same CA after the restart");
    served_leaf(&addr, &ca, "a.example").await.expect("a still");
    assert_eq!(
        std::fs::read(&ca).expect("ca"),
        ca_before,
        "the CA is unchanged"
    );
    let log = second.stderr();
    assert!(
        log.contains("renewed the TLS server certificate") && log.contains("hostnames"),
        "{log}"
    );
    assert_eq!(second.terminate().code(), Some(0));
}

/// Replaces the data dir's leaf by one valid for one day, signed by its CA.
fn write_one_day_leaf(tls: &Path) -> Vec<u8> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca.key")).expect("ca key"))
        .expect("ca key parses");
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Warbler local CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let names = ["localhost", "127.0.0.1", "::1"].map(ToString::to_string);
    let mut params = CertificateParams::new(names.to_vec()).expect("params");
    params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer).expect("leaf");
    std::fs::write(tls.join("server.crt"), cert.pem()).expect("cert");
    std::fs::write(tls.join("server.key"), key.serialize_pem()).expect("key");
    cert.der().to_vec()
}

#[tokio::test]
async fn a_certificate_one_day_from_expiry_is_renewed_at_start_and_the_ca_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("data/tls");
    let ca = tls.join("ca.crt");
    let (mut first, _) = start(dir.path(), &[]);
    assert_eq!(first.terminate().code(), Some(0));
    let ca_before = std::fs::read(&ca).expect("ca");
    let short = write_one_day_leaf(&tls);

    let (mut second, addr) = start(dir.path(), &[]);
    let served = served_leaf(&addr, &ca, "localhost")
        .await
        .expect("the renewed leaf verifies against the CA");
    assert_ne!(served, short, "the one-day certificate is not served");
    let left = not_after(&served) - OffsetDateTime::now_utc();
    assert!(left > time::Duration::days(800), "new validity: {left}");
    assert_eq!(
        std::fs::read(&ca).expect("ca"),
        ca_before,
        "the CA is unchanged"
    );
    let log = second.stderr();
    assert!(
        log.contains("renewed the TLS server certificate") && log.contains("expiry"),
        "{log}"
    );
    let (_, metrics) = warbler::client::Client::new(&format!("https://{addr}"), &ca)
        .expect("client")
        .download("/metrics", None)
        .await
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("warbler_tls_renewals_total{reason=\"expiry\"} 1"),
        "{metrics}"
    );
    assert_eq!(second.terminate().code(), Some(0));
}
