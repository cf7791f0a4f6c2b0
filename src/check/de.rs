//! German rule pack: ambulante Soziotherapie under § 37a SGB V and the G-BA
//! Soziotherapie-Richtlinie (ST-RL). Limits and code lists come from `mappings/de/parameters.json`;
//! rule codes, severities and messages from `mappings/de/rules.json`.

use serde::Deserialize;
use time::Date;

use super::{CheckContext, Issue, Severity, ids};
use crate::mappings::RuleCatalogue;
use crate::model::{
    Certainty, CoverageKind, Delivery, Diagnosis, IdentifierKind, Qualification, Referral,
    ReferralKind, Setting,
};

/// Rule codes of this pack (verified against the catalogue at start).
pub const RULES: &[&str] = &[
    "DE-ID-01", "DE-ID-02", "DE-ID-03", "DE-ID-04", "DE-ID-05", "DE-ID-06", "DE-RQ-01", "DE-RQ-02",
    "DE-RQ-03", "DE-RQ-04", "DE-RQ-05", "DE-RQ-06", "DE-DX-01", "DE-DX-02", "DE-DX-03", "DE-DX-04",
    "DE-DX-05", "DE-DX-06", "DE-DX-07", "DE-DX-08", "DE-DX-09", "DE-DX-10", "DE-DX-11", "DE-DX-12",
    "DE-PR-01", "DE-PR-02", "DE-PR-03", "DE-PR-04", "DE-PR-05", "DE-PR-06", "DE-PT-01", "DE-TR-01",
    "DE-DC-01", "DE-DC-02", "DE-DC-03", "DE-CP-01", "DE-CV-01", "DE-CV-02", "DE-CV-03", "DE-BU-01",
];

pub mod sessions;

/// Parameters of the German pack (`mappings/de/parameters.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct DeRulePack {
    listed_diagnoses: CodeList,
    mental_disorder_range: CodeRange,
    icd_system: String,
    gaf: GafLimits,
    suspected_allowed_for: Vec<ReferralKind>,
    trial_sessions_max_units: u32,
    gp_referral_max_units: u32,
    first_prescription_warn_above_units: u32,
    discharge_max_days_after: i64,
    care_plan_not_required_for: Vec<ReferralKind>,
    /// Unit lengths and budget, public so the pipeline can charge the ledger.
    pub budget: Budget,
    /// Unit lengths.
    pub units: Units,
    prescribers: Prescribers,
    remote_setting_allowed: bool,
    statutory_coverage_kinds: Vec<CoverageKind>,
    identifier_checks: IdentifierChecks,
}

/// Unit lengths in minutes (facts 26).
#[derive(Debug, Clone, Deserialize)]
pub struct Units {
    /// One individual unit.
    pub individual_minutes: u32,
    /// One group unit.
    pub group_minutes: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct CodeList {
    codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct CodeRange {
    from: String,
    to: String,
}

#[derive(Debug, Clone, Deserialize)]
struct GafLimits {
    min: i64,
    max: i64,
    listed_max: i64,
    listed_warn_above: i64,
    other_max: i64,
}

/// The 120-hours-in-3-years budget.
#[derive(Debug, Clone, Deserialize)]
pub struct Budget {
    /// Minutes per window (7,200 = 120 hours).
    pub minutes: u64,
    /// Window length in years.
    pub window_years: i32,
    /// Minutes one group unit costs against the budget (UNVERIFIED, configurable).
    pub group_unit_budget_minutes: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct Prescribers {
    approved_specialists: Vec<Qualification>,
    transition_age_only: Vec<Qualification>,
    transition_age_from: i32,
    transition_age_until: i32,
    discharge_prescribers: Vec<Qualification>,
}

#[derive(Debug, Clone, Deserialize)]
struct IdentifierChecks {
    kvnr: Severity,
    ik: Severity,
    lanr: Severity,
    bsnr: Severity,
}

impl DeRulePack {
    /// Parses the parameters.
    pub fn from_value(value: &serde_json::Value) -> Result<DeRulePack, serde_json::Error> {
        DeRulePack::deserialize(value)
    }

    /// Minutes `referral` charges against the budget.
    pub fn budget_minutes(&self, referral: &Referral) -> u64 {
        referral.requested_units.map_or(0, |u| match u.delivery {
            Delivery::Individual => u.total_minutes(),
            Delivery::Group => {
                u64::from(u.count) * u64::from(self.budget.group_unit_budget_minutes)
            }
        })
    }

    /// Applies every German rule to `referral`.
    pub fn check(
        &self,
        referral: &Referral,
        rules: &RuleCatalogue,
        ctx: &CheckContext<'_>,
    ) -> Vec<Issue> {
        let mut run = Run {
            pack: self,
            referral,
            rules,
            ctx,
            issues: Vec::new(),
        };
        run.identifiers();
        run.patient();
        run.request();
        run.diagnoses();
        run.prescriber();
        run.trial_sessions();
        run.discharge();
        run.care_plan();
        run.coverage();
        run.budget();
        run.issues
    }
}

/// One evaluation of the pack over one referral.
struct Run<'a> {
    pack: &'a DeRulePack,
    referral: &'a Referral,
    rules: &'a RuleCatalogue,
    ctx: &'a CheckContext<'a>,
    issues: Vec<Issue>,
}

impl Run<'_> {
    fn issue(&self, code: &str) -> Issue {
        Issue::new(self.rules, code)
    }

    fn push(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    fn kind(&self) -> Option<ReferralKind> {
        self.referral.kind
    }

    fn units(&self) -> Option<u32> {
        self.referral.requested_units.map(|u| u.count)
    }

    fn identifiers(&mut self) {
        let r = self.referral;
        let patient_ids = r.patient.iter().flat_map(|p| p.ids.iter());
        let person_ids = r.prescriber.iter().flat_map(|p| p.person_ids.iter());
        let practice_ids = r.prescriber.iter().flat_map(|p| p.organisation_ids.iter());
        let payer_ids = r.coverage.iter().flat_map(|c| c.payer_ids.iter());
        let provider_ids = r.requested_provider.iter().flat_map(|p| p.ids.iter());
        let checks = &self.pack.identifier_checks;
        let mut found = Vec::new();
        for (n, id) in patient_ids.enumerate() {
            found.push((format!("Patient.identifier[{n}]"), id));
        }
        for id in person_ids {
            found.push(("Practitioner.identifier".to_owned(), id));
        }
        for id in practice_ids.chain(payer_ids).chain(provider_ids) {
            found.push(("Organization.identifier".to_owned(), id));
        }
        for (path, id) in found {
            let failed = match id.kind {
                IdentifierKind::Kvid10 if !ids::kvnr_valid(&id.value) => {
                    Some(("DE-ID-01", checks.kvnr))
                }
                IdentifierKind::Iknr if !ids::ik_valid(&id.value) => Some(("DE-ID-02", checks.ik)),
                IdentifierKind::Lanr if !ids::lanr_valid(&id.value) => {
                    Some(("DE-ID-03", checks.lanr))
                }
                IdentifierKind::Bsnr if !ids::bsnr_valid(&id.value) => {
                    Some(("DE-ID-04", checks.bsnr))
                }
                _ => None,
            };
            if let Some((code, severity)) = failed {
                let issue = self
                    .issue(code)
                    .detail(&id.value)
                    .at(path)
                    .severity(severity);
                self.push(issue);
            }
        }
    }

    fn patient(&mut self) {
        if self.patient_age().is_none() {
            let issue = self.issue("DE-PT-01");
            self.push(issue);
        }
    }

    fn request(&mut self) {
        let r = self.referral;
        if self.kind().is_none() {
            let issue = self.issue("DE-RQ-03");
            self.push(issue);
        }
        if self.units().is_none() {
            let issue = self.issue("DE-RQ-01");
            self.push(issue);
        }
        let period_ok = super::period_is_valid(r, false);
        if !period_ok {
            let issue = self.issue("DE-RQ-02");
            self.push(issue);
        }
        if r.issue_date.is_none() {
            let issue = self.issue("DE-RQ-06");
            self.push(issue);
        }
        if let (Some(ReferralKind::FirstPrescription), Some(units)) = (self.kind(), self.units()) {
            let limit = self.pack.first_prescription_warn_above_units;
            if units > limit {
                let issue = self.issue("DE-RQ-04").detail(units).limit(limit);
                self.push(issue);
            }
        }
        if r.settings.contains(&Setting::Remote) && !self.pack.remote_setting_allowed {
            let issue = self.issue("DE-RQ-05");
            self.push(issue);
        }
    }

    fn is_listed(&self, code: &str) -> bool {
        let code = code.trim().to_ascii_uppercase();
        // A listed three-character category (F21) includes its subcodes (F21.0) only when the
        // list names the category itself; F20 is listed per subcode (F20.0-F20.6).
        self.pack.listed_diagnoses.codes.iter().any(|listed| {
            code == *listed
                || (!listed.contains('.')
                    && code
                        .strip_prefix(listed.as_str())
                        .is_some_and(|rest| rest.starts_with('.')))
        })
    }

    fn in_mental_range(&self, code: &str) -> bool {
        let category: String = code.trim().to_ascii_uppercase().chars().take(3).collect();
        category.len() == 3
            && category.as_str() >= self.pack.mental_disorder_range.from.as_str()
            && category.as_str() <= self.pack.mental_disorder_range.to.as_str()
    }

    fn diagnoses(&mut self) {
        let r = self.referral;
        if r.diagnoses.is_empty() {
            let issue = self.issue("DE-DX-01");
            self.push(issue);
            return;
        }
        for (n, d) in r.diagnoses.iter().enumerate() {
            if d.system.as_deref() != Some(self.pack.icd_system.as_str()) {
                let issue = self
                    .issue("DE-DX-12")
                    .about(&d.code)
                    .detail(d.system.as_deref().unwrap_or("no system"))
                    .at(format!("Condition[{n}].code.coding.system"));
                self.push(issue);
            }
        }
        let mental: Vec<&Diagnosis> = r
            .diagnoses
            .iter()
            .filter(|d| self.in_mental_range(&d.code))
            .collect();
        if mental.is_empty() {
            let codes: Vec<&str> = r.diagnoses.iter().map(|d| d.code.as_str()).collect();
            let issue = self.issue("DE-DX-02").detail(codes.join(", "));
            self.push(issue);
            return;
        }
        // A diagnosis qualifies by its certainty; the best qualifying one is judged.
        let suspected_ok = self
            .kind()
            .is_some_and(|k| self.pack.suspected_allowed_for.contains(&k));
        let qualifies = |d: &&Diagnosis| match d.certainty {
            None | Some(Certainty::Confirmed) => true,
            Some(Certainty::Suspected) => suspected_ok,
            Some(Certainty::Excluded) | Some(Certainty::StatusAfter) => false,
        };
        let qualifying: Vec<&Diagnosis> = mental.iter().copied().filter(qualifies).collect();
        if qualifying.is_empty() {
            for d in &mental {
                let code = match d.certainty {
                    Some(Certainty::Suspected) => "DE-DX-10",
                    _ => "DE-DX-11",
                };
                let issue = self.issue(code).about(&d.code);
                self.push(issue);
            }
            return;
        }
        let listed = qualifying.iter().find(|d| self.is_listed(&d.code)).copied();
        let assessment = r.functional_assessment.as_ref();
        let gaf = assessment.and_then(|a| a.gaf_score);
        let limits = &self.pack.gaf;
        let Some(gaf) = gaf else {
            let issue = self.issue("DE-DX-03");
            self.push(issue);
            return;
        };
        if gaf < limits.min || gaf > limits.max {
            let issue = self
                .issue("DE-DX-04")
                .detail(gaf)
                .limit(format!("{}-{}", limits.min, limits.max));
            self.push(issue);
            return;
        }
        match listed {
            Some(d) => {
                if gaf > limits.listed_max {
                    let issue = self
                        .issue("DE-DX-05")
                        .detail(gaf)
                        .limit(limits.listed_max)
                        .about(&d.code);
                    self.push(issue);
                } else if gaf > limits.listed_warn_above {
                    let issue = self
                        .issue("DE-DX-06")
                        .detail(gaf)
                        .limit(limits.listed_warn_above)
                        .about(&d.code);
                    self.push(issue);
                }
            }
            None => {
                let code = qualifying[0].code.clone();
                if gaf > limits.other_max {
                    let issue = self
                        .issue("DE-DX-07")
                        .detail(gaf)
                        .limit(limits.other_max)
                        .about(&code);
                    self.push(issue);
                }
                if assessment.is_none_or(|a| a.exception_criteria.is_empty()) {
                    let issue = self.issue("DE-DX-08").about(&code);
                    self.push(issue);
                }
                if assessment.is_none_or(|a| a.exception_justification.is_none()) {
                    let issue = self.issue("DE-DX-09").about(&code);
                    self.push(issue);
                }
            }
        }
    }

    fn patient_age(&self) -> Option<i32> {
        let birth = self.referral.patient.as_ref()?.birth_date?;
        Some(age_on(birth, self.ctx.today))
    }

    fn prescriber(&mut self) {
        let Some(prescriber) = &self.referral.prescriber else {
            let issue = self.issue("DE-PR-01");
            self.push(issue);
            return;
        };
        let rules = &self.pack.prescribers;
        let quals = &prescriber.qualifications;
        let shown = if quals.is_empty() {
            "none".to_owned()
        } else {
            quals
                .iter()
                .map(|q| {
                    serde_json::to_value(q)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.kind() {
            Some(ReferralKind::GpIndicationReferral) => {
                // Muster 28: any physician, without prescribing approval, at most N units.
                let limit = self.pack.gp_referral_max_units;
                if let Some(units) = self.units().filter(|&u| u > limit) {
                    let issue = self.issue("DE-PR-05").detail(units).limit(limit);
                    self.push(issue);
                }
            }
            Some(ReferralKind::DischargePrescription) => {
                if !quals
                    .iter()
                    .any(|q| rules.discharge_prescribers.contains(q))
                {
                    let issue = self.issue("DE-PR-02").detail(shown);
                    self.push(issue);
                }
            }
            _ => {
                let specialist = quals.iter().any(|q| rules.approved_specialists.contains(q));
                if !specialist {
                    let code = if quals.contains(&Qualification::GeneralPractitioner) {
                        "DE-PR-04"
                    } else {
                        "DE-PR-02"
                    };
                    let issue = self.issue(code).detail(shown);
                    self.push(issue);
                } else if prescriber.sociotherapy_approval != Some(true) {
                    let issue = self.issue("DE-PR-03");
                    self.push(issue);
                }
            }
        }
        // Child and adolescent specialists: only in the transition from 18 to under 21.
        let only_transition =
            !quals.is_empty() && quals.iter().all(|q| rules.transition_age_only.contains(q));
        let age = self.patient_age();
        if only_transition && self.kind() != Some(ReferralKind::GpIndicationReferral) {
            let range = format!(
                "{}-{}",
                rules.transition_age_from,
                rules.transition_age_until - 1
            );
            match age {
                Some(a) if a >= rules.transition_age_from && a < rules.transition_age_until => {}
                Some(a) => {
                    let issue = self.issue("DE-PR-06").detail(a).limit(range);
                    self.push(issue);
                }
                None => {
                    let issue = self.issue("DE-PR-06").detail("of unknown age").limit(range);
                    self.push(issue);
                }
            }
        }
    }

    fn trial_sessions(&mut self) {
        if self.kind() != Some(ReferralKind::TrialSessions) {
            return;
        }
        let limit = self.pack.trial_sessions_max_units;
        let requested = self.units().unwrap_or(0);
        let total = requested.saturating_add(self.ctx.prior.trial_units_used);
        if total > limit {
            let detail = if self.ctx.prior.trial_units_used > 0 {
                format!("{requested} + {} used", self.ctx.prior.trial_units_used)
            } else {
                requested.to_string()
            };
            let issue = self.issue("DE-TR-01").detail(detail).limit(limit);
            self.push(issue);
        }
    }

    fn discharge(&mut self) {
        if self.kind() != Some(ReferralKind::DischargePrescription) {
            return;
        }
        let discharge = self.referral.hospital_stay.and_then(|s| s.discharge);
        let Some(discharge) = discharge else {
            let issue = self.issue("DE-DC-02");
            self.push(issue);
            return;
        };
        let days = self.pack.discharge_max_days_after;
        let last = discharge.saturating_add(time::Duration::days(days));
        if let Some(period) = self.referral.requested_period {
            if let Some(end) = period.end.filter(|&e| e > last) {
                let issue = self.issue("DE-DC-01").detail(end).limit(days);
                self.push(issue);
            }
            if let Some(start) = period.start.filter(|&s| s < discharge) {
                let issue = self.issue("DE-DC-03").detail(start);
                self.push(issue);
            }
        }
    }

    fn care_plan(&mut self) {
        let exempt = self
            .kind()
            .is_some_and(|k| self.pack.care_plan_not_required_for.contains(&k));
        if !exempt && self.referral.care_plan.is_none() {
            let issue = self.issue("DE-CP-01");
            self.push(issue);
        }
    }

    fn coverage(&mut self) {
        let Some(coverage) = &self.referral.coverage else {
            let issue = self.issue("DE-CV-01");
            self.push(issue);
            return;
        };
        let statutory = coverage
            .kind
            .is_some_and(|k| self.pack.statutory_coverage_kinds.contains(&k));
        match coverage.kind {
            Some(CoverageKind::Private) => {
                let issue = self.issue("DE-CV-02");
                self.push(issue);
            }
            Some(k) if !statutory => {
                let shown = serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let issue = self.issue("DE-CV-03").detail(shown);
                self.push(issue);
            }
            _ => {}
        }
        if statutory || coverage.kind.is_none() {
            let has_kvnr = self
                .referral
                .patient
                .as_ref()
                .is_some_and(|p| p.ids.iter().any(|id| id.kind == IdentifierKind::Kvid10));
            if !has_kvnr {
                let issue = self.issue("DE-ID-05");
                self.push(issue);
            }
            if !coverage
                .payer_ids
                .iter()
                .any(|id| id.kind == IdentifierKind::Iknr)
            {
                let issue = self.issue("DE-ID-06");
                self.push(issue);
            }
        }
    }

    fn budget(&mut self) {
        let requested = self.pack.budget_minutes(self.referral);
        if requested == 0 {
            return;
        }
        let used = self.ctx.prior.minutes_used;
        let remaining = self.pack.budget.minutes.saturating_sub(used);
        if requested > remaining {
            let issue = self.issue("DE-BU-01").detail(requested).limit(remaining);
            self.push(issue);
        }
    }
}

/// Age in completed years on `today`.
pub fn age_on(birth: Date, today: Date) -> i32 {
    let mut age = today.year() - birth.year();
    if (today.month() as u8, today.day()) < (birth.month() as u8, birth.day()) {
        age -= 1;
    }
    age
}

#[cfg(test)]
#[path = "de_tests.rs"]
mod tests;
