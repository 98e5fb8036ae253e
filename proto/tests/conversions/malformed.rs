//! Malformed messages are rejected as `InvalidArgument` naming the offending field.

use super::*;

#[test]
fn malformed_job_messages_are_rejected_by_field() {
    let wire = pb::JobSpec::from(spec());
    // A missing duration is reported together with every other bad field.
    rejected(
        JobSpec::try_from(pb::JobSpec {
            duration: None,
            ..wire.clone()
        }),
        &["duration"],
    );
    rejected(
        JobSpec::try_from(pb::JobSpec {
            duration: None,
            width: Some(1000),
            ..wire.clone()
        }),
        &["duration", "width"],
    );
    // An explicit 0 is a value, not "unset": it must reach validation (and be refused there)
    // instead of silently becoming the default.
    let zeros = JobSpec::try_from(pb::JobSpec {
        height: Some(0),
        fps: Some(0),
        ..wire.clone()
    })
    .expect("converts");
    assert_eq!((zeros.height, zeros.fps), (0, 0));
    let fields: Vec<String> = zeros.validate().into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["fps", "height"]);
    let info = pb::OutputInfo {
        name: "clip.gif".into(),
        format: "gif".into(),
        size_bytes: 1,
    };
    rejected(OutputInfo::try_from(info.clone()), &["format"]);
    let status = pb::JobStatus::from(JobStatus {
        job_id: "j".into(),
        state: JobState::Done,
        spec: spec(),
        seed: 1,
        plan: None,
        queue_position: 0,
        steps_done: 0,
        steps_total: 0,
        outputs: vec![],
        error: None,
        submitted_unix_ms: 0,
        finished_unix_ms: 0,
        recovery: JobRecovery::default(),
        owner: String::new(),
        cost: Default::default(),
    });
    rejected(
        JobStatus::try_from(pb::JobStatus {
            outputs: vec![info],
            ..status.clone()
        }),
        &["outputs[0].format"],
    );
    rejected(
        JobStatus::try_from(pb::JobStatus {
            spec: None,
            ..status.clone()
        }),
        &["spec"],
    );
    rejected(
        JobStatus::try_from(pb::JobStatus {
            state: 42,
            ..status.clone()
        }),
        &["state"],
    );
    rejected(JobStatus::try_from(pb::JobStatus { state: 0, ..status }), &["state"]);
    rejected(
        JobEvent::try_from(pb::JobEvent {
            job_id: "j".into(),
            event: None,
        }),
        &["event"],
    );
    rejected(
        SubmitResult::try_from(pb::SubmitJobResponse {
            job_id: "j".into(),
            seed: 1,
            plan: None,
        }),
        &["plan"],
    );
    let chunk = pb::OutputChunk {
        data: vec![0; 4].into(),
        offset: 10,
        total_size: 12,
        name: "x".into(),
    };
    rejected(OutputChunk::try_from(chunk), &["data"]);
    rejected(
        longshot_proto::convert::output_kind_from_pb("webm", "format"),
        &["format"],
    );
}

#[test]
fn malformed_cluster_messages_are_rejected_by_field() {
    let model = pb::ModelInfo::from(model());
    rejected(
        ModelInfo::try_from(pb::ModelInfo {
            temporal_compression: 0,
            ..model.clone()
        }),
        &["temporal_compression"],
    );
    rejected(
        ModelInfo::try_from(pb::ModelInfo {
            window_frames: 1,
            default_overlap: 0,
            weights: String::new(),
            ..model.clone()
        }),
        &["window_frames"],
    );
    rejected(
        ModelInfo::try_from(pb::ModelInfo {
            default_overlap: 11,
            weights: String::new(),
            ..model.clone()
        }),
        &["default_overlap"],
    );
    let worker = pb::WorkerInfo {
        id: "w".into(),
        models: vec![
            model.clone(),
            pb::ModelInfo {
                spatial_compression: 0,
                ..model
            },
        ],
        state: 1,
        ..Default::default()
    };
    rejected(WorkerInfo::try_from(worker.clone()), &["models[1].spatial_compression"]);
    rejected(
        WorkerInfo::try_from(pb::WorkerInfo {
            state: 9,
            models: vec![],
            ..worker
        }),
        &["state"],
    );
    let refused = pb::RegisterResponse {
        worker_id: "w".into(),
        accepted: false,
        reason: "version 0.0 is not 0.1".into(),
        heartbeat_interval_ms: 0,
    };
    assert_eq!(
        RegisterAck::try_from(refused),
        Err(ApiError::FailedPrecondition("version 0.0 is not 0.1".into()))
    );
    let zero = pb::RegisterResponse {
        worker_id: "w".into(),
        accepted: true,
        reason: String::new(),
        heartbeat_interval_ms: 0,
    };
    rejected(RegisterAck::try_from(zero), &["heartbeat_interval_ms"]);
}

#[test]
fn malformed_shard_messages_are_rejected_by_field() {
    let good = pb::ShardAssignment::from(assignment());
    let with_schedule = |f: &dyn Fn(&mut pb::Schedule)| {
        let mut a = good.clone();
        f(a.schedule.as_mut().expect("schedule is sent"));
        ShardAssignment::try_from(a)
    };
    rejected(with_schedule(&|s| s.sigma_bits.swap(1, 2)), &["schedule.sigma_bits"]);
    rejected(
        with_schedule(&|s| {
            s.timestep_bits.pop();
        }),
        &["schedule.sigma_bits"],
    );
    rejected(
        with_schedule(&|s| s.timestep_bits[3] = f32::NAN.to_bits()),
        &["schedule.timestep_bits"],
    );
    rejected(with_schedule(&|s| s.solver = "ddim".into()), &["schedule.solver"]);
    // Noise segments: out of order, or a first segment that is not the seed's.
    let segments = |v: &[(u64, u64)]| {
        v.iter()
            .map(|&(first_latent, seed)| pb::NoiseSegment { first_latent, seed })
            .collect()
    };
    let with_noise = |seed: u64, noise: Vec<pb::NoiseSegment>| {
        ShardAssignment::try_from(pb::ShardAssignment {
            seed,
            noise,
            ..good.clone()
        })
    };
    rejected(with_noise(1, segments(&[(0, 1), (9, 2), (9, 3)])), &["noise"]);
    rejected(with_noise(1, segments(&[(5, 1)])), &["noise"]);
    rejected(with_noise(2, segments(&[(0, 1), (9, 2)])), &["seed"]);
    // A prompt schedule that does not fit the plan, or whose prompts carry images.
    let scheduled = pb::ShardAssignment::from(ShardAssignment {
        prompts: Some(std::sync::Arc::new(prompt_schedule(&assignment()))),
        ..assignment()
    });
    let with_prompts = |f: &dyn Fn(&mut pb::PromptSchedule)| {
        let mut a = scheduled.clone();
        f(a.prompts.as_mut().expect("prompts are sent"));
        ShardAssignment::try_from(a)
    };
    rejected(
        with_prompts(&|s| {
            s.windows.pop();
        }),
        &["prompts.windows"],
    );
    rejected(with_prompts(&|s| s.windows[2].to = 2), &["prompts.windows"]);
    rejected(with_prompts(&|s| s.windows[5].weight = 1.5), &["prompts.windows"]);
    rejected(
        with_prompts(&|s| {
            s.prompts[1].embedding_shape = vec![1, 1];
        }),
        &["prompts.prompts[1].embeddings"],
    );
    rejected(
        with_prompts(&|s| {
            s.prompts[0].reference = Some(pb::ReferenceImages {
                width: 1,
                height: 1,
                first: vec![0, 0, 0].into(),
                last: Vec::new().into(),
            })
        }),
        &["prompts.prompts[0]"],
    );
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            guidance_bits: f32::NAN.to_bits(),
            ..good.clone()
        }),
        &["guidance_bits"],
    );
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            end_window: 16,
            ..good.clone()
        }),
        &["end_window"],
    );
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            first_window: 8,
            ..good.clone()
        }),
        &["first_window"],
    );
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            output_frames: 0,
            ..good.clone()
        }),
        &["output_frames"],
    );
    let bad_grid = pb::WindowGrid {
        latent_frames: 241,
        window: 21,
        overlap: 11,
    };
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            plan: Some(bad_grid),
            ..good.clone()
        }),
        &["plan"],
    );
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            schedule: None,
            ..good.clone()
        }),
        &["schedule"],
    );
    let nccl = |unique_id: usize, rank, ranks| pb::ShardAssignment {
        nccl: Some(pb::NcclGroup {
            unique_id: vec![7u8; unique_id].into(),
            rank,
            ranks,
        }),
        ..good.clone()
    };
    assert!(ShardAssignment::try_from(nccl(128, 1, 2)).is_ok());
    for (group, field) in [
        (nccl(127, 0, 2), "nccl.unique_id"),
        (nccl(0, 0, 2), "nccl.unique_id"),
        (nccl(128, 2, 2), "nccl.rank"),
        (nccl(128, 0, 1), "nccl.ranks"),
    ] {
        rejected(ShardAssignment::try_from(group), &[field]);
    }
    rejected(
        ShardAssignment::try_from(pb::ShardAssignment {
            latent: Some(pb::LatentShape {
                channels: 0,
                height: 1,
                width: 1,
            }),
            ..good
        }),
        &["latent.channels"],
    );
    rejected(ShardEvent::try_from(pb::ShardEvent { event: None }), &["event"]);
    let frame = pb::Frame {
        index: 0,
        width: 2,
        height: 2,
        rgb8: vec![0; 11].into(),
    };
    rejected(
        ShardEvent::try_from(pb::ShardEvent {
            event: Some(shard_event::Event::Frame(frame)),
        }),
        &["frame.rgb8"],
    );
    let latents = pb::Latents {
        first_frame: 0,
        frame_count: 1,
        data: vec![0; 6].into(),
    };
    rejected(
        ShardEvent::try_from(pb::ShardEvent {
            event: Some(shard_event::Event::Latents(latents)),
        }),
        &["latents.data"],
    );
    let latents = pb::Latents {
        first_frame: 0,
        frame_count: 3,
        data: vec![0; 16].into(),
    };
    rejected(
        ShardEvent::try_from(pb::ShardEvent {
            event: Some(shard_event::Event::Latents(latents)),
        }),
        &["latents.frame_count"],
    );
    // A preview whose pixels are not frames × height × width × 3 bytes, from a worker or in a
    // job event.
    let preview = pb::PreviewFrames {
        step: 5,
        first_frame: 0,
        frame_count: 2,
        width: 2,
        height: 2,
        rgb8: vec![0; 23].into(),
    };
    rejected(
        ShardEvent::try_from(pb::ShardEvent {
            event: Some(shard_event::Event::Preview(preview.clone())),
        }),
        &["preview.rgb8"],
    );
    rejected(
        JobEvent::try_from(pb::JobEvent {
            job_id: "j".into(),
            event: Some(pb::job_event::Event::Preview(pb::Preview {
                total_steps: 10,
                clip_frames: 2,
                frames: Some(preview),
            })),
        }),
        &["preview.frames.rgb8"],
    );
}

#[test]
fn malformed_overlap_frames_are_rejected_by_field() {
    let frame = |payload| pb::OverlapFrame {
        job_id: "j".into(),
        plan_id: 1,
        step: 0,
        boundary: 0,
        payload,
    };
    let err = OverlapEnvelope::try_from(frame(Some(overlap_frame::Payload::Velocity(vec![0; 7].into()))));
    rejected(err.clone(), &["velocity"]);
    let Err(ApiError::InvalidArgument(errors)) = err else {
        unreachable!()
    };
    assert_eq!(errors[0].message, "f32 payload of 7 bytes is not a multiple of 4 bytes");
    rejected(
        OverlapEnvelope::try_from(frame(Some(overlap_frame::Payload::Halo(vec![0; 5].into())))),
        &["halo"],
    );
    rejected(OverlapEnvelope::try_from(frame(None)), &["payload"]);
}
