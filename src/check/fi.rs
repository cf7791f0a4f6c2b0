//! Finnish rule pack: social rehabilitation (sosiaalinen kuntoutus) under Sosiaalihuoltolaki
//! 17 §, organised and paid by the wellbeing services county. Parameters:
//! `mappings/fi/parameters.json`; messages: `mappings/fi/rules.json`.

use serde::Deserialize;

use super::{CheckContext, Issue, Severity, ids};
use crate::mappings::RuleCatalogue;
use crate::model::{CoverageKind, IdentifierKind, Referral};

/// Rule codes of this pack (verified against the catalogue at start).
pub const RULES: &[&str] = &[
    "FI-ID-01", "FI-ID-02", "FI-ID-03", "FI-ID-04", "FI-AS-01", "FI-AS-02", "FI-PL-01", "FI-PL-02",
    "FI-PL-03", "FI-FR-01", "FI-DM-01", "FI-PY-01", "FI-RQ-01",
];

/// Parameters of the Finnish pack.
#[derive(Debug, Clone, Deserialize)]
pub struct FiRulePack {
    require_needs_assessment: bool,
    require_client_plan_goals: bool,
    require_client_agreement: bool,
    require_evaluation_dates: bool,
    min_meetings_per_week: f64,
    payer_coverage_kinds: Vec<CoverageKind>,
    payer_oid_prefix: String,
    temporary_hetu_severity: Severity,
}

/// Whether `value` is an OID (`urn:oid:` optional), e.g. `1.2.246.10.2085212.10.1306`.
fn oid_of(value: &str) -> Option<&str> {
    let oid = value.strip_prefix("urn:oid:").unwrap_or(value);
    let valid = !oid.is_empty()
        && oid
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
        && oid.contains('.');
    valid.then_some(oid)
}

impl FiRulePack {
    /// Parses the parameters.
    pub fn from_value(value: &serde_json::Value) -> Result<FiRulePack, serde_json::Error> {
        FiRulePack::deserialize(value)
    }

    /// Applies every Finnish rule.
    pub fn check(
        &self,
        referral: &Referral,
        rules: &RuleCatalogue,
        _ctx: &CheckContext<'_>,
    ) -> Vec<Issue> {
        let mut issues = Vec::new();
        let issue = |code: &str| Issue::new(rules, code);

        // HETU
        let mut has_hetu = false;
        for id in referral.patient.iter().flat_map(|p| p.ids.iter()) {
            if id.kind != IdentifierKind::Hetu {
                continue;
            }
            has_hetu = true;
            match ids::hetu_parse(&id.value) {
                None => issues.push(issue("FI-ID-01").detail(&id.value)),
                Some(h) if h.temporary => {
                    issues.push(
                        issue("FI-ID-02")
                            .detail(&id.value)
                            .severity(self.temporary_hetu_severity),
                    );
                }
                Some(_) => {}
            }
        }
        if !has_hetu {
            issues.push(issue("FI-ID-03"));
        }
        for id in referral
            .coverage
            .iter()
            .flat_map(|c| c.payer_ids.iter())
            .chain(
                referral
                    .requested_provider
                    .iter()
                    .flat_map(|p| p.ids.iter()),
            )
            .filter(|id| id.kind == IdentifierKind::FiOrganisation)
        {
            if oid_of(&id.value).is_none() {
                issues.push(issue("FI-ID-04").detail(&id.value));
            }
        }

        // Period
        let start = referral.requested_period.and_then(|p| p.start);
        let period_ok = super::period_is_valid(referral, true);
        if !period_ok {
            issues.push(issue("FI-RQ-01"));
        }

        // The service-needs assessment precedes the service.
        match referral.service_needs_assessment_date {
            None if self.require_needs_assessment => issues.push(issue("FI-AS-01")),
            Some(done) if start.is_some_and(|s| done > s) => {
                issues.push(issue("FI-AS-02").detail(done));
            }
            _ => {}
        }

        // The client plan: concrete goals, made with the client, evaluation dates.
        if self.require_client_plan_goals
            && (referral.care_plan.is_none() || referral.goals.is_empty())
        {
            issues.push(issue("FI-PL-01"));
        }
        if self.require_client_agreement && referral.plan_agreed_with_client != Some(true) {
            issues.push(issue("FI-PL-02"));
        }
        if self.require_evaluation_dates && referral.plan_evaluation_dates.is_empty() {
            issues.push(issue("FI-PL-03"));
        }

        // Meetings at least every two weeks; individual or group work.
        let per_week = referral.frequency.map(|f| f.per_week());
        match per_week {
            Some(p) if p + 1e-9 >= self.min_meetings_per_week => {}
            other => {
                let shown = format!("{:.2}", other.unwrap_or(0.0));
                let every_weeks = if self.min_meetings_per_week > 0.0 {
                    format!("{:.0}", 1.0 / self.min_meetings_per_week)
                } else {
                    "?".to_owned()
                };
                issues.push(issue("FI-FR-01").detail(shown).limit(every_weeks));
            }
        }
        if referral.delivery_modes.is_empty() {
            issues.push(issue("FI-DM-01"));
        }

        // Payer: the wellbeing services county, by organisation OID.
        let county = referral.coverage.as_ref().is_some_and(|c| {
            c.kind
                .is_some_and(|k| self.payer_coverage_kinds.contains(&k))
                && c.payer_ids.iter().any(|id| {
                    oid_of(&id.value).is_some_and(|oid| oid.starts_with(&self.payer_oid_prefix))
                })
        });
        if !county {
            issues.push(issue("FI-PY-01"));
        }
        issues
    }
}

#[cfg(test)]
mod oid_tests {
    use super::oid_of;

    #[test]
    fn oids_with_and_without_urn_prefix() {
        assert_eq!(
            oid_of("urn:oid:1.2.246.10.2085212.10.1306"),
            Some("1.2.246.10.2085212.10.1306")
        );
        assert_eq!(oid_of("1.2.246.10"), Some("1.2.246.10"));
        assert_eq!(oid_of("1..2"), None);
        assert_eq!(oid_of("12345"), None);
        assert_eq!(oid_of("1.2.x"), None);
    }
}

#[cfg(test)]
#[path = "fi_tests.rs"]
mod tests;
