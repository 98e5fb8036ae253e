//! Limits on the TCP connections a server accepts, so idle or abusive clients cannot exhaust its
//! file descriptors: a cap on open connections in all and per client address (connections over
//! either are accepted and closed at once, so the backlog never fills), a deadline for a new
//! connection's first bytes, and an idle timeout. A connection counts as active while its peer
//! sends anything: a healthy HTTP/2 client, even one only watching a job, answers the server's
//! keep-alive pings ([`crate::transport::server_builder`]) well within the idle timeout.

use futures::Stream;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What a server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_per_client: usize,
    /// A new connection must send its first bytes within this.
    pub handshake_timeout: Duration,
    /// A connection whose peer sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_client: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Open connections, in all and per client address, and those that have sent nothing yet
/// (oldest first), which a new connection may displace when the server is full.
#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    silent: VecDeque<Weak<Eviction>>,
}

/// A connection's eviction: set by the acceptor when the server is full and this connection
/// has sent nothing yet; its reader then fails, which closes it.
#[derive(Default)]
struct Eviction {
    evicted: AtomicBool,
    /// It has sent bytes: a live client, never evicted.
    spoke: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Eviction {
    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }
}

impl Open {
    /// Displaces the oldest connection that has sent nothing yet; false if there is none.
    fn evict_oldest_silent(&mut self) -> bool {
        while let Some(weak) = self.silent.pop_front() {
            if let Some(e) = weak.upgrade() {
                if !e.spoke.load(Ordering::Acquire) && !e.evicted.load(Ordering::Acquire) {
                    e.evict();
                    return true;
                }
            }
        }
        false
    }
}

/// Releases its connection's place when the connection is dropped.
struct Place {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

/// `listener`'s connections within `limits`, with `TCP_NODELAY` on (small HTTP/2 frames must not
/// wait for Nagle's algorithm). At the connection cap, a new connection displaces the oldest one
/// that has sent nothing yet (a flood of silent connections from many addresses cannot lock out
/// a live client); only when every open connection has spoken is the new one refused.
pub fn limited_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<LimitedConn>> {
    let open = Arc::new(Mutex::new(Open::default()));
    futures::stream::unfold((listener, open), move |(listener, open)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                // Out of descriptors or a connection reset before accept: wait a moment (a busy
                // retry would spin), and go on accepting.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let client = peer.ip();
            let eviction = Arc::new(Eviction::default());
            let admitted = {
                let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                let mine = o.per_client.get(&client).copied().unwrap_or(0);
                // An evicted connection holds its place until it closes, a moment later.
                let ok = mine < limits.max_per_client && (o.total < limits.max_connections || o.evict_oldest_silent());
                if ok {
                    o.total += 1;
                    *o.per_client.entry(client).or_default() += 1;
                    // Forget the places of closed connections now and then.
                    if o.silent.len() > 2 * limits.max_connections {
                        o.silent.retain(|w| w.strong_count() > 0);
                    }
                    o.silent.push_back(Arc::downgrade(&eviction));
                }
                ok
            };
            if !admitted {
                tracing::debug!(%client, "connection refused: over the connection limits");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let place = Place {
                open: open.clone(),
                client,
            };
            let conn = LimitedConn {
                inner: stream,
                _place: place,
                eviction,
                deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
                idle_timeout: limits.idle_timeout,
            };
            return Some((Ok(conn), (listener, open)));
        }
    })
}

/// An accepted connection that closes itself when its peer stays silent too long.
pub struct LimitedConn {
    inner: TcpStream,
    _place: Place,
    eviction: Arc<Eviction>,
    deadline: Pin<Box<Sleep>>,
    idle_timeout: Duration,
}

impl AsyncRead for LimitedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.eviction.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed for a new connection: the server is at its connection limit and this one sent nothing",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.eviction.spoke.store(true, Ordering::Release);
                    let next = Instant::now() + self.idle_timeout;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if !self.eviction.spoke.load(Ordering::Acquire) {
                    *self.eviction.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
                    // Evicted between the check above and the waker being stored: nobody would wake us.
                    if self.eviction.evicted.load(Ordering::Acquire) {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within the connection's deadline",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server over `limited_incoming` that reads each connection until it fails or ends.
    async fn serve(limits: ConnectionLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut incoming = Box::pin(limited_incoming(listener, limits));
            while let Some(Ok(mut conn)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Whether the server closed `s` within `wait`.
    async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 8];
        matches!(
            tokio::time::timeout(wait, s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_displaces_the_oldest_silent_one_never_a_live_one() {
        let limits = ConnectionLimits {
            max_connections: 2,
            max_per_client: 10,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        };
        let addr = serve(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut live = TcpStream::connect(addr).await.unwrap();
        live.write_all(b"hello").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The server is full: a newcomer displaces the silent connection, not the live one.
        let mut newcomer = TcpStream::connect(addr).await.unwrap();
        newcomer.write_all(b"hi").await.unwrap();
        assert!(
            closed(&mut silent, Duration::from_secs(2)).await,
            "the silent connection stays open"
        );
        assert!(
            !closed(&mut live, Duration::from_millis(200)).await,
            "the live connection was closed"
        );
        assert!(
            !closed(&mut newcomer, Duration::from_millis(200)).await,
            "the newcomer was refused"
        );
        // Both open connections have spoken: the next one is refused.
        let mut refused = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed(&mut refused, Duration::from_secs(2)).await,
            "a connection over the cap stayed open"
        );
        assert!(!closed(&mut live, Duration::from_millis(100)).await);
    }
}
