//! Encode: turns outbound FHIR (JSON values) into another wire format a subscriber asked for.
//!
//! Pure: no I/O. The inverse of `decode` for formats the gateway also emits.

pub mod fhir_xml;
