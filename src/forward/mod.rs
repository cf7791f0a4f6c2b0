//! Forward: decides what each verdict sends where, and relays the outbox to RabbitMQ.
//!
//! [`plan`] is pure: it turns one processed message into outbox rows, written in the same
//! transaction as the verdict. [`relay`] publishes those rows with publisher confirms;
//! [`retention`] deletes their bodies once they are old.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::check::Verdict;
use crate::config::AmqpConfig;
use crate::decode::Format;
use crate::mappings::{Mappings, NonDisclosure};
use crate::model::{IdentifierKind, Referral};
use crate::pipeline::Processed;
use crate::store::NewOutbound;

pub mod canonical;
pub(crate) mod datatypes;
pub mod fhir;
pub mod relay;
pub mod retention;

/// Content type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json";
/// Content type of FHIR XML.
pub const FHIR_XML: &str = "application/fhir+xml";

/// What the sender told the transport about the message.
#[derive(Debug, Clone, Default)]
pub struct Origin<'a> {
    /// Gateway id.
    pub gateway_id: &'a str,
    /// Inbound AMQP `message-id`.
    pub message_id: Option<&'a str>,
    /// Inbound AMQP `correlation-id`.
    pub correlation_id: Option<&'a str>,
    /// Inbound AMQP `reply-to`.
    pub reply_to: Option<&'a str>,
    /// Inbound content type.
    pub content_type: Option<&'a str>,
    /// The raw payload.
    pub body: &'a [u8],
}

/// Outbox rows for one processed message.
///
/// `referral_json` is the referral as the caller has already written it with `serde_json`
/// (`serve` stores that text with the message). The canonical output reuses it unless
/// non-disclosure withheld something from it; `None`: the referral is written here.
pub fn plan(
    origin: &Origin<'_>,
    processed: &Processed,
    outcome: &Value,
    referral_json: Option<&str>,
    cfg: &AmqpConfig,
    mappings: &Mappings,
) -> Vec<NewOutbound> {
    let mut out = Vec::new();
    let codes: Vec<&str> = processed.issues.iter().map(|i| i.code.as_str()).collect();
    let mut headers = BTreeMap::new();
    headers.insert("x-sociogate-gateway-id", origin.gateway_id.to_owned());
    headers.insert("x-sociogate-verdict", processed.verdict.as_str().to_owned());
    if let Some(id) = origin.message_id {
        headers.insert("x-sociogate-inbound-message-id", id.to_owned());
    }
    if let Some(j) = processed.referral.as_ref().and_then(|r| r.jurisdiction) {
        headers.insert("x-sociogate-jurisdiction", j.code().to_owned());
    }
    let correlation = origin
        .correlation_id
        .or(origin.message_id)
        .map(str::to_owned);
    let headers_json = |extra: &[(&str, String)]| -> String {
        let mut h: BTreeMap<&str, String> = headers.clone();
        for (k, v) in extra {
            h.insert(k, v.clone());
        }
        serde_json::to_string(&h).unwrap_or_else(|_| "{}".to_owned())
    };

    match (processed.verdict, &processed.referral) {
        (Verdict::Accepted, Some(referral)) => {
            // Non-disclosure (e.g. turvakielto): no recipient gets address or contact details.
            let non_disclosure = referral.patient.as_ref().is_some_and(|p| p.non_disclosure);
            let redaction = non_disclosure.then(|| mappings.non_disclosure());
            let redacted = redacted_referral(referral, non_disclosure);
            let referral = redacted.as_ref();
            // FHIR XML is forwarded in its FHIR JSON shape (before the typed parse, which
            // drops what the model does not know); CDA has no FHIR of its own.
            let converted = processed.fhir_json.as_deref().and_then(fhir::written_shape);
            let from_canonical = |content_type: &str| {
                canonical::canonical_entries(
                    origin.gateway_id,
                    referral,
                    origin.body,
                    content_type,
                    non_disclosure,
                )
            };
            let entries = match (processed.format, &converted) {
                (Some(Format::Cda), _) => from_canonical(canonical::CDA_CONTENT_TYPE),
                // Decode keeps the JSON shape of every FHIR XML payload; should it be missing
                // (a `Processed` built elsewhere), the provider still gets the referral, built
                // from the canonical model.
                (Some(Format::FhirXml), None) => from_canonical(FHIR_XML),
                (_, Some((converted, spans))) => fhir::forwarded_entries(
                    origin.gateway_id,
                    converted,
                    redaction,
                    spans.as_deref(),
                ),
                _ => fhir::forwarded_entries(
                    origin.gateway_id,
                    origin.body,
                    redaction,
                    processed.entries.as_deref(),
                ),
            };
            let product = referral
                .jurisdiction
                .and_then(|j| mappings.claim_product(j));
            let provider_key = provider_routing_key(referral);
            out.push(NewOutbound {
                kind: "provider".to_owned(),
                exchange: cfg.referrals_exchange.clone(),
                routing_key: format!("{provider_key}.fhir"),
                content_type: FHIR_JSON.to_owned(),
                correlation_id: correlation.clone(),
                headers: headers_json(&[("x-sociogate-event", "referral-validated".to_owned())]),
                body: fhir::provider_bundle(origin.gateway_id, &entries).into_bytes(),
            });
            if cfg.publish_canonical {
                out.push(NewOutbound {
                    kind: "provider-canonical".to_owned(),
                    exchange: cfg.referrals_exchange.clone(),
                    routing_key: format!("{provider_key}.canonical"),
                    content_type: "application/json".to_owned(),
                    correlation_id: correlation.clone(),
                    headers: headers_json(&[(
                        "x-sociogate-event",
                        "referral-validated".to_owned(),
                    )]),
                    body: match (&redacted, referral_json) {
                        // The same referral, so the same text: written once (~4 % of the
                        // pipeline for a plain German referral).
                        (std::borrow::Cow::Borrowed(_), Some(json)) => json.as_bytes().to_vec(),
                        _ => serde_json::to_vec(referral).unwrap_or_default(),
                    },
                });
            }
            out.push(NewOutbound {
                kind: "insurer".to_owned(),
                exchange: cfg.insurers_exchange.clone(),
                routing_key: payer_routing_key(referral),
                content_type: FHIR_JSON.to_owned(),
                correlation_id: correlation.clone(),
                headers: headers_json(&[(
                    "x-sociogate-event",
                    "preauthorization-request".to_owned(),
                )]),
                body: fhir::preauthorization_bundle(origin.gateway_id, referral, &entries, product)
                    .into_bytes(),
            });
        }
        (Verdict::Accepted | Verdict::Rejected, referral) => {
            let jurisdiction = referral
                .as_ref()
                .and_then(|r| r.jurisdiction)
                .map_or("unknown", |j| j.code());
            out.push(NewOutbound {
                kind: "rejected".to_owned(),
                exchange: cfg.rejected_exchange.clone(),
                routing_key: format!("{jurisdiction}.rejected"),
                content_type: FHIR_JSON.to_owned(),
                correlation_id: correlation.clone(),
                headers: headers_json(&[("x-sociogate-rules", codes.join(","))]),
                body: outcome.to_string().into_bytes(),
            });
        }
        (Verdict::Unreadable, _) => {
            let reason = processed
                .issues
                .first()
                .map(|i| format!("{}: {}", i.code, i.detail.as_deref().unwrap_or("")))
                .unwrap_or_default();
            out.push(NewOutbound {
                kind: "dead-letter".to_owned(),
                exchange: String::new(),
                routing_key: cfg.dead_letter_queue.clone(),
                content_type: origin
                    .content_type
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                correlation_id: correlation.clone(),
                headers: headers_json(&[
                    ("x-sociogate-rules", codes.join(",")),
                    ("x-sociogate-reason", truncate(&reason, 512)),
                ]),
                body: origin.body.to_vec(),
            });
        }
    }
    if let Some(reply_to) = origin.reply_to.filter(|r| !r.is_empty()) {
        out.push(NewOutbound {
            kind: "reply".to_owned(),
            exchange: String::new(),
            routing_key: reply_to.to_owned(),
            content_type: FHIR_JSON.to_owned(),
            correlation_id: correlation,
            headers: headers_json(&[]),
            body: fhir::response_bundle(
                origin.gateway_id,
                origin.message_id,
                processed.verdict,
                outcome,
            )
            .to_string()
            .into_bytes(),
        });
    }
    apply_xml_preferences(&mut out, cfg);
    out
}

/// The referral as recipients may see it: without the patient's address under non-disclosure.
/// Borrowed unless there is something to withhold (a clone costs many small allocations).
fn redacted_referral(referral: &Referral, non_disclosure: bool) -> std::borrow::Cow<'_, Referral> {
    let has_address = referral
        .patient
        .as_ref()
        .is_some_and(|p| p.address.is_some());
    if !(non_disclosure && has_address) {
        return std::borrow::Cow::Borrowed(referral);
    }
    let mut referral = referral.clone();
    if let Some(patient) = referral.patient.as_mut() {
        patient.address = None;
    }
    std::borrow::Cow::Owned(referral)
}

/// Converts the FHIR JSON outputs for subscribers that asked for FHIR XML.
fn apply_xml_preferences(out: &mut [NewOutbound], cfg: &AmqpConfig) {
    for o in out.iter_mut() {
        let wants_xml = o.content_type == FHIR_JSON
            && cfg
                .xml_subscribers
                .iter()
                .any(|p| o.routing_key.starts_with(p.as_str()));
        if !wants_xml {
            continue;
        }
        let xml = serde_json::from_slice::<Value>(&o.body)
            .ok()
            .and_then(|v| crate::encode::fhir_xml::to_fhir_xml(&v).ok());
        // A Bundle the encoder cannot write stays JSON (and says so by its content type).
        if let Some(xml) = xml {
            o.body = xml.into_bytes();
            o.content_type = FHIR_XML.to_owned();
        }
    }
}

/// Removes what a non-disclosure label withholds from every resource of the listed types,
/// wherever it sits (Bundle entries, contained resources, nested Bundles).
pub fn redact(value: &mut Value, rules: &NonDisclosure) {
    match value {
        Value::Object(obj) => {
            let listed = obj
                .get("resourceType")
                .and_then(Value::as_str)
                .is_some_and(|rt| rules.resource_types.iter().any(|t| t == rt));
            if listed {
                for element in &rules.elements {
                    obj.remove(element);
                }
                if let Some(Value::Array(exts)) = obj.get_mut("extension") {
                    exts.retain(|e| {
                        !e.get("url")
                            .and_then(Value::as_str)
                            .is_some_and(|u| rules.extension_urls.iter().any(|x| x == u))
                    });
                }
                // The narrative repeats the withheld data in prose.
                obj.remove("text");
            }
            for v in obj.values_mut() {
                redact(v, rules);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, rules)),
        _ => {}
    }
}

/// An outbound message that a transient failure made impossible to process: the raw bytes go
/// to the dead-letter queue with the reason.
pub fn dead_letter(origin: &Origin<'_>, reason: &str, cfg: &AmqpConfig) -> NewOutbound {
    let mut headers = BTreeMap::new();
    headers.insert("x-sociogate-gateway-id", origin.gateway_id.to_owned());
    headers.insert("x-sociogate-reason", truncate(reason, 512));
    if let Some(id) = origin.message_id {
        headers.insert("x-sociogate-inbound-message-id", id.to_owned());
    }
    NewOutbound {
        kind: "dead-letter".to_owned(),
        exchange: String::new(),
        routing_key: cfg.dead_letter_queue.clone(),
        content_type: origin
            .content_type
            .unwrap_or("application/octet-stream")
            .to_owned(),
        correlation_id: origin
            .correlation_id
            .or(origin.message_id)
            .map(str::to_owned),
        headers: serde_json::to_string(&headers).unwrap_or_else(|_| "{}".to_owned()),
        body: origin.body.to_vec(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Routing-key-safe form of an identifier value (topic keys split on dots).
fn key_part(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `provider.<id>` for a chosen provider (IK preferred), else
/// `unassigned.<jurisdiction>.<region>` with the first digit of the patient's postal code.
pub fn provider_routing_key(referral: &Referral) -> String {
    if let Some(provider) = &referral.requested_provider {
        let id = provider
            .ids
            .iter()
            .find(|i| i.kind == IdentifierKind::Iknr)
            .or_else(|| provider.ids.first());
        if let Some(id) = id {
            return format!("provider.{}", key_part(&id.value));
        }
    }
    let jurisdiction = referral.jurisdiction.map_or("unknown", |j| j.code());
    // Address data may be withheld (non-disclosure); the region then stays unknown.
    let region = referral
        .patient
        .as_ref()
        .filter(|p| !p.non_disclosure)
        .and_then(|p| p.address.as_ref())
        .and_then(|a| a.postal_code.as_deref())
        .and_then(|pc| pc.chars().next())
        .filter(char::is_ascii_digit)
        .map_or_else(|| "x".to_owned(), |c| c.to_string());
    format!("unassigned.{jurisdiction}.{region}")
}

/// `payer.<id>` (the IK for Germany).
pub fn payer_routing_key(referral: &Referral) -> String {
    let id = referral.coverage.as_ref().and_then(|c| {
        c.payer_ids
            .iter()
            .find(|i| matches!(i.kind, IdentifierKind::Iknr | IdentifierKind::Uzovi))
            .or_else(|| c.payer_ids.first())
    });
    match id {
        Some(id) => format!("payer.{}", key_part(&id.value)),
        None => "payer.unknown".to_owned(),
    }
}

/// The `message-id` of an outbound message: stable across relays, so a consumer can drop a
/// second delivery of the same output.
pub fn outbound_message_id(gateway_id: &str, kind: &str) -> String {
    format!("sociogate:{gateway_id}:{kind}")
}
