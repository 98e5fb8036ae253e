//! Limits on the TCP connections a server accepts, so idle or abusive clients cannot exhaust its
//! file descriptors: a cap on open connections in all and per client address (connections over
//! either are accepted and closed at once, so the backlog never fills), a deadline for a new
//! connection's first bytes, and an idle timeout. A connection counts as active while its peer
//! sends anything: a healthy HTTP/2 client, even one only watching a job, answers the server's
//! keep-alive pings ([`crate::transport::server_builder`]) well within the idle timeout.

use futures::Stream;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// Open connections, in all and per client address.
#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
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
/// wait for Nagle's algorithm).
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
            let admitted = {
                let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                let mine = o.per_client.get(&client).copied().unwrap_or(0);
                let ok = o.total < limits.max_connections && mine < limits.max_per_client;
                if ok {
                    o.total += 1;
                    *o.per_client.entry(client).or_default() += 1;
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
    deadline: Pin<Box<Sleep>>,
    idle_timeout: Duration,
}

impl AsyncRead for LimitedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle_timeout;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing within the connection's deadline",
                ))),
                Poll::Pending => Poll::Pending,
            },
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
