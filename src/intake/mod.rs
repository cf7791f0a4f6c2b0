//! Intake: where messages come from. Intake knows transports, not formats.

pub mod file;
