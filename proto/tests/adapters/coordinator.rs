//! `serve_coordinator` driven by `JobClient` and `RegistryClient`.

use super::*;

#[tokio::test]
async fn coordinator_round_trips_jobs_and_registrations() -> Result<()> {
    let fake = Arc::new(FakeCoordinator::default());
    let server = start_coordinator(fake.clone()).await?;
    // No scheme: the client adds http://.
    let client = JobClient::connect(&server.addr.to_string())
        .await
        .context("connecting")?;

    // Field errors survive the round trip, every one of them.
    let bad = JobSpec {
        width: 1000,
        steps: 5000,
        ..spec()
    };
    let err = client
        .submit(bad.clone(), String::new())
        .await
        .expect_err("invalid spec");
    assert_eq!(err, ApiError::InvalidArgument(bad.validate()));
    assert_eq!(
        bad.validate().iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
        ["width", "steps"]
    );

    // A request without a duration is caught at the edge, before the service sees it.
    let mut raw = pb::job_service_client::JobServiceClient::connect(format!("http://{}", server.addr)).await?;
    let spec_without_duration = pb::JobSpec {
        duration: None,
        ..pb::JobSpec::from(spec())
    };
    let status = raw
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec_without_duration),
        })
        .await
        .expect_err("no duration");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "duration: is required: set seconds or frames");

    let submitted = client.submit(spec(), String::new()).await?;
    assert_eq!(
        submitted,
        SubmitResult {
            job_id: "j-1".into(),
            seed: 3,
            plan: plan()
        }
    );
    assert_eq!(
        fake.submitted.lock().expect("lock").as_slice(),
        &[spec()],
        "the spec arrives unchanged"
    );

    let watched: Vec<JobEvent> = client.watch("j-1".into()).await?.collect().await;
    assert_eq!(watched, events());

    let chunks: Vec<Result<OutputChunk, ApiError>> =
        client.fetch("j-1".into(), OutputKind::Mp4, None).await?.collect().await;
    let bytes: Vec<u8> = chunks
        .into_iter()
        .map(|c| c.map(|c| c.data))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    assert_eq!(bytes, OUTPUT);
    let chunks: Vec<_> = client
        .fetch("j-1".into(), OutputKind::Latents, None)
        .await?
        .collect()
        .await;
    assert_eq!(chunks.len(), 2);
    assert!(chunks[0].is_ok());
    assert_eq!(chunks[1], Err(ApiError::Internal("the output file vanished".into())));
    let err = client.fetch("j-1".into(), OutputKind::Png, None).await.err();
    assert_eq!(
        err,
        Some(ApiError::FailedPrecondition("job j-1 has no png output".into()))
    );

    assert_eq!(
        client.get("j-9".into()).await,
        Err(ApiError::NotFound("no job j-9".into()))
    );
    assert_eq!(
        client
            .list(JobFilter {
                state: Some(JobState::Running),
                owner: Some("alice".into()),
                limit: 3
            })
            .await,
        Ok(Vec::new())
    );
    assert_eq!(client.drain("w1".into(), true).await, Ok(WorkerState::Draining));
    assert_eq!(client.drain("w1".into(), false).await, Ok(WorkerState::Idle));
    assert_eq!(
        client.drain("w9".into(), true).await,
        Err(ApiError::NotFound("no worker \"w9\" is registered".into()))
    );
    assert_eq!(client.cancel("j-1".into()).await, Ok(JobState::Cancelled));
    assert_eq!(client.workers().await, Ok(vec![worker("w-1")]));
    assert_eq!(client.models().await, Ok(vec![model()]));
    // An estimate with and without a prediction (the fake predicts for model "measured" only).
    let unmeasured = client.estimate(spec()).await?;
    assert_eq!(
        (unmeasured.plan.windows, unmeasured.plan.workers, unmeasured.jobs_ahead),
        (3, 2, 1)
    );
    assert_eq!((unmeasured.device_kind.as_str(), unmeasured.prediction), ("cuda", None));
    let measured = client
        .estimate(JobSpec {
            model: "measured".into(),
            ..spec()
        })
        .await?;
    assert_eq!(
        measured.prediction,
        Some(Prediction {
            wall_seconds: 12.5,
            cost: JobCost {
                gpu_seconds: 30.0,
                cpu_seconds: 0.0
            },
            jobs: 3,
            window_step_seconds: 0.25,
            frame_seconds: 0.01,
            overhead_seconds: 1.5,
        })
    );

    let registry = RegistryClient::connect_lazy(&format!("http://{}", server.addr))?;
    let ack = registry.register(worker("w-1")).await?;
    assert_eq!(
        ack,
        RegisterAck {
            worker_id: "w-1".into(),
            heartbeat_interval: Duration::from_millis(1500)
        }
    );
    let refused = registry
        .register(WorkerInfo {
            version: "0.0.9".into(),
            ..worker("w-2")
        })
        .await;
    assert_eq!(
        refused,
        Err(ApiError::FailedPrecondition(
            "version 0.0.9 is not the cluster's 0.1.0".into()
        ))
    );
    assert_eq!(
        registry
            .heartbeat("w-1".into(), WorkerState::Busy, Some("j-1".into()))
            .await,
        Ok(true)
    );
    assert_eq!(registry.deregister("w-1".into()).await, Ok(()));

    // Health says SERVING for both services.
    let channel = longshot_proto::endpoint(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["longshot.v1.JobService", "longshot.v1.RegistryService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        assert_eq!(
            r.into_inner().status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
    server.stop().await
}

#[tokio::test]
async fn unreachable_coordinator_is_unavailable_and_named() -> Result<()> {
    // A port that was just free: nothing listens on it.
    let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let err = JobClient::connect(&format!("http://{addr}"))
        .await
        .expect_err("nothing listens");
    let ApiError::Unavailable(message) = &err else {
        anyhow::bail!("expected Unavailable, got {err:?}")
    };
    ensure!(
        message.starts_with(&format!("cannot reach the coordinator at http://{addr}: ")),
        "{message}"
    );
    let registry = RegistryClient::connect_lazy(&addr.to_string())?;
    let err = registry.deregister("w".into()).await.expect_err("nothing listens");
    ensure!(
        matches!(&err, ApiError::Unavailable(m) if m.contains(&format!("http://{addr}"))),
        "{err:?}"
    );
    Ok(())
}

/// The health of [`LEADER_HEALTH_SERVICE`] follows leadership (a Kubernetes readiness probe on it
/// routes the Service to the leader alone); the server's own health stays SERVING throughout.
#[tokio::test]
async fn the_leader_health_service_follows_leadership() -> Result<()> {
    use longshot_proto::server::LEADER_HEALTH_SERVICE;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let (lead, leading) = tokio::sync::watch::channel(false);
    let server = start_coordinator_leading(Arc::new(FakeCoordinator::default()), leading).await?;
    let channel = longshot_proto::endpoint(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    // Polls until `service` reports `want` (the status task runs beside the server).
    async fn until(
        health: &mut HealthClient<tonic::transport::Channel>,
        request: HealthCheckRequest,
        want: ServingStatus,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = health.check(request.clone()).await.map(|r| r.into_inner().status());
            if matches!(got, Ok(s) if s == want) {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{:?}: {got:?}, want {want:?}",
                request.service
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    until(&mut health, status(LEADER_HEALTH_SERVICE), ServingStatus::NotServing).await?;
    until(&mut health, status(""), ServingStatus::Serving).await?;
    lead.send(true)?;
    until(&mut health, status(LEADER_HEALTH_SERVICE), ServingStatus::Serving).await?;
    lead.send(false)?;
    until(&mut health, status(LEADER_HEALTH_SERVICE), ServingStatus::NotServing).await?;
    server.stop().await
}

/// `UploadInput`: chunks arrive in order and whole, the digest comes back, and the edge refuses
/// an oversized chunk, a malformed digest and a second digest; DATA_LOSS survives the trip.
#[tokio::test]
async fn uploads_stream_in_chunks_and_bad_ones_are_refused_at_the_edge() -> Result<()> {
    use longshot_core::inputs::{InputDigest, UPLOAD_CHUNK_BYTES};
    let fake = Arc::new(FakeCoordinator::default());
    let server = start_coordinator(fake.clone()).await?;
    let client = JobClient::connect(&server.addr.to_string()).await?;
    let bytes: Vec<u8> = (0..UPLOAD_CHUNK_BYTES + 10).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<_> = bytes.chunks(UPLOAD_CHUNK_BYTES).map(|c| Ok(c.to_vec())).collect();
    let digest = InputDigest::of(&bytes);
    let info = client
        .upload_input(Box::pin(stream::iter(chunks.clone())), Some(digest.clone()))
        .await?;
    assert_eq!((info.digest, info.size_bytes), (digest, bytes.len() as u64));
    assert_eq!(
        fake.uploads.lock().expect("lock")[0],
        (vec![UPLOAD_CHUNK_BYTES, 10], bytes.clone())
    );
    let wrong = client
        .upload_input(Box::pin(stream::iter(chunks)), Some(InputDigest::of(b"other")))
        .await
        .unwrap_err();
    assert!(matches!(wrong, ApiError::DataLoss(_)), "{wrong:?}");
    // A client-side failure fails the upload on the client, whatever the server made of it.
    let broken = vec![Ok(vec![1u8]), Err(ApiError::Unavailable("disk gone".into()))];
    let err = client
        .upload_input(Box::pin(stream::iter(broken)), None)
        .await
        .unwrap_err();
    assert_eq!(err, ApiError::Unavailable("disk gone".into()));

    let mut raw = pb::job_service_client::JobServiceClient::connect(format!("http://{}", server.addr)).await?;
    let chunk = |data: Vec<u8>, sha256: &str| pb::InputChunk {
        data: data.into(),
        sha256: sha256.into(),
    };
    let cases = [
        (
            vec![chunk(vec![0; UPLOAD_CHUNK_BYTES + 1], "")],
            "data: a chunk of 1048577 bytes is larger than 1048576",
        ),
        (vec![chunk(vec![1], "abc")], "is not a SHA-256 digest"),
        (
            vec![chunk(vec![1], ""), chunk(vec![2], "abc")],
            "sha256: only the first chunk may carry the digest",
        ),
        (vec![], "data: the upload ended before its first chunk"),
    ];
    let before = fake.uploads.lock().expect("lock").len();
    for (messages, want) in cases {
        let status = raw.upload_input(stream::iter(messages)).await.expect_err(want);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{want}");
        assert!(
            status.message().contains(want),
            "{} does not say {want}",
            status.message()
        );
    }
    // The third case reached the service, whose stream then ended in the edge's error: nothing
    // was kept.
    assert_eq!(fake.uploads.lock().expect("lock").len(), before);
    server.stop().await
}
