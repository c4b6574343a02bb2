//! Tests of the unbuffered TLS stream against a real rustls client over loopback sockets.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::stream::TlsStream;
use super::{client_config_trusting, ensure_bootstrap, server_config, TlsPaths, ALPN_HTTP11};

pub(super) const STEP: Duration = Duration::from_secs(10);

pub(super) struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

pub(super) fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_dir = dir.path().join("tls");
    ensure_bootstrap(&tls_dir, &[]).expect("bootstrap");
    let paths = TlsPaths::in_dir(&tls_dir);
    let server = server_config(&paths.server_cert, &paths.server_key).expect("server config");
    let client = client_config_trusting(&paths.ca_cert, &[ALPN_HTTP11]).expect("client config");
    Pki {
        ca: paths.ca_cert.clone(),
        _dir: dir,
        server,
        client,
    }
}

/// A client restricted to TLS 1.2, trusting the same CA.
pub(super) fn tls12_client(pki: &Pki) -> Arc<ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let ca = std::fs::read(&pki.ca).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts one connection with [`TlsStream`] and connects to it with tokio-rustls.
pub(super) async fn pair(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        TlsStream::accept(tcp, server)
            .await
            .expect("server handshake")
    };
    let connect = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .expect("client handshake")
    };
    tokio::time::timeout(STEP, async { tokio::join!(accept, connect) })
        .await
        .expect("handshake in time")
}

/// A pseudo-random payload, so a misplaced byte shows.
pub(super) fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

async fn echo_both_ways(server: Arc<ServerConfig>, client: Arc<ClientConfig>) {
    let (mut srv, cli) = pair(server, client).await;
    let up = payload(1 << 20, 1);
    let down = payload(700_000, 2);
    let (mut cli_rd, mut cli_wr) = tokio::io::split(cli);
    let up_sent = up.clone();
    let writer = tokio::spawn(async move {
        // Odd-sized writes, so records and reads do not line up.
        for chunk in up_sent.chunks(7_777) {
            cli_wr.write_all(chunk).await.expect("client write");
        }
        cli_wr.flush().await.expect("client flush");
        cli_wr
    });
    let mut got = vec![0u8; up.len()];
    let mut filled = 0;
    while filled < got.len() {
        let end = (filled + 1_000).min(got.len());
        let n = srv.read(&mut got[filled..end]).await.expect("server read");
        assert!(n > 0, "early end of file at {filled}");
        filled += n;
    }
    assert!(got == up, "the server read what the client wrote");
    srv.write_all(&down).await.expect("server write");
    srv.flush().await.expect("server flush");
    assert_eq!(srv.buffered_capacity(), 0, "nothing held once flushed");
    let mut back = vec![0u8; down.len()];
    cli_rd.read_exact(&mut back).await.expect("client read");
    assert!(back == down, "the client read what the server wrote");
    let _ = writer.await.expect("writer");
}

#[tokio::test]
async fn bulk_data_survives_both_ways_over_tls13() {
    let pki = pki();
    echo_both_ways(Arc::clone(&pki.server), Arc::clone(&pki.client)).await;
}

#[tokio::test]
async fn bulk_data_survives_both_ways_over_tls12() {
    let pki = pki();
    echo_both_ways(Arc::clone(&pki.server), tls12_client(&pki)).await;
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer() {
    let pki = pki();
    let (mut srv, mut cli) = pair(Arc::clone(&pki.server), Arc::clone(&pki.client)).await;
    cli.write_all(b"ping").await.expect("write");
    cli.flush().await.expect("flush");
    let mut buf = [0u8; 4];
    srv.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
    srv.write_all(b"pong").await.expect("write");
    srv.flush().await.expect("flush");
    cli.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"pong");
    // A read that finds nothing waits without keeping a receive buffer.
    let waited = tokio::time::timeout(Duration::from_millis(100), srv.read(&mut buf)).await;
    assert!(waited.is_err(), "nothing to read yet");
    assert_eq!(srv.buffered_capacity(), 0);
}

#[tokio::test]
async fn close_notify_ends_reads_on_both_sides() {
    let pki = pki();
    let (mut srv, mut cli) = pair(Arc::clone(&pki.server), Arc::clone(&pki.client)).await;
    cli.write_all(b"last words").await.expect("write");
    cli.shutdown().await.expect("client close_notify");
    let mut got = Vec::new();
    tokio::time::timeout(STEP, srv.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("clean end of file");
    assert_eq!(got, b"last words");
    srv.shutdown().await.expect("server close_notify");
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, cli.read_to_end(&mut rest))
        .await
        .expect("in time")
        .expect("the client sees a clean close, not a truncation");
    assert!(rest.is_empty());
    assert!(
        srv.write_all(b"late").await.is_err(),
        "no writes after close"
    );
}

#[tokio::test]
async fn a_client_speaking_plain_http_fails_the_handshake() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Arc::clone(&pki.server);
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        TlsStream::accept(tcp, server).await.map(|_| ())
    });
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let result = tokio::time::timeout(STEP, accept)
        .await
        .expect("in time")
        .expect("task");
    let err = result.expect_err("not TLS");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_handshake_is_an_error() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Arc::clone(&pki.server);
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        TlsStream::accept(tcp, server).await.map(|_| ())
    });
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    // The first bytes of a TLS record header, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    drop(tcp);
    let result = tokio::time::timeout(STEP, accept)
        .await
        .expect("in time")
        .expect("task");
    let err = result.expect_err("cut short");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}

/// Connects, reads one server write (which brings the session tickets along), and returns
/// how the handshake went on the client's side.
async fn handshake_kind(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Option<rustls::HandshakeKind> {
    let (mut srv, mut cli) = pair(server, client).await;
    srv.write_all(b"hi").await.expect("server write");
    srv.flush().await.expect("server flush");
    let mut got = [0u8; 2];
    cli.read_exact(&mut got).await.expect("client read");
    assert_eq!(&got, b"hi");
    cli.get_ref().1.handshake_kind()
}

#[tokio::test]
async fn a_reconnecting_client_resumes_with_a_ticket_over_tls13_and_tls12() {
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = pki();
    for client in [Arc::clone(&pki.client), tls12_client(&pki)] {
        let first = handshake_kind(Arc::clone(&pki.server), Arc::clone(&client)).await;
        assert_eq!(first, Some(Full));
        let again = handshake_kind(Arc::clone(&pki.server), Arc::clone(&client)).await;
        assert_eq!(again, Some(Resumed), "the second connection resumes");
    }
    // The server keeps no state per ticket: a client resumes after many others connected
    // (rustls's default, a 256-session cache on the server, has forgotten it by then).
    let early = client_config_trusting(&pki.ca, &[ALPN_HTTP11]).expect("client config");
    let first = handshake_kind(Arc::clone(&pki.server), Arc::clone(&early)).await;
    assert_eq!(first, Some(Full));
    for _ in 0..200 {
        let other = client_config_trusting(&pki.ca, &[ALPN_HTTP11]).expect("client config");
        handshake_kind(Arc::clone(&pki.server), other).await;
    }
    let later = handshake_kind(Arc::clone(&pki.server), early).await;
    assert_eq!(later, Some(Resumed), "resumed after 200 other clients");
    // A new configuration (a certificate reloaded or renewed) has a new ticket key: old
    // tickets are refused and the client falls back to a full handshake.
    let reloaded = {
        let dir = pki.ca.parent().expect("the CA sits in the TLS dir");
        let paths = TlsPaths::in_dir(dir);
        server_config(&paths.server_cert, &paths.server_key).expect("server config")
    };
    let after = handshake_kind(reloaded, Arc::clone(&pki.client)).await;
    assert_eq!(after, Some(Full));
}
