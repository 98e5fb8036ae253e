//! `longshot tokens`: client tokens for a coordinator run with `--tokens FILE`. The file holds
//! only each token's hash ([`longshot_proto::auth`]); the token itself is printed once.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use longshot_proto::auth::{new_token, Role, TokenSet};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Make a token: the token alone on stdout (hand it to the client as LONGSHOT_TOKEN), its
    /// file line on stderr, or appended to --file.
    New {
        /// Who the token is for: jobs it submits are recorded as theirs (A-Z a-z 0-9 . _ @ -).
        name: String,
        /// read (see every job), submit (submit, and see and cancel its own) or admin (all).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Append the token's line to this tokens file (created, private to its owner, if missing).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Remove every token of NAME from a tokens file (the coordinator drops them within 2 s).
    Revoke {
        name: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub fn run(cmd: TokensCommand, json: bool) -> Result<()> {
    match cmd {
        TokensCommand::New { name, role, file } => {
            let (token, line) = new_token(&name, role)?;
            if let Some(file) = &file {
                append(file, &line)?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "role": role.as_str(), "token": token, "line": line})
                );
                return Ok(());
            }
            println!("{token}");
            match file {
                Some(f) => eprintln!(
                    "added {name} ({role}) to {}; a coordinator reading it accepts the token within 2 s",
                    f.display()
                ),
                None => eprintln!("add this line to the coordinator's tokens file (--tokens):\n{line}"),
            }
        }
        TokensCommand::Revoke { name, file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            TokenSet::parse(&text, &file.display().to_string())?;
            let (kept, removed): (Vec<&str>, Vec<&str>) = text
                .lines()
                .partition(|l| l.split('#').next().unwrap_or("").split_whitespace().next() != Some(name.as_str()));
            if removed.is_empty() {
                bail!("{} has no token named {name:?}", file.display());
            }
            let mut out = kept.join("\n");
            out.push('\n');
            replace(&file, &out)?;
            if !json {
                eprintln!("revoked {} token(s) of {name} in {}", removed.len(), file.display());
            }
        }
    }
    Ok(())
}

/// Appends `line`, after checking the file parses with it (so a file the coordinator would
/// refuse is never written).
fn append(file: &Path, line: &str) -> Result<()> {
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let mut text = old;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    TokenSet::parse(&text, &file.display().to_string())?;
    replace(file, &text)
}

/// Writes `text` to a temporary file beside `file` and renames it over, so a coordinator never
/// reads half a file.
fn replace(file: &Path, text: &str) -> Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    // NamedTempFile is created 0600: the hashes stay private to the file's owner.
    tmp.persist(file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}
