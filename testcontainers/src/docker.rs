//! Apache Kafka in Docker through `testcontainers-modules` (feature `docker`).
//! Needs a Docker engine; on machines without one, use `mock`, `tansu` or `external`.

use testcontainers::ContainerAsync;
use testcontainers::runners::AsyncRunner;
use testcontainers_modules::kafka::apache::Kafka;

use crate::TestkitError;

pub(crate) struct DockerKafka {
    _container: ContainerAsync<Kafka>,
    pub(crate) bootstrap: String,
}

impl DockerKafka {
    pub(crate) async fn start() -> Result<Self, TestkitError> {
        let container = Kafka::default().start().await.map_err(|e| {
            TestkitError::Other(format!(
                "starting Kafka in Docker (is a Docker engine running?): {e}"
            ))
        })?;
        let port = container
            .get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT)
            .await
            .map_err(|e| TestkitError::Other(format!("reading the Kafka container's port: {e}")))?;
        Ok(DockerKafka {
            _container: container,
            bootstrap: format!("127.0.0.1:{port}"),
        })
    }
}
