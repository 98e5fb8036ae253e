//! Loopback benchmark of the two candidate transports for the per-step overlap exchange:
//! a tonic bidirectional gRPC stream (`ExchangeService.Overlap`) and a plain length-prefixed TCP
//! framing with `tokio` + `bytes`. Results and the choice are in `proto/EXCHANGE_TRANSPORT.md`.
//!
//! Two endpoints (A and B) in one process talk over 127.0.0.1, like two neighbouring workers at
//! one window boundary. At every step each side sends its overlap velocity and waits for the
//! neighbour's before the next step, both directions at once, as in the real co-denoising loop.
//! A "round" is the time from A starting to send its step-s overlap until A holds B's step-s
//! overlap. Transports are interleaved within each repetition so that noise from other processes
//! on the machine hits all of them alike.
//!
//! ```text
//! cargo build -p longshot-proto --release --examples
//! target/release/examples/exchange_transport_bench [--steps 200] [--warmup 20] [--reps 3]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use longshot_proto::pb::exchange_service_client::ExchangeServiceClient;
use longshot_proto::pb::exchange_service_server::{ExchangeService, ExchangeServiceServer};
use longshot_proto::pb::{overlap_frame, OverlapFrame};
use longshot_proto::MAX_MESSAGE_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

const JOB_ID: &str = "bench";
const PLAN_ID: u64 = 1;
const BOUNDARY: u32 = 0;

/// Overlap payloads per direction per step.
const PAYLOADS: &[(&str, usize)] = &[
    // Wan2.1 at 480×832, O = 5: 5 frames × 16 × 60 × 104 f32.
    ("wan2.1 480x832 O=5", 5 * 16 * 60 * 104 * 4),
    // Procedural model at 256×256, O = 5: 5 frames × 16 × 32 × 32 f32.
    ("procedural 256x256 O=5", 5 * 16 * 32 * 32 * 4),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// tonic as it comes, with only the message size limits raised, and the listener handed over
    /// as `TcpIncoming::from(listener)`, which leaves Nagle's algorithm on the accepted socket.
    GrpcPlain,
    /// As `GrpcPlain` but with `TCP_NODELAY` on both sockets; hyper's default HTTP/2 windows
    /// (1 MiB server / 2 MiB client stream window, 16 KiB frames).
    GrpcNodelay,
    /// `longshot_proto::{server_builder, incoming, endpoint}`: `TCP_NODELAY` plus HTTP/2 windows
    /// and frame size sized for multi-MiB messages. What Longshot ships.
    GrpcTuned,
    /// Length-prefixed frames on a raw TCP stream (`TCP_NODELAY`).
    Tcp,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::GrpcPlain,
        Transport::GrpcNodelay,
        Transport::GrpcTuned,
        Transport::Tcp,
    ];

    fn name(self) -> &'static str {
        match self {
            Transport::GrpcPlain => "gRPC bidi, tonic defaults (Nagle on server socket)",
            Transport::GrpcNodelay => "gRPC bidi, TCP_NODELAY, default h2 windows",
            Transport::GrpcTuned => "gRPC bidi, TCP_NODELAY + tuned h2 windows (shipped)",
            Transport::Tcp => "length-prefixed TCP",
        }
    }
}

struct Args {
    steps: u32,
    warmup: u32,
    reps: u32,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        steps: 200,
        warmup: 20,
        reps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u32 = value
            .parse()
            .with_context(|| format!("{flag} {value} is not a count"))?;
        match flag.as_str() {
            "--steps" => args.steps = n,
            "--warmup" => args.warmup = n,
            "--reps" => args.reps = n,
            _ => bail!("unknown flag {flag}, expected --steps, --warmup or --reps"),
        }
    }
    ensure!(args.steps > 0 && args.reps > 0, "--steps and --reps must be at least 1");
    Ok(args)
}

/// A payload of `len` bytes of f32 values (content is irrelevant: no compression anywhere).
fn payload(len: usize, side: f32) -> Bytes {
    let mut buf = BytesMut::with_capacity(len);
    let mut i = 0u32;
    while buf.len() + 4 <= len {
        buf.put_f32_le(side + i as f32 * 1e-6);
        i += 1;
    }
    buf.freeze()
}

fn velocity_frame(step: u32, velocity: Bytes) -> OverlapFrame {
    OverlapFrame {
        job_id: JOB_ID.into(),
        plan_id: PLAN_ID,
        step,
        boundary: BOUNDARY,
        payload: Some(overlap_frame::Payload::Velocity(velocity)),
    }
}

/// Checks that a received frame is the neighbour's overlap for `step`, as a worker would.
fn check_frame(frame: &OverlapFrame, step: u32, len: usize) -> Result<()> {
    ensure!(
        frame.plan_id == PLAN_ID,
        "frame of plan {} in plan {PLAN_ID}",
        frame.plan_id
    );
    ensure!(frame.step == step, "frame of step {} at step {step}", frame.step);
    match &frame.payload {
        Some(overlap_frame::Payload::Velocity(v)) if v.len() == len => Ok(()),
        Some(overlap_frame::Payload::Velocity(v)) => {
            bail!("velocity of {} bytes, expected {len}", v.len())
        }
        other => bail!("expected a velocity payload, got {other:?}"),
    }
}

// ---- gRPC ------------------------------------------------------------------------------------

/// Endpoint B of the gRPC run: answers A's stream with its own overlap at every step.
struct BenchExchange {
    steps: u32,
    velocity: Bytes,
}

#[tonic::async_trait]
impl ExchangeService for BenchExchange {
    type OverlapStream = ReceiverStream<Result<OverlapFrame, Status>>;

    async fn overlap(
        &self,
        request: Request<Streaming<OverlapFrame>>,
    ) -> Result<Response<Self::OverlapStream>, Status> {
        let mut inbound = request.into_inner();
        // Capacity 1: B may have its next overlap queued while the current one is on the wire,
        // no more, like a worker that only produces step s + 1 after blending step s.
        let (tx, rx) = mpsc::channel(1);
        let (steps, velocity) = (self.steps, self.velocity.clone());
        tokio::spawn(async move {
            for step in 0..steps {
                if tx.send(Ok(velocity_frame(step, velocity.clone()))).await.is_err() {
                    return;
                }
                let received = match inbound.message().await {
                    Ok(Some(frame)) => check_frame(&frame, step, velocity.len()),
                    Ok(None) => Err(anyhow::anyhow!("peer closed the stream at step {step}")),
                    Err(status) => Err(status.into()),
                };
                if let Err(err) = received {
                    let _ = tx.send(Err(Status::internal(format!("{err:#}")))).await;
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn run_grpc(transport: Transport, steps: u32, len: usize) -> Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let service = ExchangeServiceServer::new(BenchExchange {
        steps,
        velocity: payload(len, 2.0),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let shutdown = async {
        let _ = shutdown_rx.await;
    };
    let uri = format!("http://{addr}");
    let (server, endpoint) = match transport {
        Transport::GrpcPlain => (
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown),
            Endpoint::from_shared(uri)?,
        ),
        Transport::GrpcNodelay => (
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(longshot_proto::incoming(listener), shutdown),
            Endpoint::from_shared(uri)?.tcp_nodelay(true),
        ),
        Transport::GrpcTuned => (
            longshot_proto::server_builder()
                .add_service(service)
                .serve_with_incoming_shutdown(longshot_proto::incoming(listener), shutdown),
            longshot_proto::endpoint(uri)?,
        ),
        Transport::Tcp => bail!("run_grpc called for the raw TCP transport"),
    };
    let server = tokio::spawn(server);

    let mut client = ExchangeServiceClient::new(endpoint.connect().await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(1);
    let mut inbound = client.overlap(ReceiverStream::new(rx)).await?.into_inner();

    let velocity = payload(len, 1.0);
    let mut rounds = Vec::with_capacity(steps as usize);
    for step in 0..steps {
        let start = Instant::now();
        tx.send(velocity_frame(step, velocity.clone()))
            .await
            .context("request stream closed")?;
        let frame = inbound
            .message()
            .await?
            .with_context(|| format!("stream ended at step {step}"))?;
        check_frame(&frame, step, len)?;
        rounds.push(start.elapsed());
    }
    drop(tx);
    drop(inbound);
    let _ = shutdown_tx.send(());
    server.await??;
    Ok(rounds)
}

// ---- length-prefixed TCP ---------------------------------------------------------------------

/// Frame header: payload length u32, plan id u64, step u32, boundary u32, kind u8 (0 = velocity,
/// 1 = latent hash), all little-endian.
const HEADER_LEN: usize = 4 + 8 + 4 + 4 + 1;

async fn write_tcp_frame(w: &mut OwnedWriteHalf, step: u32, velocity: &Bytes) -> Result<()> {
    let mut header = BytesMut::with_capacity(HEADER_LEN);
    header.put_u32_le(u32::try_from(velocity.len()).context("payload over 4 GiB")?);
    header.put_u64_le(PLAN_ID);
    header.put_u32_le(step);
    header.put_u32_le(BOUNDARY);
    header.put_u8(0);
    // One vectored write for header + payload: no copy of the payload, no tiny separate packet.
    let mut frame = bytes::Buf::chain(header.freeze(), velocity.clone());
    w.write_all_buf(&mut frame).await?;
    Ok(())
}

async fn read_tcp_frame(r: &mut OwnedReadHalf, step: u32, len: usize) -> Result<Bytes> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).await?;
    let mut h = &header[..];
    let payload_len = bytes::Buf::get_u32_le(&mut h) as usize;
    let plan_id = bytes::Buf::get_u64_le(&mut h);
    let frame_step = bytes::Buf::get_u32_le(&mut h);
    let _boundary = bytes::Buf::get_u32_le(&mut h);
    let kind = bytes::Buf::get_u8(&mut h);
    ensure!(
        payload_len <= MAX_MESSAGE_BYTES,
        "frame of {payload_len} bytes is over the {MAX_MESSAGE_BYTES} byte limit"
    );
    ensure!(
        plan_id == PLAN_ID && frame_step == step && kind == 0,
        "unexpected frame plan {plan_id} step {frame_step} kind {kind}"
    );
    ensure!(payload_len == len, "velocity of {payload_len} bytes, expected {len}");
    // read_buf into spare capacity: no zero-fill of the receive buffer.
    let mut buf = BytesMut::with_capacity(payload_len);
    let mut limited = r.take(payload_len as u64);
    while buf.len() < payload_len {
        if limited.read_buf(&mut buf).await? == 0 {
            bail!("peer closed the connection inside a frame at step {step}");
        }
    }
    Ok(buf.freeze())
}

/// One endpoint of the TCP run: send and receive at once at every step.
async fn tcp_peer(stream: TcpStream, steps: u32, velocity: Bytes) -> Result<Vec<Duration>> {
    stream.set_nodelay(true)?;
    let len = velocity.len();
    let (mut r, mut w) = stream.into_split();
    let mut rounds = Vec::with_capacity(steps as usize);
    for step in 0..steps {
        let start = Instant::now();
        let (_, received) = tokio::try_join!(
            write_tcp_frame(&mut w, step, &velocity),
            read_tcp_frame(&mut r, step, len)
        )?;
        ensure!(received.len() == len, "short frame at step {step}");
        rounds.push(start.elapsed());
    }
    Ok(rounds)
}

async fn run_tcp(steps: u32, len: usize) -> Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let b = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        tcp_peer(stream, steps, payload(len, 2.0)).await
    });
    let a = tcp_peer(TcpStream::connect(addr).await?, steps, payload(len, 1.0)).await?;
    b.await??;
    Ok(a)
}

// ---- statistics ------------------------------------------------------------------------------

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort();
    // Nearest-rank percentiles.
    let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let total: Duration = sorted.iter().sum();
    Stats {
        median: rank(0.5),
        p99: rank(0.99),
        mean: total / sorted.len() as u32,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let total_steps = args.warmup + args.steps;
    println!(
        "steps {} (+{} warm-up discarded) x reps {}, tokio worker threads {}, both directions at once",
        args.steps,
        args.warmup,
        args.reps,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!();
    println!("| payload per direction | transport | median round (ms) | p99 round (ms) | mean round (ms) | per-direction throughput (GB/s, from mean) | median of each rep (ms) |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for &(label, len) in PAYLOADS {
        let mut pooled: Vec<Vec<Duration>> = vec![Vec::new(); Transport::ALL.len()];
        let mut rep_medians: Vec<Vec<f64>> = vec![Vec::new(); Transport::ALL.len()];
        for _ in 0..args.reps {
            for (i, &transport) in Transport::ALL.iter().enumerate() {
                let rounds = match transport {
                    Transport::Tcp => run_tcp(total_steps, len).await,
                    grpc => run_grpc(grpc, total_steps, len).await,
                }
                .with_context(|| format!("{} with {label}", transport.name()))?;
                let measured = &rounds[args.warmup as usize..];
                rep_medians[i].push(ms(stats(measured).median));
                pooled[i].extend_from_slice(measured);
            }
        }
        let all: Vec<Stats> = pooled.iter().map(|s| stats(s)).collect();
        for (i, &transport) in Transport::ALL.iter().enumerate() {
            let s = &all[i];
            let reps: Vec<String> = rep_medians[i].iter().map(|m| format!("{m:.3}")).collect();
            println!(
                "| {label} ({:.2} MB) | {} | {:.3} | {:.3} | {:.3} | {:.2} | {} |",
                len as f64 / 1e6,
                transport.name(),
                ms(s.median),
                ms(s.p99),
                ms(s.mean),
                len as f64 / s.mean.as_secs_f64() / 1e9,
                reps.join(", ")
            );
        }
        let tcp = &all[Transport::ALL.len() - 1];
        for (i, name) in [(0, "tonic defaults"), (1, "nodelay"), (2, "shipped")] {
            println!(
                "|  | ratio gRPC ({name}) / TCP | {:.2}x | {:.2}x | {:.2}x |  |  |",
                ms(all[i].median) / ms(tcp.median),
                ms(all[i].p99) / ms(tcp.p99),
                ms(all[i].mean) / ms(tcp.mean)
            );
        }
    }
    Ok(())
}
