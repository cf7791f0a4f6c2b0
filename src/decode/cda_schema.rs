//! XML Schema validation of CDA R2 documents against `schemas/cda-r2-subset.xsd`, with libxml2.
//!
//! The schema models strictly the parts of CDA R2 (POCD_MT000040) the gateway reads and accepts
//! anything elsewhere (see the head of the XSD). Validation runs after the safety layer
//! ([`super::xml`]): libxml2 only sees text that has no DTD and no entities, is within the depth
//! limits and is UTF-8. It is still parsed defensively: no network access (`XML_PARSE_NONET`),
//! no entity substitution (no `XML_PARSE_NOENT`), no DTD loading or validation (no
//! `XML_PARSE_DTDLOAD`/`XML_PARSE_DTDVALID`), libxml2's hard limits kept (no `XML_PARSE_HUGE`),
//! no error recovery, and the encoding forced to UTF-8 whatever the XML declaration says (the
//! safety layer has already turned UTF-16 payloads into UTF-8 text).
//!
//! libxml2's parser and validation contexts hold raw pointers and are neither `Send` nor `Sync`:
//! the schema is compiled once per thread, on that thread's first call, and kept in a
//! `thread_local!`. Call [`validate`] from blocking worker threads (`spawn_blocking`), not from
//! async tasks that hop between threads between calls (each call is self-contained, so that
//! would be correct, only slower at first).
//!
//! # Messages
//!
//! libxml2's messages quote document values (`'1980-01-01' is not accepted by the pattern ...`).
//! Patient data must never reach logs, so every [`SchemaViolation::message`] keeps only element
//! and attribute names (XML names cannot contain a quote, so they are cut out safely), the
//! reason, and the schema's side of it (type names, patterns, enumerations); each document value
//! is replaced by the words "the value". Where a value's end cannot be found for certain, the
//! rest of the message is dropped. Errors of the XML parser itself (rare after the safety layer)
//! are reported by libxml2's error code only, because their text can quote raw bytes.

use std::cell::RefCell;

use libxml::error::{StructuredError, XmlErrorLevel};
use libxml::parser::{Parser, ParserOptions, XmlParseFailure};
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};

/// The schema, compiled into the binary.
const XSD: &str = include_str!("../../schemas/cda-r2-subset.xsd");

/// Most violations reported for one document (libxml2 stops at the first content-model error of
/// an element, but attribute and value errors accumulate).
const MAX_VIOLATIONS: usize = 50;

/// One schema violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// 1-based line of the offending element, when libxml2 knows it (it caps line numbers at
    /// 65535).
    pub line: Option<u32>,
    /// What is wrong, with element and attribute names but without document values.
    pub message: String,
}

impl std::fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

thread_local! {
    /// This thread's compiled schema, or why it did not compile.
    static VALIDATOR: RefCell<Result<SchemaValidationContext, Vec<SchemaViolation>>> =
        RefCell::new(compile());
}

/// Compiles the embedded schema. A failure is a bug in the schema, reported as violations.
fn compile() -> Result<SchemaValidationContext, Vec<SchemaViolation>> {
    let mut parser = SchemaParserContext::from_buffer(XSD);
    SchemaValidationContext::from_parser(&mut parser).map_err(|errors| {
        let mut violations: Vec<SchemaViolation> = errors
            .iter()
            .map(|e| SchemaViolation {
                line: line(e),
                // The schema is ours: its messages carry no patient data.
                message: format!(
                    "bug: the embedded schema schemas/cda-r2-subset.xsd does not compile: {}",
                    e.message.as_deref().unwrap_or("no message").trim()
                ),
            })
            .collect();
        if violations.is_empty() {
            violations.push(SchemaViolation {
                line: None,
                message: "bug: the embedded schema schemas/cda-r2-subset.xsd does not compile"
                    .to_owned(),
            });
        }
        violations
    })
}

/// Validates CDA text (already UTF-8, already passed the safety layer) against the embedded
/// subset XSD.
///
/// `Ok(())` when the document is schema-valid; otherwise every violation libxml2 reported (at
/// most 50), in document order, with line numbers and without document values.
pub fn validate(xml: &str) -> Result<(), Vec<SchemaViolation>> {
    let options = ParserOptions {
        recover: false,
        no_net: true,
        no_error: true,
        no_warning: true,
        huge: false,
        encoding: Some("UTF-8"),
        ..ParserOptions::default()
    };
    let document = match Parser::default().parse_string_with_diagnostics(xml, options) {
        Ok((document, diagnostics)) => {
            let errors: Vec<SchemaViolation> = diagnostics
                .iter()
                .filter(|d| matches!(d.level, XmlErrorLevel::Error | XmlErrorLevel::Fatal))
                .map(parse_violation)
                .collect();
            if !errors.is_empty() {
                return Err(cap(errors));
            }
            document
        }
        Err(XmlParseFailure::ParseFailed(diagnostics)) => {
            let mut errors: Vec<SchemaViolation> = diagnostics
                .iter()
                .filter(|d| matches!(d.level, XmlErrorLevel::Error | XmlErrorLevel::Fatal))
                .map(parse_violation)
                .collect();
            if errors.is_empty() {
                errors.push(SchemaViolation {
                    line: None,
                    message: "not well-formed XML".to_owned(),
                });
            }
            return Err(cap(errors));
        }
        Err(XmlParseFailure::DocumentTooLarge) => {
            return Err(vec![SchemaViolation {
                line: None,
                message: "the document is too large for libxml2 (2 GiB at most)".to_owned(),
            }]);
        }
        Err(_) => {
            return Err(vec![SchemaViolation {
                line: None,
                message: "libxml2 could not set up a parser".to_owned(),
            }]);
        }
    };
    VALIDATOR.with(|cell| {
        let mut guard = cell.borrow_mut();
        match guard.as_mut() {
            Err(compile_errors) => Err(compile_errors.clone()),
            Ok(context) => {
                // Anything a previous call left in the context's log (warnings of a valid
                // document) is not this document's.
                context.drain_errors();
                context.validate_document(&document).map_err(|errors| {
                    cap(errors
                        .iter()
                        .map(|e| SchemaViolation {
                            line: line(e),
                            message: redact(e.message.as_deref().unwrap_or("schema violation")),
                        })
                        .collect())
                })
            }
        }
    })
}

/// At most [`MAX_VIOLATIONS`], with a last entry saying how many were left out.
fn cap(mut violations: Vec<SchemaViolation>) -> Vec<SchemaViolation> {
    if violations.len() > MAX_VIOLATIONS {
        let more = violations.len() - MAX_VIOLATIONS;
        violations.truncate(MAX_VIOLATIONS);
        violations.push(SchemaViolation {
            line: None,
            message: format!("{more} more violations not listed"),
        });
    }
    violations
}

fn line(error: &StructuredError) -> Option<u32> {
    error
        .line
        .and_then(|l| u32::try_from(l).ok())
        .filter(|l| *l > 0)
}

/// A parser error, by code only: the parser's texts can quote raw bytes of the document.
fn parse_violation(error: &StructuredError) -> SchemaViolation {
    SchemaViolation {
        line: line(error),
        message: format!(
            "not well-formed XML (libxml2 parser error {}, see xmlParserErrors)",
            error.code
        ),
    }
}

/// Where a document value starts in a libxml2 schema message, and what replaces it.
const OPENERS: [(&str, &str); 2] = [
    // "[facet 'pattern'] The value 'v' is not accepted by the pattern '...'."
    // "The value 'v' does not match the fixed value constraint '...'."
    // "The QName value 'v' of the xsi:type attribute does not resolve to a type definition."
    // "The actual value 'v' ...", "Duplicate value 'v' of simple type 'xs:ID'", ...
    ("value '", "value"),
    // "Element 'e', attribute 'a': 'v' is not a valid value of the atomic type 'xs:decimal'."
    (": '", ": the value"),
];

/// What follows a document value in libxml2's schema messages (the quote ends the value). The
/// last one in a message ends the value; if schema text after the value contains one too (as in
/// "of simple type 'xs:ID' is ..."), that schema text is dropped with the value: the redaction
/// errs on the side of saying less.
const CLOSERS: [&str; 5] = ["' is ", "' does ", "' has ", "' of ", "' must "];

/// Keeps the names and the reason of a libxml2 schema message and replaces document values.
///
/// Values may contain quotes and even a closer: the last closer in the message is the one that
/// ends the value, because only schema text follows it.
fn redact(message: &str) -> String {
    let message = message.trim();
    let (prefix, mut rest) = split_names(message);
    let mut out = String::with_capacity(message.len());
    out.push_str(prefix);
    loop {
        let next = OPENERS
            .iter()
            .filter_map(|(opener, replacement)| {
                rest.find(opener).map(|at| (at, *opener, *replacement))
            })
            .min_by_key(|(at, _, _)| *at);
        let Some((at, opener, replacement)) = next else {
            out.push_str(rest);
            break;
        };
        let value_start = at + opener.len();
        let end = CLOSERS
            .iter()
            .filter_map(|closer| rest[value_start..].rfind(closer))
            .max();
        out.push_str(&rest[..at]);
        out.push_str(replacement);
        match end {
            Some(end) => rest = &rest[value_start + end + 1..],
            None => {
                out.push_str(" (rest of the message left out: it may quote the document)");
                break;
            }
        }
    }
    out
}

/// Splits `Element 'name'[, attribute 'name']: ` off a libxml2 schema message. XML names cannot
/// contain a quote, so the first quotes close them.
fn split_names(message: &str) -> (&str, &str) {
    let mut end = 0;
    for lead in ["Element '", ", attribute '"] {
        let Some(after) = message[end..].strip_prefix(lead) else {
            break;
        };
        let Some(close) = after.find('\'') else {
            break;
        };
        end += lead.len() + close + 1;
    }
    message.split_at(end)
}
