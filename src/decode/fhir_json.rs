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

/// Decodes FHIR R4 JSON into the typed model.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Resource, DecodeError> {
    let shape = scan(bytes, limits.max_depth)?;
    // `Resource` is an internally tagged enum: serde buffers the whole document before it can
    // pick the variant, and every nested resource again. A Bundle (nearly every inbound message)
    // is read straight into its struct instead, which saves the outermost buffering; the
    // entries' resources still go through the enum. Same model, same result, less copying.
    if shape.top_level_type == Some(b"Bundle".as_slice())
        && let Ok(bundle) = serde_json::from_slice::<fhir_sdk::r4b::resources::Bundle>(bytes)
    {
        return Ok(Resource::Bundle(bundle));
    }
    match serde_json::from_slice::<Resource>(bytes) {
        Ok(resource) => Ok(resource),
        Err(typed_error) => Err(classify(bytes, &typed_error)),
    }
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
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                let start = i + 1;
                let mut end = start;
                let mut escaped_inside = false;
                // Find the closing quote: the next quote not preceded by an escaping backslash.
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[end..]) {
                        Some(k) if bytes[end + k] == b'\\' => {
                            escaped_inside = true;
                            end += k + 2;
                            if end > bytes.len() {
                                return Ok(shape); // unterminated: the parser reports it
                            }
                        }
                        Some(k) => {
                            end += k;
                            break;
                        }
                        None => return Ok(shape),
                    }
                }
                if depth == 1 && !escaped_inside {
                    let text = &bytes[start..end];
                    if matches!(last_structural, b'{' | b',') {
                        last_key_was_resource_type = text == b"resourceType";
                    } else if last_structural == b':' && last_key_was_resource_type {
                        shape.top_level_type.get_or_insert(text);
                    }
                }
                if depth == 1 {
                    last_structural = b'"';
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DecodeError::TooDeep { limit: max_depth });
                }
                if depth == 1 {
                    last_structural = b;
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    last_structural = b;
                }
            }
            b':' | b',' if depth == 1 => last_structural = b,
            _ => {}
        }
        i += 1;
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
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
    }

    #[test]
    fn a_bundle_decodes_the_same_by_the_struct_and_by_the_enum() {
        let bytes = include_bytes!("../../examples/de-first-prescription-message.json");
        let direct = decode(bytes, &limits());
        let by_enum = serde_json::from_slice::<Resource>(bytes).ok();
        assert!(matches!(direct, Ok(Resource::Bundle(_))));
        assert_eq!(direct.ok(), by_enum);
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
