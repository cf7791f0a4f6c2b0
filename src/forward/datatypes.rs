//! Borrowed FHIR datatypes for the resources the gateway writes itself (Task, Claims,
//! MessageHeader): serialised straight into the outbound text, with no `serde_json::Value` in
//! between. Empty optional elements are left out (FHIR has no `null`).

use serde::Serialize;

/// FHIR Identifier.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Identifier<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    pub value: &'a str,
}

/// FHIR Coding.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Coding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    pub code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<&'a str>,
}

impl<'a> Coding<'a> {
    /// A code in a system, without version or display.
    pub fn new(system: &'a str, code: &'a str) -> Coding<'a> {
        Coding {
            system: Some(system),
            version: None,
            code,
            display: None,
        }
    }

    /// The same coding with a display.
    pub fn with_display(self, display: &'a str) -> Coding<'a> {
        Coding {
            display: Some(display),
            ..self
        }
    }
}

/// FHIR CodeableConcept with one coding.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct CodeableConcept<'a> {
    pub coding: [Coding<'a>; 1],
}

impl<'a> CodeableConcept<'a> {
    /// The concept of one coding.
    pub fn of(coding: Coding<'a>) -> CodeableConcept<'a> {
        CodeableConcept { coding: [coding] }
    }

    /// The concept of one code in a system.
    pub fn code(system: &'a str, code: &'a str) -> CodeableConcept<'a> {
        CodeableConcept::of(Coding::new(system, code))
    }
}

/// FHIR Reference: a literal reference, a logical one by identifier, or a display alone.
#[derive(Serialize, Default)]
pub(crate) struct Reference<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// A literal reference (a fullUrl of the same Bundle).
    pub fn to(url: &'a str) -> Reference<'a> {
        Reference {
            reference: Some(url),
            ..Reference::default()
        }
    }

    /// A display alone, where nothing can be referenced.
    pub fn display(text: &'a str) -> Reference<'a> {
        Reference {
            display: Some(text),
            ..Reference::default()
        }
    }

    /// A logical reference by identifier.
    pub fn by_identifier(system: Option<&'a str>, value: &'a str) -> Reference<'a> {
        Reference {
            identifier: Some(Identifier { system, value }),
            ..Reference::default()
        }
    }

    /// A logical reference by one of the canonical model's identifiers.
    pub fn identified(id: &'a crate::model::Identifier) -> Reference<'a> {
        Reference::by_identifier(id.system.as_deref(), &id.value)
    }
}

/// FHIR Period.
#[derive(Serialize)]
pub(crate) struct Period {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// The gateway's MessageHeader: an event, the gateway as source, and what the message is about.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageHeader<'a> {
    resource_type: &'static str,
    event_coding: Coding<'a>,
    source: MessageSource,
    focus: Vec<Reference<'a>>,
}

impl<'a> MessageHeader<'a> {
    /// The header of event `code` in `system`, focused on `focus`.
    pub fn new(system: &'a str, code: &'a str, focus: Vec<Reference<'a>>) -> MessageHeader<'a> {
        MessageHeader {
            resource_type: "MessageHeader",
            event_coding: Coding::new(system, code),
            source: MessageSource {
                name: "sociogate",
                endpoint: "urn:sociogate",
            },
            focus,
        }
    }
}

#[derive(Serialize)]
struct MessageSource {
    name: &'static str,
    endpoint: &'static str,
}
