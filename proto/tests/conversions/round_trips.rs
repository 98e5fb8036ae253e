//! Every domain value survives domain → pb → domain unchanged, bit for bit where bits matter.

use super::*;
use longshot_core::api::JobCost;
use longshot_core::noise::{NoiseKeys, NoiseSegment};
use longshot_core::preview::PreviewFrames;
use longshot_core::shots::{Shot, Transition};
use longshot_tests::fixtures::worker_info;

#[test]
fn job_messages_round_trip() {
    round_trip::<JobSpec, pb::JobSpec>(spec());
    round_trip::<JobSpec, pb::JobSpec>(JobSpec {
        length: ClipLength::Frames(81),
        seed: None,
        overlap: None,
        blend: BlendMode::CoDenoise,
        ..spec()
    });
    round_trip::<JobSpec, pb::JobSpec>(JobSpec {
        width: 416,
        height: 240,
        steps: 13,
        draft: Some(longshot_core::job::DraftOf {
            width: 832,
            height: 480,
            steps: 50,
        }),
        ..spec()
    });
    round_trip::<JobSpec, pb::JobSpec>(JobSpec {
        strength: Some(0.35),
        inputs: longshot_core::job::JobInputs {
            video: Some(longshot_core::inputs::InputDigest::of(b"frames")),
            ..Default::default()
        },
        ..spec()
    });
    let shots = vec![
        Shot {
            prompt: "a red fox".into(),
            negative_prompt: Some("fog".into()),
            duration: Some(2.5),
            frames: None,
            seed: Some(u64::MAX),
            transition: Some(Transition::Blend(0.75)),
            ..Default::default()
        },
        Shot {
            prompt: "a blue sea".into(),
            negative_prompt: None,
            duration: None,
            frames: Some(40),
            seed: None,
            transition: Some(Transition::Cut),
            ..Default::default()
        },
        Shot {
            prompt: "dusk".into(),
            negative_prompt: None,
            duration: None,
            frames: Some(1),
            seed: None,
            transition: None,
            ..Default::default()
        },
    ];
    round_trip::<JobSpec, pb::JobSpec>(JobSpec {
        prompt: String::new(),
        shots: shots.clone(),
        rerender: None,
        split_shots: true,
        ..spec()
    });
    round_trip::<JobSpec, pb::JobSpec>(JobSpec {
        rerender: Some(longshot_core::job::Rerender {
            source: "job-0001-0000abcd".into(),
            from_frame: 3,
            to_frame: 17,
        }),
        ..spec()
    });
    // A shot list with no duration takes the shots' total (2.5 s at 24 fps + 40 + 1).
    let wire = pb::JobSpec {
        duration: None,
        prompt: String::new(),
        shots: shots.into_iter().map(Into::into).collect(),
        rerender: None,
        split_shots: false,
        ..pb::JobSpec::from(spec())
    };
    let back = JobSpec::try_from(wire).expect("converts");
    assert_eq!(back.length, ClipLength::Frames(101));
    let outputs = vec![
        OutputInfo {
            name: "clip.mp4".into(),
            format: OutputKind::Mp4,
            size_bytes: 1 << 20,
        },
        OutputInfo {
            name: "clip.safetensors".into(),
            format: OutputKind::Latents,
            size_bytes: 7,
        },
    ];
    for format in OutputKind::ALL {
        round_trip::<OutputInfo, pb::OutputInfo>(OutputInfo {
            name: "x".into(),
            format,
            size_bytes: 0,
        });
    }
    let status = JobStatus {
        job_id: "j-1".into(),
        state: JobState::Done,
        spec: spec(),
        seed: 42,
        plan: Some(plan()),
        queue_position: 0,
        steps_done: 750,
        steps_total: 750,
        outputs: outputs.clone(),
        error: Some("worker w-2 lost".into()),
        submitted_unix_ms: 1_700_000_000_000,
        finished_unix_ms: 1_700_000_060_000,
        recovery: JobRecovery {
            resumes: 2,
            last_interruption: Some("worker w1 was lost".into()),
            checkpoint_step: 10,
            excluded_workers: vec!["w1".into()],
        },
        owner: "alice".into(),
        cost: JobCost {
            gpu_seconds: 812.25,
            cpu_seconds: 0.5,
        },
    };
    round_trip::<JobStatus, pb::JobStatus>(status.clone());
    round_trip::<JobStatus, pb::JobStatus>(JobStatus {
        plan: None,
        error: None,
        state: JobState::Queued,
        ..status
    });
    round_trip::<SubmitResult, pb::SubmitJobResponse>(SubmitResult {
        job_id: "j-1".into(),
        seed: 9,
        plan: plan(),
    });
    round_trip::<OutputChunk, pb::OutputChunk>(OutputChunk {
        name: "clip.mp4".into(),
        offset: 10,
        total_size: 13,
        data: vec![1, 2, 3],
    });
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::Decoding,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ] {
        assert_eq!(job_state_from_pb(pb::JobState::from(state) as i32, "state"), Ok(state));
    }
    let events = [
        JobEvent::Queued { position: 2 },
        JobEvent::Planned(plan()),
        JobEvent::StepProgress {
            window: 3,
            step: 17,
            total_steps: 50,
            worker_id: "w-1".into(),
        },
        JobEvent::Decoding {
            frames_done: 10,
            frames_total: 961,
        },
        JobEvent::Done { outputs },
        JobEvent::Resuming {
            reason: "worker w1 was lost".into(),
            from_step: 12,
        },
        JobEvent::Failed {
            reason: "no worker serves model wan".into(),
        },
        JobEvent::Cancelled,
        JobEvent::Preview {
            total_steps: 50,
            clip_frames: 241,
            frames: preview_frames(),
        },
    ];
    for event in events {
        let wire = job_event_to_pb("j-1".into(), event.clone());
        assert_eq!(wire.job_id, "j-1");
        assert_eq!(JobEvent::try_from(wire), Ok(event));
    }
}

#[test]
fn unset_spec_fields_get_the_defaults() {
    let wire = pb::JobSpec {
        model: "procedural".into(),
        prompt: "p".into(),
        duration: Some(job_spec::Duration::Frames(81)),
        ..Default::default()
    };
    let spec = JobSpec::try_from(wire.clone()).expect("a minimal spec converts");
    assert_eq!(
        (spec.fps, spec.width, spec.height, spec.steps),
        (defaults::FPS, defaults::WIDTH, defaults::HEIGHT, defaults::STEPS)
    );
    assert_eq!(spec.guidance.to_bits(), defaults::GUIDANCE.to_bits());
    assert_eq!((spec.shift, spec.solver), (defaults::SHIFT, defaults::SOLVER));
    assert_eq!(spec.outputs, vec![defaults::OUTPUT]);
    assert_eq!(
        (spec.seed, spec.overlap, spec.blend),
        (None, None, BlendMode::CoDenoise)
    );
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    // An explicit 0 guidance is kept: it turns CFG off.
    let spec = JobSpec::try_from(pb::JobSpec {
        guidance: Some(0.0),
        ..wire
    })
    .expect("converts");
    assert_eq!(spec.guidance.to_bits(), 0.0f32.to_bits());
}

#[test]
fn cluster_messages_round_trip() {
    round_trip::<ModelInfo, pb::ModelInfo>(model());
    round_trip::<ModelInfo, pb::ModelInfo>(ModelInfo {
        video_warmup: Some(28),
        ..model()
    });
    let worker = WorkerInfo {
        device_kind: "cuda".into(),
        device_name: "NVIDIA H100 80GB HBM3".into(),
        memory_bytes: 80 << 30,
        budget_bytes: 60 << 30,
        models: vec![
            model(),
            ModelInfo {
                name: "procedural".into(),
                ..model()
            },
        ],
        state: WorkerState::Busy,
        nccl_gpu: Some("GPU-00112233-4455-6677-8899-aabbccddeeff".into()),
        ..worker_info("w-0")
    };
    round_trip::<WorkerInfo, pb::WorkerInfo>(worker.clone());
    round_trip::<WorkerInfo, pb::WorkerInfo>(WorkerInfo {
        nccl_gpu: None,
        ..worker
    });
    for state in [
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Draining,
        WorkerState::Offline,
    ] {
        assert_eq!(
            worker_state_from_pb(pb::WorkerState::from(state) as i32, "state"),
            Ok(state)
        );
    }
    let ack = RegisterAck {
        worker_id: "w-0".into(),
        heartbeat_interval: Duration::from_millis(2500),
    };
    let back = RegisterAck::try_from(pb::RegisterResponse::from(ack.clone()));
    assert_eq!(back, Ok(ack));
}

#[test]
fn shard_messages_round_trip_bit_for_bit() {
    let a = assignment();
    let wire = pb::ShardAssignment::from(a.clone());
    let schedule = wire.schedule.clone().expect("schedule is sent");
    assert_eq!(schedule.sigma_bits, longshot_proto::wire::to_bits(a.schedule.sigmas()));
    let back = ShardAssignment::try_from(wire).expect("converts back");
    assert_eq!(
        longshot_proto::wire::to_bits(back.schedule.sigmas()),
        longshot_proto::wire::to_bits(a.schedule.sigmas())
    );
    assert_eq!(
        longshot_proto::wire::to_bits(back.schedule.timesteps()),
        longshot_proto::wire::to_bits(a.schedule.timesteps())
    );
    assert_eq!(back.guidance.to_bits(), a.guidance.to_bits());
    assert_eq!(back, a);
    round_trip::<ShardAssignment, pb::ShardAssignment>(ShardAssignment {
        schedule: Schedule::new(Solver::Euler, 7, 5.0).expect("valid"),
        guidance: 0.0,
        windows: 0..15,
        left_address: None,
        right_address: Some("w-9:7001".into()),
        blend: BlendMode::Independent,
        ..assignment()
    });
    round_trip::<ShardAssignment, pb::ShardAssignment>(ShardAssignment {
        first_step: 4,
        ..assignment()
    });
    round_trip::<ShardAssignment, pb::ShardAssignment>(ShardAssignment {
        noise: NoiseKeys {
            segments: vec![
                NoiseSegment {
                    first_latent: 0,
                    seed: u64::MAX,
                },
                NoiseSegment {
                    first_latent: 100,
                    seed: 3,
                },
            ],
            pool: 2,
        },
        prompts: Some(std::sync::Arc::new(prompt_schedule(&assignment()))),
        conditioning: Conditioning::default(),
        ..assignment()
    });
    round_trip::<ShardAssignment, pb::ShardAssignment>(ShardAssignment {
        nccl: Some(NcclGroup {
            unique_id: (0..128).map(|i| (i * 7) as u8).collect(),
            rank: 2,
            ranks: 3,
        }),
        ..assignment()
    });
    let events = [
        ShardEvent::StepDone { window: 4, step: 49 },
        ShardEvent::Frame {
            index: 960,
            width: 2,
            height: 1,
            rgb8: vec![0, 1, 2, 253, 254, 255],
        },
        ShardEvent::Latents {
            first_frame: 18,
            frames: 2,
            data: vec![-0.0, 1.5, f32::MIN_POSITIVE, 3.0],
        },
        ShardEvent::Preview(preview_frames()),
        ShardEvent::Finished,
        ShardEvent::Failed {
            reason: "model failure: out of memory".into(),
            transient: false,
        },
        ShardEvent::Failed {
            reason: "the right neighbour disconnected: connection reset".into(),
            transient: true,
        },
    ];
    for event in events {
        round_trip::<ShardEvent, pb::ShardEvent>(event);
    }
}

#[test]
fn overlap_envelopes_round_trip_bit_for_bit() {
    let awkward = vec![0.0, -0.0, 1.0, f32::MAX, f32::from_bits(0x7fc0_1234), 1e-45];
    let payloads = [
        Payload::Velocity(awkward.clone()),
        Payload::LatentHash(u64::MAX),
        Payload::Halo(awkward.clone()),
        Payload::Halo(Vec::new()),
    ];
    for payload in payloads {
        let env = OverlapEnvelope {
            job_id: "j-1".into(),
            plan_id: 7,
            message: OverlapMessage {
                step: 12,
                boundary: 3,
                payload,
            },
        };
        let back = OverlapEnvelope::try_from(pb::OverlapFrame::from(env.clone())).expect("converts back");
        // NaN != NaN, so compare payload bits rather than values.
        let bits = |p: &Payload| match p {
            Payload::Velocity(v) | Payload::Halo(v) => longshot_proto::wire::to_bits(v),
            Payload::LatentHash(h) => vec![*h as u32, (*h >> 32) as u32],
        };
        assert_eq!(bits(&back.message.payload), bits(&env.message.payload));
        assert_eq!(
            std::mem::discriminant(&back.message.payload),
            std::mem::discriminant(&env.message.payload)
        );
        assert_eq!(
            (back.job_id, back.plan_id, back.message.step, back.message.boundary),
            ("j-1".into(), 7, 12, 3)
        );
    }
}

/// Two 2×1 preview frames of latent frames 40 and 41 after step 15.
fn preview_frames() -> PreviewFrames {
    PreviewFrames {
        step: 15,
        first_frame: 40,
        frames: 2,
        width: 2,
        height: 1,
        rgb8: (0..12).map(|i| i * 21).collect(),
    }
}
