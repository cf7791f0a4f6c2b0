//! CDA R2 schema validation (`decode::cda_schema`): every CDA document of the shared corpus
//! validates (exceptions listed with their reasons), hand-made invalid fixtures fail with the line
//! of the fault, and no document value reaches a message.

mod common;

use std::path::{Path, PathBuf};

use common::{all_files, corpus};
use sociogate::decode::cda_schema::{self, SchemaViolation};
use sociogate::decode::xml::{self, Node, Reader};
use sociogate::decode::{DecodeError, Limits};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cda"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Corpus documents whose root is `ClinicalDocument` but which are not valid CDA R2, and why.
/// The test checks that each of them does fail, so that the list stays true.
const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "hl7-c-cda-examples/Header/Direct Address/Patient and Provider Organization Direct \
         Address(C-CDAR2.1).xml",
        "a header excerpt: literal \"...\" stands for the omitted parts, so there is no author \
         or custodian and the structuredBody is empty",
    ),
    (
        "hl7-c-cda-examples/Referrals - Planned and Completed/Close Referral with a \
         Document/Consult Document Closing Referral(C-CDAR2.1).xml",
        "a stray '>' after the root start tag, and the body is left out (a structuredBody \
         component without a section)",
    ),
    (
        "hl7-c-cda-examples/Referrals - Planned and Completed/Referral Request and Close \
         Referral with a Note/Intervention Planned Referral and Note Completeting \
         Referral(C-CDAR2.1).xml",
        "a stubbed body excerpt: ClinicalDocument outside the urn:hl7-org:v3 namespace, no \
         header, and the xsi: prefix is used without being declared",
    ),
    (
        "hl7-c-cda-examples/Plan of Treatment/Planned Encounter - Referral/Planned Encounter - \
         Reason for Referral(C-CDAR2.1).xml",
        "a stubbed body excerpt: ClinicalDocument outside the urn:hl7-org:v3 namespace, no \
         header, and the xsi: prefix is used without being declared",
    ),
    (
        "hl7-c-cda-examples/Health Concerns/Health Concerns Link to Problems Section/Health \
         Concerns Link to Problems Section(C-CDA2.1).xml",
        "a stubbed body excerpt: ClinicalDocument outside the urn:hl7-org:v3 namespace, no \
         header, and the xsi: prefix is used without being declared",
    ),
    (
        "hl7-c-cda-examples/Health Concerns/Health Concerns Link to Problems Section with \
         linkHTML/Health Concerns Link to Problems Section with linkHTML(C-CDA2.1).xml",
        "a stubbed body excerpt: ClinicalDocument outside the urn:hl7-org:v3 namespace, no \
         header, and the xsi: prefix is used without being declared",
    ),
    (
        "fhir-test-cases-cda/validator-cda-example.xml",
        "a FHIR validator test case, incomplete on purpose: no typeId, effectiveTime, \
         confidentialityCode, author, custodian or component",
    ),
];

/// The text of a document as the safety layer passes it on: decoded to UTF-8 and read through
/// once (no DTD, depth and attribute limits, namespaces declared).
fn safe_text(bytes: &[u8]) -> Result<String, DecodeError> {
    let text = xml::to_utf8(bytes)?;
    let mut reader = Reader::new(&text, &Limits::default());
    loop {
        if matches!(reader.read()?, Node::Eof) {
            break;
        }
    }
    Ok(text.into_owned())
}

/// Whether the root element's local name is `ClinicalDocument` (a quick look, any namespace).
fn is_clinical_document(bytes: &[u8]) -> bool {
    let Ok(text) = xml::to_utf8(bytes) else {
        return false;
    };
    let mut rest = text.as_ref();
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end..]);
            continue;
        }
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
            .collect();
        return name.rsplit(':').next() == Some("ClinicalDocument");
    }
    false
}

fn show(violations: &[SchemaViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn every_cda_document_of_the_corpus_validates_except_the_listed_ones() {
    let mut files: Vec<PathBuf> = ["hl7-c-cda-examples", "fhir-test-cases-cda"]
        .iter()
        .flat_map(|dir| all_files(&corpus().join(dir)))
        .collect();
    files.sort();
    let mut valid = Vec::new();
    let mut failures = Vec::new();
    let mut exceptions_seen = Vec::new();
    for path in &files {
        let bytes = read(path);
        if !is_clinical_document(&bytes) {
            continue;
        }
        let relative = path
            .strip_prefix(corpus())
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let outcome = match safe_text(&bytes) {
            Ok(text) => cda_schema::validate(&text).map_err(|v| show(&v)),
            Err(e) => Err(format!("refused by the safety layer: {e}")),
        };
        match (EXCEPTIONS.iter().find(|(p, _)| *p == relative), outcome) {
            (None, Ok(())) => valid.push(relative),
            (None, Err(why)) => failures.push(format!("{relative}:\n  {why}")),
            (Some(_), Ok(())) => failures.push(format!(
                "{relative} is listed as an exception but validates: take it off the list"
            )),
            (Some(_), Err(_)) => exceptions_seen.push(relative),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        exceptions_seen.len(),
        EXCEPTIONS.len(),
        "exceptions not found in the corpus: {:?}",
        EXCEPTIONS
            .iter()
            .filter(|(p, _)| !exceptions_seen.iter().any(|s| s == p))
            .collect::<Vec<_>>()
    );
    // 16 C-CDA R2.1 documents and 3 from fhir-test-cases at the time of writing.
    assert!(valid.len() >= 17, "only {} valid: {valid:?}", valid.len());
    assert!(
        valid.iter().any(|p| p.ends_with("Referral_Note.xml")),
        "{valid:?}"
    );
}

#[test]
fn the_synthetic_referral_validates() {
    let text = safe_text(&read(&fixtures().join("valid-referral.xml")))
        .unwrap_or_else(|e| panic!("safety layer: {e}"));
    if let Err(v) = cda_schema::validate(&text) {
        panic!("{}", show(&v));
    }
}

/// `(fixture, text on the offending line, what the message must name, document value that must
/// not appear)`.
const INVALID: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "missing-record-target.xml",
        "<author>",
        "recordTarget",
        None,
    ),
    ("two-ids.xml", "REF-0002", "}id'", Some("REF-0002")),
    (
        "bad-birth-time.xml",
        "<birthTime",
        "birthTime",
        Some("1980-01-01"),
    ),
    (
        "unknown-header-element.xml",
        "<referralUrgency",
        "referralUrgency",
        None,
    ),
    ("header-out-of-order.xml", "<title>", "}title'", None),
    (
        "observation-mood-xyz.xml",
        "moodCode=\"XYZ\"",
        "moodCode",
        Some("XYZ"),
    ),
];

#[test]
fn invalid_fixtures_fail_at_the_line_of_the_fault_without_their_values() {
    for (file, marker, names, value) in INVALID {
        let text = String::from_utf8(read(&fixtures().join(file)))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let expected_line = text
            .lines()
            .position(|l| l.contains(marker))
            .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
            .unwrap_or_else(|| panic!("{file}: no line contains {marker}"));
        let violations = match cda_schema::validate(&text) {
            Ok(()) => panic!("{file} validates"),
            Err(v) => v,
        };
        let first = &violations[0];
        assert_eq!(
            first.line,
            Some(expected_line),
            "{file}: {}",
            show(&violations)
        );
        assert!(
            first.message.contains(names),
            "{file}: {names} not named in {}",
            first.message
        );
        if let Some(value) = value {
            for v in &violations {
                assert!(!v.message.contains(value), "{file}: value leaked: {v}");
            }
        }
    }
}

#[test]
fn messages_keep_the_reason_and_the_schema_side() {
    let text =
        String::from_utf8(read(&fixtures().join("observation-mood-xyz.xml"))).unwrap_or_default();
    let violations = cda_schema::validate(&text).err().unwrap_or_default();
    assert_eq!(
        violations.first().map(|v| v.message.as_str()),
        Some(
            "Element '{urn:hl7-org:v3}observation', attribute 'moodCode': [facet \
             'enumeration'] The value is not an element of the set {'DEF', 'EVN', 'GOL', 'INT', \
             'PRMS', 'PRP', 'RQO'}."
        )
    );
    let text =
        String::from_utf8(read(&fixtures().join("missing-record-target.xml"))).unwrap_or_default();
    let violations = cda_schema::validate(&text).err().unwrap_or_default();
    assert_eq!(
        violations.first().map(|v| v.message.as_str()),
        Some(
            "Element '{urn:hl7-org:v3}author': This element is not expected. Expected is one \
             of ( {urn:hl7-org:v3}copyTime, {urn:hl7-org:v3}recordTarget )."
        )
    );
}

/// The valid fixture with `from` replaced by `to` (once).
fn variant(from: &str, to: &str) -> String {
    let text = String::from_utf8(read(&fixtures().join("valid-referral.xml"))).unwrap_or_default();
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1)
}

#[test]
fn values_with_quotes_and_message_words_do_not_leak() {
    let hostile = [
        // A value that contains the words that end a value in libxml2's messages.
        variant(
            "<birthTime value=\"19800101\"/>",
            "<birthTime value=\"1980' is SECRET' does SECRET2' has &apos;\"/>",
        ),
        // A value in an atomic type (xs:integer).
        variant(
            "<versionNumber value=\"1\"/>",
            "<versionNumber value=\"SECRET's\"/>",
        ),
        // An identifier root that is no OID (a union type).
        variant(
            "<id root=\"2.25.1234567890\" extension=\"REF-0001\"/>",
            "<id root=\"SECRET name' of x\" extension=\"REF-0001\"/>",
        ),
        // A fixed value.
        variant(
            "<typeId root=\"2.16.840.1.113883.1.3\"",
            "<typeId root=\"1.2.3.SECRET\"",
        ),
        // An xsi:type the schema does not know.
        variant("xsi:type=\"PQ\"", "xsi:type=\"SECRET\""),
    ];
    for text in &hostile {
        let violations = match cda_schema::validate(text) {
            Ok(()) => panic!("validates"),
            Err(v) => v,
        };
        for v in &violations {
            assert!(!v.message.contains("SECRET"), "leaked: {v}");
            assert!(v.line.is_some(), "no line: {v}");
        }
    }
}

#[test]
fn xsi_type_values_are_validated_as_their_type() {
    assert!(
        cda_schema::validate(&variant(
            "value=\"120\" unit=\"h\"",
            "value=\"abc\" unit=\"h\""
        ))
        .is_err()
    );
    assert!(cda_schema::validate(&variant("xsi:type=\"PQ\"", "xsi:type=\"RTO\"")).is_err());
    assert!(
        cda_schema::validate(&variant(
            "<value xsi:type=\"PQ\" value=\"120\" unit=\"h\"/>",
            "<value xsi:type=\"IVL_TS\"><low value=\"20240301\"/></value>",
        ))
        .is_ok()
    );
    assert!(
        cda_schema::validate(&variant(
            "<value xsi:type=\"PQ\" value=\"120\" unit=\"h\"/>",
            "<value xsi:type=\"IVL_TS\"><low value=\"2024-03-01\"/></value>",
        ))
        .is_err()
    );
    // A value without xsi:type is an instance of the abstract ANY.
    assert!(
        cda_schema::validate(&variant(
            "<value xsi:type=\"PQ\" value=\"120\" unit=\"h\"/>",
            "<value value=\"120\" unit=\"h\"/>",
        ))
        .is_err()
    );
}

/// libxml2 ignores `maxOccurs="0"` particles (they stay allowed), so the restricted data types
/// leave the elements out instead; these check that the restrictions hold.
#[test]
fn restricted_data_types_refuse_what_their_base_allows() {
    let gender = "<administrativeGenderCode code=\"F\" codeSystem=\"2.16.840.1.113883.5.1\"/>";
    let refused = [
        // CE has no qualifier.
        variant(
            gender,
            "<administrativeGenderCode code=\"F\"><qualifier/></administrativeGenderCode>",
        ),
        // CS has neither translations nor a code system.
        variant(
            "<statusCode code=\"completed\"/>",
            "<statusCode code=\"completed\"><translation code=\"x\"/></statusCode>",
        ),
        variant(
            "<statusCode code=\"completed\"/>",
            "<statusCode code=\"completed\" codeSystem=\"2.16.840.1.113883.5.14\"/>",
        ),
        // ST is text only.
        variant(
            "<title>Diagnosen</title>",
            "<title>Diagnosen<reference value=\"#d1\"/></title>",
        ),
        // ON has no given name.
        variant(
            "<name>Beispielkasse</name>",
            "<name><given>B</given></name>",
        ),
    ];
    for text in &refused {
        assert!(cda_schema::validate(text).is_err());
    }
    let accepted = variant(
        gender,
        "<administrativeGenderCode code=\"F\"><originalText>w</originalText>\
         <translation code=\"2\" codeSystem=\"1.2.3\"/></administrativeGenderCode>",
    );
    if let Err(v) = cda_schema::validate(&accepted) {
        panic!("{}", show(&v));
    }
}

#[test]
fn extensions_and_null_flavors_are_accepted_where_cda_has_them() {
    let ok = [
        variant(
            "<code code=\"57133-1\"",
            "<code sdtc:valueSet=\"1.2.3\" code=\"57133-1\"",
        ),
        variant(
            "<birthTime value=\"19800101\"/>",
            "<birthTime nullFlavor=\"UNK\"/>",
        ),
        variant(
            "<administrativeGenderCode code=\"F\" codeSystem=\"2.16.840.1.113883.5.1\"/>",
            "<administrativeGenderCode nullFlavor=\"UNK\"/>",
        ),
        variant(
            "<title>Verordnung Soziotherapie</title>",
            "<title>Verordnung Soziotherapie</title><sdtc:statusCode code=\"active\"/>",
        ),
    ];
    for text in &ok {
        if let Err(v) = cda_schema::validate(text) {
            panic!("{}", show(&v));
        }
    }
    // An extension element where the SDTC schema puts none, and an unqualified element.
    let bad = [
        variant(
            "<recordTarget>",
            "<sdtc:raceCode code=\"x\"/><recordTarget>",
        ),
        variant("<title>", "<unqualified xmlns=\"\"/><title>"),
    ];
    for text in &bad {
        assert!(cda_schema::validate(text).is_err());
    }
}

#[test]
fn a_non_cda_root_and_broken_xml_are_violations_not_panics() {
    let violations = cda_schema::validate("<Patient xmlns=\"http://hl7.org/fhir\"/>")
        .err()
        .unwrap_or_default();
    assert_eq!(violations.len(), 1, "{}", show(&violations));
    let violations = cda_schema::validate("<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><id>")
        .err()
        .unwrap_or_default();
    assert!(!violations.is_empty());
    assert!(
        violations
            .iter()
            .all(|v| v.message.starts_with("not well-formed XML"))
    );
}

#[test]
fn the_declared_encoding_does_not_override_utf8_text() {
    // The safety layer turns UTF-16 payloads into UTF-8 text but leaves the declaration.
    let text = variant(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
    );
    if let Err(v) = cda_schema::validate(&text) {
        panic!("{}", show(&v));
    }
}

#[test]
fn validation_works_on_many_threads_at_once() {
    let valid = String::from_utf8(read(&fixtures().join("valid-referral.xml"))).unwrap_or_default();
    let invalid =
        String::from_utf8(read(&fixtures().join("bad-birth-time.xml"))).unwrap_or_default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..25).all(|_| {
                        cda_schema::validate(&valid).is_ok()
                            && cda_schema::validate(&invalid).is_err()
                    })
                })
            })
            .collect();
        for handle in handles {
            assert!(handle.join().unwrap_or(false));
        }
    });
}
