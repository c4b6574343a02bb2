//! The benchmark's transport: one TLS connection per API client (HTTP/1.1 or HTTP/2 chosen
//! by ALPN; plain HTTP/1.1 for an `http://` URL), device registration, and device WebSocket connections that may be bound to a chosen local
//! (source) address — the piece [`crate::client::Client`] does not offer.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::tls::{client_config_trusting, ALPN_H2, ALPN_HTTP11};

use super::io::Io;

/// A device's WebSocket, as the benchmarks hold it.
pub type DeviceWs = WebSocketStream<Io>;

/// Which HTTP version API clients offer (the server speaks both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

impl HttpVersion {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "http/1.1",
            Self::Http2 => "h2",
        }
    }
}

/// One server and the credentials to use on it.
pub struct Endpoint {
    host: String,
    addr: SocketAddr,
    authority: HeaderValue,
    base: String,
    server_name: ServerName<'static>,
    /// TLS connectors for API and WebSocket connections; `None` for a plain `http://` URL.
    tls: Option<(TlsConnector, TlsConnector)>,
    api_auth: HeaderValue,
    client_auth: HeaderValue,
    pub http: HttpVersion,
}

/// A registered device.
#[derive(Debug, Clone, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub token: String,
}

fn bearer(secret: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| anyhow!("a key is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Endpoint {
    /// Parses `https://host:port` (or `http://host:port` for a server without TLS), loads
    /// the CA (needed for `https`) and resolves the host once.
    ///
    /// # Errors
    /// A malformed URL, an unreadable CA, or a host that does not resolve.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        api_key: &str,
        client_key: &str,
        http: HttpVersion,
    ) -> anyhow::Result<Self> {
        let (plain, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => bail!("--url must start with https:// or http:// (got {url})"),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_matches(['[', ']']).to_owned(),
                    p.parse::<u16>().ok()?,
                ))
            })
            .ok_or_else(|| anyhow!("--url must be https://HOST:PORT (got {url})"))?;
        if plain && http == HttpVersion::Http2 {
            bail!("--http2 needs TLS (HTTP/2 is negotiated by ALPN); drop it for an http:// URL");
        }
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} resolves to no address"))?;
        let alpn: &[&[u8]] = match http {
            HttpVersion::Http1 => &[ALPN_HTTP11],
            HttpVersion::Http2 => &[ALPN_H2, ALPN_HTTP11],
        };
        let tls = if plain {
            None
        } else {
            let ca = ca.ok_or_else(|| {
                anyhow!("an https:// URL needs the CA: give --ca (or --data DIR)")
            })?;
            // Devices do not resume TLS sessions: each simulated device is a separate
            // client that has not connected before, and sharing one session cache would let
            // device B resume with a ticket the server gave device A (a quarter to three
            // quarters of the handshakes did, depending on the server's ticket store).
            let mut devices = (*client_config_trusting(ca, &[ALPN_HTTP11])?).clone();
            devices.resumption = rustls::client::Resumption::disabled();
            Some((
                TlsConnector::from(client_config_trusting(ca, alpn)?),
                TlsConnector::from(Arc::new(devices)),
            ))
        };
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| anyhow!("bad host {host}: {e}"))?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            host,
            addr,
            base: format!("{}://{authority}", if plain { "http" } else { "https" }),
            authority: HeaderValue::from_str(&authority)?,
            server_name,
            tls,
            api_auth: bearer(api_key)?,
            client_auth: bearer(client_key)?,
            http,
        })
    }

    /// The server's resolved address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host part of the URL.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `Authorization` value carrying the API key.
    #[must_use]
    pub fn api_auth(&self) -> &HeaderValue {
        &self.api_auth
    }

    async fn tcp(&self, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
        let stream = match local {
            None => TcpStream::connect(self.addr).await?,
            Some(ip) => {
                let socket = if self.addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(self.addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens one API connection (its own TCP + TLS session).
    ///
    /// # Errors
    /// Connection, TLS or HTTP handshake failures.
    pub async fn api_conn(&self) -> anyhow::Result<ApiConn> {
        let tcp = self.tcp(None).await.context("API connect")?;
        let (stream, h2) = match &self.tls {
            Some((api_tls, _)) => {
                let tls = api_tls
                    .connect(self.server_name.clone(), tcp)
                    .await
                    .context("API TLS handshake")?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                (Io::Tls(Box::new(tls)), h2)
            }
            None => (Io::Plain(tcp), false),
        };
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(send)
        };
        Ok(ApiConn {
            sender,
            authority: self.authority.clone(),
            base: self.base.clone(),
        })
    }

    /// Registers one anonymous `web` device of the client key's app.
    ///
    /// # Errors
    /// Transport failures or any answer but 201.
    pub async fn register(&self, conn: &mut ApiConn) -> anyhow::Result<Device> {
        let (status, body) = conn
            .post(
                "/v1/devices/register",
                &self.client_auth,
                Bytes::from_static(br#"{"platform":"web"}"#),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "device registration answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).context("registration reply")
    }

    /// The `host[:port]` the URL names (the `Host` header's value).
    #[must_use]
    pub fn authority(&self) -> &str {
        self.authority.to_str().unwrap_or_default()
    }

    /// A device connection's byte stream from `local` (any address with `None`): TCP, and
    /// TLS on it unless the URL is `http://`.
    ///
    /// # Errors
    /// Connection or TLS handshake failures.
    pub async fn device_io(&self, local: Option<IpAddr>) -> anyhow::Result<Io> {
        self.device_io_via(local, None).await
    }

    /// [`Self::device_io`] through `via` (a device's own TLS client, from
    /// [`Self::device_tls`]) instead of the shared one that never resumes.
    ///
    /// # Errors
    /// As [`Self::device_io`].
    pub async fn device_io_via(
        &self,
        local: Option<IpAddr>,
        via: Option<&TlsConnector>,
    ) -> anyhow::Result<Io> {
        let tcp = self.tcp(local).await.context("WebSocket connect")?;
        Ok(match &self.tls {
            Some((_, shared)) => {
                let tls = via
                    .unwrap_or(shared)
                    .connect(self.server_name.clone(), tcp)
                    .await
                    .context("WebSocket TLS handshake")?;
                Io::Tls(Box::new(tls))
            }
            None => Io::Plain(tcp),
        })
    }

    /// Opens a device WebSocket (token in the header) from `local` (any address with
    /// `None`), with a read buffer of `read_buffer` bytes, and waits for `welcome`.
    ///
    /// # Errors
    /// Transport failures, a refused upgrade, or no `welcome`.
    pub async fn device_ws(
        &self,
        token: &str,
        local: Option<IpAddr>,
        read_buffer: usize,
    ) -> anyhow::Result<DeviceWs> {
        self.device_ws_via(token, local, read_buffer, None).await
    }

    /// A TLS client for one simulated device, with a session cache of its own: the ticket
    /// of its last connection lets it resume its next one, as a real device's TLS stack
    /// does. `None` over plain WebSocket.
    #[must_use]
    pub fn device_tls(&self) -> Option<TlsConnector> {
        self.tls.as_ref().map(|(_, shared)| {
            let mut config = (**shared.config()).clone();
            config.resumption = rustls::client::Resumption::in_memory_sessions(1);
            TlsConnector::from(Arc::new(config))
        })
    }

    /// [`Self::device_ws`] through `via` (see [`Self::device_io_via`]).
    ///
    /// # Errors
    /// As [`Self::device_ws`].
    pub async fn device_ws_via(
        &self,
        token: &str,
        local: Option<IpAddr>,
        read_buffer: usize,
        via: Option<&TlsConnector>,
    ) -> anyhow::Result<DeviceWs> {
        let stream = self.device_io_via(local, via).await?;
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}/v1/connect", self.authority.to_str()?);
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(AUTHORIZATION, bearer(token)?);
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(0);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .context("WebSocket upgrade")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text)?;
                    if v["type"] == "welcome" {
                        return Ok(ws);
                    }
                    bail!("expected welcome, got {text}");
                }
                Some(Ok(Message::Close(_))) | None => bail!("closed before welcome"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// Opens a device WebSocket while holding one of `sem`'s permits (so at most that many
/// handshakes are in flight), giving up after `limit`. The error comes back as text.
///
/// # Errors
/// The connection failure, or no `welcome` within `limit`.
pub async fn connect_device(
    endpoint: &Endpoint,
    token: &str,
    local: Option<IpAddr>,
    sem: Arc<Semaphore>,
    limit: Duration,
    read_buffer: usize,
    via: Option<&TlsConnector>,
) -> Result<DeviceWs, String> {
    let attempt = endpoint.device_ws_via(token, local, read_buffer, via);
    limited(sem, limit, attempt).await
}

/// Runs a connection attempt while holding one of `sem`'s permits (so at most that many
/// handshakes are in flight), giving up after `limit`. The error comes back as text.
///
/// # Errors
/// The attempt's error, or the time limit.
pub async fn limited<T>(
    sem: Arc<Semaphore>,
    limit: Duration,
    attempt: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T, String> {
    let permit = sem.acquire_owned().await;
    let attempt = tokio::time::timeout(limit, attempt).await;
    drop(permit);
    match attempt {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no welcome within {limit:?}")),
    }
}

/// Closes a WebSocket politely, giving up after a second.
pub async fn close_ws(mut ws: DeviceWs) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One API client's connection: requests on it go one after another (HTTP/1.1) or may be
/// multiplexed (HTTP/2: handles from [`ApiConn::share`] send on the same connection).
pub struct ApiConn {
    sender: Sender,
    authority: HeaderValue,
    base: String,
}

impl ApiConn {
    /// The negotiated protocol.
    #[must_use]
    pub fn version(&self) -> HttpVersion {
        match self.sender {
            Sender::H1(_) => HttpVersion::Http1,
            Sender::H2(_) => HttpVersion::Http2,
        }
    }

    /// Another handle on the same HTTP/2 connection, whose requests travel next to this
    /// one's (`None` for HTTP/1.1, which carries one request at a time).
    #[must_use]
    pub fn share(&self) -> Option<ApiConn> {
        match &self.sender {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(ApiConn {
                sender: Sender::H2(s.clone()),
                authority: self.authority.clone(),
                base: self.base.clone(),
            }),
        }
    }

    /// Whether the connection can still carry requests.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// POSTs a JSON body and returns the status and the whole reply body.
    ///
    /// # Errors
    /// Transport failures (HTTP error statuses come back as the status).
    pub async fn post(
        &mut self,
        path: &str,
        auth: &HeaderValue,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(Method::POST, path, auth, body).await
    }

    /// Sends one request with a JSON body (`PATCH`, `POST`, …) and returns the status and
    /// the whole reply body.
    ///
    /// # Errors
    /// Transport failures (HTTP error statuses come back as the status).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: &HeaderValue,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let builder = Request::builder()
            .method(method)
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                let req = builder
                    .uri(path)
                    .header(HOST, self.authority.clone())
                    .body(Full::new(body))?;
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                let req = builder
                    .uri(format!("{}{path}", self.base))
                    .body(Full::new(body))?;
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}
