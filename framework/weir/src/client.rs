//! What the consumer's and the producer's librdkafka contexts share: logging
//! through `tracing`, and telling errors that retrying cannot fix (wrong
//! credentials, an untrusted broker certificate) from transient ones.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Routes a librdkafka log line to `tracing` (target `librdkafka`).
pub(crate) fn log_to_tracing(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", fac, "{log_message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{log_message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
    }
}

/// Consumer errors that stop the consumer: retrying will not fix them.
pub(crate) fn is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            // Static membership: another member holds this instance id.
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::UnreleasedInstanceId
    )
}

/// A poll error that ends the consumer: a fatal code, or any code librdkafka
/// raised as its fatal error (`KafkaError::MessageConsumptionFatal`: the
/// client is unusable whatever the code says, e.g. a static member fenced
/// by a duplicate instance id under the consumer protocol).
pub(crate) fn fatal_poll_error(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    match e {
        KafkaError::MessageConsumptionFatal(code) => Some(*code),
        _ => e.rdkafka_error_code().filter(|c| is_fatal(*c)),
    }
}

/// A message for a fatal error that says what to fix.
pub(crate) fn describe_fatal(code: RDKafkaErrorCode, e: &KafkaError) -> String {
    match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            format!(
                "authentication failed: check sasl.username / sasl.password / sasl.mechanism ({e})"
            )
        }
        RDKafkaErrorCode::UnsupportedSASLMechanism => {
            format!("the broker does not offer this sasl.mechanism ({e})")
        }
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed => {
            format!("not authorized: grant this principal access to the topic and group ({e})")
        }
        RDKafkaErrorCode::FencedInstanceId | RDKafkaErrorCode::UnreleasedInstanceId => {
            format!(
                "another member of the group uses this member's group_instance_id: give every member its own (with group_instance_id_from_hostname, each pod's name) ({e})"
            )
        }
        _ => e.to_string(),
    }
}

/// librdkafka's reasons for a certificate the client rejects (as opposed to a
/// connection reset mid-handshake, which is transient).
fn untrusted_certificate(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "certificate verify failed",
        "unable to get local issuer",
        "self-signed certificate",
        "self signed certificate",
        "certificate has expired",
        "hostname mismatch",
        "ip address mismatch",
    ]
    .iter()
    .any(|m| r.contains(m))
}

/// A client-level error (the context's `error` callback) that the producer
/// reports to its senders instead of letting their records wait out
/// `message.timeout.ms`: the connection itself is refused (credentials, SASL
/// mechanism, broker certificate). Per-topic errors (authorization on one
/// topic) arrive with each record's delivery report and are not in here; a
/// librdkafka fatal error fails the queued records itself.
pub(crate) fn refused_connection(error: &KafkaError, reason: &str) -> Option<String> {
    match error.rdkafka_error_code()? {
        code @ (RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::UnsupportedSASLMechanism) => {
            Some(format!("{}: {reason}", describe_fatal(code, error)))
        }
        RDKafkaErrorCode::SSL if untrusted_certificate(reason) => Some(format!(
            "TLS: the broker's certificate is not trusted: set ssl.ca.location to the CA that signed it, or check the broker address ({reason})"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_told_apart_from_transient_errors() {
        let auth = KafkaError::ClientCreation(String::new());
        assert!(
            refused_connection(&auth, "x").is_none(),
            "no code, not refused"
        );
        let sasl = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let msg = refused_connection(&sasl, "SASL SCRAM-SHA-256 mechanism handshake failed")
            .expect("authentication refuses");
        assert!(msg.contains("check sasl.username"), "{msg}");
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        assert!(refused_connection(&tls, "certificate verify failed: self-signed").is_some());
        assert!(
            refused_connection(&tls, "connection reset by peer").is_none(),
            "a reset mid-handshake is transient"
        );
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(refused_connection(&transport, "Connection refused").is_none());
        let topic = KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(
            refused_connection(&topic, "x").is_none(),
            "one topic's authorization is reported per record"
        );
    }
}
