//! The embedded transport: nothing leaves the machine; the message row is
//! the record (the admin and `kedai messages list` show it).

use super::{Accepted, Transport, TransportError, WireMessage};

#[derive(Debug, Default)]
pub struct RecordedTransport;

#[async_trait::async_trait]
impl Transport for RecordedTransport {
    fn name(&self) -> &'static str {
        "recorded"
    }

    fn needs_approved_templates(&self) -> bool {
        false
    }

    async fn send(&self, _message: &WireMessage) -> Result<Accepted, TransportError> {
        Ok(Accepted {
            provider_sid: format!("REC{}", uuid::Uuid::now_v7().simple()),
            status: "recorded".into(),
        })
    }
}
