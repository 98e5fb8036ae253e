//! `longshot render` checks its job spec and output paths before it starts anything, and never
//! leaves a `longshot-render-*` work directory behind, whatever the outcome.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_longshot");
/// A render starts a coordinator and worker processes and waits for them (seconds, on a loaded
/// machine); a refusal before that is a parse and a few stat calls.
const FAST: Duration = Duration::from_secs(3);

/// Runs `longshot render args…` with a private `TMPDIR`; returns its output and duration.
fn render(tmp: &Path, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(BIN)
        .arg("render")
        .args(["--prompt", "a slow red sunset over the sea", "--workers", "1"])
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .expect("run longshot");
    (out, start.elapsed())
}

fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .expect("tmp")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("longshot-render-"))
        .collect()
}

/// The render must fail within `FAST`, before any process started, saying `what`.
fn refused(tmp: &Path, args: &[&str], what: &[&str]) {
    let (out, took) = render(tmp, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    assert!(took < FAST, "{args:?} took {took:?} to fail: {stderr}");
    // The cluster announces itself before it starts; a refusal comes first.
    assert!(
        !stderr.contains("starting a local cluster"),
        "{args:?} started a cluster: {stderr}"
    );
    for w in what {
        assert!(stderr.contains(w), "{args:?}: the error does not say {w:?}: {stderr}");
    }
    assert_eq!(leftovers(tmp), Vec::<String>::new(), "{args:?} left a work directory");
}

#[test]
fn bad_specs_and_paths_fail_at_once_naming_them_and_leave_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let out_dir = t.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let ok_path = out_dir.join("a.mp4");
    let ok = ok_path.to_str().unwrap();

    refused(t, &["-o", ok, "--width", "100"], &["width", "100"]);
    refused(t, &["-o", ok, "--steps", "0"], &["steps"]);
    refused(t, &["-o", ok, "--frames", "49", "--overlap", "15"], &["overlap"]);
    refused(t, &["-o", "/no/such/dir/a.mp4"], &["/no/such/dir", "does not exist"]);
    // An existing directory named like a file output: no `.part` beside it either.
    let dir_mp4 = out_dir.join("d.mp4");
    std::fs::create_dir(&dir_mp4).unwrap();
    refused(t, &["-o", dir_mp4.to_str().unwrap()], &["d.mp4", "is a directory"]);
    // Unwritable even for root: procfs takes no new files.
    refused(t, &["-o", "/proc/a.mp4"], &["/proc"]);
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["d.mp4"], "files left in the output directory");
}

#[test]
fn a_render_leaves_no_work_directory_on_success_or_failure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let out = t.join("clip.safetensors");
    let small = ["--frames", "17", "--width", "64", "--height", "64", "--steps", "2"];
    let mut args = vec!["-o", out.to_str().unwrap()];
    args.extend(small);
    let (o, _) = render(t, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.is_file());
    assert_eq!(
        leftovers(t),
        Vec::<String>::new(),
        "a successful render left its work directory"
    );

    // A failure after the cluster started: a model no worker serves is refused at submission.
    let mut args = vec!["-o", out.to_str().unwrap(), "--model", "no-such-model"];
    args.extend(small);
    let (o, _) = render(t, &args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(stderr.contains("no-such-model"), "{stderr}");
    assert_eq!(
        leftovers(t),
        Vec::<String>::new(),
        "a failed render left its work directory"
    );
}
