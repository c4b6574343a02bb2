//! A small Rust client of the Warbler HTTP API and WebSocket protocol, trusting one CA.
//! Used by the tests, the benchmarks and the CLI (`send`, `listen`, `app`, `key`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0}")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("HTTP request failed: {0}")]
    Http(String),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket error: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The server answered with an error in the contract's shape.
    #[error("{code} ({status}): {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
}

impl ClientError {
    /// Whether the server could not be reached at all (refused, reset, TLS handshake).
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Http(_) | Self::Io(_))
            || matches!(self, Self::Ws(e) if !matches!(e, tokio_tungstenite::tungstenite::Error::Http(_)))
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTPS client of one Warbler server.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    http: hyper_util::client::legacy::Client<Https, Full<Bytes>>,
    ws_tls: tokio_rustls::TlsConnector,
}

/// The answer to an API call: status and JSON body (`Null` when empty; a JSON string
/// holding the text when the server sent something else than JSON, such as the SDK).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Reply {
    /// The body when the status is `expected`; otherwise the server's error as
    /// [`ClientError::Api`] (code and message from `{"error":{…}}`, or the status alone).
    ///
    /// # Errors
    /// Any other status.
    pub fn expect_status(self, expected: StatusCode) -> Result<serde_json::Value, ClientError> {
        if self.status == expected {
            return Ok(self.body);
        }
        let error = &self.body["error"];
        let code = error["code"].as_str().map_or_else(
            || {
                self.status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_")
            },
            str::to_owned,
        );
        let message = error["message"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_owned);
        Err(ClientError::Api {
            status: self.status,
            code,
            message,
        })
    }
}

/// How a WebSocket read ended or what it brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON text frame.
    Frame(serde_json::Value),
    /// The server closed; the close code and reason when it sent a close frame.
    Closed(Option<(u16, String)>),
}

impl Client {
    /// A client for `https://host:port`, trusting only the CA in `ca_pem`.
    ///
    /// # Errors
    /// A malformed URL or an unreadable CA file.
    pub fn new(base_url: &str, ca_pem: &Path) -> Result<Self, ClientError> {
        let rest = base_url
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Url(base_url.to_owned()))?
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)))
            .ok_or_else(|| ClientError::Url(base_url.to_owned()))?;
        let http_tls = crate::tls::client_config_trusting(ca_pem, &[])?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(http_tls))
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let ws_config = crate::tls::client_config_trusting(ca_pem, &[crate::tls::ALPN_HTTP11])?;
        Ok(Self {
            host,
            port,
            http,
            ws_tls: tokio_rustls::TlsConnector::from(ws_config),
        })
    }

    fn url(&self, path: &str) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}{path}", self.host, self.port)
        } else {
            format!("https://{}:{}{path}", self.host, self.port)
        }
    }

    /// Sends a request with an optional bearer token and raw body.
    ///
    /// # Errors
    /// Transport failures (not HTTP error statuses, which come back in the reply).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let (status, is_json, bytes) = self.exchange(method, path, bearer, body).await?;
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else if is_json {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?
        } else {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        Ok(Reply { status, body })
    }

    /// A GET whose answer is returned as raw bytes (backups, SDK files).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn download(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, _, bytes) = self
            .exchange(Method::GET, path, bearer, Bytes::new())
            .await?;
        Ok((status, bytes))
    }

    /// One request, read whole: status, whether the answer says it is JSON, and its bytes.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, bool, Bytes), ClientError> {
        let mut req = hyper::Request::builder().method(method).uri(self.url(path));
        if let Some(token) = bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| ClientError::Http(format!("{e:?}")))?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .is_none_or(|v| v.as_bytes().starts_with(b"application/json"));
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, is_json, bytes))
    }

    /// Sends JSON (or nothing) and parses the JSON reply.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, ClientError> {
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.raw(method, path, bearer, bytes).await
    }

    /// Sends JSON (or nothing) and returns the reply body when the status is `expected`.
    ///
    /// # Errors
    /// Transport failures, or the server's error as [`ClientError::Api`].
    pub async fn call_expecting(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
        expected: StatusCode,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(method, path, bearer, body)
            .await?
            .expect_status(expected)
    }

    /// Registers a device with the app's client key; returns `(device_id, device_token)`.
    ///
    /// # Errors
    /// Transport failures, or the server's error as [`ClientError::Api`].
    pub async fn register_device(
        &self,
        client_key: &str,
        platform: &str,
        user_token: Option<&str>,
    ) -> Result<(String, String), ClientError> {
        let mut body = serde_json::json!({ "platform": platform });
        if let Some(t) = user_token {
            body["user_token"] = serde_json::json!(t);
        }
        let reply = self
            .call_expecting(
                Method::POST,
                "/v1/devices/register",
                Some(client_key),
                Some(&body),
                StatusCode::CREATED,
            )
            .await?;
        let field = |name: &str| {
            reply[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Protocol(format!("registration without {name}")))
        };
        Ok((field("device_id")?, field("token")?))
    }

    /// Opens a WebSocket to `/v1/connect` with the device token in the header (or, with
    /// `token_in_header = false`, in a `hello` frame) and waits for `welcome`.
    ///
    /// # Errors
    /// Transport failures, a refused upgrade, or no `welcome`.
    pub async fn connect(
        &self,
        token: &str,
        token_in_header: bool,
    ) -> Result<DeviceConnection, ClientError> {
        let mut ws = self.open_ws(token_in_header.then_some(token)).await?;
        if !token_in_header {
            let hello = serde_json::json!({"type": "hello", "token": token}).to_string();
            ws.send(Message::Text(hello.into())).await?;
        }
        let mut conn = DeviceConnection {
            ws,
            device_id: String::new(),
        };
        let welcome = conn
            .next_frame()
            .await?
            .ok_or_else(|| ClientError::Protocol("closed before welcome".into()))?;
        if welcome["type"] != "welcome" {
            return Err(ClientError::Protocol(format!(
                "expected welcome, got {welcome}"
            )));
        }
        welcome["device_id"]
            .as_str()
            .unwrap_or_default()
            .clone_into(&mut conn.device_id);
        Ok(conn)
    }

    /// Opens the raw WebSocket (no welcome awaited); for protocol tests.
    ///
    /// # Errors
    /// Transport failures or a refused upgrade.
    pub async fn open_ws(
        &self,
        bearer: Option<&str>,
    ) -> Result<WebSocketStream<TlsStream<TcpStream>>, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let tls = self.ws_tls.connect(name, tcp).await?;
        let url = self.url("/v1/connect").replacen("https://", "wss://", 1);
        let mut request = url.into_client_request()?;
        if let Some(token) = bearer {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Protocol("token is not a header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, tls, Some(config)).await?;
        Ok(ws)
    }
}

/// A device's live WebSocket connection.
pub struct DeviceConnection {
    pub ws: WebSocketStream<TlsStream<TcpStream>>,
    pub device_id: String,
}

impl DeviceConnection {
    /// The next JSON text frame; `None` when the server closed.
    ///
    /// # Errors
    /// Transport failures or a frame that is not JSON.
    pub async fn next_frame(&mut self) -> Result<Option<serde_json::Value>, ClientError> {
        while let Some(msg) = self.ws.next().await {
            match msg? {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .map(Some)
                        .map_err(|e| ClientError::Protocol(e.to_string()))
                }
                Message::Close(_) => return Ok(None),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The next JSON text frame, or how the connection ended (with the close code).
    ///
    /// # Errors
    /// Transport failures or a frame that is not JSON.
    pub async fn next_incoming(&mut self) -> Result<Incoming, ClientError> {
        while let Some(msg) = self.ws.next().await {
            match msg? {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .map(Incoming::Frame)
                        .map_err(|e| ClientError::Protocol(e.to_string()))
                }
                Message::Close(frame) => {
                    return Ok(Incoming::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ))
                }
                _ => {}
            }
        }
        Ok(Incoming::Closed(None))
    }

    /// Acknowledges messages by id.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn ack(&mut self, ids: &[String]) -> Result<(), ClientError> {
        let frame = serde_json::json!({"type": "ack", "ids": ids}).to_string();
        self.ws.send(Message::Text(frame.into())).await?;
        Ok(())
    }

    /// Reports that the user opened these messages.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn opened(&mut self, ids: &[String]) -> Result<(), ClientError> {
        let frame = serde_json::json!({"type": "opened", "ids": ids}).to_string();
        self.ws.send(Message::Text(frame.into())).await?;
        Ok(())
    }

    /// Closes the connection politely.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
        Ok(())
    }
}
