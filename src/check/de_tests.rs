//! Unit tests of the German rule pack: for every rule code, a referral that fires exactly that
//! rule and a counterpart at the boundary that passes.

use std::sync::LazyLock;

use serde_json::json;
use time::Date;
use time::macros::date;

use super::{DeRulePack, RULES, age_on};
use crate::check::{CheckContext, Issue, Severity, Verdict};
use crate::mappings::Mappings;
use crate::model::{
    CarePlanRef, Certainty, Coverage, CoverageKind, DatePeriod, Delivery, Diagnosis,
    ExceptionCriterion, FunctionalAssessment, HospitalStay, Identifier, IdentifierKind,
    Jurisdiction, Patient, Prescriber, Qualification, Referral, ReferralIds, ReferralKind,
    RequestedUnits, Setting,
};
use crate::store::ledger::PriorUsage;

const TODAY: Date = date!(2026 - 11 - 15);
const ICD_10_GM: &str = "http://fhir.de/CodeSystem/bfarm/icd-10-gm";
const KVID_SYSTEM: &str = "http://fhir.de/sid/gkv/kvid-10";
const IK_SYSTEM: &str = "http://fhir.de/sid/arge-ik/iknr";
const LANR_SYSTEM: &str = "https://fhir.kbv.de/NamingSystem/KBV_NS_Base_ANR";
const BSNR_SYSTEM: &str = "https://fhir.kbv.de/NamingSystem/KBV_NS_Base_BSNR";
const NO_ISSUES: [&str; 0] = [];

static MAPPINGS: LazyLock<Mappings> =
    LazyLock::new(|| match Mappings::load(&Mappings::default_dir()) {
        Ok(m) => m,
        Err(e) => panic!("mappings must load: {e:#?}"),
    });

static PACK: LazyLock<DeRulePack> = LazyLock::new(|| pack_from(params()));

fn params() -> &'static serde_json::Value {
    match MAPPINGS.parameters(Jurisdiction::De) {
        Some(value) => value,
        None => panic!("mappings/de/parameters.json must exist"),
    }
}

fn pack_from(value: &serde_json::Value) -> DeRulePack {
    match DeRulePack::from_value(value) {
        Ok(pack) => pack,
        Err(e) => panic!("German parameters must parse: {e}"),
    }
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

fn kvnr(value: &str) -> Identifier {
    ident(IdentifierKind::Kvid10, KVID_SYSTEM, value)
}

fn ik(value: &str) -> Identifier {
    ident(IdentifierKind::Iknr, IK_SYSTEM, value)
}

fn lanr(value: &str) -> Identifier {
    ident(IdentifierKind::Lanr, LANR_SYSTEM, value)
}

fn bsnr(value: &str) -> Identifier {
    ident(IdentifierKind::Bsnr, BSNR_SYSTEM, value)
}

fn diagnosis(code: &str, certainty: Option<Certainty>) -> Diagnosis {
    Diagnosis {
        code: code.to_owned(),
        system: Some(ICD_10_GM.to_owned()),
        system_version: Some("2026".to_owned()),
        display: None,
        certainty,
    }
}

fn units(count: u32, unit_minutes: u32, delivery: Delivery) -> Option<RequestedUnits> {
    Some(RequestedUnits {
        count,
        unit_minutes,
        delivery,
    })
}

fn individual(count: u32) -> Option<RequestedUnits> {
    units(count, 60, Delivery::Individual)
}

fn period(start: Date, end: Date) -> Option<DatePeriod> {
    Some(DatePeriod {
        start: Some(start),
        end: Some(end),
    })
}

/// A fully valid German first prescription that yields no issue at all.
fn base() -> Referral {
    let mut r = Referral::draft(ReferralIds {
        gateway_id: "0190e000-0000-7000-8000-000000000001".to_owned(),
        sender_id: None,
        idempotency_key: "de-tests".to_owned(),
    });
    r.jurisdiction = Some(Jurisdiction::De);
    r.kind = Some(ReferralKind::FirstPrescription);
    r.is_sociotherapy = true;
    r.issue_date = Some(date!(2026 - 11 - 10));
    r.requested_period = period(date!(2026 - 11 - 16), date!(2027 - 02 - 15));
    r.requested_units = individual(30);
    r.settings = vec![Setting::Home];
    r.diagnoses = vec![diagnosis("F20.0", Some(Certainty::Confirmed))];
    r.functional_assessment = Some(FunctionalAssessment {
        gaf_score: Some(35),
        ..FunctionalAssessment::default()
    });
    r.patient = Some(Patient {
        ids: vec![kvnr("X110411675")],
        birth_date: Some(date!(1980 - 05 - 01)),
        ..Patient::default()
    });
    r.prescriber = Some(Prescriber {
        person_ids: vec![lanr("754236701")],
        qualifications: vec![Qualification::PsychiatryPsychotherapy],
        sociotherapy_approval: Some(true),
        ..Prescriber::default()
    });
    r.coverage = Some(Coverage {
        payer_ids: vec![ik("109519005")],
        kind: Some(CoverageKind::Statutory),
        ..Coverage::default()
    });
    r.care_plan = Some(CarePlanRef {
        reference: "CarePlan/1".to_owned(),
        ids: Vec::new(),
    });
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

fn assessment(r: &mut Referral) -> &mut FunctionalAssessment {
    r.functional_assessment
        .get_or_insert_with(FunctionalAssessment::default)
}

fn set_gaf(r: &mut Referral, gaf: i64) {
    assessment(r).gaf_score = Some(gaf);
}

/// An unlisted F-diagnosis (F60.31) with GAF 38, an exception criterion and a justification.
fn other_diagnosis_base() -> Referral {
    with(|r| {
        r.diagnoses = vec![diagnosis("F60.31", Some(Certainty::Confirmed))];
        let a = assessment(r);
        a.gaf_score = Some(38);
        a.exception_criteria = vec![ExceptionCriterion::DailyStructure];
        a.exception_justification = Some("Cannot structure the day or use services alone".into());
    })
}

/// Five trial sessions on a suspected diagnosis, no care plan.
fn trial_base() -> Referral {
    with(|r| {
        r.kind = Some(ReferralKind::TrialSessions);
        r.requested_units = individual(5);
        r.care_plan = None;
    })
}

/// A Muster 28 referral by a GP without approval: 5 units, no care plan.
fn gp_base() -> Referral {
    with(|r| {
        r.kind = Some(ReferralKind::GpIndicationReferral);
        r.requested_units = individual(5);
        r.care_plan = None;
        let p = prescriber(r);
        p.qualifications = vec![Qualification::GeneralPractitioner];
        p.sociotherapy_approval = None;
    })
}

/// A discharge prescription by a hospital physician without approval; discharge on 2026-11-14,
/// care 2026-11-14..2026-11-21 (the seventh day after discharge).
fn discharge_base() -> Referral {
    with(|r| {
        r.kind = Some(ReferralKind::DischargePrescription);
        r.requested_units = individual(5);
        r.hospital_stay = Some(HospitalStay {
            admission: Some(date!(2026 - 10 - 01)),
            discharge: Some(date!(2026 - 11 - 14)),
        });
        r.requested_period = period(date!(2026 - 11 - 14), date!(2026 - 11 - 21));
        let p = prescriber(r);
        p.person_ids = Vec::new();
        p.qualifications = vec![Qualification::HospitalPhysician];
        p.sociotherapy_approval = None;
    })
}

/// A follow-up prescription of `count` individual 60-minute units (no first-prescription warning).
fn follow_up(count: u32) -> Referral {
    with(|r| {
        r.kind = Some(ReferralKind::FollowUpPrescription);
        r.requested_units = individual(count);
    })
}

fn used_minutes(minutes: u64) -> PriorUsage {
    PriorUsage {
        window_start: Some(date!(2025 - 01 - 01)),
        minutes_used: minutes,
        trial_units_used: 0,
    }
}

fn used_trial_units(units: u32) -> PriorUsage {
    PriorUsage {
        window_start: Some(date!(2026 - 10 - 01)),
        minutes_used: u64::from(units) * 60,
        trial_units_used: units,
    }
}

// ---------------------------------------------------------------------------------------------
// Running the pack
// ---------------------------------------------------------------------------------------------

fn check_with(pack: &DeRulePack, referral: &Referral, prior: &PriorUsage) -> Vec<Issue> {
    let ctx = CheckContext {
        today: TODAY,
        prior,
    };
    pack.check(referral, MAPPINGS.rules(), &ctx)
}

fn issues_with_prior(referral: &Referral, prior: &PriorUsage) -> Vec<Issue> {
    check_with(&PACK, referral, prior)
}

fn issues(referral: &Referral) -> Vec<Issue> {
    issues_with_prior(referral, &PriorUsage::default())
}

/// The rule codes `referral` fires, given `prior` usage.
fn run(referral: &Referral, prior: &PriorUsage) -> Vec<String> {
    codes_of(&issues_with_prior(referral, prior))
}

/// The rule codes `referral` fires with no prior usage.
fn codes(referral: &Referral) -> Vec<String> {
    run(referral, &PriorUsage::default())
}

fn codes_of(issues: &[Issue]) -> Vec<String> {
    issues.iter().map(|i| i.code.clone()).collect()
}

/// The single issue with `code` (panics when absent or repeated).
fn the(issues: &[Issue], code: &str) -> Issue {
    let found: Vec<&Issue> = issues.iter().filter(|i| i.code == code).collect();
    match found.as_slice() {
        [one] => (*one).clone(),
        _ => panic!("expected exactly one {code}, got {:?}", codes_of(issues)),
    }
}

fn message(issue: &Issue) -> String {
    issue.message(MAPPINGS.rules(), "en")
}

fn verdict(referral: &Referral) -> Verdict {
    Verdict::from_issues(&issues(referral))
}

// ---------------------------------------------------------------------------------------------
// Base referral and catalogue
// ---------------------------------------------------------------------------------------------

#[test]
fn base_referral_yields_no_issue() {
    assert_eq!(codes(&base()), NO_ISSUES);
    assert_eq!(verdict(&base()), Verdict::Accepted);
}

#[test]
fn every_pack_rule_is_in_the_catalogue_with_its_catalogue_severity() {
    for code in RULES {
        let def = MAPPINGS.rules().get(code);
        assert!(def.is_some(), "{code} missing from rules.json");
        let issue = Issue::new(MAPPINGS.rules(), code);
        assert_eq!(Some(issue.severity), def.map(|d| d.severity), "{code}");
    }
}

#[test]
fn age_counts_completed_years_on_the_day() {
    assert_eq!(age_on(date!(2008 - 11 - 15), TODAY), 18);
    assert_eq!(age_on(date!(2008 - 11 - 16), TODAY), 17);
    assert_eq!(age_on(date!(2008 - 12 - 01), TODAY), 17);
    assert_eq!(age_on(date!(2008 - 10 - 31), TODAY), 18);
    assert_eq!(age_on(TODAY, TODAY), 0);
}

// ---------------------------------------------------------------------------------------------
// Identifiers: DE-ID-01 .. DE-ID-06
// ---------------------------------------------------------------------------------------------

#[test]
fn kvnr_with_wrong_check_digit_is_an_error() {
    let r = with(|r| patient(r).ids = vec![kvnr("X110411674")]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-ID-01"]);
    let issue = the(&found, "DE-ID-01");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(issue.expression, "Patient.identifier[0]");
    assert!(
        message(&issue).contains("X110411674"),
        "{}",
        message(&issue)
    );
    assert_eq!(verdict(&r), Verdict::Rejected);
}

#[test]
fn kvnr_with_valid_check_digit_passes() {
    let r = with(|r| patient(r).ids = vec![kvnr("A123456780")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn invalid_kvnr_is_located_at_its_index() {
    let r = with(|r| {
        let p = patient(r);
        p.ids = vec![
            ident(
                IdentifierKind::PkvId,
                "http://fhir.de/sid/pkv/kvid-10",
                "P123",
            ),
            kvnr("x110411675"),
        ];
    });
    let issue = the(&issues(&r), "DE-ID-01");
    assert_eq!(issue.expression, "Patient.identifier[1]");
}

#[test]
fn payer_ik_with_wrong_check_digit_is_an_error() {
    let r = with(|r| coverage(r).payer_ids = vec![ik("260326828")]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-ID-02"]);
    let issue = the(&found, "DE-ID-02");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(issue.expression, "Organization.identifier");
    assert!(message(&issue).contains("260326828"));
}

#[test]
fn payer_ik_with_valid_check_digit_passes() {
    let r = with(|r| coverage(r).payer_ids = vec![ik("260326822")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn invalid_requested_provider_ik_is_an_error() {
    let r = with(|r| {
        r.requested_provider = Some(crate::model::Provider {
            ids: vec![ik("10951900")],
            name: Some("Soziotherapie Nord".into()),
        });
    });
    assert_eq!(codes(&r), ["DE-ID-02"]);
}

#[test]
fn lanr_with_wrong_check_digit_is_only_a_warning() {
    let r = with(|r| prescriber(r).person_ids = vec![lanr("123456789")]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-ID-03"]);
    let issue = the(&found, "DE-ID-03");
    assert_eq!(issue.severity, Severity::Warning);
    assert_eq!(issue.expression, "Practitioner.identifier");
    assert!(message(&issue).contains("123456789"));
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn lanr_with_valid_check_digit_passes() {
    let r = with(|r| prescriber(r).person_ids = vec![lanr("776299002")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn bsnr_that_is_not_nine_digits_is_an_error() {
    for bad in ["03123456", "03123456X", "0312345678"] {
        let r = with(|r| prescriber(r).organisation_ids = vec![bsnr(bad)]);
        let found = issues(&r);
        assert_eq!(codes_of(&found), ["DE-ID-04"], "{bad}");
        let issue = the(&found, "DE-ID-04");
        assert_eq!(issue.severity, Severity::Error);
        assert!(message(&issue).contains(bad));
    }
}

#[test]
fn bsnr_of_nine_digits_passes() {
    let r = with(|r| prescriber(r).organisation_ids = vec![bsnr("031234567")]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn invalid_practice_bsnr_is_located_at_the_organization() {
    let r = with(|r| prescriber(r).organisation_ids = vec![bsnr("03123456")]);
    let issue = the(&issues(&r), "DE-ID-04");
    assert_eq!(issue.expression, "Organization.identifier");
}

#[test]
fn identifier_check_severities_come_from_parameters() {
    // Defaults: LANR failures warn, the others are errors.
    let bad_ids = with(|r| {
        patient(r).ids = vec![kvnr("X110411674")];
        coverage(r).payer_ids = vec![ik("260326828")];
        let p = prescriber(r);
        p.person_ids = vec![lanr("123456789")];
        p.organisation_ids = vec![bsnr("0312345")];
    });
    let found = issues(&bad_ids);
    assert_eq!(the(&found, "DE-ID-01").severity, Severity::Error);
    assert_eq!(the(&found, "DE-ID-02").severity, Severity::Error);
    assert_eq!(the(&found, "DE-ID-03").severity, Severity::Warning);
    assert_eq!(the(&found, "DE-ID-04").severity, Severity::Error);

    // Each severity follows the parameters, independent of the catalogue default.
    let mut value = params().clone();
    value["identifier_checks"]["kvnr"] = json!("warning");
    value["identifier_checks"]["ik"] = json!("information");
    value["identifier_checks"]["lanr"] = json!("error");
    value["identifier_checks"]["bsnr"] = json!("warning");
    let pack = pack_from(&value);
    let found = check_with(&pack, &bad_ids, &PriorUsage::default());
    assert_eq!(the(&found, "DE-ID-01").severity, Severity::Warning);
    assert_eq!(the(&found, "DE-ID-02").severity, Severity::Information);
    assert_eq!(the(&found, "DE-ID-03").severity, Severity::Error);
    assert_eq!(the(&found, "DE-ID-04").severity, Severity::Warning);
}

#[test]
fn lax_kvnr_severity_lets_an_official_test_kvnr_through() {
    let mut value = params().clone();
    value["identifier_checks"]["kvnr"] = json!("warning");
    let pack = pack_from(&value);
    let r = with(|r| patient(r).ids = vec![kvnr("G995030567")]);
    let found = check_with(&pack, &r, &PriorUsage::default());
    assert_eq!(codes_of(&found), ["DE-ID-01"]);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn statutory_patient_without_kvnr_is_rejected() {
    let r = with(|r| patient(r).ids = Vec::new());
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-ID-05"]);
    assert_eq!(the(&found, "DE-ID-05").severity, Severity::Error);

    let no_patient = with(|r| r.patient = None);
    assert_eq!(codes(&no_patient), ["DE-PT-01", "DE-ID-05"]);
}

#[test]
fn private_patient_without_kvnr_needs_no_kvnr() {
    let r = with(|r| {
        patient(r).ids = vec![ident(
            IdentifierKind::PkvId,
            "http://fhir.de/sid/pkv/kvid-10",
            "P123456789",
        )];
        coverage(r).kind = Some(CoverageKind::Private);
    });
    assert_eq!(codes(&r), ["DE-CV-02"]);
}

#[test]
fn statutory_payer_without_ik_is_rejected() {
    let r = with(|r| coverage(r).payer_ids = Vec::new());
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-ID-06"]);
    assert_eq!(the(&found, "DE-ID-06").severity, Severity::Error);
}

#[test]
fn private_payer_without_ik_needs_no_ik() {
    let r = with(|r| {
        let c = coverage(r);
        c.payer_ids = Vec::new();
        c.kind = Some(CoverageKind::Private);
    });
    assert_eq!(codes(&r), ["DE-CV-02"]);
}

#[test]
fn coverage_of_unknown_kind_still_needs_kvnr_and_ik() {
    let r = with(|r| {
        patient(r).ids = Vec::new();
        let c = coverage(r);
        c.payer_ids = Vec::new();
        c.kind = None;
    });
    assert_eq!(codes(&r), ["DE-ID-05", "DE-ID-06"]);
    let known_ids = with(|r| coverage(r).kind = None);
    assert_eq!(codes(&known_ids), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Request: DE-RQ-01 .. DE-RQ-06
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_unit_count_is_rejected() {
    let r = with(|r| r.requested_units = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-RQ-01"]);
    assert_eq!(the(&found, "DE-RQ-01").severity, Severity::Error);
}

#[test]
fn missing_period_is_rejected() {
    let r = with(|r| r.requested_period = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-RQ-02"]);
    assert_eq!(the(&found, "DE-RQ-02").severity, Severity::Error);
}

#[test]
fn period_without_start_or_end_is_rejected() {
    let no_end = with(|r| {
        r.requested_period = Some(DatePeriod {
            start: Some(date!(2026 - 11 - 16)),
            end: None,
        });
    });
    assert_eq!(codes(&no_end), ["DE-RQ-02"]);
    let no_start = with(|r| {
        r.requested_period = Some(DatePeriod {
            start: None,
            end: Some(date!(2027 - 02 - 15)),
        });
    });
    assert_eq!(codes(&no_start), ["DE-RQ-02"]);
}

#[test]
fn period_ending_before_it_starts_is_rejected() {
    let r = with(|r| r.requested_period = period(date!(2026 - 11 - 16), date!(2026 - 11 - 15)));
    assert_eq!(codes(&r), ["DE-RQ-02"]);
}

#[test]
fn one_day_period_passes() {
    let r = with(|r| r.requested_period = period(date!(2026 - 11 - 16), date!(2026 - 11 - 16)));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn missing_kind_is_rejected() {
    let r = with(|r| r.kind = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-RQ-03"]);
    assert_eq!(the(&found, "DE-RQ-03").severity, Severity::Error);
}

#[test]
fn first_prescription_above_30_units_warns() {
    let r = with(|r| r.requested_units = individual(31));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-RQ-04"]);
    let issue = the(&found, "DE-RQ-04");
    assert_eq!(issue.severity, Severity::Warning);
    assert_eq!(issue.detail.as_deref(), Some("31"));
    assert_eq!(issue.limit.as_deref(), Some("30"));
    assert_eq!(
        message(&issue),
        "A first prescription usually covers at most 30 units; 31 requested"
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn first_prescription_of_30_units_passes() {
    let r = with(|r| r.requested_units = individual(30));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn follow_up_prescription_above_30_units_does_not_warn() {
    assert_eq!(codes(&follow_up(31)), NO_ISSUES);
}

#[test]
fn remote_setting_warns() {
    let r = with(|r| r.settings = vec![Setting::Home, Setting::Remote]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-RQ-05"]);
    assert_eq!(the(&found, "DE-RQ-05").severity, Severity::Warning);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn in_person_settings_pass() {
    let r = with(|r| {
        r.settings = vec![Setting::Home, Setting::OtherPlace, Setting::GroupRoom];
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn remote_setting_passes_when_parameters_allow_it() {
    let mut value = params().clone();
    value["remote_setting_allowed"] = json!(true);
    let pack = pack_from(&value);
    let r = with(|r| r.settings = vec![Setting::Remote]);
    assert!(check_with(&pack, &r, &PriorUsage::default()).is_empty());
}

#[test]
fn missing_issue_date_warns() {
    let r = with(|r| r.issue_date = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-RQ-06"]);
    assert_eq!(the(&found, "DE-RQ-06").severity, Severity::Warning);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

// ---------------------------------------------------------------------------------------------
// Diagnoses and GAF: DE-DX-01 .. DE-DX-12
// ---------------------------------------------------------------------------------------------

#[test]
fn referral_without_diagnosis_is_rejected() {
    let r = with(|r| r.diagnoses = Vec::new());
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-01"]);
    assert_eq!(the(&found, "DE-DX-01").severity, Severity::Error);
}

#[test]
fn diagnosis_outside_f00_f99_is_rejected() {
    let r = with(|r| {
        r.diagnoses = vec![
            diagnosis("G30.0", Some(Certainty::Confirmed)),
            diagnosis("E11.9", None),
        ];
    });
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-02"]);
    let issue = the(&found, "DE-DX-02");
    assert_eq!(issue.severity, Severity::Error);
    assert!(
        message(&issue).contains("G30.0, E11.9"),
        "{}",
        message(&issue)
    );
}

#[test]
fn somatic_diagnosis_beside_a_listed_one_passes() {
    let r = with(|r| {
        r.diagnoses
            .insert(0, diagnosis("E11.9", Some(Certainty::Confirmed)))
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn f00_and_f99_are_inside_the_mental_range() {
    for code in ["F00.0", "F99"] {
        let r = with(|r| r.diagnoses = vec![diagnosis(code, Some(Certainty::Confirmed))]);
        let found = codes(&r);
        assert!(!found.iter().any(|c| c == "DE-DX-02"), "{code}: {found:?}");
    }
}

#[test]
fn missing_gaf_is_rejected() {
    let no_assessment = with(|r| r.functional_assessment = None);
    let found = issues(&no_assessment);
    assert_eq!(codes_of(&found), ["DE-DX-03"]);
    assert_eq!(the(&found, "DE-DX-03").severity, Severity::Error);
    let no_score = with(|r| assessment(r).gaf_score = None);
    assert_eq!(codes(&no_score), ["DE-DX-03"]);
}

#[test]
fn gaf_outside_1_to_100_is_rejected() {
    for gaf in [0, -5, 101] {
        let r = with(|r| set_gaf(r, gaf));
        let found = issues(&r);
        assert_eq!(codes_of(&found), ["DE-DX-04"], "GAF {gaf}");
        let issue = the(&found, "DE-DX-04");
        assert_eq!(issue.severity, Severity::Error);
        assert_eq!(message(&issue), format!("GAF score {gaf} is outside 1-100"));
    }
}

#[test]
fn gaf_of_1_passes() {
    let r = with(|r| set_gaf(r, 1));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn gaf_above_50_rejects_listed_diagnosis() {
    let r = with(|r| set_gaf(r, 55));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-05"]);
    let issue = the(&found, "DE-DX-05");
    assert_eq!(issue.severity, Severity::Error);
    let text = message(&issue);
    assert!(text.contains("55"), "{text}");
    assert_eq!(text, "GAF 55 exceeds 50 for listed diagnosis F20.0");

    let just_above = with(|r| set_gaf(r, 51));
    assert_eq!(codes(&just_above), ["DE-DX-05"]);
    let top = with(|r| set_gaf(r, 100));
    assert_eq!(codes(&top), ["DE-DX-05"]);
}

#[test]
fn gaf_of_50_warns_but_does_not_reject_listed_diagnosis() {
    let r = with(|r| set_gaf(r, 50));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-06"]);
    let issue = the(&found, "DE-DX-06");
    assert_eq!(issue.severity, Severity::Warning);
    assert_eq!(
        message(&issue),
        "GAF 50 is above the orientation value 40 for listed diagnosis F20.0"
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);

    let just_above = with(|r| set_gaf(r, 41));
    assert_eq!(codes(&just_above), ["DE-DX-06"]);
}

#[test]
fn gaf_of_40_neither_warns_nor_rejects_listed_diagnosis() {
    let r = with(|r| set_gaf(r, 40));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn listed_categories_include_their_subcodes() {
    for code in ["F21", "F21.0", "F25.1", "F33.3", "f20.6", " F32.3 "] {
        let r = with(|r| r.diagnoses = vec![diagnosis(code, Some(Certainty::Confirmed))]);
        assert_eq!(codes(&r), NO_ISSUES, "{code}");
    }
}

#[test]
fn unlisted_f20_subcode_is_judged_as_other_diagnosis() {
    // F20 is listed per subcode (F20.0-F20.6); F20.8 needs the exception route.
    let r = with(|r| r.diagnoses = vec![diagnosis("F20.8", Some(Certainty::Confirmed))]);
    assert_eq!(codes(&r), ["DE-DX-08", "DE-DX-09"]);
}

#[test]
fn listed_diagnosis_is_judged_even_when_an_unlisted_one_comes_first() {
    let r = with(|r| {
        r.diagnoses = vec![
            diagnosis("F60.31", Some(Certainty::Confirmed)),
            diagnosis("F20.0", Some(Certainty::Confirmed)),
        ];
        set_gaf(r, 45);
    });
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-06"]);
    assert_eq!(
        the(&found, "DE-DX-06").subject_code.as_deref(),
        Some("F20.0")
    );
}

#[test]
fn other_diagnosis_with_gaf_38_criterion_and_justification_passes() {
    assert_eq!(codes(&other_diagnosis_base()), NO_ISSUES);
}

#[test]
fn other_diagnosis_with_gaf_40_passes() {
    let mut r = other_diagnosis_base();
    set_gaf(&mut r, 40);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn gaf_above_40_rejects_other_diagnosis() {
    let mut r = other_diagnosis_base();
    set_gaf(&mut r, 41);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-07"]);
    let issue = the(&found, "DE-DX-07");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "Diagnosis F60.31 is not listed; GAF 41 exceeds 40 allowed in justified individual cases"
    );
}

#[test]
fn other_diagnosis_without_exception_criterion_is_rejected() {
    let mut r = other_diagnosis_base();
    assessment(&mut r).exception_criteria = Vec::new();
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-08"]);
    let issue = the(&found, "DE-DX-08");
    assert_eq!(issue.severity, Severity::Error);
    assert!(message(&issue).contains("F60.31"));
}

#[test]
fn other_diagnosis_without_justification_is_rejected() {
    let mut r = other_diagnosis_base();
    assessment(&mut r).exception_justification = None;
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-09"]);
    let issue = the(&found, "DE-DX-09");
    assert_eq!(issue.severity, Severity::Error);
    assert!(message(&issue).contains("F60.31"));
}

#[test]
fn other_diagnosis_without_criterion_or_justification_reports_both() {
    let mut r = other_diagnosis_base();
    let a = assessment(&mut r);
    a.exception_criteria = Vec::new();
    a.exception_justification = None;
    a.gaf_score = Some(45);
    assert_eq!(codes(&r), ["DE-DX-07", "DE-DX-08", "DE-DX-09"]);
}

#[test]
fn suspected_diagnosis_is_rejected_for_first_prescription() {
    let r = with(|r| r.diagnoses = vec![diagnosis("F20.0", Some(Certainty::Suspected))]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-10"]);
    let issue = the(&found, "DE-DX-10");
    assert_eq!(issue.severity, Severity::Error);
    assert!(message(&issue).contains("F20.0"));
}

#[test]
fn suspected_diagnosis_passes_for_trial_sessions() {
    let mut r = trial_base();
    r.diagnoses = vec![diagnosis("F20.0", Some(Certainty::Suspected))];
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn diagnosis_without_certainty_counts_as_confirmed() {
    let r = with(|r| r.diagnoses = vec![diagnosis("F20.0", None)]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn excluded_diagnosis_is_rejected() {
    let r = with(|r| r.diagnoses = vec![diagnosis("F20.0", Some(Certainty::Excluded))]);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-11"]);
    let issue = the(&found, "DE-DX-11");
    assert_eq!(issue.severity, Severity::Error);
    assert!(message(&issue).contains("F20.0"));
}

#[test]
fn status_after_diagnosis_is_rejected_even_for_trial_sessions() {
    let mut r = trial_base();
    r.diagnoses = vec![diagnosis("F20.0", Some(Certainty::StatusAfter))];
    assert_eq!(codes(&r), ["DE-DX-11"]);
}

#[test]
fn excluded_diagnosis_beside_a_confirmed_one_passes() {
    let r = with(|r| {
        r.diagnoses
            .push(diagnosis("F32.3", Some(Certainty::Excluded)))
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn diagnosis_outside_icd_10_gm_warns() {
    let r = with(|r| r.diagnoses[0].system = Some("http://hl7.org/fhir/sid/icd-10".into()));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DX-12"]);
    let issue = the(&found, "DE-DX-12");
    assert_eq!(issue.severity, Severity::Warning);
    assert_eq!(issue.expression, "Condition[0].code.coding.system");
    assert_eq!(
        message(&issue),
        "Diagnosis F20.0 is not coded in ICD-10-GM (http://hl7.org/fhir/sid/icd-10)"
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);

    let no_system = with(|r| r.diagnoses[0].system = None);
    let issue = the(&issues(&no_system), "DE-DX-12");
    assert_eq!(issue.detail.as_deref(), Some("no system"));
}

// ---------------------------------------------------------------------------------------------
// Prescriber and patient: DE-PR-01 .. DE-PR-06, DE-PT-01
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_prescriber_is_rejected() {
    let r = with(|r| r.prescriber = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-PR-01"]);
    assert_eq!(the(&found, "DE-PR-01").severity, Severity::Error);
}

#[test]
fn prescriber_without_eligible_qualification_is_rejected() {
    let other = with(|r| prescriber(r).qualifications = vec![Qualification::Other]);
    let found = issues(&other);
    assert_eq!(codes_of(&found), ["DE-PR-02"]);
    let issue = the(&found, "DE-PR-02");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "The prescriber's qualification (other) does not allow prescribing sociotherapy"
    );

    let none = with(|r| prescriber(r).qualifications = Vec::new());
    let issue = the(&issues(&none), "DE-PR-02");
    assert_eq!(issue.detail.as_deref(), Some("none"));
}

#[test]
fn hospital_physician_may_not_prescribe_outside_discharge() {
    let r = with(|r| prescriber(r).qualifications = vec![Qualification::HospitalPhysician]);
    let issue = the(&issues(&r), "DE-PR-02");
    assert_eq!(issue.detail.as_deref(), Some("hospital-physician"));
    assert_eq!(codes(&r), ["DE-PR-02"]);
}

#[test]
fn every_approved_specialist_may_prescribe() {
    for q in [
        Qualification::Neurology,
        Qualification::NerveMedicine,
        Qualification::PsychiatryPsychotherapy,
        Qualification::PsychosomaticMedicine,
        Qualification::PsychotherapyAdditionalTraining,
        Qualification::PsychologicalPsychotherapist,
        Qualification::PsychiatricOutpatientClinic,
    ] {
        let r = with(|r| prescriber(r).qualifications = vec![q]);
        assert_eq!(codes(&r), NO_ISSUES, "{q:?}");
    }
}

#[test]
fn specialist_without_approval_is_rejected() {
    for approval in [None, Some(false)] {
        let r = with(|r| prescriber(r).sociotherapy_approval = approval);
        let found = issues(&r);
        assert_eq!(codes_of(&found), ["DE-PR-03"], "{approval:?}");
        assert_eq!(the(&found, "DE-PR-03").severity, Severity::Error);
    }
}

#[test]
fn gp_outside_muster_28_is_rejected_as_needing_indication_referral() {
    for kind in [
        ReferralKind::FirstPrescription,
        ReferralKind::FollowUpPrescription,
        ReferralKind::TrialSessions,
    ] {
        let r = with(|r| {
            r.kind = Some(kind);
            r.requested_units = individual(5);
            let p = prescriber(r);
            p.qualifications = vec![Qualification::GeneralPractitioner];
            p.sociotherapy_approval = None;
        });
        let found = issues(&r);
        assert_eq!(codes_of(&found), ["DE-PR-04"], "{kind:?}");
        assert_eq!(the(&found, "DE-PR-04").severity, Severity::Error);
    }
}

#[test]
fn gp_indication_referral_of_5_units_passes_without_approval() {
    assert_eq!(codes(&gp_base()), NO_ISSUES);
}

#[test]
fn gp_indication_referral_of_6_units_is_rejected() {
    let mut r = gp_base();
    r.requested_units = individual(6);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-PR-05"]);
    let issue = the(&found, "DE-PR-05");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "A referral for indication (Muster 28) covers at most 5 units; 6 requested"
    );
}

#[test]
fn gp_may_not_prescribe_at_discharge() {
    let mut r = discharge_base();
    prescriber(&mut r).qualifications = vec![Qualification::GeneralPractitioner];
    let issue = the(&issues(&r), "DE-PR-02");
    assert_eq!(issue.detail.as_deref(), Some("general-practitioner"));
    assert_eq!(codes(&r), ["DE-PR-02"]);
}

fn kjp_with_birth(qualification: Qualification, birth: Date) -> Referral {
    with(|r| {
        prescriber(r).qualifications = vec![qualification];
        patient(r).birth_date = Some(birth);
    })
}

#[test]
fn child_adolescent_specialist_may_prescribe_for_patients_aged_18_to_20() {
    for q in [
        Qualification::ChildAdolescentPsychiatry,
        Qualification::ChildAdolescentPsychotherapist,
    ] {
        // 18 today (birthday), and 20 until tomorrow.
        for birth in [date!(2008 - 11 - 15), date!(2005 - 11 - 16)] {
            let r = kjp_with_birth(q, birth);
            assert_eq!(codes(&r), NO_ISSUES, "{q:?} {birth}");
        }
    }
}

#[test]
fn child_adolescent_specialist_is_rejected_for_patient_aged_17() {
    let r = kjp_with_birth(
        Qualification::ChildAdolescentPsychiatry,
        date!(2008 - 11 - 16),
    );
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-PR-06"]);
    let issue = the(&found, "DE-PR-06");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "Child and adolescent specialists may prescribe only for patients aged 18-20; the patient is 17"
    );
}

#[test]
fn child_adolescent_specialist_is_rejected_for_patient_aged_21() {
    let r = kjp_with_birth(
        Qualification::ChildAdolescentPsychotherapist,
        date!(2005 - 11 - 15),
    );
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-PR-06"]);
    assert_eq!(the(&found, "DE-PR-06").detail.as_deref(), Some("21"));
}

#[test]
fn child_adolescent_specialist_with_unknown_patient_age_is_rejected() {
    let r = with(|r| {
        prescriber(r).qualifications = vec![Qualification::ChildAdolescentPsychiatry];
        patient(r).birth_date = None;
    });
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-PT-01", "DE-PR-06"]);
    assert_eq!(
        the(&found, "DE-PR-06").detail.as_deref(),
        Some("of unknown age")
    );
}

#[test]
fn child_adolescent_specialist_with_an_adult_qualification_is_not_age_limited() {
    let r = with(|r| {
        prescriber(r).qualifications = vec![
            Qualification::ChildAdolescentPsychiatry,
            Qualification::PsychiatryPsychotherapy,
        ];
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn child_adolescent_specialist_may_refer_any_age_on_muster_28() {
    let mut r = gp_base();
    prescriber(&mut r).qualifications = vec![Qualification::ChildAdolescentPsychiatry];
    patient(&mut r).birth_date = Some(date!(2010 - 01 - 01));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn missing_birth_date_warns() {
    let r = with(|r| patient(r).birth_date = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-PT-01"]);
    assert_eq!(the(&found, "DE-PT-01").severity, Severity::Warning);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn missing_birth_date_warns_even_without_prescriber() {
    let r = with(|r| {
        r.prescriber = None;
        patient(r).birth_date = None;
    });
    let found = codes(&r);
    assert!(found.iter().any(|c| c == "DE-PR-01"), "{found:?}");
    assert!(found.iter().any(|c| c == "DE-PT-01"), "{found:?}");
}

// ---------------------------------------------------------------------------------------------
// Trial sessions: DE-TR-01
// ---------------------------------------------------------------------------------------------

#[test]
fn five_trial_sessions_pass() {
    assert_eq!(codes(&trial_base()), NO_ISSUES);
}

#[test]
fn six_trial_sessions_are_rejected() {
    let mut r = trial_base();
    r.requested_units = individual(6);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-TR-01"]);
    let issue = the(&found, "DE-TR-01");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "At most 5 trial sessions per case; 6 requested or used"
    );
}

#[test]
fn trial_sessions_count_units_already_used() {
    let mut r = trial_base();
    r.requested_units = individual(3);
    let found = issues_with_prior(&r, &used_trial_units(3));
    assert_eq!(codes_of(&found), ["DE-TR-01"]);
    assert_eq!(
        the(&found, "DE-TR-01").detail.as_deref(),
        Some("3 + 3 used")
    );

    r.requested_units = individual(2);
    assert_eq!(run(&r, &used_trial_units(3)), NO_ISSUES);
}

#[test]
fn used_trial_sessions_do_not_limit_other_kinds() {
    assert_eq!(run(&follow_up(30), &used_trial_units(5)), NO_ISSUES);
}

#[test]
fn huge_trial_unit_count_does_not_overflow() {
    let mut r = trial_base();
    r.requested_units = individual(u32::MAX);
    let found = run(&r, &used_trial_units(1));
    assert!(found.iter().any(|c| c == "DE-TR-01"), "{found:?}");
}

// ---------------------------------------------------------------------------------------------
// Discharge: DE-DC-01 .. DE-DC-03
// ---------------------------------------------------------------------------------------------

#[test]
fn hospital_physician_discharge_prescription_passes_without_approval() {
    assert_eq!(codes(&discharge_base()), NO_ISSUES);
}

#[test]
fn discharge_period_ending_7_days_after_discharge_passes() {
    let r = discharge_base();
    assert_eq!(
        r.requested_period.and_then(|p| p.end),
        Some(date!(2026 - 11 - 21))
    );
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn discharge_period_ending_8_days_after_discharge_is_rejected() {
    let mut r = discharge_base();
    r.requested_period = period(date!(2026 - 11 - 14), date!(2026 - 11 - 22));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DC-01"]);
    let issue = the(&found, "DE-DC-01");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "A discharge prescription covers at most 7 calendar days after discharge; the period ends 2026-11-22"
    );
}

#[test]
fn discharge_prescription_without_discharge_date_is_rejected() {
    let mut r = discharge_base();
    r.hospital_stay = Some(HospitalStay {
        admission: Some(date!(2026 - 10 - 01)),
        discharge: None,
    });
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DC-02"]);
    assert_eq!(the(&found, "DE-DC-02").severity, Severity::Error);

    r.hospital_stay = None;
    assert_eq!(codes(&r), ["DE-DC-02"]);
}

#[test]
fn discharge_prescription_starting_before_discharge_warns() {
    let mut r = discharge_base();
    r.requested_period = period(date!(2026 - 11 - 13), date!(2026 - 11 - 21));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-DC-03"]);
    let issue = the(&found, "DE-DC-03");
    assert_eq!(issue.severity, Severity::Warning);
    assert_eq!(
        message(&issue),
        "The discharge prescription starts 2026-11-13, before the discharge"
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn discharge_prescription_starting_after_discharge_passes() {
    let mut r = discharge_base();
    r.requested_period = period(date!(2026 - 11 - 15), date!(2026 - 11 - 21));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn discharge_rules_do_not_apply_to_other_kinds() {
    let r = with(|r| {
        r.hospital_stay = Some(HospitalStay {
            admission: Some(date!(2026 - 09 - 01)),
            discharge: Some(date!(2026 - 11 - 20)),
        });
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Care plan: DE-CP-01
// ---------------------------------------------------------------------------------------------

#[test]
fn prescription_without_care_plan_is_rejected() {
    for kind in [
        ReferralKind::FirstPrescription,
        ReferralKind::FollowUpPrescription,
    ] {
        let r = with(|r| {
            r.kind = Some(kind);
            r.care_plan = None;
        });
        let found = issues(&r);
        assert_eq!(codes_of(&found), ["DE-CP-01"], "{kind:?}");
        assert_eq!(the(&found, "DE-CP-01").severity, Severity::Error);
    }
    let mut discharge = discharge_base();
    discharge.care_plan = None;
    assert_eq!(codes(&discharge), ["DE-CP-01"]);
}

#[test]
fn trial_sessions_and_muster_28_need_no_care_plan() {
    assert!(trial_base().care_plan.is_none());
    assert!(gp_base().care_plan.is_none());
    assert_eq!(codes(&trial_base()), NO_ISSUES);
    assert_eq!(codes(&gp_base()), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Coverage: DE-CV-01 .. DE-CV-03
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_coverage_is_rejected() {
    let r = with(|r| r.coverage = None);
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-CV-01"]);
    assert_eq!(the(&found, "DE-CV-01").severity, Severity::Error);
}

#[test]
fn private_coverage_warns_and_is_accepted() {
    let r = with(|r| coverage(r).kind = Some(CoverageKind::Private));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-CV-02"]);
    assert_eq!(the(&found, "DE-CV-02").severity, Severity::Warning);
    assert_eq!(Verdict::from_issues(&found), Verdict::Accepted);
}

#[test]
fn coverage_of_kind_other_is_rejected() {
    let r = with(|r| coverage(r).kind = Some(CoverageKind::Other));
    let found = issues(&r);
    assert_eq!(codes_of(&found), ["DE-CV-03"]);
    let issue = the(&found, "DE-CV-03");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "Coverage kind other does not pay sociotherapy under § 37a SGB V"
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Rejected);
}

#[test]
fn public_coverage_is_rejected() {
    let r = with(|r| coverage(r).kind = Some(CoverageKind::Public));
    let issue = the(&issues(&r), "DE-CV-03");
    assert_eq!(issue.detail.as_deref(), Some("public"));
    assert_eq!(codes(&r), ["DE-CV-03"]);
}

// ---------------------------------------------------------------------------------------------
// Budget: DE-BU-01
// ---------------------------------------------------------------------------------------------

#[test]
fn full_budget_of_7200_minutes_passes_with_nothing_used() {
    let r = follow_up(120);
    assert_eq!(PACK.budget_minutes(&r), 7200);
    assert_eq!(run(&r, &PriorUsage::default()), NO_ISSUES);
}

#[test]
fn more_than_7200_minutes_is_rejected_with_nothing_used() {
    let found = issues(&follow_up(121));
    assert_eq!(codes_of(&found), ["DE-BU-01"]);
    let issue = the(&found, "DE-BU-01");
    assert_eq!(issue.detail.as_deref(), Some("7260"));
    assert_eq!(issue.limit.as_deref(), Some("7200"));
}

#[test]
fn last_60_minutes_of_the_budget_pass() {
    assert_eq!(run(&follow_up(1), &used_minutes(7140)), NO_ISSUES);
}

#[test]
fn exceeding_the_budget_by_one_minute_is_rejected() {
    let found = issues_with_prior(&follow_up(1), &used_minutes(7141));
    assert_eq!(codes_of(&found), ["DE-BU-01"]);
    let issue = the(&found, "DE-BU-01");
    assert_eq!(issue.severity, Severity::Error);
    assert_eq!(
        message(&issue),
        "60 minutes requested, but only 59 minutes of the budget remain in this three-year window"
    );
}

#[test]
fn exhausted_budget_rejects_any_further_unit() {
    let found = issues_with_prior(&follow_up(1), &used_minutes(9000));
    assert_eq!(the(&found, "DE-BU-01").limit.as_deref(), Some("0"));
}

#[test]
fn group_units_are_charged_90_minutes_each() {
    let group = with(|r| {
        r.kind = Some(ReferralKind::FollowUpPrescription);
        r.requested_units = units(20, 90, Delivery::Group);
    });
    assert_eq!(PACK.budget_minutes(&group), 1800);
    assert_eq!(run(&group, &used_minutes(5400)), NO_ISSUES);
    let found = issues_with_prior(&group, &used_minutes(5401));
    assert_eq!(codes_of(&found), ["DE-BU-01"]);
    assert_eq!(the(&found, "DE-BU-01").detail.as_deref(), Some("1800"));
}

#[test]
fn group_charge_per_unit_comes_from_parameters() {
    let mut value = params().clone();
    value["budget"]["group_unit_budget_minutes"] = json!(60);
    let pack = pack_from(&value);
    let group = with(|r| r.requested_units = units(20, 90, Delivery::Group));
    assert_eq!(pack.budget_minutes(&group), 1200);
    let individual_units = base();
    assert_eq!(pack.budget_minutes(&individual_units), 1800);
}

#[test]
fn referral_without_units_charges_nothing() {
    let r = with(|r| r.requested_units = None);
    assert_eq!(PACK.budget_minutes(&r), 0);
    assert_eq!(run(&r, &used_minutes(7200)), ["DE-RQ-01"]);
}
