//! Check: applies a jurisdiction's rule pack to a canonical [`Referral`].
//!
//! Rules return findings ([`Issue`]s), never errors, and do no I/O: what a rule needs from the
//! outside world (today's date, the patient's earlier budget use) is passed in as data.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::Date;

use crate::mappings::{Mappings, RuleCatalogue};
use crate::model::{Jurisdiction, Referral};
use crate::store::ledger::PriorUsage;

pub mod de;
pub mod fi;
pub mod ids;
pub mod nl;

/// How serious a finding is (FHIR `IssueSeverity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational only.
    Information,
    /// Accepted, but worth a look.
    Warning,
    /// The referral cannot be accepted.
    Error,
    /// The payload could not be processed at all.
    Fatal,
}

impl Severity {
    /// The FHIR code.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Information => "information",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding: a rule code from the catalogue with the values that fill its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Stable rule code, e.g. `DE-DX-05`.
    pub code: String,
    /// Severity (the catalogue's default unless configuration overrides it).
    pub severity: Severity,
    /// FHIR IssueType code.
    pub issue_type: String,
    /// FHIRPath location.
    pub expression: String,
    /// Fills `{detail}` in the message.
    pub detail: Option<String>,
    /// Fills `{limit}` in the message.
    pub limit: Option<String>,
    /// Fills `{code}` in the message (a diagnosis or other code the rule is about).
    pub subject_code: Option<String>,
}

impl Issue {
    /// Builds an issue for `code` with its catalogue defaults.
    ///
    /// Every code used in the program is verified against the catalogue at start
    /// ([`Mappings::load`]), so an unknown code here is a programming error; it still yields an
    /// error-severity issue rather than a panic.
    pub fn new(rules: &RuleCatalogue, code: &str) -> Issue {
        match rules.get(code) {
            Some(def) => Issue {
                code: def.code.clone(),
                severity: def.severity,
                issue_type: def.issue_type.clone(),
                expression: def.location.clone(),
                detail: None,
                limit: None,
                subject_code: None,
            },
            None => Issue {
                code: code.to_owned(),
                severity: Severity::Error,
                issue_type: "exception".to_owned(),
                expression: String::new(),
                detail: None,
                limit: None,
                subject_code: None,
            },
        }
    }

    /// Sets `{detail}`.
    pub fn detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// Sets `{limit}`.
    pub fn limit(mut self, limit: impl fmt::Display) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    /// Sets `{code}`.
    pub fn about(mut self, code: impl fmt::Display) -> Self {
        self.subject_code = Some(code.to_string());
        self
    }

    /// Replaces the default location with a more precise one.
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = expression.into();
        self
    }

    /// Overrides the severity.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// The message in `lang` (falling back to English) with its placeholders filled.
    pub fn message(&self, rules: &RuleCatalogue, lang: &str) -> String {
        let template = rules
            .get(&self.code)
            .and_then(|def| def.message.get(lang).or_else(|| def.message.get("en")))
            .map(String::as_str)
            .unwrap_or("{detail}");
        template
            .replace("{detail}", self.detail.as_deref().unwrap_or("?"))
            .replace("{limit}", self.limit.as_deref().unwrap_or("?"))
            .replace("{code}", self.subject_code.as_deref().unwrap_or("?"))
    }
}

/// Whether the requested period has a start and does not end before it (an open end is
/// allowed when `open_end_ok`).
pub fn period_is_valid(referral: &Referral, open_end_ok: bool) -> bool {
    referral
        .requested_period
        .is_some_and(|p| match (p.start, p.end) {
            (Some(s), Some(e)) => s <= e,
            (Some(_), None) => open_end_ok,
            _ => false,
        })
}

/// The decision on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Mapped and checked with no error.
    Accepted,
    /// Mapped, but at least one rule failed.
    Rejected,
    /// Could not be decoded.
    Unreadable,
}

impl Verdict {
    /// Verdict for a decoded message with these findings.
    pub fn from_issues(issues: &[Issue]) -> Verdict {
        if issues.iter().any(|i| i.severity >= Severity::Error) {
            Verdict::Rejected
        } else {
            Verdict::Accepted
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Rejected => "rejected",
            Verdict::Unreadable => "unreadable",
        }
    }
}

/// What a rule pack may know besides the referral.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    /// "Today", for age and date rules (fixed by `--at` for reproducible results).
    pub today: Date,
    /// What earlier referrals of the same patient used.
    pub prior: &'a PriorUsage,
}

/// The rule packs of all jurisdictions, built once at start from `mappings/`.
///
/// A jurisdiction is its parameters file plus one module here; a jurisdiction without a
/// parameters file has no pack, and its referrals are rejected with `GW-MAP-07`.
#[derive(Debug)]
pub struct RulePacks {
    de: Option<de::DeRulePack>,
    nl: Option<nl::NlRulePack>,
    fi: Option<fi::FiRulePack>,
}

fn pack<T>(
    mappings: &Mappings,
    j: Jurisdiction,
    parse: impl Fn(&serde_json::Value) -> Result<T, serde_json::Error>,
) -> Result<Option<T>, crate::mappings::MappingsError> {
    mappings
        .parameters(j)
        .map(|value| {
            parse(value).map_err(|e| {
                crate::mappings::MappingsError::Invalid(format!(
                    "mappings/{}/parameters.json: {e}",
                    j.code()
                ))
            })
        })
        .transpose()
}

impl RulePacks {
    /// Parses each jurisdiction's parameters.
    pub fn from_mappings(mappings: &Mappings) -> Result<RulePacks, crate::mappings::MappingsError> {
        Ok(RulePacks {
            de: pack(mappings, Jurisdiction::De, de::DeRulePack::from_value)?,
            nl: pack(mappings, Jurisdiction::Nl, nl::NlRulePack::from_value)?,
            fi: pack(mappings, Jurisdiction::Fi, fi::FiRulePack::from_value)?,
        })
    }

    /// The German pack's parameters, when configured.
    pub fn de(&self) -> Option<&de::DeRulePack> {
        self.de.as_ref()
    }
}

/// Checks `referral` against the rule pack of its jurisdiction.
pub fn check(
    referral: &Referral,
    packs: &RulePacks,
    rules: &RuleCatalogue,
    ctx: &CheckContext<'_>,
) -> Vec<Issue> {
    let found = match referral.jurisdiction {
        Some(Jurisdiction::De) => packs.de.as_ref().map(|p| p.check(referral, rules, ctx)),
        Some(Jurisdiction::Nl) => packs.nl.as_ref().map(|p| p.check(referral, rules, ctx)),
        Some(Jurisdiction::Fi) => packs.fi.as_ref().map(|p| p.check(referral, rules, ctx)),
        // The mapper already reported GW-MAP-06.
        None => return Vec::new(),
    };
    found.unwrap_or_else(|| {
        let j = referral.jurisdiction.map_or("?", |j| j.code());
        vec![Issue::new(rules, "GW-MAP-07").detail(j.to_uppercase())]
    })
}
