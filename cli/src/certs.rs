//! `longshot certs init|issue`: a cluster CA and member certificates for a small cluster (rcgen),
//! and the ephemeral CA of a local cluster (`render`, `up`).
//!
//! Every member certificate names `longshot_proto::tls::MEMBER_NAME` (members verify each other
//! by it, whatever their addresses) plus the hosts given with `--host`, which clients use to reach
//! a coordinator; it serves as both a server and a client certificate.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Make a cluster CA: DIR/ca.pem (give it to every member and client as --ca) and DIR/ca.key
    /// (keep it private; it signs member certificates).
    Init {
        /// Where to write the files.
        #[arg(long, default_value = "longshot-certs")]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Replace an existing CA (every certificate it signed stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Make a member certificate signed by the CA in DIR: DIR/NAME.pem and DIR/NAME.key, for a
    /// coordinator or worker's --cert and --key.
    Issue {
        /// File name of the certificate and key (letters, digits, `.`, `_`, `-`).
        name: String,
        /// Where the CA is and the files go.
        #[arg(long, default_value = "longshot-certs")]
        dir: PathBuf,
        /// A host name or IP address clients use to reach this member (repeat; default:
        /// localhost and 127.0.0.1). Members reach each other by the cluster name, not by these.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Replace existing files of that name.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: CertsCommand) -> Result<()> {
    match cmd {
        CertsCommand::Init { dir, days, force } => {
            let (ca, key) = (dir.join("ca.pem"), dir.join("ca.key"));
            refuse_overwrite(&[&ca, &key], force, "--force replaces the CA")?;
            let (cert_pem, key_pem) = new_ca(days)?;
            write_files(&dir, &[(&ca, &cert_pem, false), (&key, &key_pem, true)])?;
            println!("CA certificate: {} (every member's and client's --ca)", ca.display());
            println!("CA key:         {} (keep it private)", key.display());
            println!(
                "next: longshot certs issue NAME --dir {} [--host HOST]...",
                dir.display()
            );
        }
        CertsCommand::Issue {
            name,
            dir,
            hosts,
            days,
            force,
        } => {
            check_name(&name)?;
            let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
            refuse_overwrite(&[&cert, &key], force, "--force replaces them")?;
            let read = |p: PathBuf| {
                std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {} (make a CA first: longshot certs init)", p.display()))
            };
            let ca_pem = read(dir.join("ca.pem"))?;
            let ca_key = read(dir.join("ca.key"))?;
            let hosts = if hosts.is_empty() {
                vec!["localhost".to_string(), "127.0.0.1".to_string()]
            } else {
                hosts
            };
            let (cert_pem, key_pem) = issue(&ca_pem, &ca_key, &name, &hosts, days)?;
            write_files(&dir, &[(&cert, &cert_pem, false), (&key, &key_pem, true)])?;
            println!("certificate: {} (--cert)", cert.display());
            println!("key:         {} (--key)", key.display());
            println!(
                "for hosts {} and members of the cluster, valid {days} days",
                hosts.join(", ")
            );
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "ca"
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("NAME {name:?}: must be 1-64 letters, digits, `.`, `_` or `-`, not starting with `.`, and not `ca`");
    }
    Ok(())
}

fn refuse_overwrite(paths: &[&Path], force: bool, how: &str) -> Result<()> {
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        if !force {
            bail!("{} exists; {how}", p.display());
        }
    }
    Ok(())
}

/// Writes each `(path, contents, private)`; private files are readable by their owner only.
fn write_files(dir: &Path, files: &[(&Path, &str, bool)]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, contents, private) in files {
        let mode = if *private { 0o600 } else { 0o644 };
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(contents.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for clocks slightly behind the issuer's.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days.into());
}

/// A new CA: its certificate and key, PEM.
pub fn new_ca(days: u32) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "Longshot cluster CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A member certificate for `name` and `hosts`, signed by the CA: its certificate and key, PEM.
pub fn issue(ca_pem: &str, ca_key_pem: &str, name: &str, hosts: &[String], days: u32) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("the CA key (ca.key) is not a PEM private key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).context("the CA certificate (ca.pem) does not parse")?;
    let mut names = vec![longshot_proto::tls::MEMBER_NAME.to_string()];
    names.extend(hosts.iter().map(|h| h.trim().to_string()));
    let mut params = CertificateParams::new(names).context("--host must be a DNS name or an IP address")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A local cluster's TLS files in `dir`: a CA made for this run and one member certificate for
/// the coordinator and every worker (loopback names). Returns (ca, cert, key).
pub fn ephemeral(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (ca_pem, ca_key) = new_ca(30)?;
    let hosts = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let (cert_pem, key_pem) = issue(&ca_pem, &ca_key, "local", &hosts, 30)?;
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("member.pem"), dir.join("member.key"));
    write_files(
        dir,
        &[(&ca, &ca_pem, false), (&cert, &cert_pem, false), (&key, &key_pem, true)],
    )?;
    Ok((ca, cert, key))
}
