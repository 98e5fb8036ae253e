//! A tiny tonic server on 127.0.0.1:0 serving what every Longshot binary serves next to its own
//! services (health and reflection), queried by tonic clients over real loopback TCP.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// Serves health + reflection on an ephemeral port; dropping the returned sender stops it.
async fn start_server() -> Result<(Channel, oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (_reporter, health) = longshot_proto::health_service();
    // The shipped builder and listener wrapper, so the tuned HTTP/2 settings are exercised too.
    let server = longshot_proto::server_builder()
        .add_service(health)
        .add_service(longshot_proto::reflection_service()?)
        .add_service(longshot_proto::reflection_service_v1alpha()?)
        .serve_with_incoming_shutdown(longshot_proto::incoming(listener), async {
            let _ = shutdown_rx.await;
        });
    let handle = tokio::spawn(async move {
        server.await.expect("server runs until shutdown");
    });
    let channel: Channel = longshot_proto::endpoint(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .context("connecting to the test server")?;
    Ok((channel, shutdown_tx, handle))
}

#[tokio::test]
async fn health_check_answers_serving() -> Result<()> {
    let (channel, shutdown, handle) = start_server().await?;
    let mut health = HealthClient::new(channel);

    let overall = health
        .check(HealthCheckRequest { service: String::new() })
        .await?
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);

    // A service nobody registered is NOT_FOUND, not silently SERVING.
    let unknown = health
        .check(HealthCheckRequest {
            service: "longshot.v1.Nope".into(),
        })
        .await;
    assert_eq!(unknown.expect_err("unknown service").code(), tonic::Code::NotFound);

    drop(shutdown);
    tokio::time::timeout(Duration::from_secs(5), handle).await??;
    Ok(())
}

#[tokio::test]
async fn reflection_lists_longshot_services() -> Result<()> {
    let (channel, shutdown, handle) = start_server().await?;
    let mut reflection = ServerReflectionClient::new(channel);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.next().await.context("reflection answered nothing")??;
    let names: Vec<String> = match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => anyhow::bail!("unexpected reflection answer {other:?}"),
    };
    for expected in [
        "longshot.v1.JobService",
        "longshot.v1.WorkerService",
        "longshot.v1.RegistryService",
        "longshot.v1.ExchangeService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    drop(shutdown);
    tokio::time::timeout(Duration::from_secs(5), handle).await??;
    Ok(())
}
