//! Unit tests of the Dutch rule pack: for every rule code, a referral that fires it (with its
//! severity) and a counterpart at the boundary that passes.

use std::sync::LazyLock;

use serde_json::json;
use time::Date;
use time::macros::date;

use super::{NlRulePack, RULES};
use crate::check::{CheckContext, Issue, Severity, Verdict};
use crate::mappings::Mappings;
use crate::model::{
    CarePlanRef, Coverage, CoverageKind, DatePeriod, Delivery, Diagnosis, Identifier,
    IdentifierKind, Jurisdiction, Patient, Prescriber, Provider, Qualification, Referral,
    ReferralIds, Setting,
};
use crate::store::ledger::PriorUsage;

const TODAY: Date = date!(2026 - 11 - 15);
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
const AGB_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/agb-z";
const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
const UZOVI_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/uzovi";
const NO_ISSUES: [&str; 0] = [];

static MAPPINGS: LazyLock<Mappings> =
    LazyLock::new(|| match Mappings::load(&Mappings::default_dir()) {
        Ok(m) => m,
        Err(e) => panic!("mappings must load: {e:#?}"),
    });

static PACK: LazyLock<NlRulePack> = LazyLock::new(|| pack_from(params()));

fn params() -> &'static serde_json::Value {
    match MAPPINGS.parameters(Jurisdiction::Nl) {
        Some(value) => value,
        None => panic!("mappings/nl/parameters.json must exist"),
    }
}

fn pack_from(value: &serde_json::Value) -> NlRulePack {
    match NlRulePack::from_value(value) {
        Ok(pack) => pack,
        Err(e) => panic!("Dutch parameters must parse: {e}"),
    }
}

/// The pack with `change` applied to a copy of the parameters.
fn pack_with(change: impl FnOnce(&mut serde_json::Value)) -> NlRulePack {
    let mut value = params().clone();
    change(&mut value);
    pack_from(&value)
}

// ---------------------------------------------------------------------------------------------
// Building referrals
// ---------------------------------------------------------------------------------------------

fn ident(kind: IdentifierKind, system: &str, value: &str) -> Identifier {
    Identifier {
        kind,
        system: Some(system.to_owned()),
        value: value.to_owned(),
    }
}

fn bsn(value: &str) -> Identifier {
    ident(IdentifierKind::Bsn, BSN_SYSTEM, value)
}

fn agb(value: &str) -> Identifier {
    ident(IdentifierKind::Agb, AGB_SYSTEM, value)
}

fn ura(value: &str) -> Identifier {
    ident(IdentifierKind::Ura, URA_SYSTEM, value)
}

fn uzovi(value: &str) -> Identifier {
    ident(IdentifierKind::Uzovi, UZOVI_SYSTEM, value)
}

fn period(start: Option<Date>, end: Option<Date>) -> Option<DatePeriod> {
    Some(DatePeriod { start, end })
}

/// A complete Dutch clinical sociotherapy referral that yields no issue at all: a psychiatrist
/// as responsible practitioner, clinic ward, group and individual part, a treatment plan agreed
/// with the client, a Zvw insurer by UZOVI.
fn base() -> Referral {
    let mut r = Referral::draft(ReferralIds {
        gateway_id: "0190e000-0000-7000-8000-00000000000a".to_owned(),
        sender_id: None,
        idempotency_key: "nl-tests".to_owned(),
    });
    r.jurisdiction = Some(Jurisdiction::Nl);
    r.is_sociotherapy = true;
    r.issue_date = Some(date!(2026 - 11 - 12));
    r.requested_period = period(Some(date!(2026 - 11 - 16)), Some(date!(2027 - 02 - 12)));
    r.settings = vec![Setting::ClinicWard];
    r.delivery_modes = vec![Delivery::Individual, Delivery::Group];
    r.diagnoses = vec![Diagnosis {
        code: "F20.0".to_owned(),
        system: Some("http://hl7.org/fhir/sid/icd-10".to_owned()),
        system_version: None,
        display: Some("Paranoïde schizofrenie".to_owned()),
        certainty: None,
    }];
    r.patient = Some(Patient {
        ids: vec![bsn("908301662")],
        birth_date: Some(date!(1991 - 04 - 23)),
        ..Patient::default()
    });
    r.prescriber = Some(Prescriber {
        person_ids: vec![agb("03054127")],
        organisation_ids: vec![ura("27195634"), agb("06011904")],
        qualifications: vec![Qualification::Psychiatrist],
        ..Prescriber::default()
    });
    r.coverage = Some(Coverage {
        payer_ids: vec![uzovi("3311")],
        kind: Some(CoverageKind::Statutory),
        ..Coverage::default()
    });
    r.care_plan = Some(CarePlanRef {
        reference: "CarePlan/behandelplan".to_owned(),
        ids: Vec::new(),
    });
    r.plan_agreed_with_client = Some(true);
    r
}

/// The base referral changed by `change`.
fn with(change: impl FnOnce(&mut Referral)) -> Referral {
    let mut r = base();
    change(&mut r);
    r
}

fn patient(r: &mut Referral) -> &mut Patient {
    r.patient.get_or_insert_with(Patient::default)
}

fn prescriber(r: &mut Referral) -> &mut Prescriber {
    r.prescriber.get_or_insert_with(Prescriber::default)
}

fn coverage(r: &mut Referral) -> &mut Coverage {
    r.coverage.get_or_insert_with(Coverage::default)
}

// ---------------------------------------------------------------------------------------------
// Running the pack
// ---------------------------------------------------------------------------------------------

fn issues_with(pack: &NlRulePack, referral: &Referral) -> Vec<Issue> {
    let prior = PriorUsage::default();
    let ctx = CheckContext {
        today: TODAY,
        prior: &prior,
    };
    pack.check(referral, MAPPINGS.rules(), &ctx)
}

fn issues(referral: &Referral) -> Vec<Issue> {
    issues_with(&PACK, referral)
}

fn codes_of(issues: &[Issue]) -> Vec<String> {
    issues.iter().map(|i| i.code.clone()).collect()
}

/// The rule codes `referral` fires.
fn codes(referral: &Referral) -> Vec<String> {
    codes_of(&issues(referral))
}

/// The single issue with `code` (panics when absent or repeated).
fn the(issues: &[Issue], code: &str) -> Issue {
    let found: Vec<&Issue> = issues.iter().filter(|i| i.code == code).collect();
    match found.as_slice() {
        [one] => (*one).clone(),
        _ => panic!("expected exactly one {code}, got {:?}", codes_of(issues)),
    }
}

/// Asserts that `referral` fires exactly `code` with `severity`, and returns the issue.
fn fires_only(referral: &Referral, code: &str, severity: Severity) -> Issue {
    let found = issues(referral);
    assert_eq!(codes_of(&found), [code]);
    let issue = the(&found, code);
    assert_eq!(issue.severity, severity, "{code}");
    let expected = if severity >= Severity::Error {
        Verdict::Rejected
    } else {
        Verdict::Accepted
    };
    assert_eq!(Verdict::from_issues(&found), expected, "{code}");
    issue
}

fn message(issue: &Issue) -> String {
    issue.message(MAPPINGS.rules(), "en")
}

// ---------------------------------------------------------------------------------------------
// Base referral and catalogue
// ---------------------------------------------------------------------------------------------

#[test]
fn base_referral_yields_no_issue() {
    let found = issues(&base());
    assert_eq!(codes_of(&found), NO_ISSUES);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn every_pack_rule_is_in_the_catalogue_with_its_catalogue_severity() {
    for code in RULES {
        let def = MAPPINGS.rules().get(code);
        assert!(def.is_some(), "{code} missing from rules.json");
        let issue = Issue::new(MAPPINGS.rules(), code);
        assert_eq!(Some(issue.severity), def.map(|d| d.severity), "{code}");
        assert!(code.starts_with("NL-"), "{code}");
    }
}

/// One failing referral per rule; a rule added to `RULES` without a case here fails this test.
#[test]
fn every_rule_of_the_pack_fires_for_some_referral() {
    let cases: Vec<Referral> = vec![
        with(|r| patient(r).ids = vec![bsn("123456789")]),
        with(|r| prescriber(r).person_ids = vec![agb("1234567")]),
        with(|r| prescriber(r).organisation_ids = vec![ura("123456789")]),
        with(|r| coverage(r).payer_ids = vec![uzovi("33110")]),
        with(|r| r.patient = None),
        with(|r| r.care_plan = None),
        with(|r| r.plan_agreed_with_client = None),
        with(|r| r.settings = vec![Setting::Home]),
        with(|r| r.delivery_modes = vec![Delivery::Individual]),
        with(|r| prescriber(r).qualifications = vec![Qualification::Sociotherapist]),
        with(|r| r.prescriber = None),
        with(|r| r.coverage = None),
        with(|r| r.requested_period = None),
        with(|r| r.diagnoses.clear()),
    ];
    let fired: Vec<String> = cases.iter().flat_map(codes).collect();
    for code in RULES {
        assert!(
            fired.iter().any(|c| c == code),
            "no case fires {code}: {fired:?}"
        );
    }
}

#[test]
fn rules_of_other_jurisdictions_are_not_reported() {
    let r = with(|r| {
        r.kind = None;
        r.functional_assessment = None;
        r.frequency = None;
        r.service_needs_assessment_date = None;
        r.plan_evaluation_dates.clear();
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Identifiers: NL-ID-01 .. NL-ID-05
// ---------------------------------------------------------------------------------------------

#[test]
fn bsn_failing_the_11_proef_is_an_error() {
    let r = with(|r| patient(r).ids = vec![bsn("123456789")]);
    let issue = fires_only(&r, "NL-ID-01", Severity::Error);
    assert_eq!(issue.expression, "Patient.identifier");
    assert_eq!(message(&issue), "BSN 123456789 fails the 11-proef");
}

#[test]
fn bsn_passing_the_11_proef_passes() {
    for valid in ["111222333", "123456782", "999996708", "131860914"] {
        let r = with(|r| patient(r).ids = vec![bsn(valid)]);
        assert_eq!(codes(&r), NO_ISSUES, "{valid}");
    }
}

#[test]
fn eight_digit_bsn_is_padded_with_a_leading_zero() {
    // 039825978 passes the 11-proef; its 8-digit form drops the leading zero.
    let r = with(|r| patient(r).ids = vec![bsn("39825978")]);
    assert_eq!(codes(&r), NO_ISSUES);
    let r = with(|r| patient(r).ids = vec![bsn("39825979")]);
    assert_eq!(codes(&r), ["NL-ID-01"]);
}

#[test]
fn bsn_of_zeros_or_with_letters_fails() {
    for invalid in ["000000000", "12345678a", "1234567", "1234567890"] {
        let r = with(|r| patient(r).ids = vec![bsn(invalid)]);
        assert_eq!(codes(&r), ["NL-ID-01"], "{invalid}");
    }
}

#[test]
fn bsn_check_severity_comes_from_parameters() {
    let pack = pack_with(|v| v["identifier_checks"]["bsn"] = json!("warning"));
    let r = with(|r| patient(r).ids = vec![bsn("123456789")]);
    let found = issues_with(&pack, &r);
    assert_eq!(codes_of(&found), ["NL-ID-01"]);
    assert_eq!(the(&found, "NL-ID-01").severity, Severity::Warning);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn agb_of_the_practitioner_that_is_not_8_digits_is_an_error() {
    let r = with(|r| prescriber(r).person_ids = vec![agb("0305412")]);
    let issue = fires_only(&r, "NL-ID-02", Severity::Error);
    assert_eq!(issue.expression, "Practitioner.identifier");
    assert_eq!(message(&issue), "AGB code 0305412 is not 8 digits");
    let r = with(|r| prescriber(r).person_ids = vec![agb("0305412X")]);
    assert_eq!(codes(&r), ["NL-ID-02"]);
}

#[test]
fn agb_of_the_organisation_is_checked_too() {
    let r = with(|r| prescriber(r).organisation_ids = vec![ura("27195634"), agb("060119041")]);
    fires_only(&r, "NL-ID-02", Severity::Error);
}

#[test]
fn agb_of_8_digits_passes() {
    let r = with(|r| prescriber(r).person_ids = vec![agb("00000001")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn agb_check_severity_comes_from_parameters() {
    let pack = pack_with(|v| v["identifier_checks"]["agb"] = json!("warning"));
    let r = with(|r| prescriber(r).person_ids = vec![agb("123")]);
    let found = issues_with(&pack, &r);
    assert_eq!(the(&found, "NL-ID-02").severity, Severity::Warning);
}

#[test]
fn ura_that_is_not_8_digits_is_an_error() {
    let r = with(|r| prescriber(r).organisation_ids = vec![ura("271956341")]);
    let issue = fires_only(&r, "NL-ID-03", Severity::Error);
    assert_eq!(issue.expression, "Organization.identifier");
    assert_eq!(message(&issue), "URA number 271956341 is not 8 digits");
}

#[test]
fn ura_of_the_requested_provider_is_checked_too() {
    let r = with(|r| {
        r.requested_provider = Some(Provider {
            ids: vec![ura("2719563")],
            name: Some("Kliniek Zuilen".to_owned()),
        });
    });
    fires_only(&r, "NL-ID-03", Severity::Error);
    let r = with(|r| {
        r.requested_provider = Some(Provider {
            ids: vec![ura("27195634")],
            name: None,
        });
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn ura_of_8_digits_passes() {
    let r = with(|r| prescriber(r).organisation_ids = vec![ura("00000008")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn uzovi_that_is_not_4_digits_is_an_error_but_still_identifies_the_insurer() {
    let r = with(|r| coverage(r).payer_ids = vec![uzovi("33110")]);
    let issue = fires_only(&r, "NL-ID-04", Severity::Error);
    assert_eq!(issue.expression, "Organization.identifier");
    assert_eq!(message(&issue), "UZOVI number 33110 is not 4 digits");
    let r = with(|r| coverage(r).payer_ids = vec![uzovi("331")]);
    assert_eq!(codes(&r), ["NL-ID-04"]);
}

#[test]
fn uzovi_of_4_digits_passes() {
    for valid in ["0203", "9664"] {
        let r = with(|r| coverage(r).payer_ids = vec![uzovi(valid)]);
        assert_eq!(codes(&r), NO_ISSUES, "{valid}");
    }
}

#[test]
fn patient_without_bsn_is_rejected() {
    let r = with(|r| {
        patient(r).ids = vec![ident(
            IdentifierKind::Other,
            "https://ggz-delinde.example/fhir/sid/patient",
            "P-4471",
        )];
    });
    let issue = fires_only(&r, "NL-ID-05", Severity::Error);
    assert_eq!(issue.expression, "Patient.identifier");
}

#[test]
fn referral_without_patient_needs_a_bsn() {
    let r = with(|r| r.patient = None);
    fires_only(&r, "NL-ID-05", Severity::Error);
}

#[test]
fn a_bsn_beside_other_identifiers_is_enough() {
    let r = with(|r| {
        patient(r).ids = vec![
            ident(IdentifierKind::Other, "urn:other", "X"),
            bsn("908301662"),
        ];
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn every_invalid_bsn_is_reported_once() {
    let r = with(|r| patient(r).ids = vec![bsn("123456789"), bsn("908301662"), bsn("1")]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["NL-ID-01", "NL-ID-01"]);
    assert_eq!(found[0].detail.as_deref(), Some("123456789"));
    assert_eq!(found[1].detail.as_deref(), Some("1"));
}

// ---------------------------------------------------------------------------------------------
// Treatment plan and agreement: NL-TP-01, NL-CN-01
// ---------------------------------------------------------------------------------------------

#[test]
fn referral_without_treatment_plan_is_rejected() {
    let r = with(|r| r.care_plan = None);
    let issue = fires_only(&r, "NL-TP-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.basedOn");
}

#[test]
fn treatment_plan_requirement_comes_from_parameters() {
    let pack = pack_with(|v| v["require_treatment_plan"] = json!(false));
    let r = with(|r| r.care_plan = None);
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

#[test]
fn plan_not_agreed_with_the_client_is_rejected() {
    let r = with(|r| r.plan_agreed_with_client = None);
    let issue = fires_only(&r, "NL-CN-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.supportingInfo");
    assert!(
        message(&issue).contains("art. 7:450 BW"),
        "{}",
        message(&issue)
    );
    let r = with(|r| r.plan_agreed_with_client = Some(false));
    fires_only(&r, "NL-CN-01", Severity::Error);
}

#[test]
fn plan_agreed_with_the_client_passes() {
    let r = with(|r| r.plan_agreed_with_client = Some(true));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn client_agreement_requirement_comes_from_parameters() {
    let pack = pack_with(|v| v["require_client_agreement"] = json!(false));
    let r = with(|r| r.plan_agreed_with_client = None);
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

#[test]
fn no_plan_and_no_agreement_give_both_errors() {
    let r = with(|r| {
        r.care_plan = None;
        r.plan_agreed_with_client = None;
    });
    assert_eq!(codes(&r), ["NL-TP-01", "NL-CN-01"]);
}

// ---------------------------------------------------------------------------------------------
// Setting and parts: NL-ST-01, NL-ST-02
// ---------------------------------------------------------------------------------------------

#[test]
fn setting_outside_the_clinic_ward_is_rejected() {
    let r = with(|r| r.settings = vec![Setting::Home]);
    let issue = fires_only(&r, "NL-ST-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.locationCode");
    assert_eq!(issue.detail.as_deref(), Some("home"));
    assert_eq!(
        message(&issue),
        "Clinical sociotherapy is delivered in a clinic ward (intramural); the setting is home"
    );
    let r = with(|r| r.settings = vec![Setting::GroupRoom, Setting::Remote]);
    assert_eq!(
        fires_only(&r, "NL-ST-01", Severity::Error)
            .detail
            .as_deref(),
        Some("group-room, remote")
    );
}

#[test]
fn missing_setting_is_rejected_as_not_stated() {
    let r = with(|r| r.settings.clear());
    let issue = fires_only(&r, "NL-ST-01", Severity::Error);
    assert_eq!(issue.detail.as_deref(), Some("not stated"));
}

#[test]
fn clinic_ward_beside_other_settings_passes() {
    let r = with(|r| r.settings = vec![Setting::GroupRoom, Setting::ClinicWard]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn required_setting_comes_from_parameters() {
    let pack = pack_with(|v| v["required_setting"] = json!("group-room"));
    let r = with(|r| r.settings = vec![Setting::GroupRoom]);
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
    assert_eq!(codes_of(&issues_with(&pack, &base())), ["NL-ST-01"]);
}

#[test]
fn missing_group_part_is_rejected() {
    let r = with(|r| r.delivery_modes = vec![Delivery::Individual]);
    let issue = fires_only(&r, "NL-ST-02", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.orderDetail");
    assert_eq!(issue.detail.as_deref(), Some("group"));
    assert_eq!(
        message(&issue),
        "Clinical sociotherapy has a group part and an individual part; group is missing"
    );
}

#[test]
fn missing_individual_part_is_rejected() {
    let r = with(|r| r.delivery_modes = vec![Delivery::Group]);
    let issue = fires_only(&r, "NL-ST-02", Severity::Error);
    assert_eq!(issue.detail.as_deref(), Some("individual"));
}

#[test]
fn missing_both_parts_is_one_error_naming_both() {
    let r = with(|r| r.delivery_modes.clear());
    let issue = fires_only(&r, "NL-ST-02", Severity::Error);
    assert_eq!(issue.detail.as_deref(), Some("group and individual"));
}

#[test]
fn both_parts_in_either_order_pass() {
    let r = with(|r| r.delivery_modes = vec![Delivery::Group, Delivery::Individual]);
    assert_eq!(codes(&r), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Responsible practitioner: NL-PR-01, NL-PR-02
// ---------------------------------------------------------------------------------------------

#[test]
fn sociotherapist_may_not_carry_the_treatment() {
    let r = with(|r| prescriber(r).qualifications = vec![Qualification::Sociotherapist]);
    let issue = fires_only(&r, "NL-PR-01", Severity::Error);
    assert_eq!(issue.expression, "Practitioner.qualification");
    assert_eq!(
        message(&issue),
        "The responsible practitioner's profession (sociotherapist) may not carry the treatment"
    );
}

#[test]
fn professions_outside_the_list_may_not_carry_the_treatment() {
    for q in [
        Qualification::MentalHealthNurse,
        Qualification::GeneralPractitioner,
        Qualification::SocialWorker,
        Qualification::Other,
    ] {
        let r = with(|r| prescriber(r).qualifications = vec![q]);
        assert_eq!(codes(&r), ["NL-PR-01"], "{q:?}");
    }
}

#[test]
fn practitioner_without_qualification_is_rejected_as_none() {
    let r = with(|r| prescriber(r).qualifications.clear());
    let issue = fires_only(&r, "NL-PR-01", Severity::Error);
    assert_eq!(issue.detail.as_deref(), Some("none"));
}

#[test]
fn every_listed_profession_may_carry_the_treatment() {
    for q in [
        Qualification::Psychiatrist,
        Qualification::HealthcarePsychologist,
        Qualification::ClinicalPsychologist,
        Qualification::Psychotherapist,
        Qualification::NursePractitionerMentalHealth,
        Qualification::PsychiatryPsychotherapy,
    ] {
        let r = with(|r| prescriber(r).qualifications = vec![q]);
        assert_eq!(codes(&r), NO_ISSUES, "{q:?}");
    }
}

#[test]
fn one_listed_profession_among_others_is_enough() {
    let r = with(|r| {
        prescriber(r).qualifications = vec![
            Qualification::Sociotherapist,
            Qualification::HealthcarePsychologist,
        ];
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn responsible_professions_come_from_parameters() {
    let pack = pack_with(|v| {
        v["responsible_professions"]["codes"] = json!(["psychiatrist", "sociotherapist"]);
    });
    let r = with(|r| prescriber(r).qualifications = vec![Qualification::Sociotherapist]);
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

#[test]
fn missing_responsible_practitioner_is_rejected() {
    let r = with(|r| r.prescriber = None);
    let issue = fires_only(&r, "NL-PR-02", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.requester");
}

// ---------------------------------------------------------------------------------------------
// Payer: NL-PY-01
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_coverage_is_rejected_for_the_payer() {
    let r = with(|r| r.coverage = None);
    let issue = fires_only(&r, "NL-PY-01", Severity::Error);
    assert_eq!(issue.expression, "Coverage.payor");
}

#[test]
fn payer_without_uzovi_is_rejected() {
    let r = with(|r| {
        coverage(r).payer_ids = vec![ident(
            IdentifierKind::Iknr,
            "http://fhir.de/sid/arge-ik/iknr",
            "109519005",
        )];
    });
    fires_only(&r, "NL-PY-01", Severity::Error);
    let r = with(|r| coverage(r).payer_ids = vec![agb("12345678")]);
    fires_only(&r, "NL-PY-01", Severity::Error);
    let r = with(|r| coverage(r).payer_ids.clear());
    fires_only(&r, "NL-PY-01", Severity::Error);
}

#[test]
fn uzovi_among_other_payer_identifiers_passes() {
    let r = with(|r| coverage(r).payer_ids = vec![agb("12345678"), uzovi("7095")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Period and diagnosis: NL-RQ-01, NL-DX-01
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_period_is_rejected() {
    let r = with(|r| r.requested_period = None);
    let issue = fires_only(&r, "NL-RQ-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.occurrencePeriod");
}

#[test]
fn period_ending_before_it_starts_is_rejected() {
    let r = with(|r| {
        r.requested_period = period(Some(date!(2026 - 11 - 16)), Some(date!(2026 - 11 - 15)));
    });
    fires_only(&r, "NL-RQ-01", Severity::Error);
}

#[test]
fn period_without_start_is_rejected() {
    let r = with(|r| r.requested_period = period(None, Some(date!(2027 - 02 - 12))));
    fires_only(&r, "NL-RQ-01", Severity::Error);
}

#[test]
fn one_day_period_passes() {
    let day = date!(2026 - 11 - 16);
    let r = with(|r| r.requested_period = period(Some(day), Some(day)));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn open_ended_period_passes() {
    let r = with(|r| r.requested_period = period(Some(date!(2026 - 11 - 16)), None));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn missing_diagnosis_only_warns() {
    let r = with(|r| r.diagnoses.clear());
    let issue = fires_only(&r, "NL-DX-01", Severity::Warning);
    assert_eq!(issue.expression, "ServiceRequest.reasonReference");
    assert_eq!(message(&issue), "No diagnosis is given");
}

// ---------------------------------------------------------------------------------------------
// Messages in every language
// ---------------------------------------------------------------------------------------------

#[test]
fn every_rule_has_a_dutch_and_a_finnish_message_that_differs_from_english() {
    for code in RULES {
        let issue = Issue::new(MAPPINGS.rules(), code).detail("X").limit("Y");
        let en = issue.message(MAPPINGS.rules(), "en");
        for lang in ["nl", "fi", "de"] {
            let translated = issue.message(MAPPINGS.rules(), lang);
            assert_ne!(translated, en, "{code} in {lang}");
            assert!(!translated.is_empty(), "{code} in {lang}");
        }
    }
}

#[test]
fn empty_referral_reports_every_required_element() {
    let mut r = Referral::draft(ReferralIds {
        gateway_id: "0190e000-0000-7000-8000-00000000000b".to_owned(),
        sender_id: None,
        idempotency_key: "nl-empty".to_owned(),
    });
    r.jurisdiction = Some(Jurisdiction::Nl);
    let found = issues(&r);
    assert_eq!(
        codes_of(&found),
        [
            "NL-ID-05", "NL-RQ-01", "NL-DX-01", "NL-TP-01", "NL-CN-01", "NL-ST-01", "NL-ST-02",
            "NL-PR-02", "NL-PY-01"
        ]
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Rejected);
}
