//! Longshot's use of etcd, shared by the coordinator (`etcd_registry`, `job_store`) and the worker
//! (`etcd_membership`):
//!
//! - [`schema`]: the contract: key prefixes and the worker record's encoding and version.
//! - this module: connecting: endpoint validation, bounded start-up retries, a deadline on every
//!   request, and reconnect backoff.
//!
//! etcd-client connects lazily over a balanced channel: with no reachable member a request waits
//! forever, and a channel whose member restarted may never recover. So every request here has a
//! deadline, and the long-lived loops build a fresh client after any failure.

#![forbid(unsafe_code)]

pub mod schema;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use std::future::Future;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EtcdError {
    #[error("no etcd endpoint given; pass --etcd http://host:port (or https://)")]
    NoEndpoint,
    #[error("etcd endpoint {0:?} is not http://host:port or https://host:port")]
    BadEndpoint(String),
    #[error("{0}")]
    Access(String),
    #[error("etcd at {endpoints} is unreachable after {waited:.1?} ({attempts} attempts): {last}")]
    Unreachable {
        endpoints: String,
        waited: Duration,
        attempts: u32,
        last: String,
    },
    #[error("etcd request failed: {0}")]
    Request(String),
    #[error("etcd request failed: {0}")]
    Client(#[from] etcd_client::Error),
}

/// One request's deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP/2 keepalive ping interval (see [`connect_once`]).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long start-up retries an unreachable etcd by default.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Runs an etcd request with [`REQUEST_TIMEOUT`].
pub async fn timed<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, EtcdError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(EtcdError::Request(format!("no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

/// How this process authenticates to etcd: TLS (the CA that signed etcd's certificate, and a
/// client certificate for `--client-cert-auth`) and a user for etcd's auth. Set once at start-up
/// ([`set_access`]); every client made here uses it.
#[derive(Clone, Default)]
pub struct EtcdAccess {
    /// The CA certificate (PEM) etcd's certificate is verified by; `https://` endpoints need it
    /// unless etcd's certificate is publicly trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and key (PEM).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// A user and password for etcd's authentication.
    pub user: Option<(String, String)>,
}

static ACCESS: RwLock<Option<EtcdAccess>> = RwLock::new(None);

/// Sets how every etcd client of this process authenticates.
pub fn set_access(access: EtcdAccess) {
    *ACCESS.write().unwrap_or_else(|p| p.into_inner()) = Some(access);
}

/// The connect options for `endpoints` with this process's [`EtcdAccess`].
fn access_options(endpoints: &[String], mut opts: ConnectOptions) -> ConnectOptions {
    let access = ACCESS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default();
    if endpoints.iter().any(|e| e.starts_with("https://")) {
        let mut tls = TlsOptions::new();
        tls = match &access.ca_pem {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &access.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    if let Some((user, password)) = access.user {
        opts = opts.with_user(user, password);
    }
    opts
}

/// Checks that every endpoint is `http://host:port` or `https://host:port`, and that TLS settings
/// go with `https://`.
pub fn validate_endpoints(endpoints: &[String]) -> Result<(), EtcdError> {
    if endpoints.is_empty() {
        return Err(EtcdError::NoEndpoint);
    }
    let tls = endpoints.iter().filter(|e| e.starts_with("https://")).count();
    if tls != 0 && tls != endpoints.len() {
        return Err(EtcdError::Access(format!(
            "--etcd {}: all endpoints must use one scheme, http:// or https://",
            endpoints.join(",")
        )));
    }
    let access = ACCESS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default();
    if tls == 0 && (access.ca_pem.is_some() || access.identity.is_some()) {
        return Err(EtcdError::Access(format!(
            "--etcd-ca/--etcd-cert are given but --etcd {} is not https://",
            endpoints.join(",")
        )));
    }
    for e in endpoints {
        let rest = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .ok_or_else(|| EtcdError::BadEndpoint(e.clone()))?;
        match rest.trim_end_matches('/').rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(EtcdError::BadEndpoint(e.clone())),
        }
    }
    Ok(())
}

/// A client whose first request was answered.
pub async fn connect_once(endpoints: &[String]) -> Result<Client, EtcdError> {
    // HTTP/2 pings notice a silently dead connection (and so a stuck watch) within 15 s. They
    // must fit etcd's ping policy (gRPC's enforcement: at most one ping per
    // --grpc-keepalive-min-time, 5 s by default, and none without an open stream), or etcd answers
    // GOAWAY "too_many_pings" and every watch on the connection breaks: so 10 s, twice the default
    // minimum, and only while a stream (a watch, a lease renewal) is open.
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(KEEPALIVE_INTERVAL, Duration::from_secs(5))
        .with_keep_alive_while_idle(false);
    let opts = access_options(endpoints, opts);
    let mut client = timed(Client::connect(endpoints, Some(opts))).await?;
    timed(client.get(schema::ROOT, Some(GetOptions::new().with_prefix().with_count_only()))).await?;
    Ok(client)
}

/// Connects, retrying with exponential backoff (100 ms doubling to 2 s) for at most `patience`.
pub async fn connect(endpoints: &[String], patience: Duration) -> Result<Client, EtcdError> {
    validate_endpoints(endpoints)?;
    let start = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempts = 0;
    loop {
        attempts += 1;
        // No attempt may outlast the patience (each request alone may take REQUEST_TIMEOUT).
        let remaining = patience.saturating_sub(start.elapsed()).max(Duration::from_millis(100));
        let last = match tokio::time::timeout(remaining, connect_once(endpoints)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {remaining:.1?}"),
        };
        let delay = backoff.next_delay();
        if start.elapsed() + delay >= patience {
            return Err(EtcdError::Unreachable {
                endpoints: endpoints.join(","),
                waited: start.elapsed(),
                attempts,
                last,
            });
        }
        tracing::info!("etcd not reachable yet ({last}); retrying in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff between `min` and `max`.
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The first key after every key that starts with `prefix` (the end of a prefix range).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_validated() {
        assert!(validate_endpoints(&["http://127.0.0.1:2379".into(), "http://etcd-1:2379/".into()]).is_ok());
        assert!(validate_endpoints(&["https://etcd-1:2379".into(), "https://etcd-2:2379".into()]).is_ok());
        assert!(matches!(validate_endpoints(&[]), Err(EtcdError::NoEndpoint)));
        for bad in ["127.0.0.1:2379", "ftp://h:1", "http://:2379", "http://h:0", "https://h"] {
            let e = validate_endpoints(&[bad.into()]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("etcd endpoint {bad:?} is not http://host:port or https://host:port")
            );
        }
        let mixed = validate_endpoints(&["http://a:1".into(), "https://b:1".into()]).unwrap_err();
        assert!(
            mixed.to_string().contains("all endpoints must use one scheme"),
            "{mixed}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("/longshot/v1/jobs/"), b"/longshot/v1/jobs0".to_vec());
    }
}
