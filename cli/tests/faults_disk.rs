//! A full disk names its cause and poisons nothing: the coordinator's data dir on a small tmpfs
//! (mounted by the test; it needs root), real coordinator and worker processes.

mod harness;

use harness::{submit, Cluster, ClusterOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];
const PROMPT: &str = "a slow red sunset over the sea";

/// A tmpfs of a fixed size, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "longshot-test"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs at {} (this test needs root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still in use (a process not yet reaped): detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Appends zeros to `path` until the filesystem is full (or only `leave` bytes would be left).
fn fill(path: &Path, leave: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        let free = fs_free(path.parent().unwrap());
        if free <= leave + chunk.len() as u64 {
            break;
        }
        if f.write_all(&chunk).and_then(|()| f.flush()).is_err() {
            break;
        }
    }
    if leave == 0 {
        // Whatever is left, byte by byte-ish, until ENOSPC.
        while f.write_all(&[0u8; 512]).is_ok() {}
    }
}

/// Free bytes on the filesystem of `dir`, as `df` reports them.
fn fs_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the available bytes")
}

/// Every file under `dir`, except `except` and the job store (`jobs.redb`, the coordinator's own).
fn files_under(dir: &Path, except: &Path) -> Vec<PathBuf> {
    let store = dir.join("jobs.redb");
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p != except && p != store {
                out.push(p);
            }
        }
    }
    out
}

fn assert_names_the_full_disk(error: &str, dir: &Path) {
    println!("{error}");
    for part in [
        "no space left on device",
        &dir.display().to_string(),
        "need about",
        "available",
    ] {
        assert!(error.contains(part), "the error {error:?} does not say {part:?}");
    }
}

#[test]
fn a_full_disk_fails_the_job_clearly_leaves_nothing_and_the_next_job_runs() {
    let tmpfs = Tmpfs::mount("4m");
    let data = tmpfs.path().to_path_buf();
    let options = ClusterOptions {
        data_dir: Some(data.clone()),
        ..Default::default()
    };
    let c = Cluster::start_with(1, 30.0, options);
    let filler = data.join("filler");

    // Too big for the free space: 209 PNG frames at 192×128 are ~15 MB; refused at submit
    // (admission), naming what the outputs need and what is free, and nothing is created.
    let out = c.cli(&[
        "submit", "--prompt", PROMPT, "--frames", "209", "--width", "192", "--height", "128", "--steps", "2",
        "--format", "png",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a job larger than the free space was accepted");
    assert!(
        err.contains("outputs: need about 15.4 MB;") && err.contains("is free in the coordinator's data dir"),
        "{err}"
    );
    assert_eq!(c.ok(&["--json", "list"]).trim(), "", "nothing was created");
    assert_eq!(files_under(&data, &filler), Vec::<PathBuf>::new(), "files left behind");

    // Fits at the start, but the disk fills up while the job runs: writing the frames fails.
    fill(&filler, 1 << 20);
    let squeezed = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "49", "--width", "64", "--height", "64", "--steps", "300", "--format",
            "png",
        ],
    );
    c.wait_steps(&squeezed, 1);
    fill(&filler, 0);
    let s = c.wait_state(&squeezed, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "failed", "{s}");
    assert_names_the_full_disk(s["error"].as_str().unwrap_or(""), &data.join("jobs").join(&squeezed));
    assert_eq!(files_under(&data, &filler), Vec::<PathBuf>::new(), "files left behind");

    // Space freed: the next job runs and its output is complete.
    std::fs::remove_file(&filler).expect("remove the filler");
    let small = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "49", "--width", "64", "--height", "64", "--steps", "3", "--format", "png",
        ],
    );
    let s = c.wait_state(&small, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let frames = data.join("jobs").join(&small).join("frames");
    assert_eq!(std::fs::read_dir(&frames).expect("frames").count(), 49);
    drop(c);
}
