//! Wire round trips of the `longshot.v1` messages through prost encode/decode: what the
//! coordinator and workers rely on (optional fields, oneofs, exact f32 bits) survives the wire.

use bytes::Bytes;
use longshot_proto::pb::{self, job_event, job_spec, overlap_frame, shard_event};
use longshot_proto::wire;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) -> M {
    let encoded = msg.encode_to_vec();
    assert_eq!(encoded.len(), msg.encoded_len());
    M::decode(encoded.as_slice()).expect("a freshly encoded message decodes")
}

fn spec() -> pb::JobSpec {
    pb::JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        model: "wan2.1-t2v-1.3b".into(),
        prompt: "a lighthouse in a storm, one long take".into(),
        negative_prompt: "blurry".into(),
        seed: Some(42),
        duration: Some(job_spec::Duration::Seconds(60.0)),
        fps: Some(16),
        width: Some(832),
        height: Some(480),
        steps: Some(50),
        guidance: Some(5.0),
        shift: Some(5.0),
        solver: "unipc".into(),
        overlap: Some(5),
        outputs: vec!["mp4".into(), "latents".into()],
        priority: -3,
        disable_exchange: false,
        image: String::new(),
        last_image: String::new(),
        video: String::new(),
        strength: None,
        draft: None,
        preview_every: 0,
    }
}

#[test]
fn job_spec_round_trips() {
    let spec = spec();
    assert_eq!(round_trip(&spec), spec);
    let request = pb::SubmitJobRequest { spec: Some(spec) };
    assert_eq!(round_trip(&request), request);
}

#[test]
fn unset_optionals_differ_from_zero() {
    // A seed of 0 and an overlap of 0 are real requests; "unset" must stay distinguishable.
    let unset = pb::JobSpec {
        seed: None,
        overlap: None,
        duration: Some(job_spec::Duration::Frames(81)),
        ..spec()
    };
    let zero = pb::JobSpec {
        seed: Some(0),
        overlap: Some(0),
        ..unset.clone()
    };
    assert_eq!(round_trip(&unset).seed, None);
    assert_eq!(round_trip(&unset).overlap, None);
    assert_eq!(round_trip(&zero).seed, Some(0));
    assert_eq!(round_trip(&zero).overlap, Some(0));
    assert_eq!(round_trip(&unset).duration, Some(job_spec::Duration::Frames(81)));
}

#[test]
fn shard_assignment_keeps_schedule_bits() {
    // Bit patterns a decimal or re-derived encoding would mangle: -0.0, a subnormal, a NaN payload.
    let sigmas = [1.0f32, 0.999_9, 0.5, 1e-45, -0.0, f32::from_bits(0x7fc0_0042)];
    let assignment = pb::ShardAssignment {
        prompts: None,
        noise: Vec::new(),
        noise_pool: 0,
        first_step: 0,
        video: None,
        repaint: None,
        known: None,
        job_id: "job-7".into(),
        plan_id: u64::MAX - 1,
        model: "procedural".into(),
        conditioning: Some(pb::Conditioning {
            prompt: "p".into(),
            negative_prompt: "n".into(),
            prompt_embedding: wire::encode_f32_le(&[0.25, -3.0]),
            negative_embedding: Bytes::new(),
            embedding_shape: vec![1, 2],
            ..Default::default()
        }),
        seed: 0xdead_beef_cafe_f00d,
        latent: Some(pb::LatentShape {
            channels: 16,
            height: 60,
            width: 104,
        }),
        plan: Some(pb::WindowGrid {
            latent_frames: 301,
            window: 21,
            overlap: 5,
        }),
        schedule: Some(pb::Schedule {
            solver: "unipc".into(),
            sigma_bits: wire::to_bits(&sigmas),
            timestep_bits: wire::to_bits(&[999.0, 500.5]),
        }),
        guidance_bits: 5.0f32.to_bits(),
        first_window: 3,
        end_window: 6,
        left_exchange_address: "127.0.0.1:7001".into(),
        right_exchange_address: String::new(),
        exchange_timeout_ms: 30_000,
        hash_every: 10,
        output_frames: 317,
        disable_exchange: false,
        emit_frames: true,
        emit_latents: false,
        nccl: Some(pb::NcclGroup {
            unique_id: Bytes::from(vec![0xa5; 128]),
            rank: 1,
            ranks: 4,
        }),
        checkpoint_every: 2,
        preview_every: 3,
        resume_step: 0,
    };
    let back = round_trip(&assignment);
    assert_eq!(back, assignment);
    let schedule = back.schedule.expect("schedule survives");
    assert_eq!(
        wire::to_bits(&wire::from_bits(&schedule.sigma_bits)),
        wire::to_bits(&sigmas)
    );
    assert_eq!(f32::from_bits(back.guidance_bits), 5.0);
}

#[test]
fn oneofs_round_trip() {
    let events = [
        shard_event::Event::StepDone(pb::StepDone { window: 4, step: 17 }),
        shard_event::Event::Frame(pb::Frame {
            index: 1200,
            width: 2,
            height: 1,
            rgb8: Bytes::from_static(&[1, 2, 3, 4, 5, 6]),
        }),
        shard_event::Event::Latents(pb::Latents {
            first_frame: 80,
            frame_count: 1,
            data: wire::encode_f32_le(&[1.0; 4]),
        }),
        shard_event::Event::Finished(pb::ShardFinished {}),
        shard_event::Event::Failed(pb::ShardFailed {
            reason: "exchange with 127.0.0.1:7002 timed out after 30000 ms".into(),
            transient: true,
        }),
    ];
    for event in events {
        let msg = pb::ShardEvent { event: Some(event) };
        assert_eq!(round_trip(&msg), msg);
    }

    let planned = pb::JobEvent {
        job_id: "job-7".into(),
        event: Some(job_event::Event::Planned(pb::PlanSummary {
            windows: 19,
            latent_frames: 301,
            output_frames: 1200,
            rendered_frames: 1201,
            workers: 8,
            overlap: 5,
            window: 21,
            padded_latent_frames: 309,
        })),
    };
    assert_eq!(round_trip(&planned), planned);
    let cancelled = pb::JobEvent {
        job_id: "job-7".into(),
        event: Some(job_event::Event::Cancelled(pb::Cancelled {})),
    };
    assert_eq!(round_trip(&cancelled), cancelled);

    let velocity: Vec<f32> = (0..1000).map(|i| i as f32 * 0.001 - 0.5).collect();
    let frame = pb::OverlapFrame {
        job_id: "job-7".into(),
        plan_id: 3,
        step: 12,
        boundary: 4,
        payload: Some(overlap_frame::Payload::Velocity(wire::encode_f32_le(&velocity))),
    };
    let back = round_trip(&frame);
    assert_eq!(back, frame);
    match back.payload {
        Some(overlap_frame::Payload::Velocity(bytes)) => {
            assert_eq!(
                wire::to_bits(&wire::decode_f32_le(&bytes).expect("aligned")),
                wire::to_bits(&velocity)
            );
        }
        other => panic!("expected a velocity payload, got {other:?}"),
    }
    let hash = pb::OverlapFrame {
        payload: Some(overlap_frame::Payload::LatentHash(u64::MAX)),
        ..frame
    };
    assert_eq!(round_trip(&hash), hash);
}

#[test]
fn worker_info_round_trips() {
    let info = pb::WorkerInfo {
        id: "w-0".into(),
        address: "127.0.0.1:7001".into(),
        device_kind: "cuda".into(),
        device_name: "NVIDIA H100 80GB HBM3".into(),
        memory_bytes: 80 << 30,
        budget_bytes: 60 << 30,
        models: vec![pb::ModelInfo {
            video_warmup: None,
            name: "wan2.1-t2v-1.3b".into(),
            window_frames: 21,
            latent_channels: 16,
            temporal_compression: 4,
            spatial_compression: 8,
            default_overlap: 5,
            weights: String::new(),
            reference_images: 0,
        }],
        version: "0.1.0".into(),
        state: pb::WorkerState::Idle as i32,
        nccl_gpu: "GPU-00112233-4455-6677-8899-aabbccddeeff".into(),
    };
    let back = round_trip(&info);
    assert_eq!(back, info);
    assert_eq!(back.state(), pb::WorkerState::Idle);
}
