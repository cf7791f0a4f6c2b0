//! Dutch rule pack: clinical sociotherapy as part of a treatment plan under a treatment
//! agreement (WGBO, art. 7:446 ff. BW), paid by a Zvw insurer. Parameters:
//! `mappings/nl/parameters.json`; messages: `mappings/nl/rules.json`.

use serde::Deserialize;

use super::{CheckContext, Issue, Severity, ids};
use crate::mappings::RuleCatalogue;
use crate::model::{Delivery, IdentifierKind, Qualification, Referral, Setting};

/// Rule codes of this pack (verified against the catalogue at start).
pub const RULES: &[&str] = &[
    "NL-ID-01", "NL-ID-02", "NL-ID-03", "NL-ID-04", "NL-ID-05", "NL-TP-01", "NL-CN-01", "NL-ST-01",
    "NL-ST-02", "NL-PR-01", "NL-PR-02", "NL-PY-01", "NL-RQ-01", "NL-DX-01",
];

/// Parameters of the Dutch pack.
#[derive(Debug, Clone, Deserialize)]
pub struct NlRulePack {
    require_treatment_plan: bool,
    require_client_agreement: bool,
    required_setting: Setting,
    required_delivery_modes: Vec<Delivery>,
    responsible_professions: Professions,
    identifier_checks: IdentifierChecks,
}

#[derive(Debug, Clone, Deserialize)]
struct Professions {
    codes: Vec<Qualification>,
}

#[derive(Debug, Clone, Deserialize)]
struct IdentifierChecks {
    bsn: Severity,
    agb: Severity,
    ura: Severity,
    uzovi: Severity,
}

fn digits(value: &str, n: usize) -> bool {
    value.len() == n && value.bytes().all(|b| b.is_ascii_digit())
}

fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl NlRulePack {
    /// Parses the parameters.
    pub fn from_value(value: &serde_json::Value) -> Result<NlRulePack, serde_json::Error> {
        NlRulePack::deserialize(value)
    }

    /// Applies every Dutch rule.
    pub fn check(
        &self,
        referral: &Referral,
        rules: &RuleCatalogue,
        _ctx: &CheckContext<'_>,
    ) -> Vec<Issue> {
        let mut issues = Vec::new();
        let issue = |code: &str| Issue::new(rules, code);
        let checks = &self.identifier_checks;

        // Identifiers
        let patient_ids = referral.patient.iter().flat_map(|p| p.ids.iter());
        let mut has_bsn = false;
        for id in patient_ids {
            if id.kind == IdentifierKind::Bsn {
                has_bsn = true;
                if !ids::bsn_valid(&id.value) {
                    issues.push(issue("NL-ID-01").detail(&id.value).severity(checks.bsn));
                }
            }
        }
        if !has_bsn {
            issues.push(issue("NL-ID-05"));
        }
        let others = referral
            .prescriber
            .iter()
            .flat_map(|p| p.person_ids.iter().chain(p.organisation_ids.iter()))
            .chain(referral.coverage.iter().flat_map(|c| c.payer_ids.iter()))
            .chain(
                referral
                    .requested_provider
                    .iter()
                    .flat_map(|p| p.ids.iter()),
            );
        for id in others {
            let failed = match id.kind {
                IdentifierKind::Agb if !digits(&id.value, 8) => Some(("NL-ID-02", checks.agb)),
                IdentifierKind::Ura if !digits(&id.value, 8) => Some(("NL-ID-03", checks.ura)),
                IdentifierKind::Uzovi if !digits(&id.value, 4) => Some(("NL-ID-04", checks.uzovi)),
                _ => None,
            };
            if let Some((code, severity)) = failed {
                issues.push(issue(code).detail(&id.value).severity(severity));
            }
        }

        // Period
        let period_ok = super::period_is_valid(referral, true);
        if !period_ok {
            issues.push(issue("NL-RQ-01"));
        }
        if referral.diagnoses.is_empty() {
            issues.push(issue("NL-DX-01"));
        }

        // Treatment plan and agreement with the client
        if self.require_treatment_plan && referral.care_plan.is_none() {
            issues.push(issue("NL-TP-01"));
        }
        if self.require_client_agreement && referral.plan_agreed_with_client != Some(true) {
            issues.push(issue("NL-CN-01"));
        }

        // Setting and parts
        if !referral.settings.contains(&self.required_setting) {
            let shown = if referral.settings.is_empty() {
                "not stated".to_owned()
            } else {
                referral
                    .settings
                    .iter()
                    .map(name)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            issues.push(issue("NL-ST-01").detail(shown));
        }
        let missing: Vec<String> = self
            .required_delivery_modes
            .iter()
            .filter(|m| !referral.delivery_modes.contains(m))
            .map(name)
            .collect();
        if !missing.is_empty() {
            issues.push(issue("NL-ST-02").detail(missing.join(" and ")));
        }

        // Responsible practitioner
        match &referral.prescriber {
            None => issues.push(issue("NL-PR-02")),
            Some(p) => {
                if !p
                    .qualifications
                    .iter()
                    .any(|q| self.responsible_professions.codes.contains(q))
                {
                    let shown = if p.qualifications.is_empty() {
                        "none".to_owned()
                    } else {
                        p.qualifications
                            .iter()
                            .map(name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    issues.push(issue("NL-PR-01").detail(shown));
                }
            }
        }

        // Payer: a Zvw insurer identified by UZOVI
        let has_uzovi = referral.coverage.as_ref().is_some_and(|c| {
            c.payer_ids
                .iter()
                .any(|id| id.kind == IdentifierKind::Uzovi)
        });
        if !has_uzovi {
            issues.push(issue("NL-PY-01"));
        }
        issues
    }
}

#[cfg(test)]
#[path = "nl_tests.rs"]
mod tests;
