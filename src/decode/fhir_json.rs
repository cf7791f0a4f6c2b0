//! FHIR R4 JSON through fhir-sdk's R4B model (R4B reads R4 resources; there is no R4 model).

use fhir_sdk::r4b::resources::Resource;

use super::{DecodeError, Limits};

/// Resource types that exist in STU3 but not in R4.
const STU3_ONLY: &[&str] = &[
    "ReferralRequest",
    "ProcedureRequest",
    "DeviceComponent",
    "ImagingManifest",
    "ProcessRequest",
    "ProcessResponse",
    "EligibilityRequest",
    "EligibilityResponse",
    "DataElement",
    "ServiceDefinition",
    "Sequence",
    "ExpansionProfile",
];

/// Resource types that exist in R5 but not in R4.
const R5_ONLY: &[&str] = &[
    "ActorDefinition",
    "ArtifactAssessment",
    "BiologicallyDerivedProductDispense",
    "ConditionDefinition",
    "DeviceAssociation",
    "DeviceDispense",
    "DeviceUsage",
    "EncounterHistory",
    "FormularyItem",
    "GenomicStudy",
    "ImagingSelection",
    "InventoryItem",
    "InventoryReport",
    "NutritionIntake",
    "NutritionProduct",
    "Permission",
    "Requirements",
    "SubscriptionStatus",
    "TestPlan",
    "Transport",
];

/// R4 resource types that R4B removed; fhir-sdk cannot read them.
const R4_ONLY: &[&str] = &[
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "EffectEvidenceSynthesis",
    "RiskEvidenceSynthesis",
];

/// Where one Bundle entry's resource lies in the payload, noted by the decode that read it, so
/// that forwarding copies the sender's text without parsing the payload a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpan {
    /// Position of the entry in `Bundle.entry`.
    pub index: usize,
    /// The entry's `fullUrl`.
    pub full_url: Option<String>,
    /// The resource's `resourceType`.
    pub resource_type: String,
    /// Byte range of the resource's JSON text in the payload.
    pub resource: std::ops::Range<usize>,
}

/// Decodes FHIR R4 JSON into the typed model.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Resource, DecodeError> {
    decode_with_spans(bytes, limits).map(|(resource, _)| resource)
}

/// Decodes FHIR R4 JSON into the typed model; for a Bundle read entry by entry, also where
/// each entry's resource lies in `bytes`.
pub fn decode_with_spans(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(Resource, Option<Vec<EntrySpan>>), DecodeError> {
    let shape = scan(bytes, limits.max_depth)?;
    // `Resource` is an internally tagged enum: serde buffers a whole resource into its
    // `Content` tree before it can pick the variant, then parses that tree again. A Bundle
    // (nearly every inbound message) is read entry by entry straight into the concrete types
    // instead. Same model, same result (tests/corpus.rs compares both on every corpus Bundle);
    // anything the fast path does not take goes the general way, which also explains errors.
    if shape.top_level_type == Some(b"Bundle".as_slice())
        && let Some((bundle, spans)) = bundle_by_entries(bytes, shape.entries)
    {
        return Ok((Resource::Bundle(bundle), Some(spans)));
    }
    decode_general(bytes).map(|resource| (resource, None))
}

/// The general path: the whole payload through fhir-sdk's `Resource` enum.
pub fn decode_general(bytes: &[u8]) -> Result<Resource, DecodeError> {
    match serde_json::from_slice::<Resource>(bytes) {
        Ok(resource) => Ok(resource),
        Err(typed_error) => Err(classify(bytes, &typed_error)),
    }
}

/// Where each entry's resource sits in a Bundle's bytes, as serde reads them: what the scan's
/// spans stand in for, and what is used where the scan found anything unusual.
#[derive(serde::Deserialize)]
struct EntrySpans<'a> {
    #[serde(default, borrow)]
    entry: Vec<RawEntrySpan<'a>>,
}

#[derive(serde::Deserialize)]
struct RawEntrySpan<'a> {
    #[serde(default, borrow)]
    resource: Option<&'a serde_json::value::RawValue>,
}

/// Per entry, the byte range of its resource in `bytes`, read with serde: the fallback where
/// [`scan`] gave no spans, and what the tests hold the scan's spans equal to.
pub fn entry_ranges_by_serde(bytes: &[u8]) -> Option<Vec<Option<std::ops::Range<usize>>>> {
    let spans: EntrySpans<'_> = serde_json::from_slice(bytes).ok()?;
    let base = bytes.as_ptr() as usize;
    spans
        .entry
        .iter()
        .map(|span| match span.resource {
            // The raw value is a slice of `bytes`: its offset is a pointer difference.
            Some(raw) => {
                let start = (raw.get().as_ptr() as usize).checked_sub(base)?;
                Some(Some(start..start.checked_add(raw.get().len())?))
            }
            None => Some(None),
        })
        .collect()
}

/// Reads a Bundle without the enum's buffering: the Bundle with every entry's resource left
/// out (`null`), then each resource straight into its type. `entries` are the scan's spans of
/// the resources, if it found them. `None` when anything is unusual (the caller then takes
/// the general path, which decides and explains).
fn bundle_by_entries(
    bytes: &[u8],
    entries: Option<Vec<Option<std::ops::Range<usize>>>>,
) -> Option<(fhir_sdk::r4b::resources::Bundle, Vec<EntrySpan>)> {
    let entries = match entries {
        Some(entries) => entries,
        None => entry_ranges_by_serde(bytes)?,
    };
    // Invalid UTF-8 is the general path's to explain. simdutf8 checks a German narrative
    // (an umlaut every few words) several times faster than `std::str::from_utf8`.
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let texts = entries
        .iter()
        .flatten()
        .map(|range| text.get(range.clone()))
        .collect::<Option<Vec<&str>>>()?;
    let shell = replace_parts(bytes, &texts, b"null")?;
    let mut resources = Vec::with_capacity(entries.len());
    let mut located = Vec::with_capacity(entries.len());
    let mut texts = texts.into_iter();
    for (index, range) in entries.into_iter().enumerate() {
        resources.push(match range {
            Some(range) => {
                let (resource, resource_type) = typed_resource(texts.next()?).ok()?;
                located.push(EntrySpan {
                    index,
                    full_url: None,
                    resource_type: resource_type.to_owned(),
                    resource: range,
                });
                Some(resource)
            }
            None => None,
        });
    }
    let shell: fhir_sdk::r4b::resources::Bundle = serde_json::from_slice(&shell).ok()?;
    let bundle = with_entry_resources(shell, resources)?;
    for span in &mut located {
        span.full_url = bundle
            .entry
            .get(span.index)
            .and_then(|e| e.as_ref())
            .and_then(|e| e.full_url.clone());
    }
    Some((bundle, located))
}

/// The Bundle read without its entries' resources, with them put in, entry by entry; `None`
/// when they do not line up (the caller then takes the general path).
pub(crate) fn with_entry_resources(
    mut bundle: fhir_sdk::r4b::resources::Bundle,
    resources: Vec<Option<Resource>>,
) -> Option<fhir_sdk::r4b::resources::Bundle> {
    if bundle.entry.len() != resources.len() {
        return None;
    }
    for (entry, resource) in bundle.entry.iter_mut().zip(resources) {
        match (entry, resource) {
            (Some(entry), resource) => entry.resource = resource,
            (None, None) => {}
            (None, Some(_)) => return None,
        }
    }
    Some(bundle)
}

/// One resource, read into its concrete type when it is one of the usual ones, else through
/// the enum; with its `resourceType`. A resource without a `resourceType` string is an error
/// here (the general path then says why).
fn typed_resource(text: &str) -> Result<(Resource, &str), serde_json::Error> {
    // Writers put `resourceType` first; where one did not, the scan finds it.
    let scanned;
    let name = match leading_resource_type(text) {
        Some(name) => name,
        None => {
            scanned = scan(text.as_bytes(), usize::MAX)
                .ok()
                .and_then(|shape| shape.top_level_type);
            match scanned.and_then(|t| std::str::from_utf8(t).ok()) {
                Some(name) => name,
                None => {
                    use serde::de::Error as _;
                    return Err(serde_json::Error::custom("no resourceType"));
                }
            }
        }
    };
    // A large attachment is checked where it lies instead of copied and decoded by the model.
    let lighter =
        if matches!(name, "DocumentReference" | "Binary") && text.len() >= ATTACHMENT_CHECK_MIN {
            without_checked_attachments(text)
        } else {
            None
        };
    let text = lighter.as_deref().unwrap_or(text);
    let mut de = serde_json::Deserializer::from_str(text);
    let resource = resource_of_type(name, &mut de)?;
    de.end()?;
    Ok((resource, name))
}

/// Reads one resource whose `resourceType` is `name`: straight into its concrete type when it
/// is one of the usual ones, else through the enum. The enum is internally tagged, so serde
/// buffers the whole resource into its private `Content` tree before it can pick the variant
/// and then reads that copy; the concrete type reads the input once. Used by the JSON and the
/// XML path (which reads from the JSON shape it built).
pub(crate) fn resource_of_type<'de, D>(name: &str, de: D) -> Result<Resource, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use fhir_sdk::r4b::resources as r;
    use serde::Deserialize as _;
    /// Reads `de` as the named types, else through the enum.
    macro_rules! by_name {
        ($($ty:ident),+) => {
            match name {
                $(stringify!($ty) => r::$ty::deserialize(de).map(Resource::from),)+
                _ => Resource::deserialize(de),
            }
        };
    }
    by_name!(
        Patient,
        Practitioner,
        PractitionerRole,
        Organization,
        ServiceRequest,
        Condition,
        Coverage,
        Observation,
        Encounter,
        CarePlan,
        Goal,
        DocumentReference,
        Consent,
        MessageHeader,
        Provenance,
        Composition,
        Task,
        Claim,
        ClaimResponse,
        RelatedPerson,
        Location,
        QuestionnaireResponse,
        OperationOutcome,
        Binary
    )
}

/// Resources (and attachment texts) at least this large have their attachments checked in
/// place.
pub(crate) const ATTACHMENT_CHECK_MIN: usize = 16 * 1024;

/// Where the attachment data of a DocumentReference (`content[].attachment.data`) or a Binary
/// (`data`) sits.
#[derive(serde::Deserialize)]
struct AttachmentSpans<'a> {
    #[serde(default, borrow)]
    content: Vec<ContentSpan<'a>>,
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct ContentSpan<'a> {
    #[serde(default, borrow)]
    attachment: Option<DataSpan<'a>>,
}

#[derive(serde::Deserialize)]
struct DataSpan<'a> {
    #[serde(default, borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// The resource with every large attachment that is valid base64 written as `""`; `None`
/// when there is none. fhir-sdk's `Base64Binary` would copy the text, strip white space char
/// by char and decode it only to drop the bytes again (nothing downstream reads them:
/// forwarding copies the sender's original text). What is left for the model is exactly what
/// it would have rejected: data with white space, escapes or invalid base64 is left in place.
fn without_checked_attachments(text: &str) -> Option<String> {
    let spans: AttachmentSpans<'_> = serde_json::from_str(text).ok()?;
    let mut data: Vec<&str> = spans
        .content
        .iter()
        .filter_map(|c| c.attachment.as_ref()?.data)
        .chain(spans.data)
        .map(serde_json::value::RawValue::get)
        .filter(|raw| raw.len() >= ATTACHMENT_CHECK_MIN && base64_checked(raw))
        .collect();
    if data.is_empty() {
        return None;
    }
    data.sort_by_key(|raw| raw.as_ptr() as usize);
    String::from_utf8(replace_parts(text.as_bytes(), &data, b"\"\"")?).ok()
}

/// `text` with each of `parts` replaced by `with`. The parts are slices of `text` itself (raw
/// values serde borrowed from it), in order and not overlapping; `None` if one is not.
fn replace_parts(text: &[u8], parts: &[&str], with: &[u8]) -> Option<Vec<u8>> {
    let base = text.as_ptr() as usize;
    let mut out = Vec::with_capacity(1024);
    let mut copied = 0usize;
    for part in parts {
        // A borrowed part's offset is a pointer difference.
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        out.extend_from_slice(text.get(copied..start)?);
        out.extend_from_slice(with);
        copied = start.checked_add(part.len())?;
    }
    out.extend_from_slice(text.get(copied..)?);
    Some(out)
}

/// Whether a JSON string literal holds canonical padded base64 with nothing else (no escapes,
/// no white space): what fhir-sdk's decoder accepts without needing to strip anything.
fn base64_checked(literal: &str) -> bool {
    literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .is_some_and(base64_canonical)
}

/// Whether `text` is canonical padded base64 with nothing else (no white space): what
/// fhir-sdk's decoder accepts without needing to strip anything.
pub(crate) fn base64_canonical(text: &str) -> bool {
    base64_simd::STANDARD.check(text.as_bytes()).is_ok()
}

/// The value of `resourceType` when it is the object's first member and a plain string.
fn leading_resource_type(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"resourceType\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes().get(end) == Some(&b'"')).then(|| &rest[..end])
}

/// Explains why the typed parse failed. Only runs on the failure path, so the happy path parses
/// once.
fn classify(bytes: &[u8], typed_error: &serde_json::Error) -> DecodeError {
    let value = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => value,
        Err(e) => {
            if e.classify() == serde_json::error::Category::Data {
                // Invalid UTF-8 inside a string is reported as a data error by serde_json.
                return DecodeError::NotUtf8(e.to_string());
            }
            return DecodeError::MalformedJson {
                line: e.line(),
                column: e.column(),
                message: strip_position(&e.to_string()),
            };
        }
    };
    let Some(object) = value.as_object() else {
        return DecodeError::NotFhir("the top level is not a JSON object".to_owned());
    };
    let Some(resource_type) = object.get("resourceType").and_then(|v| v.as_str()) else {
        return DecodeError::NotFhir("resourceType is missing".to_owned());
    };
    if let Some(version) = declared_version(&value)
        && !version.starts_with("4.0")
        && !version.starts_with("4.3")
    {
        return DecodeError::WrongFhirVersion(version);
    }
    for (list, version) in [(STU3_ONLY, "STU3 (3.0)"), (R5_ONLY, "R5 (5.0)")] {
        if let Some(found) = find_resource_type(&value, list) {
            return DecodeError::WrongFhirVersion(format!("{version}: resource type {found}"));
        }
    }
    if let Some(found) = find_resource_type(&value, R4_ONLY) {
        return DecodeError::NotFhir(format!(
            "resource type {found} is R4-only and cannot be read by the gateway's R4B model"
        ));
    }
    DecodeError::NotFhir(format!(
        "{resource_type}: {}",
        strip_position(&typed_error.to_string())
    ))
}

/// `fhirVersion` as declared by a CapabilityStatement/StructureDefinition or a `fhirVersion`
/// MIME parameter copied into `meta.tag`; most payloads declare none.
fn declared_version(value: &serde_json::Value) -> Option<String> {
    value
        .get("fhirVersion")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// Finds the first resource type from `list` anywhere in the payload.
fn find_resource_type(value: &serde_json::Value, list: &[&str]) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(rt) = map.get("resourceType").and_then(|v| v.as_str())
                && list.contains(&rt)
            {
                return Some(rt.to_owned());
            }
            map.values().find_map(|v| find_resource_type(v, list))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_resource_type(v, list)),
        _ => None,
    }
}

/// serde_json appends " at line L column C"; positions of the typed parse point at the end of
/// the enclosing resource and would mislead, so they are dropped.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// What the pre-parse scan learned about a payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shape<'a> {
    /// The value of the top-level `resourceType`, when it is a plain string (no escapes).
    pub top_level_type: Option<&'a [u8]>,
    /// For a top-level `entry` array of objects: per element, where its `resource` object lies
    /// in the bytes (`None`: the element has no `resource`). `None` when there is no such
    /// array or anything about it is unusual (an element that is not an object, a `resource`
    /// that is not an object or comes twice, an escaped key, a second `entry`): the caller
    /// then reads the entries with serde, which decides.
    pub entries: Option<Vec<Option<std::ops::Range<usize>>>>,
}

/// Strings up to this long are searched a word at a time in [`scan`], longer ones with `memchr`.
const SHORT_STRING: usize = 32;

/// How far the scan has got with the top-level `entry` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryArray {
    /// Not met yet.
    NotSeen,
    /// Inside it: its elements (depth 3) and their keys are followed byte by byte.
    Open,
    /// Closed, every element understood.
    Closed,
    /// Something unusual: no spans from the scan.
    Unusable,
}

/// Rejects payloads nested deeper than `max_depth` before any tree is built, and returns the
/// [`Shape`] seen on the way. Scans the bytes once, jumping over string contents with `memchr`
/// (a base64 attachment is one jump).
pub fn scan(bytes: &[u8], max_depth: usize) -> Result<Shape<'_>, DecodeError> {
    let mut shape = Shape::default();
    let mut depth = 0usize;
    // The last structural byte seen at depth 1 (inside the top-level object): a string right
    // after `{` or `,` is a key, after `:` a value.
    let mut last_structural = 0u8;
    let mut last_key_was_resource_type = false;
    let mut last_key_was_entry = false;
    // The top-level `entry` array: its state, the spans found so far, and inside an element
    // (depth 3) the last structural byte, whether the last key was `resource`, and where the
    // `resource` object being read started.
    let mut entry_array = EntryArray::NotSeen;
    let mut spans: Vec<Option<std::ops::Range<usize>>> = Vec::new();
    let mut element_structural = 0u8;
    let mut element_key_is_resource = false;
    let mut resource_start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let in_entry_array = entry_array == EntryArray::Open && (depth == 2 || depth == 3);
        // Below the top level only strings and brackets matter: jump over the rest (numbers,
        // literals, `:`, `,`, whitespace) eight bytes at a time. The entry array's own level
        // and its elements' keys are short and read byte by byte.
        if depth >= 2 && !in_entry_array {
            i = next_string_or_bracket(bytes, i);
            if i >= bytes.len() {
                break;
            }
        }
        let b = bytes[i];
        match b {
            b'"' => {
                let start = i + 1;
                let mut end = start;
                let mut escaped_inside = false;
                // Find the closing quote: the next quote not preceded by an escaping backslash.
                loop {
                    match next_quote_or_backslash(bytes, end) {
                        Some(k) if bytes[k] == b'\\' => {
                            escaped_inside = true;
                            end = k + 2;
                            if end > bytes.len() {
                                return Ok(shape); // unterminated: the parser reports it
                            }
                        }
                        Some(k) => {
                            end = k;
                            break;
                        }
                        None => return Ok(shape),
                    }
                }
                let text = &bytes[start..end];
                let is_key = |last: u8| matches!(last, b'{' | b',');
                if depth == 1 {
                    if escaped_inside {
                        // An escaped key may read `entry` once unescaped: serde decides.
                        if is_key(last_structural) {
                            entry_array = EntryArray::Unusable;
                        }
                    } else if is_key(last_structural) {
                        last_key_was_resource_type = text == b"resourceType";
                        last_key_was_entry = text == b"entry";
                    } else if last_structural == b':' && last_key_was_resource_type {
                        shape.top_level_type.get_or_insert(text);
                    }
                    last_structural = b'"';
                } else if in_entry_array {
                    if depth == 2 {
                        // An element that is a string.
                        entry_array = EntryArray::Unusable;
                    } else if is_key(element_structural) {
                        if escaped_inside {
                            entry_array = EntryArray::Unusable;
                        }
                        element_key_is_resource = text == b"resource";
                    } else if element_key_is_resource {
                        // A `resource` that is a string.
                        entry_array = EntryArray::Unusable;
                    }
                    element_structural = b'"';
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DecodeError::TooDeep { limit: max_depth });
                }
                match depth {
                    1 => last_structural = b,
                    2 if last_key_was_entry && last_structural == b':' => {
                        entry_array = match (entry_array, b) {
                            (EntryArray::NotSeen, b'[') => EntryArray::Open,
                            _ => EntryArray::Unusable,
                        };
                    }
                    3 if in_entry_array => {
                        if b == b'{' {
                            spans.push(None);
                            element_structural = b'{';
                            element_key_is_resource = false;
                        } else {
                            entry_array = EntryArray::Unusable;
                        }
                    }
                    4 if in_entry_array
                        && element_structural == b':'
                        && element_key_is_resource =>
                    {
                        if b == b'{' && spans.last().is_some_and(Option::is_none) {
                            resource_start = Some(i);
                        } else {
                            // An array, or a second `resource`.
                            entry_array = EntryArray::Unusable;
                        }
                    }
                    _ => {}
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                match depth {
                    1 => {
                        last_structural = b;
                        if entry_array == EntryArray::Open {
                            entry_array = EntryArray::Closed;
                        }
                    }
                    3 if entry_array == EntryArray::Open => {
                        if let Some(start) = resource_start.take()
                            && let Some(last) = spans.last_mut()
                        {
                            *last = Some(start..i + 1);
                        }
                        element_structural = b;
                    }
                    _ => {}
                }
            }
            b':' | b',' if depth == 1 => last_structural = b,
            b':' | b',' if in_entry_array && depth == 3 => element_structural = b,
            // Between the array's elements.
            b',' if in_entry_array => {}
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ if in_entry_array && (depth == 2 || element_key_is_resource) => {
                // A literal element (`null`), or a `resource` that is a number or literal.
                entry_array = EntryArray::Unusable;
            }
            _ => {}
        }
        i += 1;
    }
    if entry_array == EntryArray::Closed {
        shape.entries = Some(spans);
    }
    Ok(shape)
}

/// Eight copies of `byte` in a word.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The lowest set high bit marks the first zero byte of `word` (the usual word-at-a-time test:
/// a borrow can only mark bytes above a true zero, so the lowest mark is exact).
const fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(splat(0x01)) & !word & splat(0x80)
}

/// The word of `chunk` (eight bytes), first byte lowest, so that `trailing_zeros / 8` of a mark
/// is the byte's index.
fn word(chunk: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(chunk).ok().map(u64::from_le_bytes)
}

/// Where the next `"` or `\` lies at or after `from`. Most keys and values are short: the
/// first [`SHORT_STRING`] bytes are searched a word at a time, the rest of a long string (e.g.
/// base64) with one `memchr` call.
fn next_quote_or_backslash(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let mut offset = 0;
    for chunk in rest.chunks_exact(8).take(SHORT_STRING / 8) {
        let word = word(chunk)?;
        let found = zero_bytes(word ^ splat(b'"')) | zero_bytes(word ^ splat(b'\\'));
        if found != 0 {
            return Some(from + offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    memchr::memchr2(b'"', b'\\', rest.get(offset..)?).map(|k| from + offset + k)
}

/// Where the next byte that may be `"`, `{`, `}`, `[` or `]` lies at or after `from`, looking
/// at eight bytes per step; `from` plus the whole words read when none is in them (the caller
/// reads the last few bytes one by one). It may stop early on a byte that is none of these
/// (0x02, which the caller then passes over), never late.
fn next_string_or_bracket(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    let mut offset = 0;
    for chunk in rest.chunks_exact(8) {
        let Some(word) = word(chunk) else {
            break;
        };
        // Setting bit 5 folds `[` onto `{` and `]` onto `}`; `"` has it set already.
        let folded = word | splat(0x20);
        let found = zero_bytes(folded ^ splat(b'"'))
            | zero_bytes(folded ^ splat(b'{'))
            | zero_bytes(folded ^ splat(b'}'));
        if found != 0 {
            return from + offset + (found.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    from + offset
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = decode(b"{\n \"resourceType\": \"Patient\",\n \"id\": }", &limits()).err();
        match err {
            Some(DecodeError::MalformedJson { line, column, .. }) => {
                assert_eq!((line, column), (3, 8));
            }
            other => panic!("expected malformed JSON, got {other:?}"),
        }
    }

    #[test]
    fn stu3_and_r5_resources_are_named_as_wrong_versions() {
        let stu3 = br#"{"resourceType":"ReferralRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"}}"#;
        assert!(
            matches!(decode(stu3, &limits()), Err(DecodeError::WrongFhirVersion(v)) if v.contains("STU3"))
        );
        let r5 = br#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Transport","status":"completed","intent":"order"}}]}"#;
        assert!(
            matches!(decode(r5, &limits()), Err(DecodeError::WrongFhirVersion(v)) if v.contains("R5"))
        );
    }

    #[test]
    fn unknown_resource_type_and_missing_resource_type_are_not_fhir() {
        let unknown = br#"{"resourceType":"Referral","id":"x"}"#;
        assert!(
            matches!(decode(unknown, &limits()), Err(DecodeError::NotFhir(m)) if m.contains("Referral"))
        );
        let none = br#"{"id":"x"}"#;
        assert!(
            matches!(decode(none, &limits()), Err(DecodeError::NotFhir(m)) if m.contains("resourceType"))
        );
        assert!(matches!(
            decode(b"[1,2]", &limits()),
            Err(DecodeError::NotFhir(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            decode(deep.as_bytes(), &limits()).err(),
            Some(DecodeError::TooDeep { limit: 64 })
        );
        // Brackets inside strings do not count.
        let text = format!(
            r#"{{"resourceType":"Basic","id":"{}","code":{{"text":"x"}}}}"#,
            "[".repeat(200)
        );
        assert!(scan(text.as_bytes(), 64).is_ok());
    }

    #[test]
    fn the_word_skip_stops_at_the_first_string_or_bracket() {
        // Every position of each byte that matters, after runs of bytes that do not.
        for wanted in [b'"', b'{', b'}', b'[', b']'] {
            for at in 0..20 {
                let mut bytes = b"1234567890,: truefalsenull\t\r\n".repeat(2);
                bytes.truncate(at);
                bytes.push(wanted);
                bytes.extend_from_slice(b"{{{{{{{{");
                assert_eq!(
                    next_string_or_bracket(&bytes, 0),
                    at,
                    "{} at {at}",
                    wanted as char
                );
                if at > 3 {
                    assert_eq!(next_string_or_bracket(&bytes, 3), at);
                }
            }
        }
        // None in the whole words: the index after them; the tail is the caller's.
        assert_eq!(next_string_or_bracket(b"0123456789ab", 0), 8);
        assert_eq!(next_string_or_bracket(b"0123", 0), 0);
        assert_eq!(next_string_or_bracket(b"0123", 9), 9);
        // Bytes with the high bit set (UTF-8) are not taken for brackets.
        assert_eq!(next_string_or_bracket("ääää\"".as_bytes(), 0), 8);
    }

    #[test]
    fn the_string_search_finds_the_first_quote_or_backslash_near_or_far() {
        for wanted in [b'"', b'\\'] {
            // Within the word-at-a-time reach, at its edge and beyond it (memchr).
            for at in 0..SHORT_STRING + 20 {
                let mut bytes = "a{[]}:, é".repeat(20).into_bytes();
                bytes.truncate(at);
                bytes.push(wanted);
                bytes.extend_from_slice(b"\"\"");
                assert_eq!(next_quote_or_backslash(&bytes, 0), Some(at), "at {at}");
                if at > 5 {
                    assert_eq!(next_quote_or_backslash(&bytes, 5), Some(at));
                }
            }
        }
        assert_eq!(
            next_quote_or_backslash(b"no end in sight at all, none", 0),
            None
        );
        assert_eq!(next_quote_or_backslash(b"ab", 2), None);
        assert_eq!(next_quote_or_backslash(b"ab", 3), None);
    }

    #[test]
    fn deep_nesting_behind_long_plain_runs_is_still_refused() {
        let numbers = vec!["1.5e3"; 500].join(", ");
        let deep = format!(
            r#"{{"resourceType":"Basic","a":[{numbers},{}{}]}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert_eq!(
            scan(deep.as_bytes(), 64),
            Err(DecodeError::TooDeep { limit: 64 })
        );
        // The same depth inside a string below the top level is text, not nesting.
        let text = format!(
            r#"{{"resourceType":"Basic","a":[{numbers},"{}"]}}"#,
            "[".repeat(70)
        );
        assert!(scan(text.as_bytes(), 64).is_ok());
    }

    #[test]
    fn the_scan_notes_the_top_level_resource_type_only() {
        let shape = |text: &str| {
            scan(text.as_bytes(), 64).map(|s| {
                s.top_level_type
                    .map(|t| String::from_utf8_lossy(t).into_owned())
            })
        };
        // A nested resourceType (the first one in the text) is not the top level's.
        let bundle =
            r#"{"entry":[{"resource":{"resourceType":"Patient"}}], "resourceType" : "Bundle"}"#;
        assert_eq!(shape(bundle), Ok(Some("Bundle".to_owned())));
        // A value that reads "resourceType" is not a key.
        assert_eq!(shape(r#"{"id":"resourceType","x":"Patient"}"#), Ok(None));
        // Escaped quotes and backslashes inside strings are jumped over correctly.
        assert_eq!(
            shape(r#"{"text":"a \"quoted\" \\ [{ value","resourceType":"Basic"}"#),
            Ok(Some("Basic".to_owned()))
        );
        // An escaped type name is left to the parser (the enum path reads it).
        assert_eq!(shape(r#"{"resourceType":"Bun\u0064le"}"#), Ok(None));
        // Unterminated strings end the scan; the parser reports them.
        assert_eq!(shape(r#"{"resourceType":"Bund"#), Ok(None));
        assert_eq!(shape(r#"{"a":"\"#), Ok(None));
        // Brackets inside strings do not count as depth, whether the string is short (searched
        // byte by byte), long, or has its escape or end beyond the short search.
        let long = format!(r#"{{"a":"{}","resourceType":"Basic"}}"#, "[{".repeat(40));
        assert_eq!(shape(&long), Ok(Some("Basic".to_owned())));
        let late_escape = format!(
            r#"{{"a":"{}\"{}","resourceType":"Basic"}}"#,
            "{".repeat(SHORT_STRING + 3),
            "[".repeat(100)
        );
        assert_eq!(shape(&late_escape), Ok(Some("Basic".to_owned())));
        let exact = format!(
            r#"{{"a":"{}","resourceType":"Basic"}}"#,
            "{".repeat(SHORT_STRING)
        );
        assert_eq!(
            scan(exact.as_bytes(), 1).map(|s| s.top_level_type.is_some()),
            Ok(true)
        );
    }

    #[test]
    fn the_scan_finds_the_entry_resources_or_leaves_them_to_serde() {
        let entries = |text: &str| scan(text.as_bytes(), 64).ok().and_then(|s| s.entries);
        let serde = |text: &str| entry_ranges_by_serde(text.as_bytes());
        // Usual shapes, with white space, an entry without a resource, keys in any order,
        // nested `entry` and `resource` keys that are not the Bundle's, and brackets in strings.
        for text in [
            r#"{"resourceType":"Bundle","entry":[{"fullUrl":"a","resource":{"resourceType":"Patient","id":"{["}},{"request":{"method":"GET"}}]}"#,
            "{ \"entry\" : [ { \"resource\" : {\"resourceType\":\"Basic\"} , \"fullUrl\":\"x\" } ,\n\t{\"resource\":{}} ] , \"resourceType\":\"Bundle\" }",
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Bundle","entry":[{"resource":{"a":1}}]}}]}"#,
            r#"{"resourceType":"Bundle","entry":[]}"#,
            r#"{"resourceType":"Bundle","meta":{"entry":[{"resource":"x"}]},"entry":[{"resource":{"x":[{"resource":2}]}}]}"#,
        ] {
            let found = entries(text);
            assert!(found.is_some(), "{text}");
            assert_eq!(found, serde(text), "{text}");
        }
        let spans = entries(r#"{"entry":[{"resource":{"id":"p"}},{"fullUrl":"u"}]}"#);
        assert_eq!(spans, Some(vec![Some(22..32), None]));
        // Anything unusual is serde's to read (or to refuse): elements or resources that are not
        // objects, a resource twice, escaped keys, a second `entry`, an unterminated array.
        for text in [
            r#"{"entry":[null,{"resource":{}}]}"#,
            r#"{"entry":["x"]}"#,
            r#"{"entry":[[]]}"#,
            r#"{"entry":[{"resource":null}]}"#,
            r#"{"entry":[{"resource":"x"}]}"#,
            r#"{"entry":[{"resource":[]}]}"#,
            r#"{"entry":[{"resource":{},"resource":{}}]}"#,
            r#"{"entry":[{"resourc\u0065":{}}]}"#,
            r#"{"entr\u0079":[{"resource":{}}]}"#,
            r#"{"entry":[{"resource":{}}],"entr\u0079":[]}"#,
            r#"{"entry":[{"resource":{}}],"entry":[]}"#,
            r#"{"entry":{"resource":{}}}"#,
            r#"{"entry":[{"resource":{}}"#,
        ] {
            assert_eq!(entries(text), None, "{text}");
        }
        // Where the scan stepped aside, serde decides: the same Bundle decodes by either way.
        let escaped = br#"{"resourceType":"Bundle","type":"collection","entry":[{"resourc\u0065":{"resourceType":"Patient","id":"p"}}]}"#;
        let by_enum = serde_json::from_slice::<Resource>(escaped).ok();
        assert!(by_enum.is_some());
        assert_eq!(decode(escaped, &limits()).ok(), by_enum);
    }

    #[test]
    fn a_bundle_decodes_the_same_by_the_struct_and_by_the_enum() {
        let bytes = include_bytes!("../../examples/de-first-prescription-message.json");
        let direct = decode(bytes, &limits());
        let by_enum = serde_json::from_slice::<Resource>(bytes).ok();
        assert!(matches!(direct, Ok(Resource::Bundle(_))));
        assert_eq!(direct.ok(), by_enum);
    }

    /// A message Bundle with one DocumentReference whose attachment data is `data`.
    fn bundle_with_attachment(data: &str) -> Vec<u8> {
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[
              {{"fullUrl":"urn:uuid:5f6a0d3c-0000-4000-8000-000000000001","resource":{{"resourceType":"Patient","id":"p"}}}},
              {{"fullUrl":"urn:uuid:5f6a0d3c-0000-4000-8000-000000000002","resource":{{"resourceType":"DocumentReference","status":"current",
                "content":[{{"attachment":{{"contentType":"application/pdf","data":"{data}"}}}}]}}}}]}}"#
        )
        .into_bytes()
    }

    /// The bytes of the first DocumentReference attachment of a Bundle (shared with the FHIR
    /// XML tests).
    pub(crate) fn attachment_data(resource: &Resource) -> Option<Vec<u8>> {
        let Resource::Bundle(bundle) = resource else {
            return None;
        };
        bundle
            .entry
            .iter()
            .flatten()
            .find_map(|e| match &e.resource {
                Some(Resource::DocumentReference(doc)) => doc
                    .content
                    .iter()
                    .flatten()
                    .find_map(|c| c.attachment.data.as_ref().map(|d| d.0.clone())),
                _ => None,
            })
    }

    #[test]
    fn a_large_valid_attachment_is_checked_in_place_and_an_invalid_one_still_fails() {
        use base64::Engine as _;
        let pdf: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let data = base64::engine::general_purpose::STANDARD.encode(&pdf);
        // Valid: decodes, and the model is spared the bytes (nothing downstream reads them).
        let decoded = decode(&bundle_with_attachment(&data), &limits());
        assert_eq!(
            decoded.as_ref().ok().and_then(attachment_data),
            Some(Vec::new())
        );
        // The general path reads the same Bundle, with the bytes.
        let general = decode_general(&bundle_with_attachment(&data));
        assert_eq!(
            general.as_ref().ok().and_then(attachment_data),
            Some(pdf.clone())
        );
        // A small attachment is left to the model as before.
        let small = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.7 small");
        let decoded = decode(&bundle_with_attachment(&small), &limits());
        assert_eq!(
            decoded.ok().and_then(|r| attachment_data(&r)),
            Some(b"%PDF-1.7 small".to_vec())
        );
        // Invalid base64 (a character outside the alphabet, or non-zero trailing bits) is
        // still refused, by the model, as it would be without the check.
        for broken in [
            format!("{}!", &data[..data.len() - 4]),
            format!("{}Zh==", &data[..data.len() - 4]),
        ] {
            let err = decode(&bundle_with_attachment(&broken), &limits()).err();
            assert!(
                matches!(err, Some(DecodeError::NotFhir(ref m)) if m.starts_with("Bundle")),
                "{err:?}"
            );
        }
        // White space inside the data is the model's to strip: the result is the same bytes.
        let spaced = format!("{} {}", &data[..400], &data[400..]);
        let decoded = decode(&bundle_with_attachment(&spaced), &limits());
        assert_eq!(decoded.ok().and_then(|r| attachment_data(&r)), Some(pdf));
    }

    #[test]
    fn the_in_place_check_accepts_only_what_the_models_decoder_accepts() {
        use base64::Engine as _;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(37);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=- \\";
        for round in 0..20_000 {
            let len = rng.random_range(0..24);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let mut text = base64::engine::general_purpose::STANDARD
                .encode(&bytes)
                .into_bytes();
            // Most rounds damage the text: a changed, dropped or added character.
            if round % 4 != 0 && !text.is_empty() {
                let at = rng.random_range(0..text.len());
                match rng.random_range(0..3) {
                    0 => text[at] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        text.remove(at);
                    }
                    _ => text.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            let model_accepts = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .is_ok();
            assert_eq!(
                base64_checked(&format!("\"{text}\"")),
                model_accepts,
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_valid_patient_decodes() {
        let patient =
            br#"{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1980-02-03"}"#;
        assert!(matches!(
            decode(patient, &limits()),
            Ok(Resource::Patient(_))
        ));
    }
}
