//! The proxy's typed errors. None of them carries the target's address: a connect failure keeps
//! only the kind of failure (`io::ErrorKind`, and Arti's `ErrorKind` for onion targets).

use std::fmt;
use std::io;
use std::time::Duration;

/// Bytes moved by one stream so far, counted when written to the receiving side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Client → target.
    pub up: u64,
    /// Target → client.
    pub down: u64,
}

impl fmt::Display for Transferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes up, {} bytes down", self.up, self.down)
    }
}

/// One direction of a proxied stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → target.
    Up,
    /// Target → client.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "client to target",
            Direction::Down => "target to client",
        })
    }
}

/// Why a [`Connector`](super::Connector) could not reach the target. Carries kinds only, never
/// the address or an error message that could name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}", tor_kind.map(|k| format!(" (tor: {k})")).unwrap_or_default())]
pub struct ConnectError {
    /// The kind of failure, as an I/O error kind (`ConnectionRefused`, `NotFound`, ...).
    pub kind: io::ErrorKind,
    /// For onion targets, Arti's classification of the failure.
    pub tor_kind: Option<arti_client::ErrorKind>,
}

impl ConnectError {
    /// A failure described by an I/O error kind only.
    pub fn from_io_kind(kind: io::ErrorKind) -> ConnectError {
        ConnectError {
            kind,
            tor_kind: None,
        }
    }
}

impl From<&io::Error> for ConnectError {
    fn from(e: &io::Error) -> ConnectError {
        ConnectError::from_io_kind(e.kind())
    }
}

/// How serving one stream failed or was cut short.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The target did not answer within the connect timeout.
    #[error("connecting to the target timed out after {timeout:?}")]
    ConnectTimeout {
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The target refused or could not be reached.
    #[error("connecting to the target failed: {0}")]
    ConnectFailed(ConnectError),
    /// No bytes moved in either direction for the idle timeout; both sides were closed.
    #[error("stream idle for {timeout:?}, closed ({transferred})")]
    Idle {
        /// The configured idle timeout.
        timeout: Duration,
        /// Bytes moved before the stream went idle.
        transferred: Transferred,
    },
    /// The node is shutting down; the stream was closed.
    #[error("shutting down, stream closed ({transferred})")]
    Shutdown {
        /// Bytes moved before shutdown.
        transferred: Transferred,
    },
    /// Reading or writing failed in one direction; both sides were closed.
    #[error("I/O error copying {direction} ({transferred}): {source}")]
    Io {
        /// The direction whose read or write failed.
        direction: Direction,
        /// The error.
        source: io::Error,
        /// Bytes moved before the error.
        transferred: Transferred,
    },
}

impl ProxyError {
    /// True if the target was never reached (the caller should reject the stream, e.g. with an
    /// END, and may count it against the target's health).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectTimeout { .. } | ProxyError::ConnectFailed(_)
        )
    }

    /// Bytes moved before the stream ended (zero for connect failures).
    pub fn transferred(&self) -> Transferred {
        match self {
            ProxyError::ConnectTimeout { .. } | ProxyError::ConnectFailed(_) => {
                Transferred::default()
            }
            ProxyError::Idle { transferred, .. }
            | ProxyError::Shutdown { transferred }
            | ProxyError::Io { transferred, .. } => *transferred,
        }
    }
}
