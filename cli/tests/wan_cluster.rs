//! Wan2.1 in the cluster: a tiny random-weight pipeline (the golden fixtures' transformer, VAE and
//! umT5 with its tokenizer) served by real worker processes with `--model`, rendering a
//! three-window clip; the output must be bit-identical whatever the number of workers, and the
//! prompts must be encoded once per job.

mod harness;

use harness::{read_png_dir, submit, write_rgb_png, Cluster, ClusterOptions, BIN};
use longshot_proto::pb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];
/// 197 frames = 50 latent frames = 3 windows of 21 (overlap 5) at 48×32 (latent 6×4).
const JOB: &[&str] = &[
    "--prompt",
    "a lighthouse on a cliff at dusk",
    "--negative-prompt",
    "blurry",
    "--frames",
    "197",
    "--width",
    "48",
    "--height",
    "32",
    "--steps",
    "3",
    "--guidance",
    "5",
    "--seed",
    "7",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/wan")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A pipeline directory `root/fixture`: `components` of the `fixture` directory, the text encoder
/// and tokenizer of `umt5_tiny` (its d_model 32 is the tiny transformers' text_dim), and a
/// `model_index.json` of class `class` naming them all (plus `extra` entries).
fn assemble_pipeline(
    root: &Path,
    fixture: &str,
    components: &[&str],
    class: &str,
    extra: serde_json::Value,
) -> PathBuf {
    let dir = root.join(fixture);
    let f = fixtures();
    for c in components {
        copy_dir(&f.join(fixture).join(c), &dir.join(c));
    }
    for c in ["text_encoder", "tokenizer"] {
        copy_dir(&f.join("umt5_tiny").join(c), &dir.join(c));
    }
    let mut index = serde_json::json!({
        "_class_name": class,
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    });
    if let (Some(index), Some(extra)) = (index.as_object_mut(), extra.as_object()) {
        index.extend(extra.clone());
    }
    std::fs::write(dir.join("model_index.json"), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    dir
}

/// A whole WanPipeline directory: transformer, VAE and scheduler of `pipeline_tiny` with umT5.
fn tiny_pipeline(root: &Path) -> PathBuf {
    let parts = ["transformer", "vae", "scheduler"];
    assemble_pipeline(root, "pipeline_tiny", &parts, "WanPipeline", serde_json::json!({}))
}

fn latents(path: &Path) -> Vec<u8> {
    harness::latent_bytes(path, &[50, 16, 4, 6])
}

/// Submits `args` with `--format latents`, waits for the job to finish, and returns its latents;
/// `tag` names the fetched file.
fn render_latents(c: &Cluster, args: &[&str], tag: &str) -> Vec<u8> {
    let mut args = args.to_vec();
    args.extend(["--format", "latents"]);
    let id = submit(c, &args);
    let s = c.wait_state(&id, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "job failed: {s}\n{}", c.logs());
    assert_eq!(s["plan"]["windows"].as_u64(), Some(3), "{s}");
    let lat = c.dir.path().join(format!("{tag}.safetensors"));
    c.ok(&["fetch", &id, "-o", lat.to_str().unwrap()]);
    latents(&lat)
}

/// `JOB` without the flags `drop` (a shot list gives the prompt and length, an image the size).
fn job_without(drop: &[&str]) -> Vec<&'static str> {
    JOB.chunks(2)
        .filter(|kv| !drop.contains(&kv[0]))
        .flatten()
        .copied()
        .collect()
}

/// `longshot render` on `workers` local worker processes: `model_args` (the model and its
/// inputs), then `args`, latents to `<dir>/<tag>.safetensors`, whose path it returns.
fn render_to(dir: &Path, model_args: &[&str], args: &[&str], workers: &str, tag: &str) -> PathBuf {
    let lat = dir.join(format!("{tag}.safetensors"));
    let out = Command::new(BIN)
        .arg("render")
        .args(model_args)
        .args(["--workers", workers, "-o"])
        .arg(&lat)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
    lat
}

/// How many times the workers' logs say `what`.
fn logged(c: &Cluster, workers: usize, what: &str) -> usize {
    (0..workers)
        .map(|i| {
            std::fs::read_to_string(c.dir.path().join(format!("worker-{i}.log")))
                .unwrap()
                .matches(what)
                .count()
        })
        .sum()
}

#[test]
fn a_tiny_wan_renders_bit_identically_on_one_two_and_three_worker_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_pipeline(tmp.path());
    let served = format!("tiny-wan={}", model.display());
    let mut renders = Vec::new();
    for workers in [1usize, 3] {
        let options = ClusterOptions {
            worker_args: vec!["--model".into(), served.clone()],
            ..Default::default()
        };
        let c = Cluster::start_with(workers, 30.0, options);
        // Workers advertise the loaded pipeline beside the built-in model.
        let listed = c.ok(&["models"]);
        assert!(listed.contains("tiny-wan") && listed.contains("procedural"), "{listed}");
        for w in c.workers() {
            let names: Vec<&str> = w["models"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["name"].as_str())
                .collect();
            assert_eq!(names, ["procedural", "tiny-wan"], "{w}");
            // The harness names worker i `w{i}` and logs it to worker-{i}.log.
            let id = w["id"].as_str().unwrap();
            let log = std::fs::read_to_string(c.dir.path().join(format!("worker-{}.log", &id[1..]))).unwrap();
            assert!(
                log.contains(&format!("transformer on {}", w["device_kind"].as_str().unwrap())),
                "{log}"
            );
            // `--device auto` (the default) on a machine or build without a GPU: the CPU, and one
            // log line saying why.
            if w["device_kind"] == "cpu" {
                assert_eq!(log.matches("no usable GPU (").count(), 1, "{log}");
                assert!(log.contains("running on the CPU reference backend"), "{log}");
            }
        }
        let mut args = vec!["--model", "tiny-wan"];
        args.extend(JOB);
        args.extend(["--format", "png,latents"]);
        let job = submit(&c, &args);
        let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
        assert_eq!(s["state"], "done", "job failed: {s}\n{}", c.logs());
        assert_eq!(
            (s["plan"]["windows"].as_u64(), s["plan"]["workers"].as_u64()),
            (Some(3), Some(workers as u64))
        );
        let out = c.dir.path().join("out");
        let (png, lat) = (out.join("frames"), out.join("clip.safetensors"));
        c.ok(&["fetch", &job, "-o", png.to_str().unwrap(), "--format", "png"]);
        c.ok(&["fetch", &job, "-o", lat.to_str().unwrap()]);
        let frames = read_png_dir(&png);
        assert_eq!(frames.len(), 197);
        assert!(frames.iter().all(|f| f.len() == 48 * 32 * 3));
        // Random weights give no picture, but the frames must not be constant.
        let first = &frames[0];
        assert!(
            frames.iter().any(|f| f != first) && first.iter().any(|&b| b != first[0]),
            "degenerate frames"
        );
        // One worker encoded the prompts, once; the others got the embeddings in their assignment.
        let encoded: usize = (0..workers)
            .map(|i| {
                std::fs::read_to_string(c.dir.path().join(format!("worker-{i}.log")))
                    .unwrap()
                    .matches("encoded the prompts")
                    .count()
            })
            .sum();
        assert_eq!(
            encoded,
            1,
            "the prompts must be encoded exactly once per job\n{}",
            c.logs()
        );
        renders.push((frames, latents(&lat)));
    }
    assert!(renders[0].1 == renders[1].1, "latents differ between 1 and 3 workers");
    let differing = renders[0].0.iter().zip(&renders[1].0).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing, 0,
        "{differing} decoded frames differ between 1 and 3 workers"
    );

    // `longshot render --model DIR` on 2 local workers: the same bits again.
    let lat = tmp.path().join("render.safetensors");
    let out = Command::new(BIN)
        .arg("render")
        .args(["--model", model.to_str().unwrap()])
        .args(JOB)
        .args(["--workers", "2", "-o"])
        .arg(&lat)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "render failed: {stderr}");
    assert!(
        latents(&lat) == renders[0].1,
        "`longshot render --model DIR` on 2 workers differs from the cluster's render"
    );

    // The embeddings reach the transformer: another negative prompt changes the result.
    let other = tmp.path().join("other.safetensors");
    let job: Vec<&str> = JOB
        .iter()
        .map(|a| if *a == "blurry" { "oversaturated" } else { a })
        .collect();
    let out = Command::new(BIN)
        .arg("render")
        .args(["--model", model.to_str().unwrap()])
        .args(&job)
        .args(["--workers", "1", "-o"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        latents(&other) != renders[0].1,
        "changing the negative prompt did not change the latents"
    );
}

#[test]
fn a_worker_refuses_to_start_with_a_bad_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-model");
    let out = Command::new(BIN)
        .args([
            "--coordinator",
            "http://127.0.0.1:9",
            "worker",
            "--insecure",
            "--metrics-listen",
            "off",
            "--model",
        ])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot load the model at {}", missing.display()))
            && stderr.contains("model_index.json"),
        "{stderr}"
    );

    // A pipeline whose text encoder does not fit its transformer is refused, naming the file.
    let model = tiny_pipeline(tmp.path());
    let cfg = model.join("text_encoder/config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"d_model\": 32", "\"d_model\": 24");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(BIN)
        .args([
            "--coordinator",
            "http://127.0.0.1:9",
            "worker",
            "--insecure",
            "--metrics-listen",
            "off",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("text_encoder/config.json")
            && stderr.contains("d_model 24 does not match the transformer's text_dim 32"),
        "{stderr}"
    );

    // `render --model` with a directory that is not a pipeline says so before starting anything.
    let out = Command::new(BIN)
        .args(["render", "--prompt", "x", "--model"])
        .arg(tmp.path())
        .args(["--frames", "5", "-o"])
        .arg(tmp.path().join("x.mp4"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("model_index.json"), "{stderr}");
}

#[test]
fn a_worker_demanding_cuda_without_a_gpu_refuses_to_start() {
    let out = Command::new(BIN)
        .args([
            "--coordinator",
            "http://127.0.0.1:9",
            "worker",
            "--insecure",
            "--metrics-listen",
            "off",
            "--connect-timeout",
            "0.5",
            "--device",
            "cuda",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Either this build has no CUDA support, or this machine has no usable GPU: both are named.
    // (On a GPU machine with a CUDA build the device is taken and only the registration fails.)
    assert!(
        stderr.contains("could not register with the coordinator at http://127.0.0.1:9")
            || stderr.contains(
                "--device cuda: this build has no CUDA support (build with `cargo build --release --features cuda`)"
            )
            || stderr.contains("--device cuda: no CUDA driver")
            || stderr.contains("--device cuda: the CUDA driver found no GPU"),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args([
            "--coordinator",
            "http://127.0.0.1:9",
            "worker",
            "--insecure",
            "--metrics-listen",
            "off",
            "--device",
            "tpu",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("device \"tpu\" is not one of auto, cpu, cuda"),
        "{stderr}"
    );
}

/// A whole WanImageToVideoPipeline directory: the transformer, VAE, scheduler, CLIP image
/// encoder and processor of `fixture` (`pipeline_i2v`, or `pipeline_flf2v` for
/// first-and-last-frame) with umT5.
fn tiny_i2v_pipeline(root: &Path, fixture: &str) -> PathBuf {
    let parts = ["transformer", "vae", "scheduler", "image_encoder", "image_processor"];
    let extra = serde_json::json!({
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
    });
    assemble_pipeline(root, fixture, &parts, "WanImageToVideoPipeline", extra)
}

/// An RGB PNG of `width × height` whose pixels depend on `seed`.
fn write_png(path: &Path, width: u32, height: u32, seed: u32) {
    let data: Vec<u8> = (0..width * height * 3)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(0x85eb_ca6b)) >> 24) as u8)
        .collect();
    write_rgb_png(path, width, height, &data);
}

/// Image-to-video on real worker processes: a three-window clip from a reference image (its size
/// is the clip's), uploaded once by content, bit-identical on one and three workers, and the same
/// for first-and-last-frame; the image reaches the model (another image changes the result); and
/// bad inputs are refused at submit, naming the field, with no job created.
#[test]
fn a_tiny_wan_i2v_clip_renders_bit_identically_on_one_and_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let i2v = tiny_i2v_pipeline(tmp.path(), "pipeline_i2v");
    let flf2v = tiny_i2v_pipeline(tmp.path(), "pipeline_flf2v");
    let (image, other, wrong_size, not_image) = (
        tmp.path().join("first.png"),
        tmp.path().join("other.png"),
        tmp.path().join("wide.png"),
        tmp.path().join("notes.png"),
    );
    write_png(&image, 48, 32, 1);
    write_png(&other, 48, 32, 2);
    write_png(&wrong_size, 64, 32, 1);
    std::fs::write(&not_image, b"not a picture").unwrap();
    // JOB without --width/--height: the image gives the size.
    let job: Vec<&str> = JOB
        .chunks(2)
        .filter(|kv| !matches!(kv[0], "--width" | "--height"))
        .flatten()
        .copied()
        .collect();
    let (mut renders, mut flf2v_renders) = (Vec::new(), Vec::new());
    for workers in [1usize, 3] {
        let options = ClusterOptions {
            worker_args: vec![
                "--model".into(),
                format!("tiny-i2v={}", i2v.display()),
                "--model".into(),
                format!("tiny-flf2v={}", flf2v.display()),
            ],
            // Plaintext, for the raw gRPC client below.
            insecure: true,
            ..Default::default()
        };
        let c = Cluster::start_with(workers, 30.0, options);
        let models = c.ok(&["--json", "models"]);
        assert!(
            models.contains("\"reference_images\":1") && models.contains("\"reference_images\":2"),
            "{models}"
        );
        // The clip takes the image's size (48x32: the latents' 6x4).
        let mut args = vec!["--model", "tiny-i2v", "--image", image.to_str().unwrap()];
        args.extend(&job);
        renders.push(render_latents(&c, &args, "clip"));
        let encoded = logged(&c, workers, "encoded the prompts");
        assert_eq!(encoded, 1, "conditioning is encoded once per job\n{}", c.logs());
        let (first, last) = (image.to_str().unwrap(), other.to_str().unwrap());
        let mut args = vec!["--model", "tiny-flf2v", "--image", first, "--last-image", last];
        args.extend(&job);
        flf2v_renders.push(render_latents(&c, &args, "flf2v"));
        if workers == 3 {
            // Each refusal names the field and creates no job.
            let jobs_before = c.ok(&["--json", "list"]).lines().count();
            let refused = |extra: &[&str], want: &str| {
                let mut args = vec!["submit"];
                args.extend(extra);
                args.extend(&job);
                let out = c.cli(&args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
            };
            let img = image.to_str().unwrap();
            refused(
                &["--model", "procedural", "--image", img],
                r#"image: model "procedural" is text-to-video: it takes no image"#,
            );
            refused(
                &["--model", "tiny-i2v"],
                r#"image: model "tiny-i2v" is image-to-video: it needs the clip's first frame (--image)"#,
            );
            refused(
                &["--model", "tiny-i2v", "--image", img, "--last-image", img],
                r#"last_image: model "tiny-i2v" takes one image, the first frame"#,
            );
            refused(
                &["--model", "tiny-flf2v", "--image", img],
                r#"last_image: model "tiny-flf2v" is first-and-last-frame: it needs --image and --last-image"#,
            );
            refused(
                &[
                    "--model",
                    "tiny-i2v",
                    "--image",
                    wrong_size.to_str().unwrap(),
                    "--width",
                    "48",
                    "--height",
                    "32",
                ],
                "the image is 64x32, but the clip is 48x32",
            );
            refused(
                &["--model", "tiny-i2v", "--image", not_image.to_str().unwrap()],
                "--image",
            );
            // The coordinator checks uploads itself, whatever the client checked.
            for (bytes, digest, want) in [
                (
                    Some(std::fs::read(&wrong_size).unwrap()),
                    None,
                    "image: is 64x32, but the clip is 48x32",
                ),
                (
                    Some(b"not a picture".to_vec()),
                    None,
                    "the input is not a PNG or JPEG image",
                ),
                (None, Some("ab".repeat(32)), "no such input on this coordinator"),
            ] {
                let status = raw_i2v_submit(&c.endpoint, bytes, digest);
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(
                    status.message().contains(want),
                    "{} does not say {want}",
                    status.message()
                );
            }
            assert_eq!(
                c.ok(&["--json", "list"]).lines().count(),
                jobs_before,
                "a refused job was created"
            );
            // Another image changes the clip: the image conditions it.
            let mut args = vec!["--model", "tiny-i2v", "--image", other.to_str().unwrap()];
            args.extend(&job);
            assert!(
                render_latents(&c, &args, "other") != renders[0],
                "another reference image did not change the clip"
            );
        }
    }
    assert!(renders[0] == renders[1], "I2V latents differ between 1 and 3 workers");
    assert!(
        flf2v_renders[0] == flf2v_renders[1],
        "FLF2V latents differ between 1 and 3 workers"
    );
}

/// Uploads `bytes` (if any) over raw gRPC and submits a 48x32 `tiny-i2v` job naming them (or
/// `digest`); returns the refusal.
fn raw_i2v_submit(endpoint: &str, bytes: Option<Vec<u8>>, digest: Option<String>) -> tonic::Status {
    raw_submit(endpoint, bytes, digest, |spec, d| pb::JobSpec {
        model: "tiny-i2v".into(),
        image: d,
        ..spec
    })
}

/// Uploads `bytes` (if any) over raw gRPC and submits a 48x32, 197-frame job that `name` makes
/// from a base spec and the upload's digest (or `digest`); returns the refusal.
fn raw_submit(
    endpoint: &str,
    bytes: Option<Vec<u8>>,
    digest: Option<String>,
    name: impl FnOnce(pb::JobSpec, String) -> pb::JobSpec,
) -> tonic::Status {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = pb::job_service_client::JobServiceClient::connect(endpoint.to_string())
            .await
            .unwrap();
        let image = match (bytes, digest) {
            (Some(data), _) => {
                let chunks: Vec<pb::InputChunk> = data
                    .chunks(longshot_core::inputs::UPLOAD_CHUNK_BYTES)
                    .map(|c| pb::InputChunk {
                        data: c.to_vec().into(),
                        sha256: String::new(),
                    })
                    .collect();
                let r = client.upload_input(futures::stream::iter(chunks)).await;
                r.expect("upload").into_inner().sha256
            }
            (None, Some(d)) => d,
            (None, None) => String::new(),
        };
        let base = pb::JobSpec {
            prompt: "a lighthouse".into(),
            duration: Some(pb::job_spec::Duration::Frames(197)),
            width: Some(48),
            height: Some(32),
            steps: Some(3),
            ..Default::default()
        };
        let spec = name(base, image);
        client
            .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
            .await
            .expect_err("a bad input is refused")
    })
}

/// Writes `frames` PNG frames of `width × height` into `dir` (`0000.png`, …): a moving gradient,
/// so neighbouring frames are alike as in real footage.
fn write_frames(dir: &Path, frames: usize, width: u32, height: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..frames {
        let data: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [(x * 5 + f as u32) as u8, (y * 7) as u8, (f * 3) as u8]))
            .collect();
        write_rgb_png(&dir.join(format!("{f:04}.png")), width, height, &data);
    }
}

/// Video-to-video on real worker processes: a three-window clip from a 197-frame input video (a
/// directory of PNG frames: the clip takes its size and frame count), uploaded once by content,
/// bit-identical on one and three workers; each worker encodes its own windows; the video
/// changes the clip (against text-to-video with the same seed). Bad inputs are refused before any shard starts, naming
/// the field, with no job created; and `longshot render --video` reads an MP4 through ffmpeg.
#[test]
fn a_tiny_wan_v2v_clip_renders_bit_identically_on_one_and_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_pipeline(tmp.path());
    let video = tmp.path().join("video");
    write_frames(&video, 197, 48, 32);
    let wide = tmp.path().join("wide");
    write_frames(&wide, 197, 64, 32);
    let v = video.to_str().unwrap();
    // JOB without the size and length: the video gives them.
    let job: Vec<&str> = JOB
        .chunks(2)
        .filter(|kv| !matches!(kv[0], "--width" | "--height" | "--frames"))
        .flatten()
        .copied()
        .collect();
    let mut renders = Vec::new();
    for workers in [1usize, 3] {
        let options = ClusterOptions {
            worker_args: vec!["--model".into(), format!("tiny-wan={}", model.display())],
            insecure: true,
            ..Default::default()
        };
        let c = Cluster::start_with(workers, 30.0, options);
        let listed = c.ok(&["models"]);
        assert!(listed.contains("video-to-video (--video)"), "{listed}");
        let mut args = vec!["--model", "tiny-wan", "--video", v, "--strength", "0.7"];
        args.extend(&job);
        renders.push(render_latents(&c, &args, "v2v"));
        assert_eq!(logged(&c, workers, "encoded the input video"), workers, "{}", c.logs());
        if workers == 3 {
            // The video conditions the clip: the same job without it (text-to-video) differs.
            let mut args = vec!["--model", "tiny-wan"];
            args.extend(JOB);
            let t2v = render_latents(&c, &args, "t2v");
            assert!(renders[1] != t2v, "the video did not change the clip at strength 0.7");
            // `status` names the video and what the strength runs: int(3·0.7) = 2 steps, from 1.
            let list = c.ok(&["--json", "list"]);
            let v2v_job: serde_json::Value = list
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .find(|j: &serde_json::Value| j["spec"]["inputs"]["video"].is_string())
                .expect("the V2V job is listed");
            let status = c.ok(&["status", v2v_job["job_id"].as_str().unwrap()]);
            assert!(status.contains("    video sha256:"), "{status}");
            assert!(
                status.contains("video-to-video at strength 0.7: steps 1..3 of 3 run"),
                "{status}"
            );

            let jobs_before = c.ok(&["--json", "list"]).lines().count();
            let refused = |extra: &[&str], want: &str| {
                let mut args = vec!["submit"];
                args.extend(extra);
                args.extend(&job);
                let out = c.cli(&args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
            };
            let image = video.join("0000.png");
            refused(
                &["--model", "tiny-wan", "--video", v, "--image", image.to_str().unwrap()],
                "cannot be used with",
            );
            refused(
                &["--model", "tiny-wan", "--video", v, "--strength", "0"],
                "strength 0 is not in (0, 1]",
            );
            refused(
                &["--model", "tiny-wan", "--video", v, "--strength", "1.5"],
                "strength 1.5 is not in (0, 1]",
            );
            refused(
                &["--model", "tiny-wan", "--video", v, "--strength", "0.2"],
                "strength 0.2 runs no step of 3",
            );
            refused(
                &["--model", "tiny-wan", "--video", v, "--frames", "81"],
                "the video has 197 frames, but the clip asks for 81",
            );
            refused(
                &[
                    "--model",
                    "tiny-wan",
                    "--video",
                    wide.to_str().unwrap(),
                    "--width",
                    "48",
                ],
                "the video is 64x32, but the clip is 48x32",
            );
            refused(
                &["--model", "tiny-wan", "--video", "/nonexistent.mp4"],
                "--video /nonexistent.mp4: no such file",
            );
            refused(&["--model", "tiny-wan", "--strength", "0.5"], "--video");
            // The coordinator checks uploads itself, whatever the client checked.
            let frames_file = |w: u32, h: u32, n: u32| {
                let mut b = longshot_core::inputs::VideoHeader {
                    width: w,
                    height: h,
                    frames: n,
                }
                .encode()
                .to_vec();
                b.resize(b.len() + (w * h * 3 * n) as usize, 128);
                b
            };
            for (bytes, want) in [
                (
                    std::fs::read(video.join("0000.png")).unwrap(),
                    "the input is not a Longshot frames file",
                ),
                (frames_file(48, 32, 9), "has 9 frames, but the clip asks for 197"),
                (frames_file(64, 32, 197), "is 64x32, but the clip is 48x32"),
                (
                    frames_file(48, 32, 197)[..1000].to_vec(),
                    "1000 bytes, but 197 frames of 48x32 RGB take",
                ),
            ] {
                let status = raw_submit(&c.endpoint, Some(bytes), None, |spec, d| pb::JobSpec {
                    model: "tiny-wan".into(),
                    video: d,
                    ..spec
                });
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(
                    status.message().contains(want),
                    "{} does not say {want}",
                    status.message()
                );
            }
            assert_eq!(
                c.ok(&["--json", "list"]).lines().count(),
                jobs_before,
                "a refused job was created"
            );
        }
    }
    assert!(renders[0] == renders[1], "V2V latents differ between 1 and 3 workers");

    // `longshot render --video` on an MP4 (decoded by ffmpeg; lossless, so its frames are the
    // PNGs'): the same clip as from the PNG directory.
    let mp4 = tmp.path().join("input.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "16", "-i"])
        .arg(video.join("%04d.png"))
        .args(["-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24"])
        .arg(&mp4)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let lat = tmp.path().join("render.safetensors");
    let out = Command::new(BIN)
        .arg("render")
        .args([
            "--model",
            model.to_str().unwrap(),
            "--video",
            mp4.to_str().unwrap(),
            "--strength",
            "0.7",
        ])
        .args(&job)
        .args(["--workers", "2", "-o"])
        .arg(&lat)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        latents(&lat) == renders[0],
        "render --video input.mp4 differs from the PNG frames' clip"
    );
}

/// A two-shot list on the tiny T2V pipeline (`longshot render --shots`): the middle window
/// conditions on the mix of both prompts' embeddings; the take is bit-identical on 1 and 3
/// workers, the second shot changes it, and a one-shot list is exactly the `--prompt` job.
#[test]
fn a_tiny_wan_shot_list_renders_bit_identically_on_one_and_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_pipeline(tmp.path());
    let two = tmp.path().join("two.yaml");
    std::fs::write(
        &two,
        "shots:\n  - prompt: a lighthouse on a cliff at dusk\n    frames: 100\n    transition: {blend: 6}\n  - prompt: a harbour at night\n    negative_prompt: fog\n    frames: 97\n",
    )
    .unwrap();
    let one = tmp.path().join("one.yaml");
    std::fs::write(
        &one,
        "shots:\n  - prompt: a lighthouse on a cliff at dusk\n    frames: 197\n",
    )
    .unwrap();
    // JOB without its prompt and length: the shots give those.
    let mut model_args = vec!["--model", model.to_str().unwrap()];
    model_args.extend(job_without(&["--prompt", "--frames"]));
    let render =
        |args: &[&str], workers: &str, tag: &str| latents(&render_to(tmp.path(), &model_args, args, workers, tag));
    let shots = render(&["--shots", two.to_str().unwrap()], "1", "shots-1");
    assert!(
        shots == render(&["--shots", two.to_str().unwrap()], "3", "shots-3"),
        "shot-list latents differ between 1 and 3 workers"
    );
    // Over an input video (video-to-video): the shots give the prompts, the video the frames.
    let video = tmp.path().join("video");
    write_frames(&video, 197, 48, 32);
    let v2v = |workers: &str, tag: &str| {
        let args = [
            "--shots",
            two.to_str().unwrap(),
            "--video",
            video.to_str().unwrap(),
            "--strength",
            "0.7",
        ];
        render(&args, workers, tag)
    };
    let over_video = v2v("1", "v2v-1");
    assert!(
        over_video == v2v("3", "v2v-3"),
        "shots over a video differ between 1 and 3 workers"
    );
    assert!(over_video != shots, "the video changed nothing");
    let single = render(&["--shots", one.to_str().unwrap()], "2", "single");
    let plain = render(
        &["--prompt", "a lighthouse on a cliff at dusk", "--frames", "197"],
        "2",
        "plain",
    );
    assert!(single == plain, "a one-shot list differs from --prompt");
    assert!(shots != single, "the second shot changed nothing");
}

/// `longshot rerender` on the tiny Wan2.1 pipeline, end to end on two worker processes: frames
/// 90..110 (latents 23..29) re-rolled with another seed; with the default margin of three overlaps
/// (15 latent frames) latents 8..44 may change, and every other latent is the source's bit for bit.
#[test]
fn a_tiny_wan_rerender_keeps_the_latents_outside_its_range_and_margin() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_pipeline(tmp.path());
    let options = ClusterOptions {
        worker_args: vec!["--model".into(), format!("tiny-wan={}", model.display())],
        ..Default::default()
    };
    let c = Cluster::start_with(2, 30.0, options);
    c.wait_for_workers(2);
    let mut args = vec!["--model", "tiny-wan", "--format", "latents"];
    args.extend_from_slice(JOB);
    let source_id = submit(&c, &args);
    let s = c.wait_state(&source_id, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "job failed: {s}\n{}", c.logs());
    let src = c.dir.path().join("source.safetensors");
    c.ok(&["fetch", &source_id, "-o", src.to_str().unwrap()]);
    let source = latents(&src);
    let job = c.ok(&[
        "rerender", &source_id, "--from", "5.625", "--to", "6.875", "--seed", "99",
    ]);
    let job = job.trim();
    let s = c.wait_state(job, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "rerender failed: {s}\n{}", c.logs());
    let lat = c.dir.path().join("edit.safetensors");
    c.ok(&["fetch", job, "-o", lat.to_str().unwrap()]);
    let edit = latents(&lat);
    let fl = 16 * 4 * 6 * 4;
    let changed: Vec<usize> = (0..50)
        .filter(|l| source[l * fl..(l + 1) * fl] != edit[l * fl..(l + 1) * fl])
        .collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|l| (8..44).contains(l)),
        "changed latent frames: {changed:?}"
    );
    assert!(
        (23..29).all(|l| changed.contains(&l)),
        "the range is re-rolled: {changed:?}"
    );
}

/// A shot list anchored by a reference image (image-to-video) on the tiny Wan2.1 I2V pipeline:
/// the image is encoded once with the first prompt and conditions every window; the take is
/// bit-identical on 1 and 3 workers, a one-shot list is exactly the plain `--prompt --image`
/// render, and the second shot changes the take.
#[test]
fn a_tiny_wan_i2v_shot_list_renders_bit_identically_on_one_and_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let i2v = tiny_i2v_pipeline(tmp.path(), "pipeline_i2v");
    let image = tmp.path().join("first.png");
    write_png(&image, 48, 32, 1);
    let two = tmp.path().join("two.yaml");
    std::fs::write(
        &two,
        "shots:\n  - prompt: a lighthouse on a cliff at dusk\n    frames: 100\n    transition: {blend: 6}\n  - prompt: a harbour at night\n    frames: 97\n",
    )
    .unwrap();
    let one = tmp.path().join("one.yaml");
    std::fs::write(
        &one,
        "shots:\n  - prompt: a lighthouse on a cliff at dusk\n    frames: 197\n",
    )
    .unwrap();
    // JOB without its prompt, length and size: the shots and the image give those.
    let mut model_args = vec!["--model", i2v.to_str().unwrap(), "--image", image.to_str().unwrap()];
    model_args.extend(job_without(&["--prompt", "--frames", "--width", "--height"]));
    let render =
        |args: &[&str], workers: &str, tag: &str| latents(&render_to(tmp.path(), &model_args, args, workers, tag));
    let shots = render(&["--shots", two.to_str().unwrap()], "1", "shots-1");
    assert!(
        shots == render(&["--shots", two.to_str().unwrap()], "3", "shots-3"),
        "an image-anchored shot list differs between 1 and 3 workers"
    );
    let single = render(&["--shots", one.to_str().unwrap()], "2", "single");
    let plain = render(
        &["--prompt", "a lighthouse on a cliff at dusk", "--frames", "197"],
        "2",
        "plain",
    );
    assert!(
        single == plain,
        "a one-shot list with an image differs from --prompt --image"
    );
    assert!(shots != single, "the second shot changed nothing");
}

/// A cut on the tiny Wan2.1 pipeline: two takes of 97 frames (25 latent frames, two windows
/// each) render the same bits on 1 worker (two waves) and on 3 (side by side), and the take after
/// the cut is its shot rendered as a job of its own.
#[test]
fn a_tiny_wan_cut_renders_its_takes_bit_identically_on_one_and_three_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_pipeline(tmp.path());
    let list = tmp.path().join("cut.yaml");
    std::fs::write(
        &list,
        "shots:\n  - prompt: a lighthouse on a cliff at dusk\n    frames: 97\n    transition: cut\n  - prompt: a harbour at night\n    frames: 97\n",
    )
    .unwrap();
    let mut model_args = vec!["--model", model.to_str().unwrap()];
    model_args.extend(job_without(&["--prompt", "--frames", "--seed"]));
    let cut = |workers: &str| {
        let args = ["--shots", list.to_str().unwrap(), "--seed", "7"];
        latents(&render_to(
            tmp.path(),
            &model_args,
            &args,
            workers,
            &format!("cut-{workers}"),
        ))
    };
    let one = cut("1");
    assert!(one == cut("3"), "a cut list differs between 1 and 3 workers");
    let seed = longshot_core::shots::shot_seed(7, 1).to_string();
    let args = ["--prompt", "a harbour at night", "--frames", "97", "--seed", &seed];
    let alone = harness::latent_bytes(
        &render_to(tmp.path(), &model_args, &args, "2", "alone"),
        &[25, 16, 4, 6],
    );
    assert!(
        one[one.len() / 2..] == alone[..],
        "the take after the cut is not its shot rendered alone"
    );
    assert!(one[..one.len() / 2] != alone[..], "the two takes are the same");
}
