//! Traces end to end: an OTLP trace receiver (the collector's gRPC `TraceService`) on loopback
//! collects the spans of the CLI, a coordinator and two workers, all real processes, while one
//! job renders; the job's span tree must be one trace across the four processes.

mod harness;

use harness::{Cluster, ClusterOptions, BIN};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attr(&resource, "service.name").unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on its own runtime; returns its endpoint.
fn start_receiver(rt: &tokio::runtime::Runtime, receiver: Receiver) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the OTLP receiver");
    let addr = listener.local_addr().expect("receiver address");
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// The job's spans, once every part of the tree the test checks has arrived.
struct Tree<'a> {
    all: &'a [Received],
}

impl<'a> Tree<'a> {
    fn named(&self, service: &str, name: &str) -> Vec<&'a Received> {
        self.all
            .iter()
            .filter(|r| r.service == service && r.span.name == name)
            .collect()
    }

    fn by_id(&self, id: &[u8]) -> Option<&'a Received> {
        self.all.iter().find(|r| r.span.span_id == id)
    }

    fn parent(&self, child: &Received) -> Option<&'a Received> {
        self.by_id(&child.span.parent_span_id)
    }

    fn children(&self, parent: &Received, name: &str) -> Vec<&'a Received> {
        self.all
            .iter()
            .filter(|r| r.span.parent_span_id == parent.span.span_id && r.span.name == name)
            .collect()
    }
}

fn describe(all: &[Received]) -> String {
    all.iter()
        .map(|r| {
            format!(
                "{} {} trace={} id={} parent={} attrs={:?}",
                r.service,
                r.span.name,
                hex(&r.span.trace_id),
                hex(&r.span.span_id),
                hex(&r.span.parent_span_id),
                r.span
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, attr(&r.span.attributes, &kv.key).unwrap_or_default()))
                    .collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn one_job_is_one_trace_across_cli_coordinator_and_workers() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = Receiver::default();
    let endpoint = start_receiver(&rt, receiver.clone());
    let env: Vec<(String, String)> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Exported within 200 ms of ending, so the test need not stop the processes to see them.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        // 4 steps, every 2nd traced: steps 0 and 2.
        ("LONGSHOT_TRACE_STEPS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = Cluster::start_with(
        2,
        30.0,
        ClusterOptions {
            env: env.clone(),
            ..Default::default()
        },
    );
    let out = Command::new(BIN)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["--coordinator", &c.endpoint])
        .args(c.client_args())
        .args(["submit", "--prompt", "x", "--frames", "129"])
        .args(["--width", "64", "--height", "64", "--steps", "4", "--wait"])
        .output()
        .expect("run longshot submit");
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    let job = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        job.starts_with("job-"),
        "no job id in {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(c.status(&job)["state"], "done");

    // Wait for the whole tree: the job span closes last on the coordinator, the CLI's span is
    // flushed when it exits, the workers' as their shards end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.0.lock().unwrap().clone();
        let count = |service: &str, name: &str| {
            spans
                .iter()
                .filter(|r| r.service == service && r.span.name == name)
                .count()
        };
        let complete = count("longshot-cli", "submit") >= 1
            && count("longshot-coordinator", "job") >= 1
            && count("longshot-coordinator", "plan") >= 1
            && count("longshot-worker", "shard") >= 2
            && count("longshot-worker", "decode") >= 2
            && count("longshot-worker", "encode_text") >= 1
            && count("longshot-worker", "step") >= 4;
        if complete {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the job's spans did not all arrive within 30 s; received:\n{}\n{}",
            describe(&spans),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let t = Tree { all: &spans };
    let dump = describe(&spans);

    // The CLI's submit span is the root; its trace id is the job's.
    let submit = t.named("longshot-cli", "submit");
    assert_eq!(submit.len(), 1, "{dump}");
    let submit = submit[0];
    assert_eq!(submit.attr("job_id").as_deref(), Some(job.as_str()), "{dump}");
    assert!(submit.span.parent_span_id.is_empty(), "submit is the root: {dump}");
    let trace = submit.span.trace_id.clone();
    let in_trace = |r: &Received| r.span.trace_id == trace;

    // Coordinator: SubmitJob (remote parent: the CLI's span) → job → plan.
    let job_span = t.named("longshot-coordinator", "job");
    assert_eq!(job_span.len(), 1, "{dump}");
    let job_span = job_span[0];
    assert!(in_trace(job_span), "the job span continues the CLI's trace: {dump}");
    assert_eq!(job_span.attr("job_id").as_deref(), Some(job.as_str()), "{dump}");
    let rpc = t.parent(job_span).expect("the job span's parent was exported");
    assert_eq!(
        (rpc.service.as_str(), rpc.span.name.as_str()),
        ("longshot-coordinator", "longshot.v1.JobService/SubmitJob"),
        "{dump}"
    );
    assert_eq!(
        rpc.span.parent_span_id, submit.span.span_id,
        "CLI → coordinator link: {dump}"
    );
    let plans = t.children(job_span, "plan");
    assert_eq!(plans.len(), 1, "{dump}");
    let plan = plans[0];
    assert_eq!(plan.attr("workers").as_deref(), Some("2"), "{dump}");

    // Workers: RunShard (remote parent: the coordinator's plan span) → shard → step → exchange,
    // and shard → decode.
    let shards = t.named("longshot-worker", "shard");
    assert_eq!(shards.len(), 2, "{dump}");
    let mut workers: Vec<String> = shards.iter().filter_map(|s| s.attr("worker")).collect();
    workers.sort();
    assert_eq!(workers, ["w0", "w1"], "{dump}");
    let mut exchanges = 0;
    for shard in &shards {
        assert!(in_trace(shard), "{dump}");
        assert_eq!(shard.attr("job_id").as_deref(), Some(job.as_str()), "{dump}");
        let rpc = t.parent(shard).expect("the shard span's parent was exported");
        assert_eq!(
            (rpc.service.as_str(), rpc.span.name.as_str()),
            ("longshot-worker", "longshot.v1.WorkerService/RunShard"),
            "{dump}"
        );
        assert_eq!(
            rpc.span.parent_span_id, plan.span.span_id,
            "coordinator → worker link: {dump}"
        );
        let mut steps: Vec<String> = t
            .children(shard, "step")
            .iter()
            .filter_map(|s| s.attr("step"))
            .collect();
        steps.sort();
        assert_eq!(steps, ["0", "2"], "every 2nd step of 4 is sampled: {dump}");
        for step in t.children(shard, "step") {
            exchanges += t.children(step, "exchange").len();
        }
        assert_eq!(t.children(shard, "decode").len(), 1, "{dump}");
    }
    assert!(
        exchanges > 0,
        "the neighbours' overlap waits are traced in sampled steps: {dump}"
    );

    // The prompts are encoded once, on the gang's first worker, under the plan.
    let encode = t.named("longshot-worker", "encode_text");
    assert_eq!(encode.len(), 1, "{dump}");
    assert!(in_trace(encode[0]), "{dump}");
    let rpc = t.parent(encode[0]).expect("the encode span's parent was exported");
    assert_eq!(rpc.span.name, "longshot.v1.WorkerService/EncodeText", "{dump}");
    assert_eq!(rpc.span.parent_span_id, plan.span.span_id, "{dump}");
    drop(c);
}
