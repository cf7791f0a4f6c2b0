//! Map: turns a decoded document into the canonical [`Referral`], with findings.
//!
//! Mapping never fails: what cannot be mapped becomes an [`Issue`] and the referral stays a
//! draft with gaps. Every code translation goes through the ConceptMaps in `mappings/`.

use crate::check::Issue;
use crate::decode::Decoded;
use crate::mappings::Mappings;
use crate::model::{Identifier, IdentifierKind, Jurisdiction, Referral, ReferralIds};

pub mod cda;
pub mod fhir;

/// Rule codes this stage reports (verified against the catalogue at start).
pub const RULES: &[&str] = &[
    "GW-OK",
    "GW-ND-01",
    "GW-MAP-01",
    "GW-MAP-02",
    "GW-MAP-03",
    "GW-MAP-04",
    "GW-MAP-05",
    "GW-MAP-06",
    "GW-MAP-07",
    "GW-MAP-08",
    "GW-MAP-09",
    "GW-MAP-10",
    "GW-MAP-11",
    "GW-MAP-12",
];

/// ConceptMaps the mappers use (verified at start).
pub const CONCEPT_MAPS: &[&str] = &[
    "setting",
    "delivery-mode",
    "certainty",
    "coverage-kind",
    "security-label",
    "gender",
    "service",
    "referral-kind",
    "qualification",
];

/// Service codes (targets of the `service` ConceptMap) that this gateway handles.
const SOCIOTHERAPY_SERVICES: &[&str] = &[
    "sociotherapy",
    "clinical-sociotherapy",
    "social-rehabilitation",
];

/// Maps a decoded document into a canonical referral. `jurisdiction`, when the intake is
/// configured for one, overrides what the identifiers and profiles say.
pub fn map(
    decoded: &Decoded,
    mappings: &Mappings,
    ids: ReferralIds,
    jurisdiction: Option<Jurisdiction>,
) -> (Referral, Vec<Issue>) {
    let (mut referral, mut issues) = match decoded {
        Decoded::Fhir(resource, _) | Decoded::FhirXml(resource, _) => {
            fhir::map(resource, mappings, ids, jurisdiction)
        }
        Decoded::Cda(document) => cda::map(document, mappings, ids, jurisdiction),
    };
    if referral.patient.as_ref().is_some_and(|p| p.non_disclosure) {
        issues.push(Issue::new(mappings.rules(), "GW-ND-01"));
    }
    if let Some(j) = jurisdiction {
        referral.jurisdiction = Some(j);
        referral.jurisdiction_basis = Some("configured for the intake".to_owned());
    }
    (referral, issues)
}

/// The payload's own idempotency key: Bundle.identifier (system|value) or MessageHeader.id.
pub fn idempotency_hint(decoded: &Decoded) -> Option<String> {
    match decoded {
        Decoded::Fhir(resource, _) | Decoded::FhirXml(resource, _) => {
            fhir::idempotency_hint(resource)
        }
        Decoded::Cda(document) => cda::idempotency_hint(document),
    }
}

/// Whether a service code (after translation) is one this gateway handles.
pub fn is_sociotherapy_service(code: &str) -> bool {
    SOCIOTHERAPY_SERVICES.contains(&code)
}

/// Normalises an identifier: recognises its system (any accepted spelling) and trims the value.
pub fn normalise_identifier(mappings: &Mappings, system: Option<&str>, value: &str) -> Identifier {
    let known = system.and_then(|s| mappings.identifier_systems().lookup(s));
    Identifier {
        kind: known.map_or(IdentifierKind::Other, |k| k.kind),
        system: known
            .map(|k| k.system.clone())
            .or_else(|| system.map(str::to_owned)),
        value: value.trim().to_owned(),
    }
}

/// Decides the jurisdiction from identifiers (patient first, then payer, then prescriber) and
/// from profile URLs, and records how. Reports `GW-MAP-06` when nothing decides it.
pub fn decide_jurisdiction(
    referral: &mut Referral,
    profiles: &[String],
    mappings: &Mappings,
    issues: &mut Vec<Issue>,
) {
    // The first recognised identifier decides (the patient's first, then the payer's, then the
    // prescriber's); failing that, the first profile with a known prefix.
    let patient_ids = referral.patient.iter().flat_map(|p| p.ids.iter());
    let payer_ids = referral.coverage.iter().flat_map(|c| c.payer_ids.iter());
    let prescriber_ids = referral
        .prescriber
        .iter()
        .flat_map(|p| p.person_ids.iter().chain(p.organisation_ids.iter()));
    let by_identifier = patient_ids
        .chain(payer_ids)
        .chain(prescriber_ids)
        .find_map(|id| {
            id.system
                .as_deref()
                .and_then(|s| mappings.identifier_systems().lookup(s))
        })
        .map(|system| (system.jurisdiction, format!("identifier {}", system.system)));
    let decided = by_identifier.or_else(|| {
        profiles.iter().find_map(|p| {
            mappings
                .jurisdiction_of_profile(p)
                .map(|j| (j, format!("profile {p}")))
        })
    });
    match decided {
        Some((jurisdiction, basis)) => {
            referral.jurisdiction = Some(jurisdiction);
            referral.jurisdiction_basis = Some(basis);
        }
        None => issues.push(Issue::new(mappings.rules(), "GW-MAP-06")),
    }
}
