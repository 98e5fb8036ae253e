//! TLS on Longshot's gRPC ports (rustls through tonic).
//!
//! - Cluster members (coordinators and workers) hold a [`MemberTls`]: the cluster CA and their
//!   own certificate, signed by it. Every member certificate names [`MEMBER_NAME`], and members
//!   verify each other by that name rather than by address (pod IPs and worker ports change; the
//!   CA does not).
//! - A coordinator serves TLS and asks for a client certificate without requiring one: the CLI
//!   connects with the CA alone, while the RegistryService answers only callers whose certificate
//!   the CA signed ([`crate::server`]). A worker requires a member certificate at the handshake,
//!   so nothing else can run or cancel shards or join an overlap exchange.
//! - Outgoing connections take their TLS settings from the process ([`use_member_tls`] in a
//!   member, [`use_ca`] in the CLI): an `https://` address means TLS, `http://` plaintext, and an
//!   address without a scheme means `https://` once either is set.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name in every member certificate, by which members verify each other.
pub const MEMBER_NAME: &str = "member.longshot.internal";

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate, key or CA file that cannot be used; names the flag that gave it.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {reason}")]
pub struct TlsError {
    pub flag: &'static str,
    pub path: String,
    pub reason: String,
}

/// A cluster member's TLS material, PEM-encoded and checked when loaded.
#[derive(Clone)]
pub struct MemberTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberTls { .. }")
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        flag,
        path: path.display().to_string(),
        reason: format!("cannot read it: {e}"),
    })
}

/// The certificates in `pem`, at least one.
fn certificates(flag: &'static str, path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError {
        flag,
        path: path.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// Checks that a certificate is valid now, so an expired one is named at start-up rather than
/// by every peer that refuses it.
fn check_validity(flag: &'static str, path: &str, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let bad = |reason: String| TlsError {
        flag,
        path: path.to_string(),
        reason,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        return Err(bad(format!(
            "the certificate is valid only from {} to {}: issue a new one (`longshot certs issue`)",
            validity.not_before, validity.not_after
        )));
    }
    Ok(())
}

impl MemberTls {
    /// Loads `--ca`, `--cert` and `--key`, checking that they parse, that the key belongs to the
    /// certificate and that both certificates are valid now.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let tls = Self::from_pem(read("--ca", ca)?, read("--cert", cert)?, read("--key", key)?);
        tls.map_err(|mut e| {
            e.path = match e.flag {
                "--ca" => ca,
                "--cert" => cert,
                _ => key,
            }
            .display()
            .to_string();
            e
        })
    }

    /// [`MemberTls::load`] from PEM bytes in memory (a local cluster's ephemeral CA).
    pub fn from_pem(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, TlsError> {
        let cas = certificates("--ca", "", &ca_pem)?;
        for ca in &cas {
            check_validity("--ca", "", ca)?;
        }
        let chain = certificates("--cert", "", &cert_pem)?;
        check_validity("--cert", "", &chain[0])?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError {
            flag: "--key",
            path: String::new(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        install_crypto_provider();
        // Building a server configuration checks that the key matches the certificate.
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .map_err(|e| TlsError {
                flag: "--key",
                path: String::new(),
                reason: format!("does not go with the certificate in --cert: {e}"),
            })?;
        verify_chain(&cas, &chain)?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// The CA certificate(s), PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// A coordinator's server settings (`client_auth_optional`: clients without a certificate
    /// connect, and only the RegistryService refuses them) or a worker's (a member certificate
    /// is required).
    pub(crate) fn server_config(&self, client_auth_optional: bool) -> ServerTlsConfig {
        install_crypto_provider();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(client_auth_optional)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// The member certificate must be one the CA signed: a member with a certificate from another
/// CA would start, then be refused by every peer.
fn verify_chain(cas: &[CertificateDer<'static>], chain: &[CertificateDer<'static>]) -> Result<(), TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).map_err(|e| TlsError {
            flag: "--ca",
            path: String::new(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| TlsError {
            flag: "--ca",
            path: String::new(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    let now = rustls_pki_types::UnixTime::now();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], now)
        .map_err(|e| TlsError {
            flag: "--cert",
            path: String::new(),
            reason: format!("is not a member certificate of the CA in --ca: {e}"),
        })?;
    Ok(())
}

/// rustls needs one process-wide crypto provider; ring is the one this build enables. rustls
/// 0.23.48 deprecates it for lacking post-quantum key exchange; aws-lc-rs has that but adds a
/// long C build to every build, which a cluster on its own network does not need yet.
#[allow(deprecated)]
fn install_crypto_provider() {
    // Fails only when one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What this process's outgoing connections use for TLS.
#[derive(Clone)]
struct ClientSide {
    ca: Certificate,
    identity: Option<Identity>,
}

static CLIENT_SIDE: RwLock<Option<ClientSide>> = RwLock::new(None);

/// Outgoing connections of a cluster member: verify peers by the cluster CA and present the
/// member certificate.
pub fn use_member_tls(tls: &MemberTls) {
    install_crypto_provider();
    *CLIENT_SIDE.write().unwrap_or_else(|p| p.into_inner()) = Some(ClientSide {
        ca: Certificate::from_pem(&tls.ca_pem),
        identity: Some(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
    });
}

/// Outgoing connections of a client (the CLI's `--ca`): verify the coordinator by this CA.
pub fn use_ca(path: &Path) -> Result<(), TlsError> {
    let pem = read("--ca", path)?;
    let certs = certificates("--ca", &path.display().to_string(), &pem)?;
    for c in &certs {
        check_validity("--ca", &path.display().to_string(), c)?;
    }
    install_crypto_provider();
    *CLIENT_SIDE.write().unwrap_or_else(|p| p.into_inner()) = Some(ClientSide {
        ca: Certificate::from_pem(&pem),
        identity: None,
    });
    Ok(())
}

/// Whether an address without a scheme means `https://`.
pub(crate) fn tls_by_default() -> bool {
    CLIENT_SIDE.read().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Whom an outgoing connection goes to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Peer {
    /// Another member: verified as [`MEMBER_NAME`].
    Member,
    /// A coordinator reached by a client: verified by the address's host name.
    Server,
}

/// The TLS settings of an `https://` connection to `peer`: the process's CA (else the system's
/// roots) and, from a member, its certificate.
pub(crate) fn client_config(peer: Peer) -> ClientTlsConfig {
    install_crypto_provider();
    let side = CLIENT_SIDE.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    match side {
        Some(side) => {
            config = config.ca_certificate(side.ca);
            if let Some(identity) = side.identity {
                config = config.identity(identity);
                if peer == Peer::Member {
                    config = config.domain_name(MEMBER_NAME);
                }
            }
        }
        None => config = config.with_native_roots(),
    }
    config
}
