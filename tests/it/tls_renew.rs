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
    // Key first, then the certificate by rename: a running server's check never sees half
    // a file, and never has its renewed key overwritten by this one.
    std::fs::write(tls.join("server.key"), key.serialize_pem()).expect("key");
    std::fs::write(tls.join("server.crt.new"), cert.pem()).expect("cert");
    std::fs::rename(tls.join("server.crt.new"), tls.join("server.crt")).expect("rename");
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

/// Sends `GET /healthz` on an open HTTP/1.1 connection and reads until the answer's body.
async fn healthz_on<S>(stream: &mut S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains(r#"{"status":"ok"}"#) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answer within 5 s")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_running_server_renews_a_certificate_near_expiry_live_and_open_connections_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = warbler::app::App::build(crate::harness::test_config(dir.path()))
        .await
        .expect("builds");
    app.check_renewal_every(Duration::from_millis(200));
    let addr = app.local_addr().to_string();
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    let tls = dir.path().join("tls");
    let ca = tls.join("ca.crt");
    let ca_before = std::fs::read(&ca).expect("ca");
    let first = served_leaf(&addr, &ca, "localhost").await.expect("first");

    // An open connection from before the renewal.
    let config =
        warbler::tls::client_config_trusting(&ca, &[warbler::tls::ALPN_HTTP11]).expect("tls");
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut open = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert!(healthz_on(&mut open).await.starts_with("HTTP/1.1 200"));

    // The certificate on disk now expires tomorrow: the next check re-issues it, and new
    // connections get the new one without a restart.
    let short = write_one_day_leaf(&tls);
    assert_ne!(short, first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let renewed = loop {
        let served = served_leaf(&addr, &ca, "localhost").await.expect("served");
        if served != first && served != short {
            break served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewed certificate served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(not_after(&renewed) - OffsetDateTime::now_utc() > time::Duration::days(800));
    assert_eq!(
        std::fs::read(&ca).expect("ca"),
        ca_before,
        "the CA is unchanged"
    );

    // The connection opened before the renewal still works.
    assert!(healthz_on(&mut open).await.contains("200 OK"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("drains")
        .expect("task");
}
