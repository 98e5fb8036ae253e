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

/// A raw SubmitJob as `token` re-rendering frames 1..20 of `source` (FAULT_JOB's clip).
fn raw_rerender(c: &Cluster, token: &str, source: &str) -> tonic::Status {
    let ca = read(&c.dir.path().join("certs/ca.pem"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = channel(&c.address(), &ca, None).await.unwrap();
        let mut client = pb::job_service_client::JobServiceClient::new(ch);
        let spec = pb::JobSpec {
            model: "procedural".into(),
            prompt: "a lighthouse in a storm, waves breaking".into(),
            duration: Some(pb::job_spec::Duration::Frames(209)),
            width: Some(96),
            height: Some(64),
            steps: Some(400),
            outputs: vec!["latents".into()],
            rerender: Some(pb::Rerender {
                source_job: source.into(),
                from_frame: 1,
                to_frame: 20,
            }),
            ..Default::default()
        };
        let mut req = tonic::Request::new(pb::SubmitJobRequest { spec: Some(spec) });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client.submit_job(req).await.unwrap_err()
    })
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

/// `longshot tokens new NAME --role ROLE --file FILE`; returns the token.
fn new_token(file: &Path, name: &str, role: &str) -> String {
    let out = Command::new(BIN)
        .args(["tokens", "new", name, "--role", role, "--file"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tokens_and_roles_decide_what_each_client_sees_and_touches() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("tokens");
    let admin = new_token(&file, "ops", "admin");
    let alice = new_token(&file, "alice", "submit");
    let bob = new_token(&file, "bob", "submit");
    let ci = new_token(&file, "ci", "read");
    let text = read(&file);
    assert!(
        !text.contains(&alice) && text.contains("alice submit sha256:"),
        "only hashes at rest: {text}"
    );
    let c = Cluster::start_with(
        1,
        30.0,
        harness::ClusterOptions {
            coordinator_args: vec!["--tokens".into(), file.display().to_string()],
            token: Some(admin.clone()),
            ..Default::default()
        },
    );
    // Runs the CLI as `token`: Ok(stdout) or Err(stderr).
    let run = |token: Option<&str>, args: &[&str]| {
        let out = c.cli_as(token, args);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    };
    let mut submit = vec!["submit"];
    submit.extend_from_slice(FAULT_JOB);
    let job = run(Some(&alice), &submit).expect("alice submits").trim().to_string();
    c.wait_steps(&job, 10);

    // Nobody without a known token gets in.
    let err = run(None, &["list"]).unwrap_err();
    assert!(
        err.contains("requires a client token") && err.contains("LONGSHOT_TOKEN"),
        "{err}"
    );
    let err = run(Some("lst_0123"), &["status", &job]).unwrap_err();
    assert!(err.contains("not valid on this coordinator"), "{err}");

    // Alice sees her job, recorded as hers; bob (also `submit`) cannot see, cancel or fetch it.
    let mine = run(Some(&alice), &["--json", "list"]).unwrap();
    let s: serde_json::Value = serde_json::from_str(mine.lines().next().unwrap()).unwrap();
    assert_eq!(
        (s["job_id"].as_str(), s["owner"].as_str()),
        (Some(job.as_str()), Some("alice"))
    );
    for args in [
        vec!["status", job.as_str()],
        vec!["cancel", job.as_str()],
        vec!["fetch", job.as_str(), "-o", "/tmp/never.safetensors"],
    ] {
        let err = run(Some(&bob), &args).unwrap_err();
        assert!(err.contains("among those token \"bob\" may see"), "{args:?}: {err}");
    }
    assert_eq!(run(Some(&bob), &["list"]).unwrap().trim(), "no jobs");
    let err = run(Some(&bob), &["list", "--owner", "alice"]).unwrap_err();
    assert!(err.contains("lists only its own jobs"), "{err}");

    // A `read` token sees every job but cannot submit or cancel.
    let seen = run(Some(&ci), &["status", &job]).unwrap();
    assert!(seen.contains(&job) && seen.contains("owner alice"), "{seen}");
    assert!(run(Some(&ci), &["list", "--owner", "alice"]).unwrap().contains(&job));
    let err = run(Some(&ci), &["cancel", &job]).unwrap_err();
    assert!(err.contains("has role read, which cannot cancel jobs"), "{err}");
    let err = run(Some(&ci), &submit).unwrap_err();
    assert!(err.contains("has role read, which cannot submit jobs"), "{err}");
    // Estimating queues nothing: a read token may ask, a client without a token may not.
    let mut estimate = vec!["estimate"];
    estimate.extend_from_slice(FAULT_JOB);
    let plan = run(Some(&ci), &estimate).unwrap();
    assert!(plan.contains("windows /") && plan.contains("cpu worker"), "{plan}");
    assert!(run(None, &estimate).is_err());

    // The file is re-read while the coordinator runs: a revoked token stops working, a new one
    // starts, without a restart.
    let out = Command::new(BIN)
        .args(["tokens", "revoke", "bob", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let carol = new_token(&file, "carol", "submit");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (bob_out, carol_in) = (
            run(Some(&bob), &["list"]).is_err(),
            run(Some(&carol), &["list"]).is_ok(),
        );
        if bob_out && carol_in {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tokens file was not reloaded\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken file leaves the tokens in force (and is logged).
    std::fs::write(&file, format!("{text}garbage\n")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run(Some(&carol), &["list"]).is_ok(),
        "a malformed file must not drop the tokens in force"
    );
    let log = read(&c.dir.path().join("coordinator.log"));
    assert!(
        log.contains("client tokens not reloaded") && log.contains(":5: expected"),
        "{log}"
    );

    // The job ran on undisturbed and its owner fetches it; she may also cancel her own jobs.
    let s = c.wait_state(&job, &["done", "failed", "cancelled"], Duration::from_secs(240));
    assert_eq!(
        (s["state"].as_str(), s["recovery"]["resumes"].as_u64()),
        (Some("done"), Some(0)),
        "{s}"
    );
    let out = c.dir.path().join("alice.safetensors");
    run(Some(&alice), &["fetch", &job, "-o", out.to_str().unwrap()]).expect("alice fetches her job");
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
    // A rerender reads its source's latents: carol may not re-render alice's job, neither through
    // the CLI (she cannot see it) nor with a raw request naming it; alice may.
    let err = run(Some(&carol), &["rerender", &job, "--from", "1", "--to", "2"]).unwrap_err();
    assert!(err.contains("among those token \"carol\" may see"), "{err}");
    let raw = raw_rerender(&c, &carol, &job);
    assert!(
        raw.code() == tonic::Code::InvalidArgument
            && raw.message().contains("rerender.source: no job")
            && raw.message().contains("token \"carol\" may see"),
        "{raw:?}"
    );
    let edit = run(Some(&alice), &["rerender", &job, "--from", "1", "--to", "2"]).expect("alice re-renders her job");
    run(Some(&alice), &["cancel", edit.trim()]).unwrap();
    c.wait_state(edit.trim(), &["cancelled", "done"], Duration::from_secs(60));
    // Only an admin drains a worker; a drained worker takes no new job until it is undrained.
    let worker = c.workers()[0]["id"].as_str().unwrap().to_string();
    let err = run(Some(&alice), &["drain", &worker]).unwrap_err();
    assert!(err.contains("cannot drain workers: that needs role admin"), "{err}");
    assert!(run(None, &["drain", &worker]).is_err());
    let err = run(Some(&admin), &["drain", "w-nope"]).unwrap_err();
    assert!(err.contains("no worker \"w-nope\" is registered"), "{err}");
    let drained = run(Some(&admin), &["drain", &worker]).unwrap();
    assert!(drained.contains("draining"), "{drained}");
    assert_eq!(c.workers()[0]["state"], "draining");
    let long: Vec<&str> = submit.iter().map(|a| if *a == "400" { "1000" } else { a }).collect();
    let second = run(Some(&alice), &long).expect("alice submits").trim().to_string();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.status(&second)["state"], "queued", "a drained worker took a job");
    run(Some(&admin), &["drain", "--undo", &worker]).unwrap();
    c.wait_steps(&second, 1);
    let state = run(Some(&alice), &["cancel", &second]).unwrap();
    assert!(state.contains("cancel"), "{state}");
    assert_eq!(
        c.wait_state(&second, &["cancelled"], Duration::from_secs(60))["state"],
        "cancelled"
    );
}
