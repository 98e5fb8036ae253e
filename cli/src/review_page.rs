//! The review's HTML page (`review.html`): verdict, checklist, per-seam, per-cut and per-shot
//! metrics, and the contact sheet. One self-contained file beside `contact-sheet.png`.

use anyhow::{Context, Result};
use longshot_core::api::JobStatus;
use longshot_core::review::{Check, Review, SEAM_FLOOR, SEAM_OVER_PLACEBO};
use std::fmt::Write as _;
use std::path::Path;

/// Writes `dir/review.html`.
pub fn write(dir: &Path, status: &JobStatus, r: &Review) -> Result<()> {
    let path = dir.join("review.html");
    std::fs::write(&path, page(status, r)).with_context(|| format!("writing {}", path.display()))
}

fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{v:.2}"))
}

fn verdict(passed: Option<bool>) -> (&'static str, &'static str) {
    match passed {
        Some(true) => ("pass", "pass"),
        Some(false) => ("fail", "FAIL"),
        None => ("na", "n/a"),
    }
}

fn page(s: &JobStatus, r: &Review) -> String {
    let spec = &s.spec;
    let (class, word) = verdict(Some(r.passed));
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Review of {id}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; background: #fafafa; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
.pass {{ color: #186a1f; }} .fail {{ color: #b00020; font-weight: bold; }} .na {{ color: #777; }}
#verdict {{ font-size: 1.6em; padding: 0.3em 0.6em; display: inline-block; border: 2px solid currentColor; }}
.legend span {{ display: inline-block; width: 1em; height: 1em; vertical-align: middle; }}
</style></head><body>
<h1>Review of {id}</h1>
<p id="verdict" class="{class}">{word}</p>
<p>{model}, {w}×{hh}, {frames} frames at {fps} fps, {steps} steps, seed {seed}</p>
<h2>Checklist</h2>
<table id="checks"><tr><th>check</th><th>result</th><th>detail</th></tr>
"#,
        id = esc(&s.job_id),
        model = esc(&spec.model),
        w = spec.width,
        hh = spec.height,
        frames = r.frames_requested,
        fps = r.fps_requested,
        steps = spec.steps,
        seed = s.seed,
    );
    for Check { name, passed, detail } in &r.checks {
        let (c, w) = verdict(*passed);
        let _ = writeln!(
            h,
            r#"<tr><td>{}</td><td class="{c}">{w}</td><td>{}</td></tr>"#,
            esc(name),
            esc(detail)
        );
    }
    h += "</table>\n<h2>Seams</h2>\n";
    let _ = writeln!(
        h,
        "<p>Seam jump ratio: the largest second difference of frames (which cancels steady motion) in the overlap \
         zone over its median 8–24 frames away (≈1: invisible). A seam passes at or under {:.2} (the larger of {SEAM_FLOOR} and {SEAM_OVER_PLACEBO} × the \
         largest placebo ratio, measured inside single windows: median {}, max {}).</p>",
        r.seam_limit,
        ratio(Some(r.placebo.median)),
        ratio(Some(r.placebo.max))
    );
    h += "<table id=\"seams\"><tr><th>take</th><th>frames</th><th>jump ratio</th><th>result</th></tr>\n";
    for seam in &r.seams {
        let (c, w) = match seam.in_blend {
            true => ("na", "in a shot blend: not judged"),
            false => verdict(Some(seam.passed)),
        };
        let _ = writeln!(
            h,
            r#"<tr><td>{}</td><td>{}–{}</td><td>{}</td><td class="{c}">{w}</td></tr>"#,
            seam.take + 1,
            seam.frames.start,
            seam.frames.end - 1,
            ratio(seam.sjr)
        );
    }
    h += "</table>\n";
    if !r.cuts.is_empty() {
        h += "<h2>Cuts</h2>\n<p>A cut is meant to be seen: its jump ratio is shown, not judged.</p>\n";
        h += "<table id=\"cuts\"><tr><th>frame</th><th>jump ratio</th></tr>\n";
        for cut in &r.cuts {
            let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", cut.frame, ratio(cut.sjr));
        }
        h += "</table>\n";
    }
    h += "<h2>Shots</h2>\n<table id=\"shots\"><tr><th>shot</th><th>frames</th><th>prompt</th><th>mean luma</th>\
          <th>flicker</th><th>longest frozen run</th><th>black / white</th><th>non-finite latents</th></tr>\n";
    for shot in &r.shots {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}–{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            shot.index + 1,
            shot.frames.start,
            shot.frames.end.saturating_sub(1),
            esc(&shot.prompt),
            shot.mean_luma,
            shot.flicker,
            shot.longest_frozen,
            shot.black_frames,
            shot.white_frames,
            shot.nonfinite_frames.map_or_else(|| "not checked".to_string(), |n| n.to_string())
        );
    }
    h += "</table>\n";
    h += r#"<h2>Contact sheet</h2>
<p class="legend"><span style="background:#ffaa00"></span> a shot change since the previous thumbnail
&nbsp; <span style="background:#e61e1e"></span> a cut. Thumbnails are listed in contact-sheet.json.</p>
<img id="sheet" src="contact-sheet.png" alt="contact sheet">
<p id="images">images: not loaded</p>
<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.getElementById("images").textContent = `images: ${ok} of ${imgs.length} loaded`;
});
</script>
</body></html>
"#;
    h
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn prompts_cannot_inject_markup() {
        assert_eq!(
            esc(r#"<b>"a" & 'b'</b>"#),
            "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;"
        );
    }
}
