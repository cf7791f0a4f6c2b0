//! Outcome: the only place that builds FHIR OperationOutcome resources.

use serde::Serialize;

use crate::check::Issue;
use crate::mappings::RuleCatalogue;

/// Code system of the gateway's rule codes (`OperationOutcome.issue.details.coding.system`).
pub const RULE_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/rule";

/// A FHIR R4 OperationOutcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    resource_type: &'static str,
    /// Language of the messages (BCP 47).
    pub language: String,
    /// The issues; FHIR requires at least one, so an accepted referral carries an
    /// `information` issue saying so.
    pub issue: Vec<OutcomeIssue>,
}

/// One `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeIssue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: String,
    /// FHIR IssueType.
    pub code: String,
    /// The rule code and the message.
    pub details: Details,
    /// FHIRPath location.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

/// `OperationOutcome.issue.details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// The rule code in [`RULE_SYSTEM`].
    pub coding: Vec<Coding>,
    /// The message in the chosen language.
    pub text: String,
}

/// A Coding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coding {
    /// System URI.
    pub system: &'static str,
    /// Code.
    pub code: String,
}

impl OperationOutcome {
    /// Builds the outcome for `issues`, messages in `lang` (English where a message is missing).
    pub fn from_issues(issues: &[Issue], rules: &RuleCatalogue, lang: &str) -> OperationOutcome {
        let passed;
        let issues = if issues.is_empty() {
            passed = [Issue::new(rules, "GW-OK")];
            &passed[..]
        } else {
            issues
        };
        let issue = issues
            .iter()
            .map(|i| OutcomeIssue {
                severity: i.severity.as_str().to_owned(),
                code: i.issue_type.clone(),
                details: Details {
                    coding: vec![Coding {
                        system: RULE_SYSTEM,
                        code: i.code.clone(),
                    }],
                    text: i.message(rules, lang),
                },
                expression: if i.expression.is_empty() {
                    Vec::new()
                } else {
                    vec![i.expression.clone()]
                },
            })
            .collect();
        OperationOutcome {
            resource_type: "OperationOutcome",
            language: lang.to_owned(),
            issue,
        }
    }

    /// The outcome as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
