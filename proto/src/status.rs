//! The one place that maps [`ApiError`] to `tonic::Status` and back.
//!
//! `InvalidArgument` travels as the message `field: message; field: message` (no "invalid job"
//! prefix), which [`from_status`] parses back into the same field errors, so a client can show
//! every bad field next to the flag that set it. Transport failures (nothing listening, a reset
//! connection, a connect timeout) become `Unavailable` with a message naming the peer.

use longshot_core::api::ApiError;
use longshot_core::job::FieldError;
use std::error::Error;
use tonic::{Code, Status};

/// The metadata key carrying a standby coordinator's leader address (`ApiError::NotLeader`).
pub const LEADER_METADATA: &str = "longshot-leader";

/// Field name used when an `INVALID_ARGUMENT` message is not a `field: message` list (a foreign
/// server, a proxy).
pub const UNNAMED_FIELD: &str = "request";

/// The status a service answers with for `err`.
pub fn to_status(err: ApiError) -> Status {
    match err {
        ApiError::InvalidArgument(errors) => {
            Status::invalid_argument(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }
        ApiError::NotFound(m) => Status::not_found(m),
        ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
        ApiError::Unavailable(m) => Status::unavailable(m),
        ApiError::Internal(m) => Status::internal(m),
        ApiError::PermissionDenied(m) => Status::permission_denied(m),
        ApiError::Unauthenticated(m) => Status::unauthenticated(m),
        ApiError::DataLoss(m) => Status::data_loss(m),
        ApiError::NotLeader { leader } => {
            let mut status = Status::unavailable(ApiError::NotLeader { leader: leader.clone() }.to_string());
            // An empty value: a standby that knows no leader yet.
            if let Ok(v) = leader.unwrap_or_default().parse() {
                status.metadata_mut().insert(LEADER_METADATA, v);
            }
            status
        }
    }
}

/// The `NotLeader` a standby answered with, if `status` is one.
fn not_leader(status: &Status) -> Option<ApiError> {
    let v = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
    Some(ApiError::NotLeader {
        leader: (!v.is_empty()).then(|| v.to_string()),
    })
}

/// The domain error for a status a peer answered with.
pub fn from_status(status: &Status) -> ApiError {
    if let Some(e) = not_leader(status) {
        return e;
    }
    let message = status.message().to_string();
    match status.code() {
        Code::InvalidArgument => ApiError::InvalidArgument(parse_field_errors(&message)),
        Code::NotFound => ApiError::NotFound(message),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted | Code::OutOfRange | Code::ResourceExhausted => {
            ApiError::FailedPrecondition(message)
        }
        Code::Unavailable => ApiError::Unavailable(message),
        Code::DeadlineExceeded => ApiError::Unavailable(format!("deadline exceeded: {message}")),
        Code::Internal => ApiError::Internal(message),
        Code::PermissionDenied => ApiError::PermissionDenied(message),
        Code::Unauthenticated => ApiError::Unauthenticated(message),
        Code::DataLoss => ApiError::DataLoss(message),
        other => ApiError::Internal(format!("{}: {message}", code_name(other))),
    }
}

/// Like [`from_status`] for a call to `peer` (for example "the coordinator at
/// http://10.0.0.1:7000"): a failure of the local transport and the codes that mean "not there"
/// say which peer could not be reached and why.
pub fn from_status_at(status: &Status, peer: &str) -> ApiError {
    // tonic attaches the underlying error as the source only to statuses it synthesises from a
    // local transport failure; a status the peer sent has none.
    if status.source().is_some() {
        let cause = status_cause(status);
        return ApiError::Unavailable(format!("cannot reach {peer}: {cause}{}", tls_hint(peer, &cause)));
    }
    if let Some(e) = not_leader(status) {
        return e;
    }
    match status.code() {
        Code::Unavailable => ApiError::Unavailable(format!("{peer} is unavailable: {}", status.message())),
        Code::DeadlineExceeded => ApiError::Unavailable(format!("{peer} did not answer in time: {}", status.message())),
        _ => from_status(status),
    }
}

/// A failed connect to `peer` (for example a refused TCP connection).
pub fn unreachable(peer: &str, err: &tonic::transport::Error) -> ApiError {
    let cause = error_chain(err);
    ApiError::Unavailable(format!("cannot reach {peer}: {cause}{}", tls_hint(peer, &cause)))
}

/// Advice for a transport failure that TLS explains: rustls and hyper name the symptom (an
/// unknown issuer, a corrupt record, a reset), not the setting to change.
fn tls_hint(peer: &str, cause: &str) -> &'static str {
    let c = cause.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| c.contains(n));
    if has(&["unknownissuer", "unknown issuer", "badsignature"]) {
        " (its certificate is not signed by the CA this process trusts: check --ca)"
    } else if has(&["certificateexpired", "certificate expired", "peer certificate: expired"]) {
        " (a certificate has expired: issue a new one with `longshot certs issue`)"
    } else if has(&["notvalidforname", "not valid for name"]) {
        " (its certificate does not name this address: issue it with --host for every name clients use)"
    } else if has(&[
        "unknownca",
        "badcertificate",
        "bad certificate",
        "certificaterequired",
        "certificate required",
    ]) {
        " (it refused this process's certificate: cluster members need one signed by the cluster's CA)"
    } else if peer.contains("https://") && has(&["corrupt message", "invalidcontenttype", "invalid content type"]) {
        " (it does not speak TLS: for a server run with --insecure, use http://)"
    } else if peer.contains("http://")
        && has(&[
            "connection reset",
            "broken pipe",
            "protocol error",
            "frame with invalid size",
            "connection closed",
            "unexpected eof",
            "bytes remaining on stream",
        ])
    {
        " (if it serves TLS, use https:// and its CA: --ca or LONGSHOT_CA)"
    } else {
        ""
    }
}

/// `err` and its sources, joined by `: `, skipping a source whose text the chain already shows
/// (transport errors tend to repeat their cause in their own message).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    append_sources(err.to_string(), err.source())
}

/// A status's message followed by its source chain (a status's own `Display` lists code, details
/// and metadata, too noisy for a one-line reason).
pub fn status_cause(status: &Status) -> String {
    let text = append_sources(status.message().to_string(), status.source());
    if text.is_empty() {
        code_name(status.code()).to_string()
    } else {
        text
    }
}

fn append_sources(mut text: String, mut source: Option<&(dyn Error + 'static)>) -> String {
    while let Some(e) = source {
        let s = e.to_string();
        if !s.is_empty() && !text.contains(&s) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// Parses `field: message; field: message` back into field errors. A part that does not start
/// with a field path continues the previous message (a message may itself contain "; ").
pub fn parse_field_errors(message: &str) -> Vec<FieldError> {
    if message.is_empty() {
        return vec![FieldError::new(UNNAMED_FIELD, "the server gave no details")];
    }
    let mut errors: Vec<FieldError> = Vec::new();
    for part in message.split("; ") {
        match (part.split_once(": "), errors.last_mut()) {
            (Some((field, msg)), _) if is_field_path(field) => errors.push(FieldError::new(field, msg)),
            (_, Some(last)) => {
                last.message.push_str("; ");
                last.message.push_str(part);
            }
            (_, None) => errors.push(FieldError::new(UNNAMED_FIELD, part)),
        }
    }
    errors
}

/// Field paths as the conversions and `JobSpec::validate` write them: `width`,
/// `schedule.sigma_bits`, `models[1].name`.
fn is_field_path(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(err: ApiError) -> ApiError {
        from_status(&to_status(err))
    }

    #[test]
    fn tls_failures_say_what_to_change() {
        let https = "the coordinator at https://10.0.0.1:50051";
        let http = "the coordinator at http://10.0.0.1:50051";
        assert!(tls_hint(https, "invalid peer certificate: UnknownIssuer").contains("check --ca"));
        assert!(tls_hint(https, "received fatal alert: CertificateExpired").contains("expired"));
        assert!(tls_hint(https, "received corrupt message of type InvalidContentType").contains("does not speak TLS"));
        assert!(tls_hint(http, "connection error: connection reset").contains("use https://"));
        assert!(tls_hint(https, "received fatal alert: UnknownCA").contains("refused this process's certificate"));
        // Nothing TLS-shaped: no advice, even where a word matches.
        assert_eq!(
            tls_hint(http, "tcp connect error: Connection refused (os error 111)"),
            ""
        );
        assert_eq!(tls_hint(https, "Timeout expired"), "");
    }

    #[test]
    fn every_error_kind_round_trips() {
        let errors = [
            ApiError::InvalidArgument(vec![
                FieldError::new("width", "1000 is not a multiple of 16 in 16..=4096"),
                FieldError::new(
                    "outputs",
                    r#"output format "gif" is not one of: mp4, prores, png, latents"#,
                ),
                FieldError::new("schedule.sigma_bits", "sigmas[1] = 0.5 is not below sigmas[0] = 0.5"),
            ]),
            ApiError::NotFound("no job j-42".into()),
            ApiError::FailedPrecondition("job j-1 is not done".into()),
            ApiError::Unavailable("no worker serves model wan".into()),
            ApiError::Internal("assembly failed".into()),
            ApiError::PermissionDenied("only cluster members may register".into()),
            ApiError::DataLoss("the bytes received hash to something else".into()),
            ApiError::Unauthenticated("this coordinator requires a client token".into()),
        ];
        for err in errors {
            assert_eq!(round_trip(err.clone()), err);
        }
    }

    #[test]
    fn invalid_argument_message_lists_fields() {
        let status = to_status(ApiError::InvalidArgument(vec![
            FieldError::new("fps", "0 is not in 1..=120"),
            FieldError::new("duration", "is required: set seconds or frames"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "fps: 0 is not in 1..=120; duration: is required: set seconds or frames"
        );
    }

    #[test]
    fn messages_with_separators_and_foreign_messages_parse() {
        let parsed = parse_field_errors("prompt: too long; see the docs; width: bad");
        assert_eq!(
            parsed,
            vec![
                FieldError::new("prompt", "too long; see the docs"),
                FieldError::new("width", "bad"),
            ]
        );
        assert_eq!(
            parse_field_errors("something went wrong"),
            vec![FieldError::new(UNNAMED_FIELD, "something went wrong")]
        );
    }

    #[test]
    fn peer_statuses_name_the_peer() {
        let peer = "the coordinator at http://127.0.0.1:1";
        let err = from_status_at(&Status::unavailable("draining"), peer);
        assert_eq!(err, ApiError::Unavailable(format!("{peer} is unavailable: draining")));
        let err = from_status_at(&Status::not_found("no job j-1"), peer);
        assert_eq!(err, ApiError::NotFound("no job j-1".into()));
        let err = from_status(&Status::unimplemented("nope"));
        assert_eq!(err, ApiError::Internal("unimplemented: nope".into()));
    }
}
