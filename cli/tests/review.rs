//! `longshot review` against a real coordinator and workers on the built-in model: a clip with a
//! blended shot change and a hard cut passes every check, its contact sheet marks both, its
//! metrics cover every seam and shot, and its HTML page loads in a real headless Chromium (Debian's
//! `chromium`) with the contact sheet shown; a PNG-sequence job without latents says what it could
//! not check; a job that is not done, or unknown, is refused.

mod harness;

use harness::Cluster;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SHOTS: &str = "\
shots:
  - prompt: a calm slow red sunset over the sea
    frames: 40
    transition: {blend: 1}
  - prompt: a calm slow blue lagoon under the sky
    frames: 81
    transition: cut
  - prompt: a quiet green forest at dawn
    frames: 81
";

fn done(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec![
        "submit", "--seed", "11", "--width", "128", "--height", "96", "--steps", "4",
    ];
    all.extend_from_slice(args);
    let job = c.ok(&all).trim().to_string();
    let s = c.wait_state(&job, &["done", "failed"], Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    job
}

fn check<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {r}"))
}

/// Runs headless Chromium on `page` with `args`; its stdout.
fn chromium(page: &Path, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium (Debian's chromium package; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_review_measures_the_clip_and_its_page_renders_in_chromium() {
    let c = Cluster::start(2, 30.0);
    let tmp = tempfile::tempdir().unwrap();
    let shots = tmp.path().join("shots.yaml");
    std::fs::write(&shots, SHOTS).unwrap();
    let job = done(&c, &["--shots", shots.to_str().unwrap(), "--format", "mp4,latents"]);

    let dir = tmp.path().join("review");
    let out = c.cli(&["--json", "review", &job, "-o", dir.to_str().unwrap()]);
    let r: Value = serde_json::from_slice(&out.stdout).expect("review json");
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(
        (r["frames"].as_u64(), r["frames_requested"].as_u64()),
        (Some(202), Some(202))
    );
    assert!((r["fps"].as_f64().unwrap() - 16.0).abs() < 1e-9, "{r}");
    for name in [
        "length and frame rate",
        "flicker",
        "frozen frames",
        "black or white frames",
        "finite latents",
    ] {
        assert_eq!(check(&r, name)["passed"], true, "{name}: {r}");
    }
    // The seam is judged against the placebo-calibrated limit: 2.50 against 3.00 on the dev VM
    // (the built-in model's overlap moves faster than its window interiors, so this seam is never
    // far below the limit; at 64×48, where H.264 steps its quantiser there too, it fails). The
    // verdict, the exit status and the error follow the one check.
    let seam_ok = r["seams"][0]["sjr"].as_f64().unwrap() <= r["seam_limit"].as_f64().unwrap();
    assert_eq!(check(&r, "seams")["passed"], seam_ok, "{r}");
    assert_eq!(
        (r["passed"].as_bool(), out.status.success()),
        (Some(seam_ok), seam_ok),
        "{r}"
    );
    if !seam_ok {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("job {job} failed review: seams")), "{err}");
    }
    // Take 0 (121 frames) has two windows, so one seam, away from the blend (frames 32..48), so
    // judged; take 1 has one window. The cut is reported at frame 121, and its jump ratio is far
    // above the seam's.
    let seams = r["seams"].as_array().unwrap();
    assert_eq!(seams.len(), 1, "{r}");
    assert_eq!(seams[0]["in_blend"], false, "{r}");
    let cut = &r["cuts"][0];
    assert_eq!(cut["frame"], 121);
    assert!(
        cut["sjr"].as_f64().unwrap() > 5.0 * seams[0]["sjr"].as_f64().unwrap(),
        "{r}"
    );
    assert_eq!(r["shots"].as_array().unwrap().len(), 3);
    assert_eq!(r["shots"][2]["frames"], serde_json::json!({"start": 121, "end": 202}));
    assert_eq!(r["shots"][0]["nonfinite_frames"], 0);

    // The contact sheet: one 128×96 thumbnail per second (13), 8 to a row, the blend's shot change
    // (frame 40) marking the thumbnail at 48 and the cut (121) the one at 128.
    let thumbs: Value = serde_json::from_slice(&std::fs::read(dir.join("contact-sheet.json")).unwrap()).unwrap();
    let marks: Vec<(u64, Value)> = thumbs["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[0].as_u64().unwrap(), t[1].clone()))
        .filter(|(_, m)| !m.is_null())
        .collect();
    assert_eq!(marks, [(48, Value::from("Shot")), (128, Value::from("Cut"))]);
    let decoded = image_size(&dir.join("contact-sheet.png"));
    assert_eq!(decoded, (8 * (128 + 4) + 4, 2 * (96 + 4) + 4));
    let saved: Value = serde_json::from_slice(&std::fs::read(dir.join("review.json")).unwrap()).unwrap();
    assert_eq!(saved, r);

    // The page in a real browser: the contact sheet loads, the verdict and tables are there.
    let page = dir.join("review.html");
    let dom = chromium(&page, &["--dump-dom", "--virtual-time-budget=5000"]);
    assert!(dom.contains("images: 1 of 1 loaded"), "{dom}");
    let verdict = match seam_ok {
        true => r#"<p id="verdict" class="pass">pass</p>"#,
        false => r#"<p id="verdict" class="fail">FAIL</p>"#,
    };
    assert!(dom.contains(verdict), "{dom}");
    assert!(dom.contains("a quiet green forest at dawn"), "{dom}");
    let shot = tmp.path().join("page.png");
    chromium(
        &page,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1600"],
    );
    let (w, h) = image_size(&shot);
    assert_eq!((w, h), (1280, 1600));
    let pixels = std::fs::read(&shot).unwrap();
    let img = longshot_media::decode_rgb8(&pixels).unwrap();
    let distinct: std::collections::HashSet<&[u8]> = img.data.chunks_exact(3).collect();
    assert!(
        distinct.len() > 50,
        "the screenshot is nearly blank ({} colours)",
        distinct.len()
    );

    // Text mode, and a lossless PNG-sequence job of one window without latents: no frame rate to
    // read, no latents to check, said so; it passes everything that was checked.
    let png_job = done(
        &c,
        &["--prompt", "a lighthouse in fog", "--frames", "81", "--format", "png"],
    );
    let dir2 = tmp.path().join("review-png");
    let text = c.ok(&["review", &png_job, "-o", dir2.to_str().unwrap(), "--every", "40"]);
    assert!(text.contains("pass  length and frame rate"), "{text}");
    assert!(
        text.contains("81 frames (a PNG sequence: no frame rate to read)"),
        "{text}"
    );
    let latents = text.lines().find(|l| l.contains("finite latents")).unwrap_or_default();
    assert!(
        latents.starts_with("n/a ") && latents.contains("not checked: the job kept no latents"),
        "{text}"
    );
    assert_eq!(image_size(&dir2.join("contact-sheet.png")), (3 * (128 + 4) + 4, 96 + 8));
    assert_eq!(text.matches("pass  ").count(), 5, "{text}");

    // Refusals: an unknown job; a job that is not done.
    let out = c.cli(&["review", "job-9999-00000000", "-o", dir2.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("job-9999-00000000"));
    let running = c.ok(&["submit", "--prompt", "p", "--frames", "241", "--steps", "1000"]);
    let running = running.trim();
    let out = c.cli(&["review", running, "-o", dir2.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only a finished (done) job can be reviewed"),
        "{err}"
    );
    c.ok(&["cancel", running]);
}

fn image_size(path: &Path) -> (u32, u32) {
    let img = longshot_media::decode_rgb8(&std::fs::read(path).unwrap()).unwrap();
    (img.width, img.height)
}
