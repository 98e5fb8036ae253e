//! `serve_worker` driven by `GrpcWorkerConnector` and `GrpcExchangeConnector`.

use super::*;

fn envelope(step: u32, payload: Payload) -> OverlapEnvelope {
    OverlapEnvelope {
        job_id: "j-1".into(),
        plan_id: 3,
        message: OverlapMessage {
            step,
            boundary: 0,
            payload,
        },
    }
}

#[tokio::test]
async fn worker_runs_shards_and_exchanges_overlaps() -> Result<()> {
    let shard_events = vec![
        ShardEvent::StepDone { window: 0, step: 0 },
        ShardEvent::Latents {
            first_frame: 0,
            frames: 1,
            data: vec![0.5, -1.0],
        },
        ShardEvent::Finished,
    ];
    let server = start_worker(Arc::new(fake_worker(shard_events.clone()))).await?;
    let address = server.addr.to_string();

    // The exchange: messages go out, their mirror images come back, in order.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let outbound: BoxStream<OverlapEnvelope> = Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    let sent = [
        envelope(0, Payload::Velocity(vec![1.0, -2.5, 0.0])),
        envelope(0, Payload::LatentHash(0x0123_4567_89ab_cdef)),
        envelope(1, Payload::Velocity(vec![3.0; 1000])),
        envelope(2, Payload::Halo(vec![0.25, 4.0])),
    ];
    // Only the first message is queued before open(): the server answers after receiving it.
    tx.send(sent[0].clone())?;
    let mut inbound = GrpcExchangeConnector.open(address.clone(), outbound).await?;
    for (i, env) in sent.iter().enumerate() {
        if i > 0 {
            tx.send(env.clone())?;
        }
        let back = tokio::time::timeout(Duration::from_secs(10), inbound.next())
            .await?
            .context("stream ended")??;
        assert_eq!(back, mirrored(env.clone()));
    }
    drop(tx);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), inbound.next())
            .await?
            .is_none(),
        "ends after ours"
    );

    // The shard stream, and a cancel.
    let worker = GrpcWorkerConnector.connect(address.clone()).await?;
    let assignment = ShardAssignment {
        prompts: None,
        first_step: 0,
        video: None,
        repaint: None,
        known: None,
        job_id: "j-1".into(),
        plan_id: 3,
        model: "procedural".into(),
        conditioning: Default::default(),
        noise: longshot_core::noise::NoiseKeys::single(1),
        channels: 1,
        height: 1,
        width: 2,
        plan: longshot_core::plan::WindowPlan::new(30, 21, 4)?,
        schedule: longshot_core::scheduler::Schedule::new(longshot_core::scheduler::Solver::UniPc, 2, 3.0)?,
        guidance: 5.0,
        windows: 0..2,
        left_address: None,
        right_address: None,
        exchange_timeout: Duration::from_secs(5),
        hash_every: 1,
        output_frames: 3,
        blend: Default::default(),
        nccl: None,
        checkpoint_every: 0,
        preview_every: 0,
        resume: None,
    };
    let events: Vec<ShardEvent> = worker.run_shard(assignment.clone()).await?.collect().await;
    assert_eq!(events, shard_events);
    assert_eq!(worker.cancel_shard("j-1".into(), 3).await, Ok(true));

    // CreateNcclId: the id's bytes travel as they are; a wrong length is the worker's fault,
    // named; a refusal stays a FAILED_PRECONDITION (the coordinator then falls back to TCP).
    let id = worker.nccl_unique_id("gpu".into(), 3).await?;
    assert_eq!(id, (0..128).map(|i| (i + 3) as u8).collect::<Vec<u8>>());
    let short = worker.nccl_unique_id("short".into(), 3).await.unwrap_err().to_string();
    ensure!(
        short.contains("unique_id") && short.contains("5 bytes given"),
        "{short}"
    );
    let refused = worker.nccl_unique_id("cpu".into(), 3).await;
    ensure!(
        matches!(&refused, Err(ApiError::FailedPrecondition(m)) if m.contains("cannot create NCCL communicators")),
        "{refused:?}"
    );

    // A stream that stops without a verdict ends in a Lost that says so (the coordinator's own
    // observation of the worker, which it treats as the root cause of a gang failure).
    let unfinished = start_worker(Arc::new(fake_worker(shard_events[..2].to_vec()))).await?;
    let w = GrpcWorkerConnector.connect(unfinished.addr.to_string()).await?;
    let events: Vec<ShardEvent> = w.run_shard(assignment.clone()).await?.collect().await;
    let Some(ShardEvent::Lost { reason }) = events.last() else {
        anyhow::bail!("no Lost at the end: {events:?}")
    };
    assert_eq!(events.len(), 3);
    ensure!(
        reason.contains("ended the shard stream without finishing it"),
        "{reason}"
    );

    // A connection cut mid-stream ends in a Lost naming the worker, through a proxy we kill.
    let (proxy_addr, proxy) = cuttable_proxy(server.addr).await?;
    let w = GrpcWorkerConnector.connect(proxy_addr.to_string()).await?;
    let mut events = w
        .run_shard(ShardAssignment {
            job_id: "hang".into(),
            ..assignment
        })
        .await?;
    assert_eq!(events.next().await, Some(shard_events[0].clone()));
    proxy.abort();
    let last = tokio::time::timeout(Duration::from_secs(10), events.next()).await?;
    let Some(ShardEvent::Lost { reason }) = last else {
        anyhow::bail!("expected Lost, got {last:?}")
    };
    ensure!(
        reason.starts_with(&format!("lost the connection to worker at {proxy_addr}: ")),
        "{reason}"
    );
    assert_eq!(events.next().await, None);

    unfinished.stop().await?;
    server.stop().await
}

/// A TCP proxy to `target` whose connections all die when the returned task is aborted.
async fn cuttable_proxy(target: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            links.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn encode_text_carries_embeddings_bit_exactly_and_rejects_malformed_ones() -> Result<()> {
    let server = start_worker(Arc::new(fake_worker(Vec::new()))).await?;
    let worker = GrpcWorkerConnector.connect(server.addr.to_string()).await?;
    let request = |model: &str| EncodeTextRequest {
        job_id: "j-1".into(),
        model: model.into(),
        prompt: "a lighthouse".into(),
        negative_prompt: "fog".into(),
        reference: None,
    };
    let e = worker
        .encode_text(request("wan"))
        .await?
        .text
        .context("wan has embeddings")?;
    assert_eq!((e.rows, e.dim), (2, 3));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&e.prompt), bits(&[12.0, -0.0, 1e-40, 0.1, 0.2, 0.3]));
    assert_eq!(e.negative, vec![3.0; 6]);
    assert_eq!(
        worker.encode_text(request("procedural")).await?,
        EncodedConditioning::default()
    );
    // A NaN from the peer is refused at the client's edge, naming the field.
    let err = worker.encode_text(request("nan")).await.unwrap_err().to_string();
    ensure!(
        err.contains("conditioning.embeddings") && err.contains("negative prompt embedding value 0 is NaN"),
        "{err}"
    );
    let err = worker.encode_text(request("sd15")).await.unwrap_err();
    assert_eq!(err, ApiError::invalid("model", "\"sd15\" is not served by this worker"));
    server.stop().await
}

/// A shard resumed from a checkpoint: its window states travel one per message through
/// `ResumeShard` and reach the worker bit for bit; a checkpoint event comes back the same way.
#[tokio::test]
async fn resumed_shards_carry_their_window_states_both_ways() -> Result<()> {
    use longshot_core::checkpoint::{SolverState, WindowState};
    let echo = FakeWorker::new().with_shards(|a| {
        let states: Vec<ShardEvent> = a
            .resume
            .iter()
            .flat_map(|r| r.iter().cloned().map(ShardEvent::Checkpoint))
            .chain(std::iter::once(ShardEvent::Finished))
            .collect();
        Ok(Box::pin(stream::iter(states)) as BoxStream<ShardEvent>)
    });
    let server = start_worker(Arc::new(echo)).await?;
    let worker = GrpcWorkerConnector.connect(server.addr.to_string()).await?;
    let state = |window: usize, m1: Option<Vec<f32>>| WindowState {
        window,
        step: 7,
        latents: vec![-0.0, f32::from_bits(0x7fc0_0042), 1e-45, window as f32],
        solver: SolverState::UniPc {
            history: [Some(vec![0.5; 4]), m1],
            last_sample: vec![3.0; 4],
            last_order: 2,
        },
    };
    let states = vec![state(1, Some(vec![-1.0; 4])), state(2, None)];
    let assignment = ShardAssignment {
        prompts: None,
        first_step: 0,
        video: None,
        repaint: None,
        known: None,
        job_id: "j-9".into(),
        plan_id: 4,
        model: "procedural".into(),
        conditioning: Default::default(),
        noise: longshot_core::noise::NoiseKeys::single(1),
        channels: 1,
        height: 1,
        width: 4,
        plan: longshot_core::plan::WindowPlan::new(53, 21, 5)?,
        schedule: longshot_core::scheduler::Schedule::new(Solver::UniPc, 10, 3.0)?,
        guidance: 5.0,
        windows: 1..3,
        left_address: Some("127.0.0.1:1".into()),
        right_address: None,
        exchange_timeout: Duration::from_secs(5),
        hash_every: 1,
        output_frames: 209,
        blend: Default::default(),
        nccl: None,
        checkpoint_every: 3,
        preview_every: 5,
        resume: Some(Arc::new(states.clone())),
    };
    let events: Vec<ShardEvent> = worker.run_shard(assignment).await?.collect().await;
    let bits = |e: &ShardEvent| match e {
        ShardEvent::Checkpoint(w) => w.latents.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let want: Vec<ShardEvent> = states
        .into_iter()
        .map(ShardEvent::Checkpoint)
        .chain([ShardEvent::Finished])
        .collect();
    assert_eq!(
        events.iter().map(bits).collect::<Vec<_>>(),
        want.iter().map(bits).collect::<Vec<_>>()
    );
    // NaN != NaN: the latents are compared as bits above, everything else here.
    assert_eq!(format!("{events:?}"), format!("{want:?}"));
    server.stop().await
}

/// `ResumeShard` streams that do not fit are refused, naming what is wrong.
#[tokio::test]
async fn malformed_resume_streams_are_refused_by_name() -> Result<()> {
    use longshot_proto::convert::read_resume;
    use pb::resume_shard_request::Part;
    let (plan, schedule) = (
        longshot_core::plan::WindowPlan::new(37, 21, 5)?,
        longshot_core::scheduler::Schedule::new(Solver::Euler, 4, 3.0)?,
    );
    let assignment = |resume_step: u32| pb::ShardAssignment {
        resume_step,
        ..pb::ShardAssignment::from(ShardAssignment {
            prompts: None,
            first_step: 0,
            video: None,
            repaint: None,
            known: None,
            job_id: "j".into(),
            plan_id: 1,
            model: "procedural".into(),
            conditioning: Default::default(),
            noise: longshot_core::noise::NoiseKeys::single(1),
            channels: 1,
            height: 1,
            width: 1,
            plan,
            schedule: schedule.clone(),
            guidance: 1.0,
            windows: 0..2,
            left_address: None,
            right_address: None,
            exchange_timeout: Duration::from_secs(5),
            hash_every: 1,
            output_frames: 145,
            blend: Default::default(),
            nccl: None,
            checkpoint_every: 0,
            preview_every: 0,
            resume: None,
        })
    };
    let window = |window: u32, step: u32| pb::WindowCheckpoint {
        window,
        step,
        latents: vec![0u8; 4 * 21].into(),
        solver: Some(pb::window_checkpoint::Solver::Euler(pb::EulerState {})),
    };
    let run = |parts: Vec<Part>| async move {
        let msgs = parts.into_iter().map(|p| Ok(pb::ResumeShardRequest { part: Some(p) }));
        read_resume(stream::iter(msgs)).await.map(|a| a.resume.map(|r| r.len()))
    };
    let ok = run(vec![
        Part::Assignment(assignment(2)),
        Part::Window(window(0, 2)),
        Part::Window(window(1, 2)),
    ])
    .await;
    assert_eq!(ok, Ok(Some(2)));
    let cases = [
        (
            vec![Part::Window(window(0, 2))],
            "the first message must be the assignment",
        ),
        (vec![Part::Assignment(assignment(0))], "resume_step"),
        (
            vec![Part::Assignment(assignment(2)), Part::Window(window(1, 2))],
            "got window 1 at step 2, expected window 0 at step 2",
        ),
        (
            vec![Part::Assignment(assignment(2)), Part::Window(window(0, 3))],
            "got window 0 at step 3, expected window 0 at step 2",
        ),
        (
            vec![Part::Assignment(assignment(2)), Part::Window(window(0, 2))],
            "the stream ended before every frame and window state arrived",
        ),
    ];
    for (parts, want) in cases {
        let err = run(parts).await.unwrap_err().to_string();
        ensure!(err.contains(want), "{err} (want {want})");
    }
    // Video-to-video: the span's frames follow the assignment, one per message.
    let with_video = |resume_step: u32, first_frame: u32, frames: u32, width: u32| pb::ShardAssignment {
        first_step: 1,
        video: Some(pb::VideoSpan {
            first_frame,
            frames,
            video_frames: 145,
            width,
            height: 1,
        }),
        ..assignment(resume_step)
    };
    let frame = |len: usize| {
        Part::VideoFrame(pb::VideoFrame {
            rgb: vec![7u8; len].into(),
        })
    };
    let run_video = |parts: Vec<Part>| async move {
        let msgs = parts.into_iter().map(|p| Ok(pb::ResumeShardRequest { part: Some(p) }));
        read_resume(stream::iter(msgs))
            .await
            .map(|a| (a.video.map(|v| (v.first_frame, v.frames())), a.resume.map(|r| r.len())))
    };
    let ok = run_video(vec![Part::Assignment(with_video(0, 3, 2, 2)), frame(6), frame(6)]).await;
    assert_eq!(ok, Ok((Some((3, 2)), None)));
    // Frames, then a checkpoint's windows.
    let both = run_video(vec![
        Part::Assignment(with_video(2, 0, 1, 1)),
        frame(3),
        Part::Window(window(0, 2)),
        Part::Window(window(1, 2)),
    ])
    .await;
    assert_eq!(both, Ok((Some((0, 1)), Some(2))));
    let cases = [
        (
            vec![Part::Assignment(with_video(0, 0, 2, 1)), frame(3)],
            "the stream ended before every frame",
        ),
        (
            vec![Part::Assignment(with_video(0, 0, 1, 2)), frame(5)],
            "frame 0 holds 5 bytes, not 2x1x3 = 6",
        ),
        (
            vec![Part::Assignment(with_video(0, 0, 1, 0))],
            "assignment.video.width: 0 is not in 1..=4096",
        ),
        (
            vec![Part::Assignment(with_video(0, 144, 2, 1))],
            "frames 144..146 are past the video's 145 frames",
        ),
        (
            vec![Part::Assignment(with_video(0, 0, 1, 1)), Part::Window(window(0, 2))],
            "expected video frame 0 of 1",
        ),
    ];
    for (parts, want) in cases {
        let err = run_video(parts).await.unwrap_err().to_string();
        ensure!(err.contains(want), "{err} (want {want})");
    }
    // A rerender: its source latents follow the assignment (after any video), one latent frame
    // ([1, 1, 1] here: 4 bytes) per message, also before a checkpoint's windows.
    let with_known = |resume_step: u32, first_frame: u32, frames: u32| pb::ShardAssignment {
        repaint: Some(pb::RepaintMask {
            free_start: 3,
            free_end: 9,
            margin: 15,
        }),
        known: Some(pb::KnownSpan { first_frame, frames }),
        ..assignment(resume_step)
    };
    let latent = |len: usize| {
        Part::KnownFrame(pb::KnownLatentFrame {
            data: vec![0u8; len].into(),
        })
    };
    let run_known = |parts: Vec<Part>| async move {
        let msgs = parts.into_iter().map(|p| Ok(pb::ResumeShardRequest { part: Some(p) }));
        read_resume(stream::iter(msgs)).await.map(|a| {
            (
                a.known.map(|k| (k.first, k.latents.shape().frames)),
                a.repaint.map(|m| m.free),
                a.resume.map(|r| r.len()),
            )
        })
    };
    let ok = run_known(vec![Part::Assignment(with_known(0, 0, 2)), latent(4), latent(4)]).await;
    assert_eq!(ok, Ok((Some((0, 2)), Some(3..9), None)));
    let resumed = run_known(vec![
        Part::Assignment(with_known(2, 36, 1)),
        latent(4),
        Part::Window(window(0, 2)),
        Part::Window(window(1, 2)),
    ])
    .await;
    assert_eq!(resumed, Ok((Some((36, 1)), Some(3..9), Some(2))));
    let cases = [
        (
            vec![Part::Assignment(with_known(0, 0, 1)), latent(8)],
            "known_frame.data: frame 0 holds 8 bytes, not 4",
        ),
        (
            vec![Part::Assignment(with_known(0, 30, 8))],
            "assignment.known: latent frames 30..38 are not inside the clip's 37",
        ),
        (
            vec![Part::Assignment(with_known(0, 0, 2)), latent(4), frame(3)],
            "expected known latent frame 1 of 2",
        ),
        (
            vec![Part::Assignment(pb::ShardAssignment {
                repaint: Some(pb::RepaintMask {
                    free_start: 30,
                    free_end: 40,
                    margin: 1,
                }),
                ..with_known(0, 0, 1)
            })],
            "repaint.free_end: the re-rendered latent frames 30..40 are empty or outside the clip's 37 latent frames",
        ),
    ];
    for (parts, want) in cases {
        let err = run_known(parts).await.unwrap_err().to_string();
        ensure!(err.contains(want), "{err} (want {want})");
    }
    let err = ShardAssignment::try_from(with_known(0, 0, 1)).unwrap_err().to_string();
    ensure!(err.contains("known: known latents travel only on ResumeShard"), "{err}");
    // RunShard cannot carry frames.
    let err = ShardAssignment::try_from(with_video(0, 0, 1, 1))
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("video: a video's frames travel only on ResumeShard"),
        "{err}"
    );
    Ok(())
}

/// A video-to-video shard: its span of the input video travels one frame per message through
/// `ResumeShard` and reaches the worker bit for bit, with the first step.
#[tokio::test]
async fn video_shards_carry_their_frames() -> Result<()> {
    use longshot_core::inputs::VideoSpan;
    let echo = FakeWorker::new().with_shards(|a| {
        let video = a.video.clone().expect("the span arrived");
        let frames: Vec<ShardEvent> = (0..video.frames())
            .map(|i| ShardEvent::Frame {
                // The first step rides along in the index.
                index: (1000 * a.first_step + video.first_frame + i) as u32,
                width: video.width,
                height: video.height,
                rgb8: video.frame(video.first_frame + i).unwrap().to_vec(),
            })
            .chain(std::iter::once(ShardEvent::Finished))
            .collect();
        Ok(Box::pin(stream::iter(frames)) as BoxStream<ShardEvent>)
    });
    let server = start_worker(Arc::new(echo)).await?;
    let worker = GrpcWorkerConnector.connect(server.addr.to_string()).await?;
    let span = VideoSpan {
        first_frame: 5,
        width: 2,
        height: 1,
        video_frames: 209,
        rgb: (0..18).collect(),
    };
    let assignment = ShardAssignment {
        prompts: None,
        first_step: 3,
        video: Some(Arc::new(span.clone())),
        repaint: None,
        known: None,
        job_id: "j-v".into(),
        plan_id: 1,
        model: "procedural".into(),
        conditioning: Default::default(),
        noise: longshot_core::noise::NoiseKeys::single(1),
        channels: 1,
        height: 1,
        width: 4,
        plan: longshot_core::plan::WindowPlan::new(53, 21, 5)?,
        schedule: longshot_core::scheduler::Schedule::new(Solver::UniPc, 10, 3.0)?,
        guidance: 5.0,
        windows: 1..3,
        left_address: Some("127.0.0.1:1".into()),
        right_address: None,
        exchange_timeout: Duration::from_secs(5),
        hash_every: 1,
        output_frames: 209,
        blend: Default::default(),
        nccl: None,
        checkpoint_every: 0,
        preview_every: 0,
        resume: None,
    };
    let events: Vec<ShardEvent> = worker.run_shard(assignment).await?.collect().await;
    let want: Vec<ShardEvent> = (0..3)
        .map(|i| ShardEvent::Frame {
            index: 3005 + i as u32,
            width: 2,
            height: 1,
            rgb8: span.rgb[i * 6..(i + 1) * 6].to_vec(),
        })
        .chain([ShardEvent::Finished])
        .collect();
    assert_eq!(events, want);
    server.stop().await
}

/// A rerender's shard: its mask rides in the assignment and its source latents travel one frame
/// per message through `ResumeShard`, also with a checkpoint's states after them, bit for bit.
#[tokio::test]
async fn rerender_shards_carry_their_mask_and_known_latents() -> Result<()> {
    use longshot_core::repaint::{KnownLatents, RepaintMask};
    use longshot_core::tensor::{LatentShape, Latents};
    let echo = FakeWorker::new().with_shards(|a| {
        let known = a.known.clone().expect("the known latents arrived");
        let mask = a.repaint.clone().expect("the mask arrived");
        let event = ShardEvent::Latents {
            first_frame: (known.first + 100 * mask.free.start + 10_000 * mask.margin) as u32,
            frames: known.latents.shape().frames as u32,
            data: known.latents.as_slice().to_vec(),
        };
        Ok(Box::pin(stream::iter([event, ShardEvent::Finished])) as BoxStream<ShardEvent>)
    });
    let server = start_worker(Arc::new(echo)).await?;
    let worker = GrpcWorkerConnector.connect(server.addr.to_string()).await?;
    let plan = longshot_core::plan::WindowPlan::new(53, 21, 5)?;
    let data: Vec<f32> = (0..37 * 4).map(|v| v as f32 * 0.5 - 7.25).collect();
    let known = KnownLatents {
        first: 16,
        latents: Latents::from_vec(LatentShape::new(37, 1, 1, 4), data.clone()).unwrap(),
    };
    let assignment = ShardAssignment {
        prompts: None,
        first_step: 0,
        video: None,
        repaint: Some(RepaintMask::new(20..30, 15, 53)?),
        known: Some(Arc::new(known)),
        job_id: "j-r".into(),
        plan_id: 1,
        model: "procedural".into(),
        conditioning: Default::default(),
        noise: longshot_core::noise::NoiseKeys::single(1),
        channels: 1,
        height: 1,
        width: 4,
        plan,
        schedule: longshot_core::scheduler::Schedule::new(Solver::UniPc, 10, 3.0)?,
        guidance: 5.0,
        windows: 1..3,
        left_address: Some("127.0.0.1:1".into()),
        right_address: None,
        exchange_timeout: Duration::from_secs(5),
        hash_every: 1,
        output_frames: 209,
        blend: Default::default(),
        nccl: None,
        checkpoint_every: 0,
        preview_every: 0,
        resume: None,
    };
    let events: Vec<ShardEvent> = worker.run_shard(assignment).await?.collect().await;
    let want = vec![
        ShardEvent::Latents {
            first_frame: 16 + 2000 + 150_000,
            frames: 37,
            data,
        },
        ShardEvent::Finished,
    ];
    assert_eq!(events, want);
    server.stop().await
}
