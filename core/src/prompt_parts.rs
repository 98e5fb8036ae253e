//! Structured prompts: a prompt written as its parts (subject, action, environment, camera,
//! style) and composed in that order; and a lint that flags what a prompt lacks.
//!
//! The composed prompt is `"{subject} {action}, {environment}, {camera}, {style}"`, with absent
//! parts left out (and their separators). The lint is a set of word-list heuristics, each one
//! documented on [`lint`]: good for catching a prompt that forgot its camera or look, not a
//! grammar.

use serde::{Deserialize, Serialize};

/// A prompt in parts; any may be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptParts {
    /// Who or what the shot shows: "a red fox".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What it does: "trots through deep snow".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Where: "a frozen lake at dawn".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// How it is filmed: "slow dolly-in, low angle".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// The look: "soft golden light, 35mm film".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

/// The parts' names, in composition order (also the CLI flags and shot-list keys).
pub const PART_NAMES: [&str; 5] = ["subject", "action", "environment", "camera", "style"];

impl PromptParts {
    /// The parts in [`PART_NAMES`] order, trimmed, `None` where absent or blank.
    pub fn parts(&self) -> [Option<&str>; 5] {
        [
            &self.subject,
            &self.action,
            &self.environment,
            &self.camera,
            &self.style,
        ]
        .map(|p| p.as_deref().map(str::trim).filter(|p| !p.is_empty()))
    }

    pub fn is_empty(&self) -> bool {
        self.parts().iter().all(Option::is_none)
    }

    /// The prompt: subject and action as one clause, then environment, camera and style, each
    /// after a comma.
    pub fn compose(&self) -> String {
        let [subject, action, rest @ ..] = self.parts();
        let clause = [subject, action].into_iter().flatten().collect::<Vec<_>>().join(" ");
        std::iter::once(Some(clause.as_str()).filter(|c| !c.is_empty()))
            .chain(rest)
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One thing the lint found: which check, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub message: String,
}

/// Prompts shorter than this many words are flagged: Wan2.1 was trained on long, detailed
/// captions and renders generic footage from a few words.
pub const MIN_WORDS: usize = 12;
/// Prompts longer than this many words are flagged: at about 1.4 umT5 tokens per English word
/// they reach the text encoder's 512 tokens, past which the prompt is cut.
pub const MAX_WORDS: usize = 350;

const DETERMINERS: &[&str] = &[
    "a", "an", "the", "one", "two", "three", "four", "five", "several", "many", "some", "his", "her", "their", "its",
    "my", "our", "this", "that", "these", "those",
];
const ACTION_WORDS: &[&str] = &[
    "walks", "runs", "flies", "moves", "turns", "looks", "stands", "sits", "falls", "rises", "drifts", "flows",
    "dances", "jumps", "swims", "rolls", "smiles", "speaks", "holds", "opens", "closes", "spins", "glides", "crashes",
    "breaks", "burns", "grows", "melts", "pours", "trots", "climbs", "waves", "sways", "rides", "drives", "reaches",
    "watches", "leaps", "crawls", "floats", "sails", "blows", "shines", "flickers", "explodes", "walk", "run", "fly",
    "move", "turn", "dance", "jump", "swim",
];
/// Words ending in "-ing" that are rarely an action.
const NOT_ACTIONS: &[&str] = &[
    "lighting",
    "morning",
    "evening",
    "building",
    "painting",
    "clothing",
    "ceiling",
    "wedding",
    "ring",
    "king",
    "thing",
    "something",
    "nothing",
    "everything",
    "anything",
    "spring",
    "string",
    "wing",
    "ping",
    "ceiling",
];
const CAMERA_WORDS: &[&str] = &[
    "shot",
    "close-up",
    "closeup",
    "wide",
    "medium",
    "dolly",
    "dolly-in",
    "dolly-out",
    "pan",
    "pans",
    "panning",
    "tilt",
    "tilts",
    "tracking",
    "handheld",
    "hand-held",
    "aerial",
    "drone",
    "zoom",
    "zooms",
    "angle",
    "pov",
    "static",
    "crane",
    "lens",
    "overhead",
    "orbit",
    "orbits",
    "push-in",
    "pull-back",
    "macro",
    "telephoto",
    "wide-angle",
    "establishing",
    "framing",
    "framed",
    "camera",
    "steadicam",
    "top-down",
    "low-angle",
    "high-angle",
];
const STYLE_WORDS: &[&str] = &[
    "cinematic",
    "film",
    "photoreal",
    "photorealistic",
    "realistic",
    "hyperrealistic",
    "anime",
    "cartoon",
    "watercolor",
    "watercolour",
    "painting",
    "illustration",
    "illustrated",
    "3d",
    "render",
    "noir",
    "vintage",
    "retro",
    "pastel",
    "style",
    "aesthetic",
    "grading",
    "graded",
    "lighting",
    "light",
    "lit",
    "moody",
    "dramatic",
    "vibrant",
    "documentary",
    "35mm",
    "16mm",
    "70mm",
    "grain",
    "grainy",
    "bokeh",
    "muted",
    "saturated",
    "monochrome",
    "black-and-white",
    "neon",
    "golden",
    "stylized",
    "claymation",
    "stop-motion",
    "sketch",
];
const STOPWORDS: &[&str] = &[
    "the", "and", "with", "for", "from", "into", "onto", "over", "under", "that", "this", "these", "those", "are",
    "was", "were", "has", "have", "its", "their", "his", "her", "not", "any", "all", "very", "too", "of", "in", "on",
    "at", "to", "by", "as", "an", "a", "or", "is", "be", "it",
];

/// Lower-case words of `text`, split on anything but letters, digits, `-` and `'`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn any_in(words: &[String], list: &[&str]) -> bool {
    words.iter().any(|w| list.contains(&w.as_str()))
}

/// What `prompt` may lack, against `negative_prompt`. When the prompt was composed from
/// `parts`, the parts say exactly which of subject, action, camera and style are missing;
/// otherwise word lists guess:
/// - `subject`: no determiner or number ("a", "the", "two", "her", …) and no capitalised word
///   (a name) anywhere;
/// - `action`: no word ending in "-ing" (other than "lighting", "morning", …) and no common
///   motion verb ("walks", "drifts", …);
/// - `camera`: no camera word ("close-up", "dolly", "aerial", "tracking", "lens", …);
/// - `style`: no look word ("cinematic", "35mm", "watercolor", "lighting", "noir", …).
///
/// Always: `empty`; `short` (fewer than [`MIN_WORDS`] words); `long` (more than [`MAX_WORDS`]);
/// `contradiction` (a word of three letters or more, not a stopword, in both the prompt and the
/// negative prompt).
pub fn lint(prompt: &str, negative_prompt: &str, parts: Option<&PromptParts>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut flag = |check: &'static str, message: String| out.push(Finding { check, message });
    let w = words(prompt);
    if w.is_empty() {
        flag("empty", "the prompt is empty".into());
        return out;
    }
    if w.len() < MIN_WORDS {
        flag(
            "short",
            format!(
                "{} words: Wan2.1 renders generic footage from a few words; describe the subject, action, setting, camera and look (30–100 words render best)",
                w.len()
            ),
        );
    }
    if w.len() > MAX_WORDS {
        flag(
            "long",
            format!(
                "{} words: about {} umT5 tokens, past the text encoder's 512 (the rest is cut); shorten it",
                w.len(),
                w.len() * 14 / 10
            ),
        );
    }
    let has = match parts {
        Some(p) => {
            let [subject, action, _, camera, style] = p.parts().map(|x| x.is_some());
            [subject, action, camera, style]
        }
        None => {
            let capitalised = prompt
                .split_whitespace()
                .skip(1)
                .any(|t| t.chars().next().is_some_and(char::is_uppercase));
            let action = w
                .iter()
                .any(|x| x.len() > 4 && x.ends_with("ing") && !NOT_ACTIONS.contains(&x.as_str()))
                || any_in(&w, ACTION_WORDS);
            [
                any_in(&w, DETERMINERS) || capitalised,
                action,
                any_in(&w, CAMERA_WORDS),
                any_in(&w, STYLE_WORDS),
            ]
        }
    };
    let advice = [
        ("subject", "no subject: say who or what the shot shows (\"a red fox\", \"the old lighthouse\")"),
        ("action", "no action: say what happens (\"trots through deep snow\", \"waves breaking\")"),
        ("camera", "no camera direction: say how it is filmed (\"slow dolly-in\", \"wide aerial shot\", \"handheld close-up\")"),
        ("style", "no style: say how it looks (\"cinematic, soft golden light\", \"35mm film grain\", \"watercolor\")"),
    ];
    for ((check, message), present) in advice.into_iter().zip(has) {
        if !present {
            flag(check, message.into());
        }
    }
    let prompt_words: std::collections::BTreeSet<&str> = w.iter().map(String::as_str).collect();
    let mut seen = Vec::new();
    for n in words(negative_prompt) {
        if n.len() >= 3 && !STOPWORDS.contains(&n.as_str()) && prompt_words.contains(n.as_str()) && !seen.contains(&n) {
            flag(
                "contradiction",
                format!("{n:?} is in the prompt and in the negative prompt: they pull against each other"),
            );
            seen.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(subject: &str, action: &str, environment: &str, camera: &str, style: &str) -> PromptParts {
        let o = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PromptParts {
            subject: o(subject),
            action: o(action),
            environment: o(environment),
            camera: o(camera),
            style: o(style),
        }
    }

    #[test]
    fn parts_compose_in_order_and_skip_the_absent() {
        let all = parts(
            "a red fox",
            "trots through deep snow",
            "a frozen lake at dawn",
            "slow dolly-in",
            "soft golden light",
        );
        assert_eq!(
            all.compose(),
            "a red fox trots through deep snow, a frozen lake at dawn, slow dolly-in, soft golden light"
        );
        assert_eq!(
            parts("", "  ", "a frozen lake", "", "watercolor").compose(),
            "a frozen lake, watercolor"
        );
        assert_eq!(parts("a fox", "", "", "", "").compose(), "a fox");
        assert!(parts("", " ", "", "", "").is_empty());
    }

    fn checks(prompt: &str, negative: &str) -> Vec<&'static str> {
        lint(prompt, negative, None).into_iter().map(|f| f.check).collect()
    }

    #[test]
    fn a_full_prompt_passes_and_each_gap_is_named() {
        let full = "a red fox trotting through deep snow beside a frozen lake at dawn, slow dolly-in at a low angle, cinematic soft golden light";
        assert_eq!(checks(full, "blurry, people"), Vec::<&str>::new());
        assert_eq!(checks("", ""), ["empty"]);
        assert_eq!(checks("fox", ""), ["short", "subject", "action", "camera", "style"]);
        let no_camera =
            "a red fox trotting through deep snow beside a frozen lake at dawn in cinematic soft golden light";
        assert_eq!(checks(no_camera, ""), ["camera"]);
        let no_style = "a red fox trotting through deep snow beside a frozen lake at dawn, wide aerial tracking shot";
        assert_eq!(checks(no_style, ""), ["style"]);
        let still = "a red fox in deep snow beside a frozen lake at dawn, wide aerial shot, cinematic golden light";
        assert_eq!(checks(still, ""), ["action"]);
        // A name counts as a subject.
        let named =
            "deep snow falls while Rex is trotting beside frozen lakes at dawn, wide aerial shot, cinematic golden light";
        assert_eq!(checks(named, ""), Vec::<&str>::new());
        let long = "a fox trotting, wide shot, cinematic. ".repeat(60);
        assert_eq!(checks(&long, ""), ["long"]);
        let f = lint(full, "snow, the fog, snow", None);
        assert_eq!(f.len(), 1, "one finding per word: {f:?}");
        assert_eq!(f[0].check, "contradiction");
        assert!(f[0].message.starts_with("\"snow\" is in the prompt"), "{f:?}");
    }

    #[test]
    fn parts_say_exactly_what_is_missing() {
        let p = parts(
            "a red fox",
            "",
            "a frozen lake at dawn under heavy snowfall and low grey clouds",
            "wide shot",
            "",
        );
        let found: Vec<_> = lint(&p.compose(), "", Some(&p)).into_iter().map(|f| f.check).collect();
        assert_eq!(found, ["action", "style"]);
    }
}
