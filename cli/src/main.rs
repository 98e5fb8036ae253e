//! `longshot`: render long AI video clips on a cluster of GPU (or CPU) workers.
//!
//! Binaries only parse arguments and wire parts together: the work lives in the library crates.
//! - `render`: a one-shot local cluster (coordinator in this process, N worker processes).
//! - `up`: a local cluster that stays up; `coordinator` / `worker`: the cluster's processes.
//! - `submit`, `status`, `list`, `watch`, `cancel`, `fetch`, `workers`, `models`: job control.
//! - `dev`: single-component entry points (Wan2.1 transformer, …) for numerical checks.

#![forbid(unsafe_code)]

mod args;
mod certs;
mod client_cmds;
mod dev;
mod estimate_cmd;
mod inputs;
mod local_cluster;
mod metrics_http;
mod preview_dir;
mod progress;
mod promote_cmd;
mod prompt_cmd;
mod prompt_library;
mod render_checks;
mod rerender_cmd;
mod review_cmd;
mod review_page;
mod serve;
mod tokens;
mod traces;

use anyhow::Result;
use clap::{Parser, Subcommand};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "longshot",
    version,
    about = "Render long AI video clips across a cluster of workers"
)]
struct Cli {
    /// Coordinator address for job-control commands; several, comma-separated, for coordinators
    /// that fail over (the leader is found and followed).
    #[arg(long, global = true, env = "LONGSHOT_COORDINATOR", default_value = "127.0.0.1:50051")]
    coordinator: String,
    /// The cluster's CA certificate (PEM): clients verify the coordinator by it, and with it an
    /// address without a scheme means https://. Members (coordinator, worker) need it with
    /// --cert and --key.
    #[arg(long, global = true, env = "LONGSHOT_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client token for a coordinator that requires one (`lst_…`, from `longshot tokens new`);
    /// prefer the environment variable, which other users cannot see in the process list.
    #[arg(
        long,
        global = true,
        env = "LONGSHOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Seconds a coordinator may take to answer a request (or to start streaming one) before the
    /// command fails saying so.
    #[arg(long, global = true, env = "LONGSHOT_TIMEOUT", default_value_t = 30.0, value_parser = parse_timeout)]
    timeout: f64,
    /// Machine-readable output (one JSON object per line).
    #[arg(long, global = true)]
    json: bool,
    /// Log lines on stderr as text or as JSON objects (fields such as `job` as keys).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render a clip on a one-shot local cluster and write it to disk.
    Render(local_cluster::RenderArgs),
    /// Run a local cluster (coordinator + N workers) until interrupted.
    Up(local_cluster::UpArgs),
    /// Run a coordinator.
    Coordinator(serve::CoordinatorArgs),
    /// Run a worker that registers with a coordinator.
    Worker(serve::WorkerArgs),
    /// Submit a job; prints its id (`--wait` follows it to the end).
    Submit(client_cmds::SubmitArgs),
    /// Predict a job's wall time and GPU-seconds (same flags as `submit`; nothing is queued),
    /// from the cluster's measured times for that model, size and device.
    Estimate(args::JobArgs),
    /// QC review of a finished job: a contact sheet, seam/flicker/frozen/black-frame/length
    /// checks and an HTML page in a directory (exit status 1 when a check fails).
    Review(review_cmd::ReviewArgs),
    /// Render a draft (`--draft`) at full quality: its size and steps, the same seed and shots.
    Promote(promote_cmd::PromoteArgs),
    /// Re-render a time range of a finished job in place (a new job; the rest is kept bit for
    /// bit). The job must have kept its latents (`--format mp4,latents`).
    Rerender(rerender_cmd::RerenderArgs),
    /// Show one job.
    Status { job_id: String },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, decoding, done, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs submitted with this token name (a `submit` token sees only its own).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Follow a job's progress until it ends.
    Watch {
        job_id: String,
        /// Keep the job's live preview in this directory (preview.mp4, preview.json,
        /// frames/*.png); the job must have been submitted with --preview-every.
        #[arg(long, value_name = "DIR")]
        preview: Option<PathBuf>,
    },
    /// Cancel a job.
    Cancel { job_id: String },
    /// Download a finished job's output.
    Fetch {
        job_id: String,
        /// Where to write it (a directory for png).
        #[arg(short, long)]
        output: PathBuf,
        /// mp4, prores, png or latents (default from the output's extension).
        #[arg(long)]
        format: Option<longshot_core::job::OutputKind>,
        /// One shot's own file (0-based), for a job submitted with --split-shots.
        #[arg(long)]
        shot: Option<u32>,
    },
    /// List the cluster's workers.
    Workers,
    /// Stop placing new jobs on a worker (a job running there finishes), e.g. before
    /// maintenance; `--undo` lets it take jobs again. Needs an admin token where tokens are on.
    Drain {
        worker_id: String,
        #[arg(long)]
        undo: bool,
    },
    /// List the models the cluster serves.
    Models,
    /// Make a cluster CA and member certificates (TLS between coordinators, workers and clients).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Make client tokens for a coordinator run with --tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Single-component entry points for numerical checks against diffusers.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Structured prompts: lint a prompt, keep a library of them (`save`, `list`, `show`).
    Prompt(prompt_cmd::PromptArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs on stderr, filtered by `LONGSHOT_LOG` (else `default`); with `OTEL_EXPORTER_OTLP_ENDPOINT`
/// set, spans are also exported as `service` ([`traces`]), and the provider returned must be shut
/// down on exit so the last spans leave.
fn init_logging(default: &str, format: LogFormat, service: &str) -> Option<SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LONGSHOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let provider = traces::provider(service).unwrap_or_else(|e| {
        eprintln!("warning: traces are not exported: {e:#}");
        None
    });
    let Some(provider) = provider else {
        // The common case stays as it was: one global filter, no span bookkeeping beyond it.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Text => builder.with_ansi(ansi).try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        return None;
    };
    // Per-layer filters: the log level must not decide which spans are exported.
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_ansi(ansi).with_filter(filter).boxed(),
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces::layer(&provider))
        .try_init();
    Some(provider)
}

/// `--timeout`: seconds in (0, 86400].
fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (level, service) = match &cli.command {
        Command::Coordinator(_) => ("info", "longshot-coordinator"),
        Command::Worker(_) => ("info", "longshot-worker"),
        _ => ("warn", "longshot-cli"),
    };
    let tracer = init_logging(level, cli.log_format, service);
    let mut flagged = false;
    let result: Result<()> = match cli.command {
        Command::Coordinator(a) => serve::coordinator(a, cli.ca.clone()).await,
        Command::Worker(a) => serve::worker_with(a, cli.coordinator.clone(), cli.ca.clone()).await,
        Command::Certs(cmd) => certs::run(cmd),
        Command::Tokens(cmd) => tokens::run(cmd, cli.json),
        // The lint found something: exit 1 without an error message (its findings are out).
        Command::Prompt(a) => prompt_cmd::run(a, cli.json).map(|clean| flagged = !clean),
        Command::Dev(cmd) => {
            // Heavy CPU work: keep it off the async runtime.
            tokio::task::spawn_blocking(move || dev::run(cmd))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("dev command panicked: {e}")))
        }
        command => {
            client_cmds::set_client_options(std::time::Duration::from_secs_f64(cli.timeout), cli.token.clone());
            run_client(command, &cli.coordinator, cli.ca.as_deref(), cli.json).await
        }
    };
    if let Some(provider) = tracer {
        traces::shutdown(provider).await;
    }
    match result {
        Ok(()) if flagged => std::process::ExitCode::FAILURE,
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_client(command: Command, coordinator: &str, ca: Option<&std::path::Path>, json: bool) -> Result<()> {
    use client_cmds as c;
    if let (Some(ca), false) = (ca, matches!(command, Command::Render(_) | Command::Up(_))) {
        longshot_proto::tls::use_ca(ca)?;
    }
    match command {
        Command::Render(a) => local_cluster::render(a, json).await,
        Command::Up(a) => local_cluster::up(a, ca).await,
        Command::Submit(a) => c::submit(coordinator, a, json).await,
        Command::Estimate(a) => estimate_cmd::estimate(coordinator, a, json).await,
        Command::Review(a) => review_cmd::review(coordinator, a, json).await,
        Command::Promote(a) => promote_cmd::promote(coordinator, a, json).await,
        Command::Rerender(a) => rerender_cmd::rerender(coordinator, a, json).await,
        Command::Status { job_id } => c::status(coordinator, &job_id, json).await,
        Command::List { state, owner, limit } => c::list(coordinator, state.as_deref(), owner, limit, json).await,
        Command::Watch { job_id, preview } => c::watch(coordinator, &job_id, preview.as_deref(), json).await,
        Command::Cancel { job_id } => c::cancel(coordinator, &job_id, json).await,
        Command::Fetch {
            job_id,
            output,
            format,
            shot,
        } => c::fetch(coordinator, &job_id, &output, format, shot, json).await,
        Command::Workers => c::workers(coordinator, json).await,
        Command::Drain { worker_id, undo } => c::drain(coordinator, &worker_id, undo, json).await,
        Command::Models => c::models(coordinator, json).await,
        Command::Coordinator(_)
        | Command::Worker(_)
        | Command::Dev(_)
        | Command::Certs(_)
        | Command::Tokens(_)
        | Command::Prompt(_) => {
            unreachable!("handled in main")
        }
    }
}
