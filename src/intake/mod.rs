//! Intake: where messages come from (files, AMQP, HTTP). Intake knows transports, not formats,
//! and acknowledges a message only after the pipeline stored it.

pub mod amqp;
pub mod file;
pub mod http;
