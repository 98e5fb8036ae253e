//! Structured prompts through the real CLI: `prompt lint` names what a prompt lacks and exits 1;
//! `prompt save/list/show` keep a library file; `render` with the parts, with `--saved`, or with
//! a shot list written in parts renders exactly what the composed prompt renders.

mod harness;

use harness::{latent_bytes, BIN};
use std::path::Path;
use std::process::{Command, Output};

const COMPOSED: &str =
    "a red fox trots through deep snow, a frozen lake at dawn, slow dolly-in, low angle, soft golden light";
const PARTS: &[&str] = &[
    "--subject",
    "a red fox",
    "--action",
    "trots through deep snow",
    "--environment",
    "a frozen lake at dawn",
    "--camera",
    "slow dolly-in, low angle",
    "--style",
    "soft golden light",
];
const BASE: &[&str] = &[
    "--steps", "2", "--seed", "3", "--width", "64", "--height", "48", "--frames", "33",
];
const SHAPE: [usize; 4] = [9, 16, 6, 8];

/// `longshot ARGS` with the prompt library at `library`.
fn longshot(library: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("LONGSHOT_PROMPTS", library)
        .args(args)
        .output()
        .expect("run longshot")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Renders `args` (after `BASE`) to latents at `dir/tag.safetensors` and returns them.
fn render(library: &Path, dir: &Path, args: &[&str], tag: &str) -> Vec<u8> {
    let lat = dir.join(format!("{tag}.safetensors"));
    let mut all = vec!["render", "-o", lat.to_str().unwrap()];
    all.extend(BASE);
    all.extend(args);
    let out = longshot(library, &all);
    assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
    latent_bytes(&lat, &SHAPE)
}

#[test]
fn lint_names_what_a_prompt_lacks_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("prompts.yaml");
    let out = longshot(&lib, &["prompt", "lint", "a fox"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for want in [
        "short: 2 words",
        "action: no action",
        "camera: no camera direction",
        "style: no style",
    ] {
        assert!(text.contains(want), "lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("subject:"), "'a fox' has a subject:\n{text}");
    // From parts: exactly the missing ones, and the composed prompt is printed.
    let mut args = vec!["prompt", "lint"];
    args.extend(&PARTS[..6]);
    let out = longshot(&lib, &args);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("prompt: a red fox trots through deep snow, a frozen lake at dawn"),
        "{text}"
    );
    assert!(
        text.contains("camera: no camera direction") && text.contains("style: no style"),
        "{text}"
    );
    assert!(!text.contains("action:") && !text.contains("subject:"), "{text}");
    // Complete, but sharing a word with the negative prompt.
    let mut args = vec!["--json", "prompt", "lint", "--negative-prompt", "snow, people"];
    args.extend(PARTS);
    let out = longshot(&lib, &args);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["prompt"], COMPOSED);
    assert_eq!(v["findings"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["findings"][0]["check"], "contradiction", "{v}");
    let mut args = vec!["prompt", "lint", "--negative-prompt", "blurry, people"];
    args.extend(PARTS);
    let out = longshot(&lib, &args);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("ok: nothing to flag"));
    let out = longshot(&lib, &["prompt", "lint"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the prompt's text, or its parts"));
}

#[test]
fn the_library_saves_lists_and_shows_and_render_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("config/longshot/prompts.yaml");
    let out = longshot(&lib, &["prompt", "list"]);
    assert!(
        out.status.success() && stdout(&out).contains("no prompts in"),
        "{}",
        stdout(&out)
    );
    let mut args = vec!["prompt", "save", "fox", "--negative-prompt", "people"];
    args.extend(PARTS);
    let out = longshot(&lib, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = longshot(&lib, &["prompt", "save", "fox", "a lighthouse"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("pass --force to replace it"),
        "{stderr}"
    );
    let out = longshot(&lib, &["prompt", "save", "night", "a lighthouse at night"]);
    assert!(out.status.success());
    let list = stdout(&longshot(&lib, &["prompt", "list"]));
    assert!(
        list.contains("fox") && list.contains(COMPOSED) && list.contains("night"),
        "{list}"
    );
    let show = stdout(&longshot(&lib, &["prompt", "show", "fox"]));
    for want in [
        &format!("prompt: {COMPOSED}"),
        "negative prompt: people",
        "camera: slow dolly-in, low angle",
    ] {
        assert!(show.contains(want), "lacks {want:?}:\n{show}");
    }
    // The file is the documented YAML.
    let file = std::fs::read_to_string(&lib).unwrap();
    assert!(file.starts_with("prompts:\n  fox:\n"), "{file}");
    // --library overrides the environment.
    let other = tmp.path().join("other.yaml");
    let out = longshot(&lib, &["prompt", "--library", other.to_str().unwrap(), "show", "fox"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no prompt \"fox\""),
        "{stderr}"
    );

    // Rendering from parts, from the library and from the composed text gives the same bits.
    let dir = tmp.path();
    let plain = render(
        &lib,
        dir,
        &["--prompt", COMPOSED, "--negative-prompt", "people"],
        "plain",
    );
    let mut from_parts = PARTS.to_vec();
    from_parts.extend(["--negative-prompt", "people"]);
    assert!(
        plain == render(&lib, dir, &from_parts, "parts"),
        "parts render differently"
    );
    assert!(
        plain == render(&lib, dir, &["--saved", "fox"], "saved"),
        "--saved renders differently"
    );
    let out = longshot(&lib, &["render", "--saved", "nope", "-o", "/tmp/never.mp4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no prompt \"nope\""),
        "{stderr}"
    );
}

#[test]
fn a_shot_list_takes_prompts_in_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("prompts.yaml");
    let dir = tmp.path();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let parts = write(
        "parts.yaml",
        "shots:\n  - subject: a red fox\n    action: trots through deep snow\n    environment: a frozen lake at dawn\n    camera: slow dolly-in, low angle\n    style: soft golden light\n    frames: 33\n",
    );
    let text = write(
        "text.yaml",
        &format!("shots:\n  - prompt: {COMPOSED}\n    frames: 33\n"),
    );
    let a = render_shots(&lib, dir, &parts, "parts");
    assert!(
        a == render_shots(&lib, dir, &text, "text"),
        "a shot in parts renders differently"
    );
    let both = write(
        "both.yaml",
        "shots:\n  - prompt: a fox\n    subject: a red fox\n    frames: 33\n",
    );
    let out = longshot(&lib, &["render", "--shots", &both, "-o", "/tmp/never.mp4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("shots[0].prompt: give the prompt or its parts"),
        "{stderr}"
    );
}

/// Renders shot list `shots` (its length is the list's) to latents.
fn render_shots(library: &Path, dir: &Path, shots: &str, tag: &str) -> Vec<u8> {
    let lat = dir.join(format!("{tag}.safetensors"));
    let mut all = vec!["render", "-o", lat.to_str().unwrap(), "--shots", shots];
    all.extend(&BASE[..BASE.len() - 2]); // the list gives the length
    let out = longshot(library, &all);
    assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
    latent_bytes(&lat, &SHAPE)
}
