//! Unit tests of the Finnish rule pack: for every rule code, a referral that fires it (with its
//! severity) and a counterpart at the boundary that passes.

use std::sync::LazyLock;

use serde_json::json;
use time::Date;
use time::macros::date;

use super::{FiRulePack, RULES};
use crate::check::{CheckContext, Issue, Severity, Verdict};
use crate::mappings::Mappings;
use crate::model::{
    CarePlanRef, Coverage, CoverageKind, DatePeriod, Delivery, Frequency, Identifier,
    IdentifierKind, Jurisdiction, Patient, PeriodUnit, Provider, Referral, ReferralIds,
};
use crate::store::ledger::PriorUsage;

const TODAY: Date = date!(2026 - 11 - 15);
const START: Date = date!(2026 - 11 - 16);
const HETU_SYSTEM: &str = "urn:oid:1.2.246.21";
const SOTE_ORG_SYSTEM: &str = "urn:oid:1.2.246.537.6.202.2008";
const COUNTY_OID: &str = "urn:oid:1.2.246.10.3221308.10.0";
const NO_ISSUES: [&str; 0] = [];

static MAPPINGS: LazyLock<Mappings> =
    LazyLock::new(|| match Mappings::load(&Mappings::default_dir()) {
        Ok(m) => m,
        Err(e) => panic!("mappings must load: {e:#?}"),
    });

static PACK: LazyLock<FiRulePack> = LazyLock::new(|| pack_from(params()));

fn params() -> &'static serde_json::Value {
    match MAPPINGS.parameters(Jurisdiction::Fi) {
        Some(value) => value,
        None => panic!("mappings/fi/parameters.json must exist"),
    }
}

fn pack_from(value: &serde_json::Value) -> FiRulePack {
    match FiRulePack::from_value(value) {
        Ok(pack) => pack,
        Err(e) => panic!("Finnish parameters must parse: {e}"),
    }
}

/// The pack with `change` applied to a copy of the parameters.
fn pack_with(change: impl FnOnce(&mut serde_json::Value)) -> FiRulePack {
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

fn hetu(value: &str) -> Identifier {
    ident(IdentifierKind::Hetu, HETU_SYSTEM, value)
}

/// An organisation identifier as the mapper sees one today (fi-base system, kind not recognised).
fn org_oid(value: &str) -> Identifier {
    ident(IdentifierKind::Other, SOTE_ORG_SYSTEM, value)
}

/// An organisation identifier recognised as a Finnish organisation OID.
fn fi_org(value: &str) -> Identifier {
    ident(IdentifierKind::FiOrganisation, SOTE_ORG_SYSTEM, value)
}

fn period(start: Option<Date>, end: Option<Date>) -> Option<DatePeriod> {
    Some(DatePeriod { start, end })
}

fn every(count: u32, period: f64, unit: PeriodUnit) -> Option<Frequency> {
    Some(Frequency {
        count,
        period,
        unit,
    })
}

/// A complete Finnish social rehabilitation referral that yields no issue at all: a valid HETU,
/// a service-needs assessment before the start, a client plan with goals made with the client
/// and evaluation dates, weekly group meetings, the wellbeing services county as payer.
fn base() -> Referral {
    let mut r = Referral::draft(ReferralIds {
        gateway_id: "0190e000-0000-7000-8000-0000000000f1".to_owned(),
        sender_id: None,
        idempotency_key: "fi-tests".to_owned(),
    });
    r.jurisdiction = Some(Jurisdiction::Fi);
    r.is_sociotherapy = true;
    r.issue_date = Some(date!(2026 - 11 - 11));
    r.requested_period = period(Some(START), Some(date!(2027 - 05 - 14)));
    r.frequency = every(1, 1.0, PeriodUnit::Week);
    r.delivery_modes = vec![Delivery::Group];
    r.goals = vec!["Osallistuu viikoittain ryhmätoimintaan".to_owned()];
    r.patient = Some(Patient {
        ids: vec![hetu("140387-264D")],
        birth_date: Some(date!(1987 - 03 - 14)),
        ..Patient::default()
    });
    r.coverage = Some(Coverage {
        payer_ids: vec![org_oid(COUNTY_OID)],
        payer_name: Some("Pirkanmaan hyvinvointialue".to_owned()),
        kind: Some(CoverageKind::Public),
        ..Coverage::default()
    });
    r.care_plan = Some(CarePlanRef {
        reference: "CarePlan/asiakassuunnitelma".to_owned(),
        ids: Vec::new(),
    });
    r.plan_agreed_with_client = Some(true);
    r.plan_evaluation_dates = vec![date!(2027 - 02 - 15), date!(2027 - 05 - 14)];
    r.service_needs_assessment_date = Some(date!(2026 - 10 - 28));
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

fn coverage(r: &mut Referral) -> &mut Coverage {
    r.coverage.get_or_insert_with(Coverage::default)
}

fn with_hetu(value: &str) -> Referral {
    with(|r| patient(r).ids = vec![hetu(value)])
}

// ---------------------------------------------------------------------------------------------
// Running the pack
// ---------------------------------------------------------------------------------------------

fn issues_with(pack: &FiRulePack, referral: &Referral) -> Vec<Issue> {
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
        assert!(code.starts_with("FI-"), "{code}");
    }
}

/// One failing referral per rule; a rule added to `RULES` without a case here fails this test.
#[test]
fn every_rule_of_the_pack_fires_for_some_referral() {
    let cases: Vec<Referral> = vec![
        with_hetu("131052-308U"),
        with_hetu("180499-900D"),
        with(|r| r.patient = None),
        with(|r| coverage(r).payer_ids.push(fi_org("hyvinvointialue"))),
        with(|r| r.service_needs_assessment_date = None),
        with(|r| r.service_needs_assessment_date = Some(date!(2026 - 11 - 17))),
        with(|r| r.care_plan = None),
        with(|r| r.plan_agreed_with_client = None),
        with(|r| r.plan_evaluation_dates.clear()),
        with(|r| r.frequency = every(1, 1.0, PeriodUnit::Month)),
        with(|r| r.delivery_modes.clear()),
        with(|r| r.coverage = None),
        with(|r| r.requested_period = None),
    ];
    let fired: Vec<String> = cases.iter().flat_map(codes).collect();
    for code in RULES {
        assert!(
            fired.iter().any(|c| c == code),
            "no case fires {code}: {fired:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// HETU: FI-ID-01 .. FI-ID-03
// ---------------------------------------------------------------------------------------------

#[test]
fn hetu_with_wrong_check_character_is_an_error() {
    let issue = fires_only(&with_hetu("131052-308U"), "FI-ID-01", Severity::Error);
    assert_eq!(issue.expression, "Patient.identifier");
    assert_eq!(
        message(&issue),
        "HETU 131052-308U is not a valid personal identity code"
    );
}

#[test]
fn hetu_with_right_check_character_passes() {
    for valid in ["131052-308T", "140387-264D", "230795-3188", "010101-002S"] {
        assert_eq!(codes(&with_hetu(valid)), NO_ISSUES, "{valid}");
    }
}

#[test]
fn hetu_century_signs_of_2023_are_accepted() {
    // 1900s: - and Y X W V U; 2000s: A and B C D E F. The check character ignores the sign.
    for valid in [
        "131052Y308T",
        "131052X308T",
        "131052W308T",
        "131052V308T",
        "131052U308T",
        "020304A211J",
        "020304B211J",
        "020304C211J",
        "020304D211J",
        "020304E211J",
        "020304F211J",
        "140387+264D",
    ] {
        assert_eq!(codes(&with_hetu(valid)), NO_ISSUES, "{valid}");
    }
}

#[test]
fn hetu_with_unknown_century_sign_is_an_error() {
    for invalid in ["131052Z308T", "131052G308T", "131052a308T", "131052/308T"] {
        assert_eq!(codes(&with_hetu(invalid)), ["FI-ID-01"], "{invalid}");
    }
}

#[test]
fn hetu_with_impossible_date_is_an_error() {
    // 29 February exists in 2000 but not in 1900; the check character is the same.
    assert_eq!(codes(&with_hetu("290200A1239")), NO_ISSUES);
    assert_eq!(codes(&with_hetu("290200-1239")), ["FI-ID-01"]);
    assert_eq!(codes(&with_hetu("310290-123A")), ["FI-ID-01"]);
}

#[test]
fn hetu_individual_numbers_start_at_002() {
    assert_eq!(codes(&with_hetu("010101-002S")), NO_ISSUES);
    assert_eq!(codes(&with_hetu("010101-001R")), ["FI-ID-01"]);
    assert_eq!(codes(&with_hetu("010101-000P")), ["FI-ID-01"]);
}

#[test]
fn hetu_of_wrong_length_is_an_error() {
    for invalid in ["131052-308", "131052-308TT", "", "1310523308T"] {
        assert_eq!(codes(&with_hetu(invalid)), ["FI-ID-01"], "{invalid:?}");
    }
}

#[test]
fn temporary_hetu_only_warns() {
    let issue = fires_only(&with_hetu("180499-900D"), "FI-ID-02", Severity::Warning);
    assert_eq!(issue.expression, "Patient.identifier");
    assert_eq!(
        message(&issue),
        "HETU 180499-900D is a temporary identifier (individual number 900-999)"
    );
    assert_eq!(codes(&with_hetu("180499-999L")), ["FI-ID-02"]);
    assert_eq!(codes(&with_hetu("180499-936K")), ["FI-ID-02"]);
}

#[test]
fn individual_number_899_is_not_temporary() {
    assert_eq!(codes(&with_hetu("180499-899C")), NO_ISSUES);
}

#[test]
fn temporary_hetu_severity_comes_from_parameters() {
    let pack = pack_with(|v| v["temporary_hetu_severity"] = json!("error"));
    let found = issues_with(&pack, &with_hetu("180499-900D"));
    assert_eq!(codes_of(&found), ["FI-ID-02"]);
    assert_eq!(the(&found, "FI-ID-02").severity, Severity::Error);
    assert_eq!(Verdict::from_issues(&found), Verdict::Rejected);
}

#[test]
fn temporary_hetu_with_wrong_check_character_is_invalid_not_temporary() {
    assert_eq!(codes(&with_hetu("180499-900E")), ["FI-ID-01"]);
}

#[test]
fn client_without_hetu_is_rejected() {
    let r = with(|r| {
        patient(r).ids = vec![ident(
            IdentifierKind::Other,
            "urn:ietf:rfc:3986",
            "urn:uuid:25a53703-27f9-4354-8f1b-a8b2f8f3ee86",
        )];
    });
    let issue = fires_only(&r, "FI-ID-03", Severity::Error);
    assert_eq!(issue.expression, "Patient.identifier");
    let r = with(|r| r.patient = None);
    fires_only(&r, "FI-ID-03", Severity::Error);
}

#[test]
fn hetu_beside_other_identifiers_is_enough() {
    let r = with(|r| {
        patient(r).ids = vec![
            ident(IdentifierKind::Other, "urn:ietf:rfc:3986", "urn:uuid:1"),
            hetu("140387-264D"),
        ];
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Organisation OIDs: FI-ID-04
// ---------------------------------------------------------------------------------------------

#[test]
fn organisation_identifier_that_is_no_oid_is_an_error() {
    let r = with(|r| {
        r.requested_provider = Some(Provider {
            ids: vec![fi_org("Kuntoutuskeskus Tammela")],
            name: None,
        });
    });
    let issue = fires_only(&r, "FI-ID-04", Severity::Error);
    assert_eq!(issue.expression, "Organization.identifier");
    assert_eq!(
        message(&issue),
        "Organisation identifier Kuntoutuskeskus Tammela is not an OID"
    );
}

#[test]
fn payer_organisation_identifier_that_is_no_oid_is_an_error() {
    let r = with(|r| coverage(r).payer_ids = vec![fi_org("1.2.246..10")]);
    assert_eq!(codes(&r), ["FI-ID-04", "FI-PY-01"]);
    let r = with(|r| coverage(r).payer_ids.push(fi_org("urn:oid:")));
    assert_eq!(codes(&r), ["FI-ID-04"]);
}

#[test]
fn organisation_oids_with_and_without_urn_prefix_pass() {
    for value in [COUNTY_OID, "1.2.246.10.3221308.10.0"] {
        let r = with(|r| {
            coverage(r).payer_ids = vec![fi_org(value)];
            r.requested_provider = Some(Provider {
                ids: vec![fi_org("urn:oid:1.2.246.10.2085212.10.1306")],
                name: None,
            });
        });
        assert_eq!(codes(&r), NO_ISSUES, "{value}");
    }
}

#[test]
fn identifiers_of_other_kinds_are_not_checked_as_oids() {
    let r = with(|r| {
        r.requested_provider = Some(Provider {
            ids: vec![ident(IdentifierKind::Other, "urn:other", "not an oid")],
            name: None,
        });
    });
    assert_eq!(codes(&r), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Service-needs assessment: FI-AS-01, FI-AS-02
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_service_needs_assessment_is_rejected() {
    let r = with(|r| r.service_needs_assessment_date = None);
    let issue = fires_only(&r, "FI-AS-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.supportingInfo");
}

#[test]
fn needs_assessment_requirement_comes_from_parameters() {
    let pack = pack_with(|v| v["require_needs_assessment"] = json!(false));
    let r = with(|r| r.service_needs_assessment_date = None);
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

#[test]
fn assessment_on_the_start_day_passes() {
    let r = with(|r| r.service_needs_assessment_date = Some(START));
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn assessment_the_day_after_the_start_is_rejected() {
    let r = with(|r| r.service_needs_assessment_date = Some(date!(2026 - 11 - 17)));
    let issue = fires_only(&r, "FI-AS-02", Severity::Error);
    assert_eq!(issue.expression, "Observation.effectiveDateTime");
    assert_eq!(issue.detail.as_deref(), Some("2026-11-17"));
    assert_eq!(
        message(&issue),
        "The service-needs assessment (2026-11-17) is dated after the service starts"
    );
}

#[test]
fn assessment_without_a_start_date_is_not_compared() {
    let r = with(|r| {
        r.requested_period = period(None, Some(date!(2027 - 05 - 14)));
        r.service_needs_assessment_date = Some(date!(2027 - 01 - 01));
    });
    assert_eq!(codes(&r), ["FI-RQ-01"]);
}

// ---------------------------------------------------------------------------------------------
// Client plan: FI-PL-01 .. FI-PL-03
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_client_plan_is_rejected() {
    let r = with(|r| r.care_plan = None);
    let issue = fires_only(&r, "FI-PL-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.basedOn");
}

#[test]
fn client_plan_without_goals_is_rejected() {
    let r = with(|r| r.goals.clear());
    fires_only(&r, "FI-PL-01", Severity::Error);
}

#[test]
fn client_plan_with_one_goal_passes() {
    let r = with(|r| r.goals = vec!["Hoitaa itsenäisesti asioinnin".to_owned()]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn client_plan_requirement_comes_from_parameters() {
    let pack = pack_with(|v| v["require_client_plan_goals"] = json!(false));
    let r = with(|r| r.goals.clear());
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

#[test]
fn client_plan_not_made_with_the_client_is_rejected() {
    let r = with(|r| r.plan_agreed_with_client = None);
    let issue = fires_only(&r, "FI-PL-02", Severity::Error);
    assert_eq!(issue.expression, "CarePlan.contributor");
    let r = with(|r| r.plan_agreed_with_client = Some(false));
    fires_only(&r, "FI-PL-02", Severity::Error);
}

#[test]
fn client_agreement_requirement_comes_from_parameters() {
    let pack = pack_with(|v| v["require_client_agreement"] = json!(false));
    let r = with(|r| r.plan_agreed_with_client = None);
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

#[test]
fn client_plan_without_evaluation_dates_is_rejected() {
    let r = with(|r| r.plan_evaluation_dates.clear());
    let issue = fires_only(&r, "FI-PL-03", Severity::Error);
    assert_eq!(issue.expression, "Goal.target.dueDate");
}

#[test]
fn one_evaluation_date_passes() {
    let r = with(|r| r.plan_evaluation_dates = vec![date!(2027 - 02 - 15)]);
    assert_eq!(codes(&r), NO_ISSUES);
}

#[test]
fn evaluation_date_requirement_comes_from_parameters() {
    let pack = pack_with(|v| v["require_evaluation_dates"] = json!(false));
    let r = with(|r| r.plan_evaluation_dates.clear());
    assert_eq!(codes_of(&issues_with(&pack, &r)), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Frequency and delivery: FI-FR-01, FI-DM-01
// ---------------------------------------------------------------------------------------------

#[test]
fn meetings_every_two_weeks_pass() {
    for f in [
        every(1, 2.0, PeriodUnit::Week),
        every(1, 14.0, PeriodUnit::Day),
        every(2, 4.0, PeriodUnit::Week),
        every(1, 1.0, PeriodUnit::Week),
        every(2, 1.0, PeriodUnit::Week),
    ] {
        let r = with(|r| r.frequency = f);
        assert_eq!(codes(&r), NO_ISSUES, "{f:?}");
    }
}

#[test]
fn meetings_every_three_weeks_warn() {
    let r = with(|r| r.frequency = every(1, 3.0, PeriodUnit::Week));
    let issue = fires_only(&r, "FI-FR-01", Severity::Warning);
    assert_eq!(issue.expression, "ServiceRequest.occurrenceTiming.repeat");
    assert_eq!(issue.detail.as_deref(), Some("0.33"));
    assert_eq!(issue.limit.as_deref(), Some("2"));
    assert_eq!(
        message(&issue),
        "Meetings are planned 0.33 per week; social rehabilitation expects at least one every 2 weeks"
    );
}

#[test]
fn meetings_every_15_days_warn() {
    let r = with(|r| r.frequency = every(1, 15.0, PeriodUnit::Day));
    fires_only(&r, "FI-FR-01", Severity::Warning);
}

#[test]
fn monthly_meetings_warn() {
    let r = with(|r| r.frequency = every(1, 1.0, PeriodUnit::Month));
    let issue = fires_only(&r, "FI-FR-01", Severity::Warning);
    assert_eq!(issue.detail.as_deref(), Some("0.23"));
}

#[test]
fn twice_a_month_is_slightly_less_than_every_two_weeks_and_warns() {
    // A month counts 30.4375 days, so twice a month is one meeting every 15.2 days.
    let r = with(|r| r.frequency = every(2, 1.0, PeriodUnit::Month));
    let issue = fires_only(&r, "FI-FR-01", Severity::Warning);
    assert_eq!(issue.detail.as_deref(), Some("0.46"));
}

#[test]
fn missing_frequency_warns_as_not_stated() {
    let r = with(|r| r.frequency = None);
    let issue = fires_only(&r, "FI-FR-01", Severity::Warning);
    assert_eq!(issue.detail.as_deref(), Some("0.00"));
}

#[test]
fn minimum_frequency_comes_from_parameters() {
    let pack = pack_with(|v| v["min_meetings_per_week"] = json!(1.0));
    let weekly = base();
    assert_eq!(codes_of(&issues_with(&pack, &weekly)), NO_ISSUES);
    let fortnightly = with(|r| r.frequency = every(1, 2.0, PeriodUnit::Week));
    let found = issues_with(&pack, &fortnightly);
    assert_eq!(codes_of(&found), ["FI-FR-01"]);
    assert_eq!(the(&found, "FI-FR-01").limit.as_deref(), Some("1"));
}

#[test]
fn missing_individual_or_group_work_warns() {
    let r = with(|r| r.delivery_modes.clear());
    let issue = fires_only(&r, "FI-DM-01", Severity::Warning);
    assert_eq!(issue.expression, "ServiceRequest.orderDetail");
    assert_eq!(message(&issue), "Individual or group work is not stated");
}

#[test]
fn individual_or_group_work_alone_passes() {
    for modes in [
        vec![Delivery::Individual],
        vec![Delivery::Group],
        vec![Delivery::Group, Delivery::Individual],
    ] {
        let r = with(|r| r.delivery_modes = modes.clone());
        assert_eq!(codes(&r), NO_ISSUES, "{modes:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Payer: FI-PY-01
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_coverage_is_rejected_for_the_payer() {
    let r = with(|r| r.coverage = None);
    let issue = fires_only(&r, "FI-PY-01", Severity::Error);
    assert_eq!(issue.expression, "Coverage.payor");
}

#[test]
fn coverage_that_is_not_public_is_rejected() {
    for kind in [
        Some(CoverageKind::Statutory),
        Some(CoverageKind::Private),
        Some(CoverageKind::Other),
        None,
    ] {
        let r = with(|r| coverage(r).kind = kind);
        assert_eq!(codes(&r), ["FI-PY-01"], "{kind:?}");
    }
}

#[test]
fn payer_without_a_finnish_oid_is_rejected() {
    for ids in [
        vec![],
        vec![org_oid("urn:oid:2.16.840.1.113883.2.4.6.4")],
        vec![org_oid("Pirkanmaan hyvinvointialue")],
        vec![ident(
            IdentifierKind::Iknr,
            "http://fhir.de/sid/arge-ik/iknr",
            "109519005",
        )],
    ] {
        let r = with(|r| coverage(r).payer_ids = ids.clone());
        assert_eq!(codes(&r), ["FI-PY-01"], "{ids:?}");
    }
}

#[test]
fn county_oid_recognised_or_not_identifies_the_payer() {
    for id in [
        org_oid(COUNTY_OID),
        fi_org(COUNTY_OID),
        ident(IdentifierKind::Other, "urn:ietf:rfc:3986", COUNTY_OID),
    ] {
        let r = with(|r| coverage(r).payer_ids = vec![id.clone()]);
        assert_eq!(codes(&r), NO_ISSUES, "{id:?}");
    }
}

#[test]
fn payer_rules_come_from_parameters() {
    let pack = pack_with(|v| v["payer_oid_prefix"] = json!("1.2.246.10."));
    assert_eq!(codes_of(&issues_with(&pack, &base())), NO_ISSUES);
    let not_a_county = with(|r| coverage(r).payer_ids = vec![org_oid("urn:oid:1.2.246.537.5.1")]);
    assert_eq!(codes_of(&issues_with(&pack, &not_a_county)), ["FI-PY-01"]);
    let pack = pack_with(|v| v["payer_coverage_kinds"] = json!(["public", "statutory"]));
    let statutory = with(|r| coverage(r).kind = Some(CoverageKind::Statutory));
    assert_eq!(codes_of(&issues_with(&pack, &statutory)), NO_ISSUES);
}

// ---------------------------------------------------------------------------------------------
// Period: FI-RQ-01
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_period_is_rejected() {
    let r = with(|r| r.requested_period = None);
    let issue = fires_only(&r, "FI-RQ-01", Severity::Error);
    assert_eq!(issue.expression, "ServiceRequest.occurrencePeriod");
}

#[test]
fn period_ending_before_it_starts_is_rejected() {
    let r = with(|r| r.requested_period = period(Some(START), Some(date!(2026 - 11 - 15))));
    fires_only(&r, "FI-RQ-01", Severity::Error);
}

#[test]
fn one_day_and_open_ended_periods_pass() {
    for p in [period(Some(START), Some(START)), period(Some(START), None)] {
        let r = with(|r| r.requested_period = p);
        assert_eq!(codes(&r), NO_ISSUES, "{p:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and the empty referral
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
        gateway_id: "0190e000-0000-7000-8000-0000000000f2".to_owned(),
        sender_id: None,
        idempotency_key: "fi-empty".to_owned(),
    });
    r.jurisdiction = Some(Jurisdiction::Fi);
    let found = issues(&r);
    assert_eq!(
        codes_of(&found),
        [
            "FI-ID-03", "FI-RQ-01", "FI-AS-01", "FI-PL-01", "FI-PL-02", "FI-PL-03", "FI-FR-01",
            "FI-DM-01", "FI-PY-01"
        ]
    );
    assert_eq!(Verdict::from_issues(&found), Verdict::Rejected);
}
