//! Decode: turns raw bytes into a typed document, or a [`DecodeError`] that names why not.
//!
//! Pure: no I/O. Knows formats, not jurisdictions. Limits on size and nesting depth are checked
//! before any parser allocates a tree, so hostile input costs a bounded amount of work.

use fhir_sdk::r4b::resources::Resource;

pub mod cda;
pub mod cda_schema;
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
    "GW-DEC-09",
    "GW-DEC-10",
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
    /// A FHIR resource (a Bundle or a lone resource); for a Bundle, where each entry's
    /// resource lies in the payload (offsets into the bytes given to [`decode`]).
    Fhir(Box<Resource>, Option<Vec<fhir_json::EntrySpan>>),
    /// A FHIR resource read from XML, with the FHIR JSON shape the XML was converted to.
    FhirXml(Box<Resource>, Box<serde_json::Value>),
    /// An HL7 CDA R2 `ClinicalDocument`.
    Cda(Box<cda::CdaDocument>),
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
    /// XML that is not well-formed (or uses what the safety layer refuses: DTDs, entities).
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    /// Well-formed XML that is not a CDA R2 document of the accepted subset.
    #[error("not a CDA R2 document of the accepted subset: {0}")]
    NotCda(String),
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
            DecodeError::MalformedXml(_) => "GW-DEC-09",
            DecodeError::NotCda(_) => "GW-DEC-10",
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
            | DecodeError::NotUtf8(m)
            | DecodeError::MalformedXml(m)
            | DecodeError::NotCda(m) => (Some(m.clone()), None),
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
            Some('<') if root_element(&head) == Some("ClinicalDocument") => Ok(Format::Cda),
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
            if root_element(&head) == Some("ClinicalDocument")
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

/// The local name of the first element in `head`, skipping the XML declaration, processing
/// instructions, comments and a document type declaration (a cheap look, not a parse: the
/// decoder checks everything).
fn root_element(head: &str) -> Option<&str> {
    let mut rest = head;
    loop {
        let at = rest.find('<')?;
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->")? + 3..];
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            rest = &rest[rest.find('>')? + 1..];
        } else {
            let name_end = rest[1..]
                .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .map_or(rest.len(), |i| i + 1);
            let name = &rest[1..name_end];
            return Some(name.rsplit(':').next().unwrap_or(name));
        }
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
            let body = strip_bom(bytes);
            let (resource, mut spans) = fhir_json::decode_with_spans(body, limits)?;
            // Offsets into what the caller gave, byte order mark included.
            let bom = bytes.len() - body.len();
            for span in spans.iter_mut().flatten() {
                span.resource = span.resource.start + bom..span.resource.end + bom;
            }
            Ok((format, Decoded::Fhir(Box::new(resource), spans)))
        }
        Format::FhirXml => {
            let (resource, json) = fhir_xml::decode(bytes, limits)?;
            Ok((format, Decoded::FhirXml(Box::new(resource), Box::new(json))))
        }
        Format::Cda => {
            let document = cda::decode(bytes, limits)?;
            Ok((format, Decoded::Cda(Box::new(document))))
        }
    }
}
