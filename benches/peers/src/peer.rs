//! The three peers behind one interface: which protocol, where, and the subscriber
//! connection each speaks (a Pusher WebSocket, an MQTT client, a NATS client).

use std::net::{IpAddr, SocketAddr};

use clap::ValueEnum;

use crate::{mqtt, nats, pusher};

/// Which server the load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// soketi: Pusher protocol over plain WebSocket; publishes via its HTTP API.
    Soketi,
    /// mosquitto: MQTT 3.1.1 over plain TCP.
    Mqtt,
    /// nats-server: NATS core protocol over plain TCP.
    Nats,
}

impl Kind {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Soketi => "soketi (Pusher protocol 7, plain WebSocket)",
            Self::Mqtt => "mosquitto (MQTT 3.1.1, plain TCP)",
            Self::Nats => "nats-server (NATS core, plain TCP)",
        }
    }
}

/// A server and how to speak to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub app: pusher::App,
    /// MQTT QoS for subscriptions and publishes (0 or 1).
    pub qos: u8,
    /// Distinguishes this process's MQTT client ids from any other run's.
    pub run: u64,
}

/// One subscribed connection.
pub enum Sub {
    /// Boxed: a WebSocket stream is several times the size of the others.
    Pusher(Box<pusher::Subscriber>),
    Mqtt(mqtt::Client),
    Nats(nats::Client),
}

impl Target {
    /// The channel / topic / subject name for `name` in this protocol's syntax
    /// (`dev-1`, `dev/1`, `dev.1` for device 1; `bench` for the fan-out).
    #[must_use]
    pub fn topic(&self, base: &str, index: Option<usize>) -> String {
        let sep = match self.kind {
            Kind::Soketi => '-',
            Kind::Mqtt => '/',
            Kind::Nats => '.',
        };
        match index {
            Some(i) => format!("{base}{sep}{i}"),
            None => base.to_owned(),
        }
    }

    /// Opens connection `i` from `source` subscribed to `topic`.
    ///
    /// # Errors
    /// Connect, handshake or subscribe failure (each bounded in time).
    pub async fn subscribe(
        &self,
        i: usize,
        source: Option<IpAddr>,
        topic: &str,
    ) -> anyhow::Result<Sub> {
        Ok(match self.kind {
            Kind::Soketi => Sub::Pusher(Box::new(
                pusher::Subscriber::open(self.addr, source, &self.app, Some(topic)).await?,
            )),
            Kind::Mqtt => {
                let id = format!("wb-{:x}-{i}", self.run);
                Sub::Mqtt(mqtt::Client::open(self.addr, source, &id, Some(topic), self.qos).await?)
            }
            Kind::Nats => Sub::Nats(nats::Client::open(self.addr, source, Some(topic)).await?),
        })
    }
}

impl Sub {
    /// Waits for the next read; hands every message payload now buffered to `f`.
    ///
    /// # Errors
    /// The connection closed or broke.
    pub async fn recv_batch(&mut self, f: &mut (dyn FnMut(&[u8]) + Send)) -> anyhow::Result<usize> {
        match self {
            Self::Pusher(s) => s.recv_batch(f).await,
            Self::Mqtt(c) => c.recv_batch(f).await,
            Self::Nats(c) => c.recv_batch(f).await,
        }
    }
}
