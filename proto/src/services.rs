//! The standard gRPC services every Longshot binary serves next to its own: health checking
//! (`grpc.health.v1.Health`) and server reflection (so `grpcurl` works without the .proto files).

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::{health_reporter, HealthReporter};
use tonic_reflection::server::{v1, v1alpha, Builder, Error as ReflectionError};

use crate::FILE_DESCRIPTOR_SET;

/// The health service and its reporter.
///
/// The overall status (service name `""`) starts as `SERVING`; keep the reporter to mark
/// individual services, for example `reporter.set_service_status("longshot.v1.JobService",
/// ServingStatus::NotServing)` while a coordinator has no lease.
///
/// ```no_run
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let (_reporter, health) = longshot_proto::health_service();
/// longshot_proto::server_builder()
///     .add_service(health)
///     .add_service(longshot_proto::reflection_service()?)
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
pub fn health_service() -> (HealthReporter, HealthServer<impl Health>) {
    health_reporter()
}

/// gRPC server reflection (v1) describing the `longshot.v1` services and the health service.
///
/// Fails only if the descriptor sets compiled into this crate do not decode, which the tests
/// rule out; it returns a `Result` rather than panicking so binaries can use `?`.
pub fn reflection_service() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, ReflectionError> {
    reflection_builder().build_v1()
}

/// The same reflection service in its pre-standard `v1alpha` form, for older `grpcurl` and
/// `grpc_cli` that only speak that one.
pub fn reflection_service_v1alpha(
) -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, ReflectionError> {
    reflection_builder().build_v1alpha()
}

fn reflection_builder() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
