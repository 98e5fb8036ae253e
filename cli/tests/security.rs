//! TLS and mutual TLS with real processes: a cluster whose members hold certificates of its CA
//! (`longshot certs`), attacked by callers without one, with another CA's, with an expired one,
//! and in plaintext. Every refusal is clear, and the job running meanwhile is untouched.

mod harness;

use harness::{make_certs, Cluster, BIN, FAULT_JOB};
use longshot_proto::pb;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A raw gRPC channel to `address` over TLS trusting `ca`, showing `identity` if any; verified
/// as a cluster member.
async fn channel(address: &str, ca: &str, identity: Option<(String, String)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(longshot_proto::tls::MEMBER_NAME);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// The certificate and key NAME in `dir`.
fn identity(dir: &Path, name: &str) -> (String, String) {
    (
        read(&dir.join(format!("{name}.pem"))),
        read(&dir.join(format!("{name}.key"))),
    )
}

/// A certificate for the cluster's members signed by the CA in `dir`, expired yesterday.
fn expired_identity(dir: &Path) -> (String, String) {
    let ca_key = rcgen::KeyPair::from_pem(&read(&dir.join("ca.key"))).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read(&dir.join("ca.pem")), ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![longshot_proto::tls::MEMBER_NAME.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn callers_without_a_member_certificate_cannot_touch_a_running_job() {
    let mut c = Cluster::start(2, 30.0);
    let certs = c.dir.path().join("certs");
    let ca = read(&certs.join("ca.pem"));
    let other = c.dir.path().join("other-ca");
    make_certs(&other, "member", &[]);
    let expired = expired_identity(&certs);
    let job = harness::submit(&c, FAULT_JOB);
    c.wait_steps(&job, 40);
    let workers = c.workers();
    let worker_addr = workers[0]["address"].as_str().unwrap().to_string();
    let coordinator = c.address();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The coordinator takes TLS clients without a certificate (the CLI), but its
        // RegistryService answers none of their calls.
        let anonymous = channel(&coordinator, &ca, None)
            .await
            .expect("a client with the CA connects");
        let mut registry = pb::registry_service_client::RegistryServiceClient::new(anonymous);
        let denied = registry
            .deregister(pb::DeregisterRequest { worker_id: "w0".into() })
            .await
            .expect_err("deregister without a certificate");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("only cluster members"), "{denied:?}");
        let denied = registry
            .register(pb::WorkerInfo {
                id: "intruder".into(),
                address: "127.0.0.1:9".into(),
                ..Default::default()
            })
            .await
            .expect_err("register without a certificate");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        let denied = registry
            .heartbeat(pb::HeartbeatRequest {
                worker_id: "w1".into(),
                ..Default::default()
            })
            .await
            .expect_err("heartbeat without a certificate");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

        // Another CA's certificate, or the cluster CA's expired one, fails the handshake.
        for (what, id) in [
            ("another CA's", identity(&other, "member")),
            ("an expired", expired.clone()),
        ] {
            let refused = match channel(&coordinator, &ca, Some(id)).await {
                Err(e) => e,
                Ok(ch) => {
                    let mut r = pb::registry_service_client::RegistryServiceClient::new(ch);
                    let call = r.deregister(pb::DeregisterRequest { worker_id: "w0".into() });
                    format!("{:?}", call.await.expect_err(what))
                }
            };
            assert!(
                !refused.contains("PermissionDenied"),
                "{what} certificate must fail the handshake, not reach the service: {refused}"
            );
        }

        // A worker takes nobody without a member certificate: no shard runs or is cancelled,
        // no overlap exchange is joined.
        let ids = [
            ("no", None),
            ("another CA's", Some(identity(&other, "member"))),
            ("an expired", Some(expired)),
        ];
        for (what, id) in ids {
            let outcome = match channel(&worker_addr, &ca, id).await {
                Err(e) => e,
                Ok(ch) => {
                    let mut w = pb::worker_service_client::WorkerServiceClient::new(ch.clone());
                    let cancel = w
                        .cancel_shard(pb::CancelShardRequest {
                            job_id: job.clone(),
                            plan_id: u64::MAX,
                        })
                        .await;
                    let mut x = pb::exchange_service_client::ExchangeServiceClient::new(ch);
                    let overlap = x.overlap(futures::stream::empty()).await;
                    assert!(
                        cancel.is_err() && overlap.is_err(),
                        "{what} certificate reached the worker"
                    );
                    format!("{:?}", cancel.unwrap_err())
                }
            };
            assert!(!outcome.contains("cancelled: true"), "{what}: {outcome}");
        }
    });

    // Members still register: a new worker with the cluster's certificate joins.
    c.add_worker();
    c.wait_for_workers(3);
    let s = c.wait_state(&job, &["done", "failed", "cancelled"], Duration::from_secs(240));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    assert_eq!(s["recovery"]["resumes"], 0, "the job was never interrupted: {s}");
}

#[test]
fn wrong_ca_expired_certificates_and_plaintext_get_clear_errors() {
    let c = Cluster::start(1, 30.0);
    let dir = c.dir.path();
    let other = dir.join("other-ca");
    make_certs(&other, "member", &[]);
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let https = c.endpoint.clone();
    let http = format!("http://{}", c.address());
    let other_ca = other.join("ca.pem");
    // A client trusting another CA.
    let err = run(&["--coordinator", &https, "--ca", other_ca.to_str().unwrap(), "list"]);
    assert!(
        err.contains("invalid peer certificate") && err.contains("not signed by the CA this process trusts"),
        "{err}"
    );
    // Plaintext to a TLS coordinator.
    let err = run(&["--coordinator", &http, "list"]);
    assert!(err.contains("if it serves TLS, use https://"), "{err}");
    // TLS to a plaintext server.
    let plain = Cluster::start_with(
        0,
        30.0,
        harness::ClusterOptions {
            insecure: true,
            ..Default::default()
        },
    );
    let ca = dir.join("certs/ca.pem");
    let err = run(&[
        "--coordinator",
        &format!("https://{}", plain.address()),
        "--ca",
        ca.to_str().unwrap(),
        "list",
    ]);
    assert!(err.contains("it does not speak TLS"), "{err}");
    // A member whose own certificate expired refuses to start, naming it.
    let expired = expired_identity(&dir.join("certs"));
    std::fs::write(dir.join("expired.pem"), expired.0).unwrap();
    std::fs::write(dir.join("expired.key"), expired.1).unwrap();
    let err = run(&[
        "--coordinator",
        &https,
        "--ca",
        ca.to_str().unwrap(),
        "worker",
        "--cert",
        dir.join("expired.pem").to_str().unwrap(),
        "--key",
        dir.join("expired.key").to_str().unwrap(),
        "--metrics-listen",
        "off",
    ]);
    assert!(err.contains("--cert") && err.contains("is valid only from"), "{err}");
    // A member with another CA's certificate, or none and no --insecure, refuses to start.
    let err = run(&[
        "worker",
        "--ca",
        ca.to_str().unwrap(),
        "--cert",
        other.join("member.pem").to_str().unwrap(),
        "--key",
        other.join("member.key").to_str().unwrap(),
        "--metrics-listen",
        "off",
    ]);
    assert!(err.contains("is not a member certificate of the CA in --ca"), "{err}");
    let err = run(&["coordinator", "--metrics-listen", "off", "--listen", "127.0.0.1:0"]);
    assert!(
        err.contains("--ca, --cert, --key missing") && err.contains("--insecure"),
        "{err}"
    );
    // The cluster is untouched and its CLI, with the CA, works.
    c.ok(&["list"]);
    assert_eq!(c.workers().len(), 1);
}

#[test]
fn certs_refuse_bad_names_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("certs")
            .args(args)
            .args(["--dir", d])
            .output()
            .unwrap()
    };
    let out = run(&["issue", "w0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("make a CA first: longshot certs init"));
    assert!(run(&["init"]).status.success());
    let again = run(&["init"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force replaces the CA"));
    let bad = run(&["issue", "../escape"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("NAME \"../escape\""));
    assert!(run(&["issue", "w0", "--host", "gpu-1.example", "--host", "10.0.0.7"])
        .status
        .success());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("w0.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "a private key is readable by its owner only");
}
