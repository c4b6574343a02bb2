//! `files` TLS mode: replacing the certificate files swaps the served certificate for new
//! connections without a restart; a bad pair is refused and the running certificate stays.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use warbler::app::App;

use crate::harness::*;

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("ca");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'_, KeyPair>) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.signed_by(&key, issuer).expect("leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Writes a file the way deploy tools do: a temporary file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn served_cert(addr: std::net::SocketAddr, ca_pem: &Path) -> Vec<u8> {
    let config = warbler::tls::client_config_trusting(ca_pem, &[]).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test]
async fn replacing_the_files_swaps_the_certificate_and_a_bad_pair_is_kept_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, issuer) = ca();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).expect("ca");
    let tls_dir = dir.path().join("certs");
    std::fs::create_dir(&tls_dir).expect("dir");
    let (cert_path, key_path) = (tls_dir.join("server.crt"), tls_dir.join("server.key"));
    let first = leaf(&issuer);
    std::fs::write(&cert_path, &first.cert_pem).expect("cert");
    std::fs::write(&key_path, &first.key_pem).expect("key");

    let mut config = test_config(&dir.path().join("data"));
    config.tls.mode = warbler::config::TlsMode::Files;
    config.tls.cert = Some(cert_path.clone());
    config.tls.key = Some(key_path.clone());
    let app = App::build(config).await.expect("builds in files mode");
    let addr = app.local_addr();
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(served_cert(addr, &ca_path).await, first.der);

    // A new pair: key first, then the certificate, each by rename.
    let second = leaf(&issuer);
    replace(&key_path, &second.key_pem);
    replace(&cert_path, &second.cert_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while served_cert(addr, &ca_path).await != second.der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A bad pair (a certificate without its key) is refused; the second stays served.
    let third = leaf(&issuer);
    replace(&cert_path, &third.cert_pem);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        served_cert(addr, &ca_path).await,
        second.der,
        "a mismatched pair must not be served"
    );
    // Garbage is refused too.
    replace(&key_path, "not a key");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served_cert(addr, &ca_path).await, second.der);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("drains")
        .expect("task");
}
