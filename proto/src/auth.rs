//! Client authentication for the `JobService`: bearer tokens, each with a name and a role, kept
//! at rest only as SHA-256 hashes in a tokens file that the coordinator re-reads when it changes
//! (a Kubernetes Secret's update, an operator's edit), so tokens are added and revoked without a
//! restart.
//!
//! The file has one token per line, `#` comments and blank lines ignored:
//!
//! ```text
//! # name   role     hash of the token
//! alice    submit   sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! ```
//!
//! `longshot tokens new` makes a token and its line. Tokens are 256 random bits, so a plain
//! SHA-256 (no salt, no stretching) is enough to make a stolen file useless.

use longshot_core::api::{ApiError, JobStatus};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tonic::metadata::MetadataMap;

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "lst_";
/// How often the coordinator looks for a changed tokens file.
pub const RELOAD_PERIOD: Duration = Duration::from_secs(2);
/// Longest token name.
const MAX_NAME: usize = 64;

/// What a token may do. Ordered: each role can do what the ones before it can, except that a
/// `submit` token sees only its own jobs while `read` sees all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// List, show, watch and fetch every job; list workers and models.
    Read,
    /// Submit jobs; show, watch, fetch and cancel its own.
    Submit,
    /// Everything: every job, cancelling any of them.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Submit, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("role {s:?} is not one of: read, submit, admin"))
    }
}

/// An authenticated client: its token's name and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// Whether this caller may see (show, watch, fetch) a job `owner` submitted.
    pub fn sees(&self, owner: &str) -> bool {
        self.role != Role::Submit || owner == self.name
    }

    /// Refuses a submit by a `read` token.
    pub fn check_submit(&self) -> Result<(), ApiError> {
        if self.role == Role::Read {
            return Err(self.denied("submit jobs", "submit or admin"));
        }
        Ok(())
    }

    /// Refuses cancelling a job `owner` submitted, unless this caller owns it or is an admin.
    pub fn check_cancel(&self, owner: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Submit if owner == self.name => Ok(()),
            Role::Submit => Err(self.denied("cancel another token's job", "admin")),
            Role::Read => Err(self.denied("cancel jobs", "submit (its own jobs) or admin")),
        }
    }

    /// Refuses draining workers to all but admins.
    pub fn check_drain(&self) -> Result<(), ApiError> {
        if self.role != Role::Admin {
            return Err(self.denied("drain workers", "admin"));
        }
        Ok(())
    }

    fn denied(&self, what: &str, needs: &str) -> ApiError {
        ApiError::PermissionDenied(format!(
            "token {:?} has role {}, which cannot {what}: that needs role {needs}",
            self.name, self.role
        ))
    }

    /// What a caller that may not see `job_id` is told: the same as for a job that does not exist,
    /// so a token learns nothing of other tokens' jobs.
    pub fn hidden(&self, job_id: &str) -> ApiError {
        ApiError::NotFound(format!(
            "no job {job_id:?} among those token {:?} may see (role submit: its own jobs)",
            self.name
        ))
    }

    /// `status` if this caller may see it, else [`Principal::hidden`].
    pub fn visible(&self, status: JobStatus) -> Result<JobStatus, ApiError> {
        if self.sees(&status.owner) {
            Ok(status)
        } else {
            Err(self.hidden(&status.job_id))
        }
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("cannot read the tokens file {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("the token name {0:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ @ -")]
    Name(String),
}

/// A token's stored form: `sha256:` and the hex SHA-256 of the token.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(token.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// A new token for `name` with `role`: the secret to hand to the client, and the line for the
/// tokens file (which holds only its hash).
pub fn new_token(name: &str, role: Role) -> Result<(String, String), AuthError> {
    if !valid_name(name) {
        return Err(AuthError::Name(name.to_string()));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| AuthError::Read {
        path: "the system's random source".into(),
        message: e.to_string(),
    })?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
    let line = format!("{name} {role} {}", token_hash(&token));
    Ok((token, line))
}

/// The tokens of one version of the file, by hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSet {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl TokenSet {
    /// Parses a tokens file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<TokenSet, AuthError> {
        let mut by_hash = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let syntax = |message: String| AuthError::Syntax {
                path: path.to_string(),
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hash] = fields[..] else {
                return Err(syntax(format!(
                    "expected `<name> <role> sha256:<64 hex digits>`, found {} fields",
                    fields.len()
                )));
            };
            if !valid_name(name) {
                return Err(syntax(AuthError::Name(name.to_string()).to_string()));
            }
            let role: Role = role.parse().map_err(syntax)?;
            let digest = parse_hash(hash).ok_or_else(|| {
                syntax(format!(
                    "the hash must be `sha256:` and 64 hex digits (as `longshot tokens new` prints), not {:?}",
                    truncate(hash)
                ))
            })?;
            let principal = Principal {
                name: name.to_string(),
                role,
            };
            if let Some(other) = by_hash.insert(digest, principal) {
                return Err(syntax(format!(
                    "this hash is already the token of {:?}: each token must be listed once",
                    other.name
                )));
            }
        }
        Ok(TokenSet { by_hash })
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The principal `token` belongs to, if it is listed.
    pub fn find(&self, token: &str) -> Option<&Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&digest)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The coordinator's tokens: the file's last good version, re-read by [`Tokens::watch`].
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    /// The set in force and the file text it came from (a changed text is parsed again).
    current: RwLock<(Arc<TokenSet>, String)>,
}

impl Tokens {
    /// Reads and parses `path`; an unreadable or malformed file is an error here, at startup.
    pub fn load(path: &Path) -> Result<Arc<Tokens>, AuthError> {
        let text = read(path)?;
        let set = TokenSet::parse(&text, &path.display().to_string())?;
        Ok(Arc::new(Tokens {
            path: path.to_path_buf(),
            current: RwLock::new((Arc::new(set), text)),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The set in force.
    pub fn set(&self) -> Arc<TokenSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Re-reads the file; `Ok(Some(n))` when it changed and its `n` tokens are now in force. A
    /// file that cannot be read or parsed leaves the previous tokens in force.
    pub fn reload(&self) -> Result<Option<usize>, AuthError> {
        let text = read(&self.path)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if text == current.1 {
            return Ok(None);
        }
        let set = TokenSet::parse(&text, &self.path.display().to_string())?;
        let n = set.len();
        *current = (Arc::new(set), text);
        Ok(Some(n))
    }

    /// Re-reads the file every [`RELOAD_PERIOD`] for as long as the runtime runs, logging each
    /// change and each failure (once per distinct failure).
    pub fn watch(self: &Arc<Self>) {
        let tokens = Arc::clone(self);
        tokio::spawn(async move {
            let mut last_error = None;
            loop {
                tokio::time::sleep(RELOAD_PERIOD).await;
                let t = Arc::clone(&tokens);
                let result = tokio::task::spawn_blocking(move || t.reload())
                    .await
                    .unwrap_or_else(|e| {
                        Err(AuthError::Read {
                            path: tokens.path.display().to_string(),
                            message: e.to_string(),
                        })
                    });
                match result {
                    Ok(Some(n)) => {
                        tracing::info!(path = %tokens.path.display(), tokens = n, "client tokens reloaded");
                        last_error = None;
                    }
                    Ok(None) => last_error = None,
                    Err(e) => {
                        let message = e.to_string();
                        if last_error.as_ref() != Some(&message) {
                            tracing::error!("client tokens not reloaded, the previous ones stay in force: {message}");
                        }
                        last_error = Some(message);
                    }
                }
            }
        });
    }

    /// Who sent `metadata`'s `authorization: Bearer <token>`.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, ApiError> {
        let Some(value) = metadata.get("authorization") else {
            return Err(ApiError::Unauthenticated(
                "this coordinator requires a client token: pass --token or set LONGSHOT_TOKEN (an admin \
                 makes one with `longshot tokens new`)"
                    .into(),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthenticated("the authorization header must be `Bearer <token>`".into()))?;
        self.set().find(token).cloned().ok_or_else(|| {
            ApiError::Unauthenticated(
                "the client token is not valid on this coordinator: it is not in its tokens file (revoked, \
                 mistyped, or made for another cluster)"
                    .into(),
            )
        })
    }
}

fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|e| AuthError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn a_new_token_authenticates_as_its_line_says() {
        let (token, line) = new_token("alice", Role::Submit).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        assert!(!line.contains(&token), "the file line holds only the hash");
        let set = TokenSet::parse(&format!("# comment\n\n{line}  # alice's laptop\n"), "t").unwrap();
        assert_eq!(
            set.find(&token),
            Some(&Principal {
                name: "alice".into(),
                role: Role::Submit
            })
        );
        assert_eq!(set.find("lst_0000"), None);
        assert_ne!(new_token("alice", Role::Submit).unwrap().0, token, "tokens are random");
    }

    #[test]
    fn malformed_lines_are_named() {
        let h = token_hash("x");
        let cases = [
            (
                "alice submit",
                "t:1: expected `<name> <role> sha256:<64 hex digits>`, found 2 fields",
            ),
            (
                &format!("alice owner {h}") as &str,
                "t:1: role \"owner\" is not one of: read, submit, admin",
            ),
            (
                "alice read sha256:zz",
                "t:1: the hash must be `sha256:` and 64 hex digits",
            ),
            (&format!("al ice read {h}"), "t:1: expected"),
            (&format!("a/b read {h}"), "t:1: the token name \"a/b\" is not 1 to 64"),
            (
                &format!("a read {h}\nb admin {h}"),
                "t:2: this hash is already the token of \"a\"",
            ),
        ];
        for (text, want) in cases {
            let err = TokenSet::parse(text, "t").unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        assert!(matches!(new_token("", Role::Read), Err(AuthError::Name(_))));
    }

    #[test]
    fn roles_decide_what_a_caller_sees_and_touches() {
        let p = |name: &str, role| Principal {
            name: name.into(),
            role,
        };
        let (reader, alice, admin) = (p("ci", Role::Read), p("alice", Role::Submit), p("ops", Role::Admin));
        assert!(reader.sees("alice") && admin.sees("alice") && alice.sees("alice"));
        assert!(!alice.sees("bob") && !alice.sees(""));
        assert!(reader.check_submit().is_err() && alice.check_submit().is_ok() && admin.check_submit().is_ok());
        assert!(alice.check_cancel("alice").is_ok() && admin.check_cancel("bob").is_ok());
        let err = alice.check_cancel("bob").unwrap_err().to_string();
        assert_eq!(
            err,
            "token \"alice\" has role submit, which cannot cancel another token's job: that needs role admin"
        );
        assert!(matches!(reader.check_cancel("ci"), Err(ApiError::PermissionDenied(_))));
        assert!(admin.check_drain().is_ok() && alice.check_drain().is_err() && reader.check_drain().is_err());
    }

    #[test]
    fn authentication_names_what_is_wrong_and_reload_keeps_the_last_good_file() {
        let dir = std::env::temp_dir().join(format!("longshot-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let (t1, l1) = new_token("alice", Role::Admin).unwrap();
        let (t2, l2) = new_token("bob", Role::Read).unwrap();
        std::fs::write(&path, format!("{l1}\n")).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(
            tokens.authenticate(&metadata(&format!("Bearer {t1}"))).unwrap().name,
            "alice"
        );
        let missing = tokens.authenticate(&MetadataMap::new()).unwrap_err();
        assert!(missing.to_string().contains("requires a client token"), "{missing}");
        let basic = tokens.authenticate(&metadata("Basic abc")).unwrap_err();
        assert!(basic.to_string().contains("Bearer <token>"), "{basic}");
        let unknown = tokens.authenticate(&metadata(&format!("Bearer {t2}"))).unwrap_err();
        assert!(matches!(unknown, ApiError::Unauthenticated(_)), "{unknown}");
        assert_eq!(tokens.reload(), Ok(None), "an unchanged file is not parsed again");

        std::fs::write(&path, format!("{l2}\n")).unwrap();
        assert_eq!(tokens.reload(), Ok(Some(1)));
        assert_eq!(
            tokens.authenticate(&metadata(&format!("Bearer {t2}"))).unwrap().role,
            Role::Read
        );
        assert!(
            tokens.authenticate(&metadata(&format!("Bearer {t1}"))).is_err(),
            "alice was revoked"
        );

        std::fs::write(&path, "garbage\n").unwrap();
        assert!(matches!(tokens.reload(), Err(AuthError::Syntax { line: 1, .. })));
        assert!(
            tokens.authenticate(&metadata(&format!("Bearer {t2}"))).is_ok(),
            "bob still works"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
