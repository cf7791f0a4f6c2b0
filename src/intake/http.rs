//! HTTP intake and operations endpoints (axum).
//!
//! - `POST /fhir/$process-message`: FHIR messaging; answers with a response message Bundle whose
//!   `MessageHeader.response` is `ok` or `fatal-error`, plus the OperationOutcome.
//! - `POST /referrals`: the verdict as JSON.
//! - `GET /health`, `GET /ready`, `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;

use crate::check::Verdict;
use crate::forward::fhir::response_bundle;
use crate::model::Jurisdiction;
use crate::pipeline::gateway::{Envelope, Gateway, Handled};
use crate::telemetry;

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct HttpState {
    /// The pipeline.
    pub gateway: Gateway,
    /// Largest accepted body.
    pub max_bytes: usize,
    /// Whether the broker is connected (or not configured at all).
    pub broker_ok: Arc<AtomicBool>,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// Bearer token of `POST /billing/{period}/close`; empty disables the endpoint.
    pub close_token: Arc<str>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/fhir/$process-message", post(process_message))
        .route(
            "/fhir/{jurisdiction}/$process-message",
            post(process_message_for),
        )
        .route("/referrals", post(referrals))
        .route("/referrals/{jurisdiction}", post(referrals_for))
        .route("/billing/{period}/close", post(close_billing_period))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
        // The last line against a defect outside the referral pipeline's own guard: a 500 with
        // an OperationOutcome instead of a dropped connection; the sender retries.
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            outcome_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "fatal",
                "The gateway failed while handling the message (a defect); nothing was stored, try again later",
            )
        }))
}

const FHIR_JSON: &str = "application/fhir+json";

fn outcome_response(status: StatusCode, code: &str, severity: &str, text: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": severity, "code": code, "details": { "text": text } }]
    });
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

/// Closes a billing period (`YYYY-MM`): an operator's or scheduler's call. Answers with the
/// run's figures; the Claims and § 302 files go out through the outbox.
/// Compares without stopping at the first difference (the token is a secret).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn close_billing_period(
    State(state): State<HttpState>,
    Path(period): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.close_token.is_empty() {
        return outcome_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            "error",
            "closing billing periods over HTTP is disabled: set billing.close_token",
        );
    }
    let given = header_str(&headers, "authorization").unwrap_or_default();
    let token = given.strip_prefix("Bearer ").unwrap_or("");
    if !same_secret(token.as_bytes(), state.close_token.as_bytes()) {
        return outcome_response(
            StatusCode::UNAUTHORIZED,
            "security",
            "error",
            "a valid bearer token is required",
        );
    }
    let parsed = period.split_once('-').and_then(|(y, m)| {
        let year: i32 = y.parse().ok().filter(|y| (2000..=2200).contains(y))?;
        let month: u8 = m.parse().ok()?;
        Some(crate::billing::BillingPeriod {
            year,
            month: time::Month::try_from(month).ok()?,
        })
    });
    let Some(period) = parsed else {
        return outcome_response(
            StatusCode::BAD_REQUEST,
            "value",
            "error",
            "the period must be YYYY-MM",
        );
    };
    match state
        .gateway
        .close_period(period, time::OffsetDateTime::now_utc())
        .await
    {
        Ok(run) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "run_id": run.run_id,
                "claims": run.claims,
                "interchanges": run.interchanges.len(),
                "sessions": run.sessions,
                "skipped": run.skipped,
            })
            .to_string(),
        )
            .into_response(),
        Err(crate::pipeline::billing::CloseError::NotConfigured(why)) => outcome_response(
            StatusCode::CONFLICT,
            "not-supported",
            "error",
            &format!("billing is not configured: {why}"),
        ),
        Err(crate::pipeline::billing::CloseError::Store(e)) => {
            tracing::error!(error = %e, "Closing a billing period failed");
            outcome_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "error",
                "the store is not available; nothing was billed, try again",
            )
        }
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

/// Reads the body within the limit and builds the envelope, or answers 413/415.
async fn envelope(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Envelope, Response> {
    let content_type = header_str(headers, "content-type");
    let acceptable = content_type.as_deref().is_none_or(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.contains("json") || ct.contains("xml")
    });
    if !acceptable {
        return Err(outcome_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "error",
            "send application/fhir+json",
        ));
    }
    let bytes = match axum::body::to_bytes(body, state.max_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Err(outcome_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                "fatal",
                &format!("the body exceeds {} bytes", state.max_bytes),
            ));
        }
    };
    telemetry::received("http");
    Ok(Envelope {
        channel: "http",
        body: bytes,
        content_type,
        message_id: header_str(headers, "idempotency-key")
            .or_else(|| header_str(headers, "x-message-id")),
        correlation_id: header_str(headers, "x-correlation-id"),
        reply_to: None,
        language: header_str(headers, "accept-language"),
        headers: json!({}),
        jurisdiction: None,
    })
}

fn unavailable() -> Response {
    outcome_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "transient",
        "error",
        "the gateway cannot store the message right now; retry later with the same Idempotency-Key",
    )
}

fn verdict_of(status: &str) -> Verdict {
    match status {
        "accepted" => Verdict::Accepted,
        "rejected" => Verdict::Rejected,
        _ => Verdict::Unreadable,
    }
}

/// The jurisdiction named by a route (`de`, `nl`, `fi`).
fn route_jurisdiction(segment: &str) -> Option<Jurisdiction> {
    Jurisdiction::from_code(&segment.to_ascii_lowercase())
}

fn unknown_jurisdiction() -> Response {
    outcome_response(
        StatusCode::NOT_FOUND,
        "not-found",
        "error",
        "unknown jurisdiction; use de, nl or fi",
    )
}

async fn process_message(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    process(state, headers, body, None, true).await
}

async fn referrals(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    process(state, headers, body, None, false).await
}

async fn process_message_for(
    State(state): State<HttpState>,
    Path(jurisdiction): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route_jurisdiction(&jurisdiction) {
        Some(j) => process(state, headers, body, Some(j), true).await,
        None => unknown_jurisdiction(),
    }
}

async fn referrals_for(
    State(state): State<HttpState>,
    Path(jurisdiction): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route_jurisdiction(&jurisdiction) {
        Some(j) => process(state, headers, body, Some(j), false).await,
        None => unknown_jurisdiction(),
    }
}

/// Runs one HTTP message through the gateway; `fhir_messaging` selects the
/// `$process-message` answer (a response Bundle) over the plain verdict JSON.
async fn process(
    state: HttpState,
    headers: HeaderMap,
    body: Body,
    jurisdiction: Option<Jurisdiction>,
    fhir_messaging: bool,
) -> Response {
    let mut envelope = match envelope(&state, &headers, body).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    envelope.jurisdiction = jurisdiction;
    let handled = match state.gateway.handle(&envelope).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "HTTP message not stored");
            return unavailable();
        }
    };
    let (gateway_id, verdict, outcome, duplicate) = match handled {
        Handled::New {
            gateway_id,
            verdict,
            outcome,
        } => (gateway_id, verdict, outcome, false),
        Handled::Duplicate {
            gateway_id,
            status,
            outcome,
        } => (
            gateway_id,
            verdict_of(&status),
            outcome.unwrap_or(Value::Null),
            true,
        ),
    };
    // The gateway's own failure (an issue of FHIR type `exception`, `GW-INT-01`) is a server
    // error, not the sender's: 500, though the message is stored like any other.
    let failed_inside = verdict == Verdict::Unreadable && failed_inside_gateway(&outcome);
    if fhir_messaging {
        let status = if failed_inside {
            StatusCode::INTERNAL_SERVER_ERROR
        } else if verdict == Verdict::Unreadable {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let bundle = response_bundle(
            &gateway_id,
            envelope.message_id.as_deref(),
            verdict,
            &outcome,
        );
        return (
            status,
            [
                (header::CONTENT_TYPE, FHIR_JSON.to_owned()),
                (
                    header::HeaderName::from_static("x-sociogate-duplicate"),
                    duplicate.to_string(),
                ),
            ],
            bundle.to_string(),
        )
            .into_response();
    }
    let status = match (duplicate, verdict) {
        _ if failed_inside => StatusCode::INTERNAL_SERVER_ERROR,
        (true, _) | (false, Verdict::Accepted) => StatusCode::OK,
        (false, Verdict::Rejected) => StatusCode::UNPROCESSABLE_ENTITY,
        (false, Verdict::Unreadable) => StatusCode::BAD_REQUEST,
    };
    let body = json!({ "gateway_id": gateway_id, "verdict": verdict.as_str(), "duplicate": duplicate, "outcome": outcome });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether an OperationOutcome reports an internal error of the gateway (FHIR issue type
/// `exception`).
fn failed_inside_gateway(outcome: &Value) -> bool {
    outcome["issue"]
        .as_array()
        .is_some_and(|issues| issues.iter().any(|issue| issue["code"] == "exception"))
}

async fn health() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn ready(State(state): State<HttpState>) -> Response {
    let store_ok = state.gateway.store().ping().await.is_ok();
    let broker_ok = state.broker_ok.load(Ordering::Relaxed);
    let status = if store_ok && broker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "store": store_ok, "broker": broker_ok });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not installed in this process",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Limits;
    use crate::mappings::Mappings;
    use crate::pipeline::Engine;

    /// A defect answers 500 with an OperationOutcome and the server goes on: inside the
    /// referral pipeline the message is stored `unreadable` with `GW-INT-01`; outside it
    /// (caught by the router's last line) nothing is stored and the sender retries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_answers_500_with_an_operation_outcome_and_the_server_goes_on() {
        let (gateway, _file) = crate::pipeline::faults::sqlite_gateway().await;
        let state = HttpState {
            gateway: gateway.clone(),
            max_bytes: 1 << 20,
            broker_ok: Arc::new(AtomicBool::new(true)),
            metrics: None,
            close_token: Arc::from(""),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let referral = include_bytes!("../../examples/de-first-prescription-message.json");
        let client = reqwest::Client::new();
        let post = |message_id: &'static str| {
            client
                .post(format!("http://{address}/fhir/$process-message"))
                .header("content-type", FHIR_JSON)
                .header("idempotency-key", message_id)
                .body(referral.to_vec())
                .send()
        };

        let answer = post("panic-at-decode/map")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status().as_u16(), 500);
        let bundle: Value = answer.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(bundle.to_string().contains("GW-INT-01"), "{bundle}");

        let answer = post("panic-at-handle")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status().as_u16(), 500);
        let outcome: Value = answer.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "exception");

        let answer = post("after").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status().as_u16(), 200);
        let stored = gateway
            .store()
            .status_counts()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            stored.contains(&("unreadable".to_owned(), 1)),
            "only the message failed inside the pipeline is stored unreadable: {stored:?}"
        );
        server.abort();
        gateway.store().close().await;
    }

    /// The gateway's own failure answers 500; a payload it cannot read stays the sender's 400.
    #[test]
    fn only_the_gateways_own_failure_counts_as_an_internal_error() {
        let engine = Engine::load(&Mappings::default_dir(), Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let outcome_of = |code: &str| {
            let processed = engine.unreadable(code, "decode/map");
            engine.outcome(&processed, "en").to_json()
        };
        assert!(failed_inside_gateway(&outcome_of("GW-INT-01")));
        assert!(!failed_inside_gateway(&outcome_of("GW-DEC-01")));
        assert!(!failed_inside_gateway(&outcome_of("GW-DEC-07")));
        assert!(!failed_inside_gateway(&Value::Null));
    }
}
