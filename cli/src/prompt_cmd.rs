//! `longshot prompt`: compose a prompt from its parts, lint it, and keep a library of them.

use crate::prompt_library::{self as library, SavedPrompt};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use longshot_core::prompt_parts::{lint, PromptParts};
use std::path::PathBuf;

/// A prompt as text or as parts (composed in the order subject, action, environment, camera,
/// style).
#[derive(Args, Clone, Debug, Default)]
pub struct PromptText {
    /// The prompt's text (or give its parts).
    #[arg(conflicts_with_all = ["subject", "action", "environment", "camera", "style"])]
    pub text: Option<String>,
    #[command(flatten)]
    pub parts: PartFlags,
}

/// `--subject … --style`: a prompt in parts.
#[derive(Args, Clone, Debug, Default)]
pub struct PartFlags {
    /// Who or what the shot shows ("a red fox").
    #[arg(long)]
    pub subject: Option<String>,
    /// What it does ("trots through deep snow").
    #[arg(long)]
    pub action: Option<String>,
    /// Where ("a frozen lake at dawn").
    #[arg(long)]
    pub environment: Option<String>,
    /// How it is filmed ("slow dolly-in, low angle").
    #[arg(long)]
    pub camera: Option<String>,
    /// The look ("soft golden light, 35mm film").
    #[arg(long)]
    pub style: Option<String>,
}

impl PartFlags {
    pub fn parts(&self) -> PromptParts {
        PromptParts {
            subject: self.subject.clone(),
            action: self.action.clone(),
            environment: self.environment.clone(),
            camera: self.camera.clone(),
            style: self.style.clone(),
        }
    }
}

impl PromptText {
    /// The prompt and, when given in parts, the parts.
    fn resolve(&self) -> Result<(String, Option<PromptParts>)> {
        let parts = self.parts.parts();
        match (&self.text, parts.is_empty()) {
            (Some(t), _) => Ok((t.clone(), None)),
            (None, false) => Ok((parts.compose(), Some(parts))),
            (None, true) => {
                bail!("give the prompt's text, or its parts (--subject, --action, --environment, --camera, --style)")
            }
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PromptCommand {
    /// Flag what a prompt lacks (subject, action, camera, style), a prompt too short or too long
    /// for the model, and words it shares with the negative prompt. Exits 1 when it finds any.
    Lint {
        #[command(flatten)]
        prompt: PromptText,
        #[arg(long, default_value = "")]
        negative_prompt: String,
    },
    /// Save a prompt in the library under NAME (use it with `render`/`submit --saved NAME`).
    Save {
        name: String,
        #[command(flatten)]
        prompt: PromptText,
        #[arg(long)]
        negative_prompt: Option<String>,
        /// Replace a prompt saved under the same name.
        #[arg(long)]
        force: bool,
    },
    /// List the library's prompts.
    List,
    /// Show one saved prompt.
    Show { name: String },
}

#[derive(Args, Debug)]
pub struct PromptArgs {
    #[command(subcommand)]
    pub command: PromptCommand,
    /// The library file [default: $LONGSHOT_PROMPTS, else $XDG_CONFIG_HOME/longshot/prompts.yaml,
    /// else ~/.config/longshot/prompts.yaml].
    #[arg(long, global = true)]
    pub library: Option<PathBuf>,
}

/// Runs a `prompt` subcommand; `Ok(false)` when the lint found something (exit status 1).
pub fn run(a: PromptArgs, json: bool) -> Result<bool> {
    let path = || library::library_path(a.library.as_deref());
    match a.command {
        PromptCommand::Lint {
            prompt,
            negative_prompt,
        } => {
            let (text, parts) = prompt.resolve()?;
            let findings = lint(&text, &negative_prompt, parts.as_ref());
            if json {
                let v = serde_json::json!({"prompt": text, "findings": findings});
                println!("{v}");
            } else {
                println!("prompt: {text}");
                for f in &findings {
                    println!("{}: {}", f.check, f.message);
                }
                if findings.is_empty() {
                    println!("ok: nothing to flag");
                }
            }
            Ok(findings.is_empty())
        }
        PromptCommand::Save {
            name,
            prompt,
            negative_prompt,
            force,
        } => {
            let (text, parts) = prompt.resolve()?;
            let path = path()?;
            let saved = SavedPrompt {
                prompt: text,
                negative_prompt,
                parts: parts.unwrap_or_default(),
            };
            library::save(&path, &name, saved, force)?;
            if !json {
                println!("saved {name:?} in {}", path.display());
            }
            Ok(true)
        }
        PromptCommand::List => {
            let path = path()?;
            let all = library::load(&path)?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else if all.is_empty() {
                println!(
                    "no prompts in {} (save one with `longshot prompt save NAME …`)",
                    path.display()
                );
            } else {
                for (name, p) in &all {
                    println!("{name:<20} {}", p.prompt);
                }
            }
            Ok(true)
        }
        PromptCommand::Show { name } => {
            let p = library::get(&path()?, &name)?;
            if json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!("prompt: {}", p.prompt);
                if let Some(n) = &p.negative_prompt {
                    println!("negative prompt: {n}");
                }
                let names = longshot_core::prompt_parts::PART_NAMES;
                for (part, value) in names.iter().zip(p.parts.parts()) {
                    if let Some(v) = value {
                        println!("{part}: {v}");
                    }
                }
            }
            Ok(true)
        }
    }
}
