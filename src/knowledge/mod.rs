//! The knowledge base that grounds the WhatsApp assistant's answers.
//!
//! Built so far: parsing documents into structured blocks and
//! structure-aware chunking (`chunk.rs`); the document store lives in
//! `platform::objects`. Ingestion, embeddings, the vector index and hybrid
//! retrieval follow (issue 5).

pub mod chunk;
