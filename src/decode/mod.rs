//! Decode: turns raw bytes into a typed document, or a [`DecodeError`] that names why not.
//!
//! Pure: no I/O. Knows formats, not jurisdictions. Limits on size and nesting depth are checked
//! before any parser allocates a tree, so hostile input costs a bounded amount of work.

use fhir_sdk::r4b::resources::Resource;

pub mod fhir_json;
pub mod fhir_xml;
pub mod xml;

/// Rule codes this stage reports (verified against the catalogue at start).
pub const RULES: &[&str] = &[
    "GW-DEC-01",
    "GW-DEC-02",
    "GW-DEC-03",
    "GW-DEC-04",
    "GW-DEC-05",
    "GW-DEC-06",
    "GW-DEC-07",
    "GW-DEC-08",
];

/// Limits applied before parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted payload in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of JSON arrays/objects (or XML elements).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 10 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Payload formats the gateway recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FHIR R4 JSON.
    FhirJson,
    /// FHIR R4 XML.
    FhirXml,
    /// HL7 CDA R2 XML.
    Cda,
}

/// A decoded payload.
#[derive(Debug)]
pub enum Decoded {
    /// A FHIR resource (a Bundle or a lone resource).
    Fhir(Box<Resource>),
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes, or only white space.
    #[error("empty payload")]
    Empty,
    /// Over the size limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Nested deeper than the limit.
    #[error("payload nests deeper than {limit} levels")]
    TooDeep {
        /// Configured limit.
        limit: usize,
    },
    /// Not UTF-8 where UTF-8 is required.
    #[error("payload is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// JSON syntax error.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    MalformedJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message.
        message: String,
    },
    /// Well-formed but not a FHIR R4 resource.
    #[error("not a valid FHIR R4 resource: {0}")]
    NotFhir(String),
    /// A FHIR version other than R4.
    #[error("FHIR version {0} is not accepted")]
    WrongFhirVersion(String),
    /// A format the gateway does not read (yet).
    #[error("unsupported format: {0}")]
    Unsupported(String),
}

impl DecodeError {
    /// The rule code of this error in the catalogue.
    pub fn rule_code(&self) -> &'static str {
        match self {
            DecodeError::MalformedJson { .. } => "GW-DEC-01",
            DecodeError::NotFhir(_) => "GW-DEC-02",
            DecodeError::WrongFhirVersion(_) => "GW-DEC-03",
            DecodeError::TooLarge { .. } => "GW-DEC-04",
            DecodeError::TooDeep { .. } => "GW-DEC-05",
            DecodeError::Unsupported(_) => "GW-DEC-06",
            DecodeError::Empty => "GW-DEC-07",
            DecodeError::NotUtf8(_) => "GW-DEC-08",
        }
    }

    /// Values for the message placeholders: `(detail, limit)`.
    pub fn message_values(&self) -> (Option<String>, Option<String>) {
        match self {
            DecodeError::MalformedJson {
                line,
                column,
                message,
            } => (
                Some(format!("line {line}, column {column}: {message}")),
                None,
            ),
            DecodeError::NotFhir(m)
            | DecodeError::WrongFhirVersion(m)
            | DecodeError::Unsupported(m)
            | DecodeError::NotUtf8(m) => (Some(m.clone()), None),
            DecodeError::TooLarge { size, limit } => {
                (Some(size.to_string()), Some(limit.to_string()))
            }
            DecodeError::TooDeep { limit } => (None, Some(limit.to_string())),
            DecodeError::Empty => (None, None),
        }
    }
}

/// Recognises the format from the content type or, when absent or generic, from the bytes.
pub fn sniff(bytes: &[u8], content_type: Option<&str>) -> Result<Format, DecodeError> {
    let body = strip_bom(bytes);
    let declared = content_type.map(|ct| ct.to_ascii_lowercase());
    if let Some(head) = xml::utf16_head(bytes, 4096) {
        // UTF-16 is legal for XML only; JSON must be UTF-8 (RFC 8259 § 8.1).
        return match head.trim_start().chars().next() {
            None => Err(DecodeError::Empty),
            Some('<') if head.contains("ClinicalDocument") => Ok(Format::Cda),
            Some('<') => Ok(Format::FhirXml),
            Some(_) => Err(DecodeError::Unsupported(
                "UTF-16 text that is not XML (JSON must be UTF-8)".to_owned(),
            )),
        };
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(DecodeError::Empty),
        Some(b'{' | b'[') => Ok(Format::FhirJson),
        Some(b'<') => {
            let head = String::from_utf8_lossy(&body[..body.len().min(4096)]);
            if head.contains("ClinicalDocument")
                || declared.as_deref().is_some_and(|c| c.contains("cda"))
            {
                Ok(Format::Cda)
            } else {
                Ok(Format::FhirXml)
            }
        }
        Some(_) => Err(DecodeError::Unsupported(match declared {
            Some(ct) => format!("content type {ct} with a body that is neither JSON nor XML"),
            None => "a body that is neither JSON nor XML".to_owned(),
        })),
    }
}

/// Strips a UTF-8 byte order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes)
}

/// Decodes `bytes` (of the given content type, if known).
pub fn decode(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: &Limits,
) -> Result<(Format, Decoded), DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = sniff(bytes, content_type)?;
    match format {
        Format::FhirJson => {
            let resource = fhir_json::decode(strip_bom(bytes), limits)?;
            Ok((format, Decoded::Fhir(Box::new(resource))))
        }
        Format::FhirXml => {
            let resource = fhir_xml::decode(bytes, limits)?;
            Ok((format, Decoded::Fhir(Box::new(resource))))
        }
        Format::Cda => Err(DecodeError::Unsupported(
            "CDA R2 documents are not accepted yet; send application/fhir+json".to_owned(),
        )),
    }
}
