//! Tests of the § 302 file: build -> write -> parse round trips with real values, escaping and
//! the Latin-1 repertoire, envelope counts, corrections, reference wrapping, and rejection of
//! inconsistent or tampered files.

use std::sync::LazyLock;

use time::macros::{date, datetime};

use super::*;
use crate::billing::edifact::{WriteOptions, parse_segments};
use crate::billing::tests::{case, eur, session};
use crate::billing::{
    CopaymentStatus, CostBasis, OriginalBill, PostalAddress, SessionCostRules, Tariff,
};
use crate::model::Delivery;

static CONTRACT: LazyLock<Contract> =
    LazyLock::new(|| match Contract::load(&Contract::default_path()) {
        Ok(c) => c,
        Err(e) => panic!("mappings/de/billing.json must load: {e}"),
    });

const SENDER: &str = "260326822";
const RECIPIENT: &str = "108310400";
const KOSTENTRAEGER: &str = "101575519";

fn request(cases: &[BillingCase]) -> InvoiceRequest<'_> {
    InvoiceRequest {
        sender_ik: SENDER.to_owned(),
        recipient_ik: RECIPIENT.to_owned(),
        kostentraeger_ik: KOSTENTRAEGER.to_owned(),
        prepared: datetime!(2026-11-03 14:07:33),
        reference: InterchangeRef::new(42).unwrap_or(InterchangeRef::FIRST),
        application_reference: None,
        processing: Verarbeitungskennzeichen::FirstBill,
        invoice_number: "RE-2026/10-17".to_owned(),
        invoice_date: date!(2026 - 11 - 03),
        provider_name: "Soziotherapie Rhein GmbH".to_owned(),
        provider_contact: Some("A. Schmidt, 0211 123456".to_owned()),
        rechnungssteller_ik: None,
        cases,
    }
}

fn build(req: &InvoiceRequest<'_>) -> Interchange302 {
    match build_interchange(req, &CONTRACT) {
        Ok(i) => i,
        Err(e) => panic!("must build: {e}"),
    }
}

fn write(i: &Interchange302) -> String {
    match write_interchange(i, &CONTRACT.write_options()) {
        Ok(t) => t,
        Err(e) => panic!("must write: {e}"),
    }
}

fn parse(text: &str) -> Interchange302 {
    match parse_interchange(text) {
        Ok(i) => i,
        Err(e) => panic!("must parse: {e}\n{text}"),
    }
}

fn round_trip(i: &Interchange302) -> String {
    let text = write(i);
    assert_eq!(&parse(&text), i, "parse(write(x)) == x\n{text}");
    text
}

fn build_err(req: &InvoiceRequest<'_>) -> Dta302Error {
    match build_interchange(req, &CONTRACT) {
        Ok(i) => panic!("must be refused, built {i:?}"),
        Err(e) => e,
    }
}

fn parse_err(text: &str) -> Dta302Error {
    match parse_interchange(text) {
        Ok(i) => panic!("must be refused, parsed {i:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_bill_round_trips_with_real_values() {
    let cases = [case()];
    let interchange = build(&request(&cases));
    let text = round_trip(&interchange);

    assert!(text.starts_with(
        "UNA:+,? 'UNB+UNOC:3+260326822+108310400+20261103:1407+00042+N+SL032682S10+0'"
    ));
    assert!(text.contains("UNH+1+SLGA:16:0:0'FKT+01++260326822+101575519+109519005'"));
    assert!(text.contains("REC+RE-2026/10-17:0+20261103+1'"));
    assert!(text.contains("GES+00+268,92+293,60+24,68'GES+11+268,92+293,60+24,68'"));
    assert!(text.contains("NAM+Soziotherapie Rhein GmbH+A. Schmidt, 0211 123456'"));
    assert!(text.contains("UNH+2+SLLA:16:0:0'"));
    assert!(text.contains("INV+A123456780+10000++2026100001'"));
    assert!(
        text.contains("NAD+Müller-Lüdenscheidt+Jürgen+19750412+Königsallee 12+40212+Düsseldorf'")
    );
    assert!(text.contains("ENA+6908000+6900001+1,25+58,72+20261005'"));
    assert!(text.contains("ENA+6908000+6900002+1,00+29,36+20261007'"));
    assert!(text.contains("ENA+6908000+6900001+2,50+58,72+20261014'"));
    assert!(text.contains("ZUV+3+20260910+754236701+201234500'"));
    assert!(text.contains("DIA+F20.0'SKZ+GEN-2026/4711+20260920+N1'"));
    assert!(text.contains("BES+293,60+24,68+268,92'"));
    assert!(text.ends_with("UNZ+2+00042'"));

    assert_eq!(interchange.header.prepared, datetime!(2026-11-03 14:07));
    assert_eq!(interchange.cases[0].positions.len(), 4);
}

#[test]
fn escaping_umlauts_and_latin1_bytes() {
    let mut c = case();
    c.insured.surname = "O'Brien+Söhne?".to_owned();
    c.insured.first_name = "Ännchen: Zoë".to_owned();
    c.insured.address = Some(PostalAddress {
        street: "Große Straße 5".to_owned(),
        postal_code: "50667".to_owned(),
        city: "Köln".to_owned(),
        country: None,
    });
    c.approval.number = "A:1+2'3?4".to_owned();
    let cases = [c];
    let interchange = build(&request(&cases));
    let text = round_trip(&interchange);
    assert!(
        text.contains("NAD+O?'Brien?+Söhne??+Ännchen?: Zoë+19750412+Große Straße 5+50667+Köln'")
    );
    assert!(text.contains("SKZ+A?:1?+2?'3??4+20260920+N1'"));
    assert_eq!(interchange.cases[0].nad.surname, "O'Brien+Söhne?");

    let bytes = match write_interchange_latin1(&interchange, &CONTRACT.write_options()) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    // One byte per character: ß is 0xDF, Ö would be 0xD6, ü 0xFC.
    assert_eq!(bytes.len(), text.chars().count());
    assert!(bytes.windows(2).any(|w| w == [b'K', 0xF6])); // "Kö"
    assert!(bytes.contains(&0xDF));
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "the wire format is not UTF-8"
    );
    match parse_interchange_latin1(&bytes) {
        Ok(back) => assert_eq!(back, interchange),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn characters_outside_latin1_are_refused_with_the_field_named() {
    let mut c = case();
    c.insured.first_name = "Łucja".to_owned();
    let cases = [c];
    match build_err(&request(&cases)) {
        Dta302Error::Invalid { field, reason } => {
            assert_eq!(field, "cases[0].insured.first_name");
            assert!(reason.contains("U+0141"), "{reason}");
        }
        other => panic!("{other}"),
    }
    let mut c = case();
    c.insured.surname = "Smith\u{2019}s".to_owned(); // typographic apostrophe
    let cases = [c];
    assert!(matches!(
        build_err(&request(&cases)),
        Dta302Error::Invalid { .. }
    ));
}

#[test]
fn unh_numbers_and_unt_counts_are_right() {
    let mut second = case();
    second.receipt_number = "2026100002".to_owned();
    second.insured.kvnr = "X110411675".to_owned();
    second.insured.status = "30000".to_owned();
    second.sessions.truncate(1);
    let cases = [case(), second];
    let text = write(&build(&request(&cases)));
    let parsed = match parse_segments(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let segs: Vec<&edifact::Segment> = parsed.segments.iter().map(|(_, s)| s).collect();
    let mut messages = 0;
    let mut start = None;
    for (i, s) in segs.iter().enumerate() {
        match s.tag.as_str() {
            "UNH" => {
                messages += 1;
                assert_eq!(s.get(0, 0), Some(messages.to_string().as_str()));
                start = Some(i);
            }
            "UNT" => {
                let Some(first) = start.take() else {
                    panic!("UNT without UNH")
                };
                let count = (i - first + 1).to_string();
                assert_eq!(
                    s.get(0, 0),
                    Some(count.as_str()),
                    "UNT of message {messages}"
                );
                assert_eq!(s.get(1, 0), Some(messages.to_string().as_str()));
            }
            _ => {}
        }
    }
    assert_eq!(messages, 3);
    let unz = segs[segs.len() - 1];
    assert_eq!(unz.get(0, 0), Some("3"));
    // SLGA: UNH FKT REC GES(00) GES(11) GES(31) NAM UNT = 8 segments.
    assert!(text.contains("NAM+Soziotherapie Rhein GmbH+A. Schmidt, 0211 123456'UNT+8+1'"));
    // Second case: UNH FKT REC INV NAD ENA ZUV DIA SKZ BES UNT = 11.
    assert!(text.contains("BES+73,40+7,34+66,06'UNT+11+3'"));
    // Totals per Summenstatus: 00 = both, 11 = members, 31 = family.
    assert!(text.contains("GES+00+334,98+367,00+32,02'"));
    assert!(text.contains("GES+11+268,92+293,60+24,68'"));
    assert!(text.contains("GES+31+66,06+73,40+7,34'"));
    round_trip(&build(&request(&cases)));
}

#[test]
fn a_correction_carries_04_and_the_original_bill() {
    let mut c = case();
    c.original = Some(OriginalBill {
        invoice_number: "RE-2026/10-09".to_owned(),
        invoice_date: date!(2026 - 11 - 01),
        receipt_number: "2026100001".to_owned(),
    });
    let cases = [c];
    let mut req = request(&cases);
    req.processing = Verarbeitungskennzeichen::Correction;
    let interchange = build(&req);
    let text = round_trip(&interchange);
    assert!(text.contains("UNH+1+SLGA:16:0:0'FKT+04++"));
    assert!(text.contains(
        "INV+A123456780+10000++2026100001'URI+260326822+RE-2026/10-09:0+20261101+2026100001'NAD+"
    ));
    assert_eq!(
        interchange.cases[0].fkt.processing,
        Verarbeitungskennzeichen::Correction
    );

    // A correction without the original, or a first bill with one, is refused.
    let plain = [case()];
    let mut req = request(&plain);
    req.processing = Verarbeitungskennzeichen::Correction;
    assert!(
        matches!(build_err(&req), Dta302Error::Invalid { field, .. } if field == "cases[0].original")
    );
    let mut req = request(&cases);
    req.processing = Verarbeitungskennzeichen::FirstBill;
    assert!(matches!(build_err(&req), Dta302Error::Invalid { .. }));
    // 02 and 03 are not produced yet.
    let mut req = request(&plain);
    req.processing = Verarbeitungskennzeichen::CopaymentClaim;
    assert!(matches!(build_err(&req), Dta302Error::Unsupported(_)));
}

#[test]
fn the_interchange_reference_wraps_from_99999_to_00001() {
    assert_eq!(InterchangeRef::LAST.next(), InterchangeRef::FIRST);
    assert_eq!(
        InterchangeRef::new(99_998).map(InterchangeRef::next),
        InterchangeRef::new(99_999)
    );
    assert_eq!(InterchangeRef::new(0), None);
    assert_eq!(InterchangeRef::new(100_000), None);
    assert_eq!(InterchangeRef::FIRST.to_string(), "00001");

    let cases = [case()];
    let mut req = request(&cases);
    req.reference = InterchangeRef::LAST;
    let text = round_trip(&build(&req));
    assert!(text.contains("+99999+N+") && text.ends_with("UNZ+2+99999'"));
    req.reference = InterchangeRef::LAST.next();
    let text = round_trip(&build(&req));
    assert!(text.contains("+00001+N+") && text.ends_with("UNZ+2+00001'"));
}

#[test]
fn exempt_under_18_and_entlassmanagement_cases() {
    let mut exempt = case();
    exempt.copayment = CopaymentStatus::Exempt;
    let mut young = case();
    young.receipt_number = "2026100002".to_owned();
    young.insured.birth_date = date!(2010 - 01 - 01);
    young.copayment = CopaymentStatus::Under18;
    young.prescription.discharge_management = true;
    young.prescription.lanr = None;
    young.prescription.bsnr = None;
    young.insured.address = None;
    let cases = [exempt, young];
    let interchange = build(&request(&cases));
    let text = round_trip(&interchange);
    assert!(text.contains("ZUV+1+20260910+754236701+201234500'"));
    assert!(text.contains("ZUV+0+20260910+999999999+999999999+4'"));
    assert!(text.contains("NAD+Müller-Lüdenscheidt+Jürgen+20100101'"));
    for slla in &interchange.cases {
        assert_eq!(slla.bes.copayment, Decimal::ZERO);
        assert_eq!(slla.bes.net, eur("293.60"));
    }
    assert_eq!(interchange.cases[1].zuv.lanr, None);
    assert_eq!(
        interchange.cases[1].zuv.verordnungsbesonderheit.as_deref(),
        Some("4")
    );
}

#[test]
fn a_line_that_does_not_multiply_out_is_refused_unless_priced_by_quantity() {
    let mut c = case();
    // 50 of 90 minutes: 0.5555.. units, written as 0.56; 29.36 * 50 / 90 = 16.31 but
    // 0.56 * 29.36 = 16.44.
    c.sessions = vec![session(date!(2026 - 10 - 21), 50, Delivery::Group)];
    let cases = [c.clone()];
    match build_err(&request(&cases)) {
        Dta302Error::Invalid { field, reason } => {
            assert_eq!(field, "cases[0].sessions[0]");
            assert!(reason.contains("16.31"), "{reason}");
        }
        other => panic!("{other}"),
    }
    let mut by_quantity = CONTRACT.clone();
    by_quantity.session_cost = SessionCostRules {
        basis: CostBasis::Quantity,
        ..by_quantity.session_cost
    };
    let interchange = match build_interchange(&request(&cases), &by_quantity) {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(interchange.cases[0].bes.gross, eur("16.44"));
    assert_eq!(interchange.cases[0].bes.copayment, eur("5.00"));
    round_trip(&interchange);
}

#[test]
fn placeholder_prices_never_go_out_as_real_data() {
    let mut production = CONTRACT.clone();
    production.interchange.test_indicator = TestIndicator::Production;
    let mut c = case();
    c.tariff.individual = c.tariff.individual.map(|t| Tariff {
        placeholder: true,
        ..t
    });
    let cases = [c];
    let err = match build_interchange(&request(&cases), &production) {
        Ok(_) => panic!("must be refused"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("placeholder"), "{err}");
}

#[test]
fn inconsistent_bills_are_refused() {
    let mut other_kasse = case();
    other_kasse.insurer_ik = "107815761".to_owned();
    other_kasse.receipt_number = "2".to_owned();
    let cases = [case(), other_kasse];
    assert!(
        build_err(&request(&cases))
            .to_string()
            .contains("one Krankenkasse")
    );

    let mut other_month = case();
    other_month.receipt_number = "2".to_owned();
    other_month.period.month = time::Month::September;
    other_month.sessions = vec![session(date!(2026 - 09 - 30), 60, Delivery::Individual)];
    let cases = [case(), other_month];
    assert!(
        build_err(&request(&cases))
            .to_string()
            .contains("one billing month")
    );

    let cases = [case(), case()];
    assert!(
        build_err(&request(&cases))
            .to_string()
            .contains("used twice")
    );

    let cases = [case()];
    let mut req = request(&cases);
    req.recipient_ik = "260326828".to_owned();
    assert!(build_err(&req).to_string().contains("recipient_ik"));
    let mut req = request(&cases);
    req.invoice_number = "-bad".to_owned();
    assert!(build_err(&req).to_string().contains("invoice_number"));
    assert!(build_err(&request(&[])).to_string().contains("cases"));

    let mut long = case();
    long.insured.surname = "x".repeat(48);
    let cases = [long];
    assert!(build_err(&request(&cases)).to_string().contains("47"));

    let mut no_dx = case();
    no_dx.diagnoses.clear();
    let cases = [no_dx];
    assert!(build_err(&request(&cases)).to_string().contains("ICD"));

    let mut outside = case();
    outside.sessions[0].date = date!(2026 - 11 - 01);
    let cases = [outside];
    assert!(matches!(
        build_err(&request(&cases)),
        Dta302Error::Billing { case: 0, .. }
    ));
}

#[test]
fn anwendungsreferenz_is_eleven_characters() {
    let period = crate::billing::BillingPeriod::of(date!(2026 - 03 - 01));
    let r = anwendungsreferenz("260326822", Rechnungsart::Provider, period);
    assert_eq!(r.ok().as_deref(), Some("SL032682S03"));
    let r = anwendungsreferenz("260326822", Rechnungsart::CentreWithCollection, period);
    assert_eq!(r.ok().as_deref(), Some("SL032682A03"));
    assert!(anwendungsreferenz("12", Rechnungsart::Provider, period).is_err());
}

#[test]
fn tampered_files_are_refused_with_the_segment_named() {
    let cases = [case()];
    let good = write(&build(&request(&cases)));
    let tamper = |from: &str, to: &str| {
        assert!(good.contains(from), "{from} not in {good}");
        good.replacen(from, to, 1)
    };
    let structure = |text: &str, expect: &str| match parse_err(text) {
        Dta302Error::Structure {
            reason, segment, ..
        } => {
            assert!(reason.contains(expect), "{reason} (segment {segment})");
            segment
        }
        other => panic!("expected a structure error about {expect}, got {other}"),
    };

    // SLGA: UNB is segment 1, UNH 2, ..., its UNT segment 8.
    assert_eq!(
        structure(&tamper("UNT+7+1'", "UNT+6+1'"), "segment count must be 7"),
        8
    );
    structure(&tamper("UNZ+2+00042'", "UNZ+2+00043'"), "UNZ reference");
    structure(&tamper("UNZ+2+", "UNZ+3+"), "message count");
    structure(
        &tamper("UNH+2+SLLA", "UNH+3+SLLA"),
        "message reference must be 2",
    );
    structure(
        &tamper("BES+293,60+24,68+268,92'", "BES+293,60+24,68+268,93'"),
        "BES net",
    );
    structure(
        &tamper("BES+293,60+24,68+268,92'", "BES+293,61+24,68+268,93'"),
        "do not match",
    );
    structure(
        &tamper(
            "ENA+6908000+6900001+1,25+58,72",
            "ENA+6908000+6900001+1.25+58,72",
        ),
        "decimal comma",
    );
    structure(&tamper("+20261005'", "+20261305'"), "not a date");
    structure(&tamper("ZUV+3+", "ZUV+7+"), "Zuzahlungskennzeichen");
    structure(
        &tamper("FKT+01++260326822", "FKT+01++260326828"),
        "not a valid IK",
    );
    structure(&tamper("DIA+F20.0'", "DIA+F20.0'XYZ+1'"), "SKZ expected");
    structure(&tamper("UNOC:3", "UNOC:4"), "UNOC:3");
    structure(
        &tamper(
            "REC+RE-2026/10-17:0+20261103+1'INV",
            "REC+RE-2026/10-18:0+20261103+1'INV",
        ),
        "differ from the SLGA",
    );
    structure(
        &tamper("ENA+6908000+", "ENA+69080+"),
        "Leistungserbringergruppe",
    );
    structure(&format!("{good}UNB+x'"), "nothing may follow UNZ");
    structure(
        &tamper(
            "INV+A123456780+10000++2026100001'",
            "INV+A123456780+10000++2026100001+x+y'",
        ),
        "more than 4",
    );
    assert!(matches!(
        parse_err(&good[..good.len() - 1]),
        Dta302Error::Syntax(_)
    ));
    assert!(matches!(parse_err(""), Dta302Error::Syntax(_)));
}

#[test]
fn truncated_files_never_panic() {
    let cases = [case()];
    let good = write(&build(&request(&cases)));
    for end in (0..good.len()).filter(|e| good.is_char_boundary(*e)) {
        assert!(
            parse_interchange(&good[..end]).is_err(),
            "prefix {end} parsed"
        );
    }
}

#[test]
fn line_breaks_and_a_missing_una_are_read() {
    let cases = [case()];
    let interchange = build(&request(&cases));
    let options = WriteOptions {
        una: false,
        line_breaks: true,
        ..CONTRACT.write_options()
    };
    let text = match write_interchange(&interchange, &options) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    assert!(text.starts_with("UNB+UNOC:3+"));
    assert!(text.contains("'\r\nUNH+1+SLGA"));
    assert_eq!(parse(&text), interchange);
}
