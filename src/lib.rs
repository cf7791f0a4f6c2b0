//! sociogate: an interoperability gateway for sociotherapy care.
//!
//! The pipeline is the architecture: intake -> decode -> map -> check -> store -> forward.
//! Modules are listed in that order; [`pipeline`] is the only place that sequences them.

pub mod model;

pub mod check;
pub mod decode;
pub mod encode;
pub mod forward;
pub mod intake;
pub mod map;
pub mod store;

pub mod app;
pub mod bench;
/// Billing of delivered sociotherapy to statutory insurers (§ 302 SGB V): pure core with
/// co-payment, contract tariffs and the SLGA/SLLA interchange writer and parser. Not part of
/// the referral pipeline; wired in separately.
pub mod billing;
pub mod config;
pub mod mappings;
pub mod outcome;
pub mod pipeline;
pub mod telemetry;
