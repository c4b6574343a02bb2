//! Tests of the TLS 1.3 record layer (`records.rs`) through [`TlsStream`], against real
//! rustls clients over loopback sockets: key updates both ways, and records a peer must not
//! send.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{AlertDescription, ClientConnection};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::stream::TlsStream;
use super::stream_tests::{pair, payload, pki, tls12_client, Pki, STEP};

#[tokio::test]
async fn tls13_moves_to_the_record_layer_and_tls12_stays_with_rustls() {
    let pki = pki();
    let (srv, _cli) = pair(Arc::clone(&pki.server), Arc::clone(&pki.client)).await;
    assert!(srv.uses_own_records(), "TLS 1.3 after its handshake");
    assert_eq!(srv.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (srv, _cli) = pair(Arc::clone(&pki.server), tls12_client(&pki)).await;
    assert!(!srv.uses_own_records(), "TLS 1.2 keeps rustls's connection");
}

/// Writes `data` to `from` and flushes it, then checks that `to` reads exactly it.
async fn carry<W, R>(from: &mut W, to: &mut R, data: &[u8], what: &str)
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    from.write_all(data).await.expect("write");
    from.flush().await.expect("flush");
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(STEP, to.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert!(got == data, "{what}: read what was written");
}

/// Sends `n` messages each way, one write and flush at a time, and checks every byte.
async fn rounds(
    srv: &mut TlsStream,
    cli: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    n: u32,
) {
    for i in 0..n {
        let up = payload(100 + i as usize * 37, i);
        carry(cli, srv, &up, &format!("round {i}, client to server")).await;
        let down = payload(50 + i as usize * 53, i + 1000);
        carry(srv, cli, &down, &format!("round {i}, server to client")).await;
    }
}

#[tokio::test]
async fn a_client_key_update_is_followed_by_ours_and_traffic_goes_on() {
    let pki = pki();
    let (mut srv, mut cli) = pair(Arc::clone(&pki.server), Arc::clone(&pki.client)).await;
    rounds(&mut srv, &mut cli, 2).await;
    for _ in 0..3 {
        // rustls asks for our update too (update_requested); its next records, and ours
        // after the KeyUpdate we send back, use the new keys.
        cli.get_mut()
            .1
            .refresh_traffic_keys()
            .expect("client key update");
        rounds(&mut srv, &mut cli, 3).await;
    }
}

#[tokio::test]
async fn the_server_replaces_its_key_before_the_limit() {
    let pki = pki();
    let (mut srv, mut cli) = pair(Arc::clone(&pki.server), Arc::clone(&pki.client)).await;
    srv.set_tx_key_budget(3);
    // 25 rounds of one record each way, and a bulk write of many records: eight or more
    // key updates from our side, each of which the client must follow to read on.
    rounds(&mut srv, &mut cli, 25).await;
    let bulk = payload(200_000, 7);
    carry(&mut srv, &mut cli, &bulk, "bulk, server to client").await;
}

/// A blocking rustls client, handshaken with a [`TlsStream`] accepted on a tokio listener,
/// so that a test can put raw bytes on its socket. Returns the server side too.
async fn raw_client(pki: &Pki) -> (TlsStream, ClientConnection, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client_config = Arc::clone(&pki.client);
    let client = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(STEP)).expect("timeout");
        let name = ServerName::try_from("localhost").expect("name");
        let mut conn = ClientConnection::new(client_config, name).expect("client");
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).expect("client handshake");
        }
        (conn, sock)
    });
    let (tcp, _) = listener.accept().await.expect("accept");
    let srv = tokio::time::timeout(STEP, TlsStream::accept(tcp, Arc::clone(&pki.server)))
        .await
        .expect("in time")
        .expect("server handshake");
    let (conn, sock) = client.await.expect("client thread");
    (srv, conn, sock)
}

/// Reads what the server sent last and returns the alert it carried, if any.
fn alert_received(
    conn: &mut ClientConnection,
    sock: &mut std::net::TcpStream,
) -> Option<AlertDescription> {
    for _ in 0..16 {
        match conn.read_tls(sock) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        match conn.process_new_packets() {
            Err(rustls::Error::AlertReceived(alert)) => return Some(alert),
            Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

/// Sends `bytes` raw on the client's socket after the handshake; asserts that the server's
/// next read fails as invalid data, and returns the alert the client then receives.
async fn refused(
    mut srv: TlsStream,
    mut conn: ClientConnection,
    mut sock: std::net::TcpStream,
    bytes: &[u8],
) -> Option<AlertDescription> {
    sock.write_all(bytes).expect("send");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, srv.read(&mut buf))
        .await
        .expect("in time");
    assert_eq!(
        read.expect_err("the record must not be accepted").kind(),
        std::io::ErrorKind::InvalidData
    );
    tokio::task::spawn_blocking(move || alert_received(&mut conn, &mut sock))
        .await
        .expect("client thread")
}

#[tokio::test]
async fn a_tampered_record_is_refused_with_bad_record_mac() {
    let pki = pki();
    let (srv, mut conn, sock) = raw_client(&pki).await;
    conn.writer().write_all(b"hello").expect("plaintext");
    let mut record = Vec::new();
    conn.write_tls(&mut record).expect("seal");
    let last = record.len() - 1;
    record[last] ^= 0x01; // the tag no longer matches
    let alert = refused(srv, conn, sock, &record).await;
    assert_eq!(alert, Some(AlertDescription::BadRecordMac));
}

#[tokio::test]
async fn an_oversized_or_unprotected_record_is_refused() {
    let pki = pki();
    // Longer than 2^14 + 256 bytes of ciphertext.
    let (srv, conn, sock) = raw_client(&pki).await;
    let mut record = vec![23, 3, 3, 0x41, 0x01];
    record.resize(5 + 0x4101, 0);
    let alert = refused(srv, conn, sock, &record).await;
    assert_eq!(alert, Some(AlertDescription::RecordOverflow));

    // A plaintext alert record after the handshake: every record is protected by then.
    let (srv, conn, sock) = raw_client(&pki).await;
    let alert = refused(srv, conn, sock, &[21, 3, 3, 0, 2, 1, 0]).await;
    assert_eq!(alert, Some(AlertDescription::UnexpectedMessage));
}

#[tokio::test]
async fn records_split_across_reads_and_many_in_one_read_both_decrypt() {
    let pki = pki();
    let (mut srv, mut conn, mut sock) = raw_client(&pki).await;
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let part = payload(1 + i as usize * 91, i);
        conn.writer().write_all(&part).expect("plaintext");
        conn.write_tls(&mut wire).expect("seal");
        expected.extend_from_slice(&part);
    }
    let writer = std::thread::spawn(move || {
        // Byte runs that cut headers and bodies at every kind of place.
        for chunk in wire.chunks(3) {
            sock.write_all(chunk).expect("send");
        }
        (conn, sock)
    });
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(STEP, srv.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("server read");
    assert!(got == expected);
    let (mut conn, mut sock) = writer.join().expect("writer");
    srv.write_all(b"still fine").await.expect("server write");
    srv.flush().await.expect("flush");
    let text = tokio::task::spawn_blocking(move || {
        let mut out = vec![0u8; 10];
        let mut filled = 0;
        while filled < out.len() {
            conn.read_tls(&mut sock).expect("read");
            conn.process_new_packets().expect("process");
            if let Ok(n) = conn.reader().read(&mut out[filled..]) {
                filled += n;
            }
        }
        out
    })
    .await
    .expect("client thread");
    assert_eq!(&text, b"still fine");
}
