//! Opening a connection to the target: the [`Connector`] trait, its TCP and onion
//! implementations, and [`TargetConnector`], which picks one from the configured address.
//!
//! Connectors do not apply the connect timeout (the [`Proxy`](super::Proxy) does) and never
//! report the address they connect to in errors.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arti_client::{HasKind as _, StreamPrefs, TorClient};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tor_rtcompat::PreferredRuntime;

use super::ConnectError;
use crate::config::TargetAddr;
use crate::keys::OnionAddress;

/// Something that opens a fresh connection to the target.
pub trait Connector: Send + Sync + 'static {
    /// The connection it opens.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens one connection. May take arbitrarily long: the caller applies the timeout and may
    /// drop the future at any point.
    fn connect(&self) -> impl Future<Output = Result<Self::Stream, ConnectError>> + Send;
}

/// Connects to a plain `host:port` over TCP, resolving the host with tokio (the system
/// resolver) and trying each resolved address in turn.
#[derive(Clone)]
pub struct TcpConnector {
    /// Host name or IP address.
    host: String,
    /// Port.
    port: u16,
}

impl TcpConnector {
    /// A connector for `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> TcpConnector {
        TcpConnector {
            host: host.into(),
            port,
        }
    }
}

impl std::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The target's address is private: never printed.
        f.write_str("TcpConnector([redacted])")
    }
}

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ConnectError::from(&e))?;
        // Proxied traffic is often interactive; don't add Nagle delay on top of Tor's.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Connects to another onion service through the embedded Arti client.
#[derive(Clone)]
pub struct OnionConnector {
    /// The Arti client, shared with the rest of the node.
    tor: Arc<TorClient<PreferredRuntime>>,
    /// The target as `<address>.onion`.
    host: String,
    /// Its port.
    port: u16,
    /// Stream preferences: onion services explicitly allowed.
    prefs: StreamPrefs,
}

impl OnionConnector {
    /// A connector for `address:port` through `tor`.
    pub fn new(tor: Arc<TorClient<PreferredRuntime>>, address: &OnionAddress, port: u16) -> Self {
        let mut prefs = StreamPrefs::new();
        prefs.connect_to_onion_services(arti_client::config::BoolOrAuto::Explicit(true));
        OnionConnector {
            tor,
            host: address.to_string(),
            port,
            prefs,
        }
    }
}

impl std::fmt::Debug for OnionConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnionConnector([redacted])")
    }
}

/// The I/O error kind closest to Arti's classification of a failed connect.
fn io_kind_of(kind: arti_client::ErrorKind) -> io::ErrorKind {
    use arti_client::ErrorKind as K;
    match kind {
        K::RemoteConnectionRefused | K::OnionServiceNotRunning | K::ExitPolicyRejected => {
            io::ErrorKind::ConnectionRefused
        }
        K::RemoteHostNotFound | K::OnionServiceNotFound | K::RemoteHostResolutionFailed => {
            io::ErrorKind::NotFound
        }
        K::TorNetworkTimeout | K::RemoteNetworkTimeout | K::ExitTimeout => io::ErrorKind::TimedOut,
        K::RemoteStreamClosed | K::RemoteStreamReset | K::RemoteStreamError => {
            io::ErrorKind::ConnectionReset
        }
        K::OnionServiceMissingClientAuth | K::OnionServiceWrongClientAuth => {
            io::ErrorKind::PermissionDenied
        }
        K::OnionServiceAddressInvalid | K::InvalidStreamTarget | K::ForbiddenStreamTarget => {
            io::ErrorKind::InvalidInput
        }
        _ => io::ErrorKind::Other,
    }
}

impl Connector for OnionConnector {
    type Stream = arti_client::DataStream;

    async fn connect(&self) -> Result<arti_client::DataStream, ConnectError> {
        self.tor
            .connect_with_prefs((self.host.clone(), self.port), &self.prefs)
            .await
            .map_err(|e| {
                let tor_kind = e.kind();
                ConnectError {
                    kind: io_kind_of(tor_kind),
                    tor_kind: Some(tor_kind),
                }
            })
    }
}

/// The connector for the configured target: TCP or onion.
#[derive(Debug, Clone)]
pub enum TargetConnector {
    /// A plain TCP target.
    Tcp(TcpConnector),
    /// An onion target reached through Arti.
    Onion(OnionConnector),
}

impl TargetConnector {
    /// The connector for `target`; `tor` is used only for onion targets.
    pub fn new(target: &TargetAddr, tor: &Arc<TorClient<PreferredRuntime>>) -> TargetConnector {
        match target {
            TargetAddr::Tcp { host, port } => TargetConnector::Tcp(TcpConnector::new(host, *port)),
            TargetAddr::Onion { address, port } => {
                TargetConnector::Onion(OnionConnector::new(Arc::clone(tor), address, *port))
            }
        }
    }
}

impl Connector for TargetConnector {
    type Stream = TargetStream;

    async fn connect(&self) -> Result<TargetStream, ConnectError> {
        match self {
            TargetConnector::Tcp(c) => c.connect().await.map(TargetStream::Tcp),
            TargetConnector::Onion(c) => {
                c.connect().await.map(|s| TargetStream::Onion(Box::new(s)))
            }
        }
    }
}

/// A connection opened by [`TargetConnector`].
#[derive(Debug)]
pub enum TargetStream {
    /// To a TCP target.
    Tcp(TcpStream),
    /// To an onion target.
    Onion(Box<arti_client::DataStream>),
}

impl AsyncRead for TargetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            TargetStream::Onion(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TargetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            TargetStream::Onion(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            TargetStream::Onion(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            TargetStream::Onion(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
