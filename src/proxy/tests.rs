//! Proxy tests on loopback sockets and in-memory duplex pipes; timeouts run under tokio's
//! paused clock. `guard` deadlines only turn a hang into a failure.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::*;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const PIPE: usize = 64 * 1024;

fn limits(max_connections: usize) -> ProxyLimits {
    ProxyLimits {
        connect_timeout: CONNECT_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        max_connections,
        buffer_size: DEFAULT_BUFFER_SIZE,
    }
}

/// Fails the test instead of hanging (real time; never reached when things work).
async fn guard<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test hung")
}

/// Deterministic, non-periodic test data.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// A target reached through an in-memory pipe; the target's end is handed to the test.
struct DuplexConnector {
    ends: mpsc::UnboundedSender<DuplexStream>,
    capacity: usize,
}

impl DuplexConnector {
    fn new(capacity: usize) -> (DuplexConnector, mpsc::UnboundedReceiver<DuplexStream>) {
        let (ends, rx) = mpsc::unbounded_channel();
        (DuplexConnector { ends, capacity }, rx)
    }
}

impl Connector for DuplexConnector {
    type Stream = DuplexStream;

    async fn connect(&self) -> Result<DuplexStream, ConnectError> {
        let (ours, theirs) = duplex(self.capacity);
        self.ends
            .send(theirs)
            .map_err(|_| ConnectError::from_io_kind(io::ErrorKind::BrokenPipe))?;
        Ok(ours)
    }
}

/// A target that never answers; says when a connect has started.
struct PendingConnector {
    started: mpsc::UnboundedSender<()>,
}

impl Connector for PendingConnector {
    type Stream = DuplexStream;

    async fn connect(&self) -> Result<DuplexStream, ConnectError> {
        let _ = self.started.send(());
        std::future::pending().await
    }
}

fn proxy<C: Connector>(max: usize, connector: C) -> (Proxy<C>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    (Proxy::new(limits(max), connector, rx), tx)
}

/// A loopback TCP target: accepts one connection and runs `serve` on it.
async fn tcp_target<F, Fut>(serve: F) -> (TcpConnector, tokio::task::JoinHandle<()>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(stream).await;
    });
    (TcpConnector::new("127.0.0.1", port), task)
}

#[tokio::test]
async fn echo_round_trip_5_mib_both_ways() {
    const LEN: usize = 5 * 1024 * 1024;
    let (connector, target) = tcp_target(|mut s| async move {
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    })
    .await;
    let (proxy, _shutdown) = proxy(4, connector);
    let (client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });

    let data = pattern(LEN, 1);
    let (mut rd, mut wr) = tokio::io::split(client);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(LEN);
    guard(rd.read_to_end(&mut got)).await.unwrap();
    guard(writer).await.unwrap();
    assert!(got == data, "echoed bytes differ");

    let outcome = guard(serve).await.unwrap().unwrap();
    guard(target).await.unwrap();
    let len = LEN as u64;
    assert_eq!(outcome.transferred, Transferred { up: len, down: len });
    let stats = proxy.stats();
    assert_eq!((stats.bytes_up, stats.bytes_down), (len, len));
    assert_eq!(
        (stats.active, stats.total, stats.failed_connects),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn half_close_client_first_target_still_replies() {
    let request = pattern(100 * 1024, 2);
    let reply = pattern(1024 * 1024, 3);
    let (req, rep) = (request.clone(), reply.clone());
    let (connector, target) = tcp_target(move |mut s| async move {
        // Read the whole request (until the client's half-close), then answer.
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(got == req, "request differs");
        s.write_all(&rep).await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    let (proxy, _shutdown) = proxy(4, connector);
    let (mut client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });

    guard(client.write_all(&request)).await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    guard(client.read_to_end(&mut got)).await.unwrap();
    assert!(got == reply, "reply differs");

    let outcome = guard(serve).await.unwrap().unwrap();
    guard(target).await.unwrap();
    assert_eq!(outcome.transferred.up, request.len() as u64);
    assert_eq!(outcome.transferred.down, reply.len() as u64);
}

#[tokio::test]
async fn half_close_target_first_client_keeps_sending() {
    let greeting = b"hello, then I stop talking".to_vec();
    let upload = pattern(512 * 1024, 4);
    let (received_tx, received_rx) = oneshot::channel();
    let g = greeting.clone();
    let (connector, target) = tcp_target(move |mut s| async move {
        s.write_all(&g).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        received_tx.send(got).unwrap();
    })
    .await;
    let (proxy, _shutdown) = proxy(4, connector);
    let (mut client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });

    // The target's half-close reaches the client as EOF while its own direction stays open.
    let mut got = Vec::new();
    guard(client.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, greeting);
    guard(client.write_all(&upload)).await.unwrap();
    client.shutdown().await.unwrap();

    assert!(
        guard(received_rx).await.unwrap() == upload,
        "upload differs"
    );
    guard(serve).await.unwrap().unwrap();
    guard(target).await.unwrap();
}

#[tokio::test]
async fn target_down_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let (proxy, _shutdown) = proxy(4, TcpConnector::new("127.0.0.1", port));
    let (_client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();

    let err = guard(proxy.serve_stream(permit, proxied))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProxyError::ConnectFailed(e) if e.kind == io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(err.is_connect_failure());
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.failed_connects), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_when_target_never_answers() {
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let (proxy, _shutdown) = proxy(4, PendingConnector { started });
    let (_client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();

    let t0 = Instant::now();
    let err = proxy.serve_stream(permit, proxied).await.unwrap_err();
    assert!(matches!(err, ProxyError::ConnectTimeout { timeout } if timeout == CONNECT_TIMEOUT));
    assert_eq!(t0.elapsed(), CONNECT_TIMEOUT);
    assert!(started_rx.try_recv().is_ok());
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.failed_connects), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_both_sides() {
    let (connector, mut ends) = DuplexConnector::new(PIPE);
    let (proxy, _shutdown) = proxy(4, connector);
    let (mut client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });
    let mut target = ends.recv().await.unwrap();

    let mut buf = [0u8; 4];
    client.write_all(b"ping").await.unwrap();
    target.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // Traffic part-way through the timeout restarts it.
    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
    target.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    let last_traffic = Instant::now();

    let err = serve.await.unwrap().unwrap_err();
    let idle_for = last_traffic.elapsed();
    assert!(
        matches!(err, ProxyError::Idle { timeout, transferred }
            if timeout == IDLE_TIMEOUT && transferred == Transferred { up: 4, down: 4 }),
        "{err:?}"
    );
    assert!(idle_for >= IDLE_TIMEOUT && idle_for < IDLE_TIMEOUT + Duration::from_secs(1));
    // Both sides see the stream closed.
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    assert_eq!(target.read(&mut buf).await.unwrap(), 0);
    assert_eq!(proxy.stats().active, 0);
}

#[tokio::test]
async fn max_connections_refuses_then_admits_after_one_finishes() {
    let (connector, mut ends) = DuplexConnector::new(PIPE);
    let (proxy, _shutdown) = proxy(2, connector);
    let first = proxy.try_admit().unwrap();
    let _second = proxy.try_admit().unwrap();
    assert!(proxy.try_admit().is_none());
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.total, stats.refused), (2, 2, 1));

    // Serve the first stream to completion: both sides close.
    let (mut client, proxied) = duplex(PIPE);
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(first, proxied).await });
    let mut target = guard(ends.recv()).await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    guard(target.read_to_end(&mut rest)).await.unwrap();
    target.shutdown().await.unwrap();
    guard(serve).await.unwrap().unwrap();

    let third = proxy.try_admit();
    assert!(third.is_some());
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.total, stats.refused), (2, 3, 1));
    assert_ne!(third.map(|p| p.id()), Some(StreamId(1)));
}

#[tokio::test]
async fn shutdown_ends_in_flight_copy() {
    let (connector, mut ends) = DuplexConnector::new(PIPE);
    let (proxy, shutdown) = proxy(4, connector);
    let (mut client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });
    let mut target = guard(ends.recv()).await.unwrap();

    let mut buf = [0u8; 5];
    client.write_all(b"hello").await.unwrap();
    guard(target.read_exact(&mut buf)).await.unwrap();

    shutdown.send(true).unwrap();
    let err = guard(serve).await.unwrap().unwrap_err();
    assert!(
        matches!(err, ProxyError::Shutdown { transferred } if transferred.up == 5),
        "{err:?}"
    );
    assert_eq!(guard(client.read(&mut buf)).await.unwrap(), 0);
    assert_eq!(guard(target.read(&mut buf)).await.unwrap(), 0);
    assert!(proxy.try_admit().is_none());
    assert_eq!(proxy.stats().active, 0);
}

#[tokio::test]
async fn shutdown_ends_pending_connect() {
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let (proxy, shutdown) = proxy(4, PendingConnector { started });
    let (_client, proxied) = duplex(PIPE);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });

    guard(started_rx.recv()).await.unwrap();
    shutdown.send(true).unwrap();
    let err = guard(serve).await.unwrap().unwrap_err();
    assert!(matches!(err, ProxyError::Shutdown { .. }), "{err:?}");
    // Shutdown is not a connect failure.
    assert_eq!(proxy.stats().failed_connects, 0);
}

#[tokio::test]
async fn dropped_shutdown_sender_means_shutdown() {
    let (connector, _ends) = DuplexConnector::new(PIPE);
    let (proxy, shutdown) = proxy(4, connector);
    assert!(!proxy.is_shutting_down());
    drop(shutdown);
    assert!(proxy.is_shutting_down());
    assert!(proxy.try_admit().is_none());
}

#[tokio::test(start_paused = true)]
async fn back_pressure_bounds_buffering() {
    const PIPE_SMALL: usize = 8 * 1024;
    const CHUNK: usize = 4 * 1024;
    let (connector, mut ends) = DuplexConnector::new(PIPE_SMALL);
    let (proxy, _shutdown) = proxy(4, connector);
    let (mut client, proxied) = duplex(PIPE_SMALL);
    let permit = proxy.try_admit().unwrap();
    let p = proxy.clone();
    let _serve = tokio::spawn(async move { p.serve_stream(permit, proxied).await });
    let _target = ends.recv().await.unwrap(); // never read

    // Write until the client is blocked; the idle timeout is far longer than this probe.
    let chunk = [7u8; CHUNK];
    let mut accepted = 0;
    while let Ok(r) = tokio::time::timeout(Duration::from_secs(1), client.write_all(&chunk)).await {
        r.unwrap();
        accepted += CHUNK;
        assert!(accepted <= 1024 * 1024, "no back-pressure");
    }
    // Two pipes plus one proxy buffer (plus the chunk in flight) at most.
    assert!(
        accepted <= 2 * PIPE_SMALL + DEFAULT_BUFFER_SIZE + CHUNK,
        "{accepted}"
    );
    assert!(accepted >= PIPE_SMALL, "{accepted}");
}

#[test]
fn connectors_and_errors_never_show_the_target() {
    let c = TcpConnector::new("secret-target.example", 8080);
    assert!(!format!("{c:?}").contains("secret"));
    let c = TargetConnector::Tcp(c);
    assert!(!format!("{c:?}").contains("secret"));
    let e = ProxyError::ConnectFailed(ConnectError::from_io_kind(io::ErrorKind::NotFound));
    assert!(!e.to_string().contains("secret"));
}
