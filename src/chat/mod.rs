//! The WhatsApp shopping assistant (issue 6). Built so far: parsing the
//! fields of Twilio's inbound WhatsApp webhook (`inbound.rs`). The signed
//! webhook, the chat queue's consumer, the conversation store and the
//! answering follow; the queue adapter lives in `platform::queue`.

pub mod inbound;
