//! The § 302 SGB V billing file for Soziotherapie (DTA "Sonstige Leistungserbringer", facts
//! 33-41): one interchange (UNB ... UNZ) for one Kostenträger and one billing month, holding
//! an SLGA message (Gesamtaufstellung: the totals) and one SLLA message per [`BillingCase`].
//!
//! [`build_interchange`] turns cases into the typed [`Interchange302`], [`write_interchange`]
//! writes it as UNOC:3 text, and [`parse_interchange`] reads such text back into the same
//! typed value, checking the envelope (message numbers, UNT segment counts, UNZ count and
//! reference) and the arithmetic of the totals.
//!
//! Segment layout (element order inside each segment, the order of segments in SLLA, ENA and
//! ZUV as segment names for Soziotherapie) follows the facts where they speak and the public
//! reference implementation coop-care/paid otherwise; everything not confirmed by the facts is
//! listed as UNVERIFIED in `docs/billing-302.md`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;
use time::{Date, Month, PrimitiveDateTime, Time};

use super::edifact::{self, Segment, SyntaxError, WriteOptions, in_repertoire};
use super::keys::{
    Rechnungsart, Summenstatus, TestIndicator, Verarbeitungskennzeichen, Zuzahlungskennzeichen,
};
use super::{BillingCase, BillingError, BillingPeriod, Contract};
use crate::check::ids::ik_valid;

/// The syntax identifier written to UNB (fact 33).
pub const SYNTAX: [&str; 2] = ["UNOC", "3"];

/// Written for an unknown LANR or BSNR, read back as "none" (the TA convention used by the
/// reference implementation for other prescription segments; UNVERIFIED for ZUV).
pub const UNKNOWN_NUMBER: &str = "999999999";

/// Datenaustauschreferenz: 00001-99999, one per interchange sent to a recipient, wrapping
/// from 99999 to 00001 (fact 39). The counter itself is persisted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterchangeRef(u32);

impl InterchangeRef {
    /// The first reference.
    pub const FIRST: InterchangeRef = InterchangeRef(1);
    /// The last reference before wrapping.
    pub const LAST: InterchangeRef = InterchangeRef(99_999);

    /// A reference, `None` outside 1-99999.
    pub fn new(value: u32) -> Option<InterchangeRef> {
        (1..=99_999)
            .contains(&value)
            .then_some(InterchangeRef(value))
    }

    /// The number.
    pub fn value(self) -> u32 {
        self.0
    }

    /// The reference of the next interchange: 99999 is followed by 00001.
    pub fn next(self) -> InterchangeRef {
        if self.0 >= Self::LAST.0 {
            Self::FIRST
        } else {
            InterchangeRef(self.0 + 1)
        }
    }
}

impl fmt::Display for InterchangeRef {
    /// Five digits, zero-padded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// A whole billing file, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interchange302 {
    /// The interchange header.
    pub header: Unb,
    /// The SLGA message.
    pub invoice: Slga,
    /// One SLLA message per case.
    pub cases: Vec<Slla>,
}

/// Interchange header (UNB); the trailer (UNZ) is derived from it and the message count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unb {
    /// IK of the sender.
    pub sender_ik: String,
    /// IK of the recipient (Datenannahmestelle).
    pub recipient_ik: String,
    /// When the file was prepared (minute precision).
    pub prepared: PrimitiveDateTime,
    /// Datenaustauschreferenz.
    pub reference: InterchangeRef,
    /// Leistungsbereich = Sammelgruppenschlüssel (`N`).
    pub sammelgruppe: String,
    /// Anwendungsreferenz (logical file name, 11 characters).
    pub application_reference: String,
    /// Test indicator.
    pub test_indicator: TestIndicator,
}

/// Funktion (FKT): processing code and the institutions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fkt {
    /// Verarbeitungskennzeichen (01 or 04).
    pub processing: Verarbeitungskennzeichen,
    /// IK of the provider.
    pub provider_ik: String,
    /// IK of the Kostenträger.
    pub kostentraeger_ik: String,
    /// IK of the Krankenkasse.
    pub krankenkasse_ik: String,
    /// IK of the billing centre (only for Rechnungsart 3).
    pub rechnungssteller_ik: Option<String>,
}

/// Rechnung (REC): invoice number, date, kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    /// Rechnungsnummer (at most 14).
    pub invoice_number: String,
    /// Einzelrechnungsnummer (`0` when there is no Sammelrechnung).
    pub single_invoice_number: String,
    /// Rechnungsdatum.
    pub date: Date,
    /// Rechnungsart.
    pub rechnungsart: Rechnungsart,
}

/// Rechnungssummen (GES) for one Summenstatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ges {
    /// The group.
    pub status: Summenstatus,
    /// Gesamtrechnungsbetrag (net: gross minus co-payments).
    pub net: Decimal,
    /// Gesamtbruttobetrag.
    pub gross: Decimal,
    /// Zuzahlungen.
    pub copayment: Decimal,
}

/// Name of the provider (NAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nam {
    /// Name (at most 30).
    pub name: String,
    /// Contact person and phone (at most 30).
    pub contact: Option<String>,
}

/// The SLGA message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slga {
    /// Message identifier (`SLGA:16:0:0`).
    pub version: Vec<String>,
    /// FKT.
    pub fkt: Fkt,
    /// REC.
    pub rec: Rec,
    /// GES: status 00 first, then each group with cases.
    pub totals: Vec<Ges>,
    /// NAM.
    pub nam: Nam,
}

/// Information Versicherte (INV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inv {
    /// Versichertennummer.
    pub insurance_number: String,
    /// Versichertenstatus (5 characters).
    pub insurance_status: String,
    /// Belegnummer.
    pub receipt_number: String,
}

/// Ursprüngliche Rechnung (URI), only in corrections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// IK of the provider in the original bill.
    pub provider_ik: String,
    /// Original Rechnungsnummer.
    pub invoice_number: String,
    /// Original Einzelrechnungsnummer.
    pub single_invoice_number: String,
    /// Original Rechnungsdatum.
    pub invoice_date: Date,
    /// Original Belegnummer.
    pub receipt_number: String,
}

/// Name und Adresse Versicherter (NAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nad {
    /// Surname.
    pub surname: String,
    /// First name.
    pub first_name: String,
    /// Birth date.
    pub birth_date: Date,
    /// Street and number.
    pub street: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Country code when not Germany.
    pub country: Option<String>,
}

/// Einzelfallnachweis (ENA): one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ena {
    /// Leistungserbringergruppe: Abrechnungscode (2) + Tarifkennzeichen (5), fact 35.
    pub leistungserbringergruppe: String,
    /// Abrechnungspositionsnummer.
    pub position_number: String,
    /// Anzahl (units, 2 decimals).
    pub quantity: Decimal,
    /// Einzelbetrag (price of one unit).
    pub unit_price: Decimal,
    /// Leistungsdatum.
    pub date: Date,
}

/// Zusatzinfo Verordnung (ZUV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zuv {
    /// Zuzahlungskennzeichen.
    pub zuzahlungskennzeichen: Zuzahlungskennzeichen,
    /// Verordnungsdatum.
    pub prescription_date: Date,
    /// LANR of the prescriber.
    pub lanr: Option<String>,
    /// BSNR of the prescriber.
    pub bsnr: Option<String>,
    /// Verordnungsbesonderheit (`4` Entlassmanagement).
    pub verordnungsbesonderheit: Option<String>,
}

/// Kostenzusage (SKZ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skz {
    /// Genehmigungskennzeichen.
    pub approval_number: String,
    /// Genehmigungsdatum.
    pub approval_date: Date,
    /// Art der Genehmigung (`N1`).
    pub kind: String,
}

/// Betrags-Summen (BES) of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bes {
    /// Gesamtbruttobetrag.
    pub gross: Decimal,
    /// Zuzahlung.
    pub copayment: Decimal,
    /// Gesamtnettobetrag.
    pub net: Decimal,
}

/// One SLLA message (one case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slla {
    /// Message identifier (`SLLA:16:0:0`).
    pub version: Vec<String>,
    /// FKT.
    pub fkt: Fkt,
    /// REC.
    pub rec: Rec,
    /// INV.
    pub inv: Inv,
    /// URI (corrections only).
    pub uri: Option<Uri>,
    /// NAD.
    pub nad: Nad,
    /// ENA, one per session in date order.
    pub positions: Vec<Ena>,
    /// ZUV.
    pub zuv: Zuv,
    /// DIA: ICD-10-GM codes.
    pub diagnoses: Vec<String>,
    /// SKZ.
    pub skz: Skz,
    /// BES.
    pub bes: Bes,
}

/// What the caller supplies for one file besides the cases.
#[derive(Debug, Clone)]
pub struct InvoiceRequest<'a> {
    /// IK of the sender (the provider or its billing centre).
    pub sender_ik: String,
    /// IK of the Datenannahmestelle (from the Kostenträgerdatei, fact 40).
    pub recipient_ik: String,
    /// IK of the Kostenträger.
    pub kostentraeger_ik: String,
    /// When the file is prepared (seconds are dropped).
    pub prepared: PrimitiveDateTime,
    /// Datenaustauschreferenz (the persisted counter's value).
    pub reference: InterchangeRef,
    /// Logical file name; derived with [`anwendungsreferenz`] when `None`.
    pub application_reference: Option<String>,
    /// `01` first bill or `04` correction (every case then needs [`BillingCase::original`]).
    pub processing: Verarbeitungskennzeichen,
    /// Rechnungsnummer.
    pub invoice_number: String,
    /// Rechnungsdatum.
    pub invoice_date: Date,
    /// Provider name for NAM.
    pub provider_name: String,
    /// Contact for NAM.
    pub provider_contact: Option<String>,
    /// IK of the billing centre; required for Rechnungsart 3, ignored otherwise.
    pub rechnungssteller_ik: Option<String>,
    /// The cases: one Krankenkasse, one provider, one billing month.
    pub cases: &'a [BillingCase],
}

/// Why a file cannot be built or read.
#[derive(Debug, thiserror::Error)]
pub enum Dta302Error {
    /// A value cannot go into the file.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which value, e.g. `cases[0].insured.surname`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A case cannot be settled.
    #[error("cases[{case}]: {source}")]
    Billing {
        /// Index of the case.
        case: usize,
        /// The cause.
        #[source]
        source: BillingError,
    },
    /// Something the gateway does not produce yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// The text is not well-formed EDIFACT.
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    /// The text is EDIFACT but not a file of this shape.
    #[error("segment {segment} ({tag}) at byte {position}: {reason}")]
    Structure {
        /// 1-based segment number.
        segment: usize,
        /// Byte offset of the segment.
        position: usize,
        /// Its tag.
        tag: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Dta302Error {
    Dta302Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

// ----- building ----------------------------------------------------------------------------

/// The logical file name (Anwendungsreferenz, 11 characters): `SL` + digits 3-8 of the
/// sender IK + `S` (the provider bills itself) or `A` (billing centre) + the month (2 digits).
/// UNVERIFIED: the layout comes from the reference implementation (TA Anhang 1), not the facts.
pub fn anwendungsreferenz(
    sender_ik: &str,
    rechnungsart: Rechnungsart,
    period: BillingPeriod,
) -> Result<String, Dta302Error> {
    if !ik_valid(sender_ik) {
        return Err(invalid("sender_ik", "is not a valid IK"));
    }
    let who = if rechnungsart == Rechnungsart::Provider {
        'S'
    } else {
        'A'
    };
    Ok(format!(
        "SL{}{who}{:02}",
        &sender_ik[2..8],
        u8::from(period.month)
    ))
}

/// Builds the typed file for `request` under `contract`: settles every case, checks every
/// value against the format (lengths, repertoire, identifiers) and computes the totals.
pub fn build_interchange(
    request: &InvoiceRequest<'_>,
    contract: &Contract,
) -> Result<Interchange302, Dta302Error> {
    let rechnungsart = contract.interchange.rechnungsart;
    let test_indicator = contract.interchange.test_indicator;
    if request.processing != contract.processing.first_bill
        && request.processing != contract.processing.correction
    {
        return Err(Dta302Error::Unsupported(format!(
            "Verarbeitungskennzeichen {}",
            request.processing.code()
        )));
    }
    let correction = request.processing == Verarbeitungskennzeichen::Correction;
    ik("sender_ik", &request.sender_ik)?;
    ik("recipient_ik", &request.recipient_ik)?;
    ik("kostentraeger_ik", &request.kostentraeger_ik)?;
    let rechnungssteller_ik = if rechnungsart == Rechnungsart::CentreWithCollection {
        let Some(id) = &request.rechnungssteller_ik else {
            return Err(invalid(
                "rechnungssteller_ik",
                "is required for Rechnungsart 3",
            ));
        };
        ik("rechnungssteller_ik", id)?;
        Some(id.clone())
    } else {
        None
    };
    invoice_number("invoice_number", &request.invoice_number)?;
    date_in_range("invoice_date", request.invoice_date)?;

    let Some(first) = request.cases.first() else {
        return Err(invalid("cases", "is empty"));
    };
    let period = first.period;
    let mut receipts = HashSet::new();
    for (n, case) in request.cases.iter().enumerate() {
        if case.insurer_ik != first.insurer_ik {
            return Err(invalid(
                format!("cases[{n}].insurer_ik"),
                "differs from cases[0]: one file holds one Krankenkasse (Sammelrechnungen are not produced yet)",
            ));
        }
        if case.provider_ik != first.provider_ik {
            return Err(invalid(
                format!("cases[{n}].provider_ik"),
                "differs from cases[0]: one file holds one provider",
            ));
        }
        if case.period != period {
            return Err(invalid(
                format!("cases[{n}].period"),
                "differs from cases[0]: one file holds one billing month",
            ));
        }
        if !receipts.insert(case.receipt_number.as_str()) {
            return Err(invalid(
                format!("cases[{n}].receipt_number"),
                "is used twice in this bill",
            ));
        }
    }
    ik("cases[0].provider_ik", &first.provider_ik)?;
    ik("cases[0].insurer_ik", &first.insurer_ik)?;

    let application_reference = match &request.application_reference {
        Some(given) => given.clone(),
        None => anwendungsreferenz(&request.sender_ik, rechnungsart, period)?,
    };
    if application_reference.len() != 11
        || !application_reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(invalid(
            "application_reference",
            "must be 11 letters or digits",
        ));
    }
    let prepared = Time::from_hms(request.prepared.hour(), request.prepared.minute(), 0)
        .map(|t| PrimitiveDateTime::new(request.prepared.date(), t))
        .map_err(|e| invalid("prepared", e.to_string()))?;
    date_in_range("prepared", prepared.date())?;

    let fkt = Fkt {
        processing: request.processing,
        provider_ik: first.provider_ik.clone(),
        kostentraeger_ik: request.kostentraeger_ik.clone(),
        krankenkasse_ik: first.insurer_ik.clone(),
        rechnungssteller_ik,
    };
    let rec = Rec {
        invoice_number: request.invoice_number.clone(),
        single_invoice_number: "0".to_owned(),
        date: request.invoice_date,
        rechnungsart,
    };

    let mut cases = Vec::with_capacity(request.cases.len());
    for (n, case) in request.cases.iter().enumerate() {
        cases.push(build_slla(
            n,
            case,
            contract,
            &fkt,
            &rec,
            correction,
            test_indicator,
        )?);
    }

    let mut groups: BTreeMap<Summenstatus, (Decimal, Decimal)> = BTreeMap::new();
    for slla in &cases {
        for status in [
            Summenstatus::Total,
            Summenstatus::of_versichertenstatus(&slla.inv.insurance_status),
        ] {
            let (gross, copayment) = groups.entry(status).or_default();
            *gross = add(*gross, slla.bes.gross)?;
            *copayment = add(*copayment, slla.bes.copayment)?;
        }
    }
    let mut totals = Vec::with_capacity(groups.len());
    for (status, (gross, copayment)) in groups {
        let net = gross
            .checked_sub(copayment)
            .ok_or_else(|| invalid("totals", "overflow"))?;
        money("totals", gross)?;
        totals.push(Ges {
            status,
            net,
            gross,
            copayment,
        });
    }

    Ok(Interchange302 {
        header: Unb {
            sender_ik: request.sender_ik.clone(),
            recipient_ik: request.recipient_ik.clone(),
            prepared,
            reference: request.reference,
            sammelgruppe: contract.codes.sammelgruppe.clone(),
            application_reference,
            test_indicator,
        },
        invoice: Slga {
            version: contract.interchange.slga_version.clone(),
            fkt,
            rec,
            totals,
            nam: Nam {
                name: text("provider_name", &request.provider_name, 30)?,
                contact: request
                    .provider_contact
                    .as_deref()
                    .map(|c| text("provider_contact", c, 30))
                    .transpose()?,
            },
        },
        cases,
    })
}

fn build_slla(
    n: usize,
    case: &BillingCase,
    contract: &Contract,
    fkt: &Fkt,
    rec: &Rec,
    correction: bool,
    test_indicator: TestIndicator,
) -> Result<Slla, Dta302Error> {
    let at = |field: &str| format!("cases[{n}].{field}");
    let settlement = case
        .settle(&contract.session_cost, &contract.copayment)
        .map_err(|source| Dta302Error::Billing { case: n, source })?;

    let insured = &case.insured;
    let kvnr = insured.kvnr.trim();
    if kvnr.is_empty()
        || kvnr.len() > 12
        || !kvnr
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return Err(invalid(
            at("insured.kvnr"),
            "must be 1-12 digits or capital letters",
        ));
    }
    let status = insured.status.trim();
    if status.is_empty() || status.len() > 5 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(at("insured.status"), "must be 1-5 digits"));
    }
    code(&at("receipt_number"), &case.receipt_number, 10)?;
    date_in_range(&at("insured.birth_date"), insured.birth_date)?;
    let (street, postal_code, city, country) = match &insured.address {
        Some(a) => (
            Some(text(&at("insured.address.street"), &a.street, 30)?),
            Some(text(&at("insured.address.postal_code"), &a.postal_code, 7)?),
            Some(text(&at("insured.address.city"), &a.city, 25)?),
            match &a.country {
                Some(c) if !c.is_empty() => {
                    if c.len() > 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(invalid(
                            at("insured.address.country"),
                            "must be 1-3 capital letters",
                        ));
                    }
                    Some(c.clone())
                }
                _ => None,
            },
        ),
        None => (None, None, None, None),
    };

    let uri = match (&case.original, correction) {
        (Some(original), true) => {
            invoice_number(&at("original.invoice_number"), &original.invoice_number)?;
            code(&at("original.receipt_number"), &original.receipt_number, 10)?;
            date_in_range(&at("original.invoice_date"), original.invoice_date)?;
            Some(Uri {
                provider_ik: case.provider_ik.clone(),
                invoice_number: original.invoice_number.clone(),
                single_invoice_number: "0".to_owned(),
                invoice_date: original.invoice_date,
                receipt_number: original.receipt_number.clone(),
            })
        }
        (None, true) => {
            return Err(invalid(
                at("original"),
                "a correction (04) must name the bill it corrects",
            ));
        }
        (Some(_), false) => {
            return Err(invalid(
                at("original"),
                "is only allowed in a correction (04)",
            ));
        }
        (None, false) => None,
    };

    let mut positions = Vec::with_capacity(settlement.sessions.len());
    for (i, s) in settlement.sessions.iter().enumerate() {
        let field = at(&format!("sessions[{i}]"));
        if s.placeholder && test_indicator == TestIndicator::Production {
            return Err(invalid(
                field,
                "is priced with a placeholder tariff; real data (test indicator 2) is refused",
            ));
        }
        if s.tarifkennzeichen.len() != 5
            || !s
                .tarifkennzeichen
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid(field, "tarifkennzeichen must be 5 characters"));
        }
        code(&format!("{field}.position_number"), &s.position_number, 10)?;
        // The insurer recomputes each line as Anzahl x Einzelbetrag; a line that does not
        // multiply out to what we charge would be cut (see CostBasis).
        let line = s
            .quantity
            .checked_mul(s.unit_price)
            .map(|l| l.round_dp_with_strategy(2, contract.session_cost.rounding));
        if line != Some(s.cost) {
            return Err(invalid(
                field,
                format!(
                    "{} minutes give {} units, and {} x {} EUR is not the session cost {} EUR; use session_cost.basis \"quantity\" or whole fractions of a unit",
                    case.sessions.get(i).map_or(0, |x| x.minutes),
                    s.quantity,
                    s.quantity,
                    s.unit_price,
                    s.cost
                ),
            ));
        }
        quantity(&field, s.quantity)?;
        money(&field, s.unit_price)?;
        date_in_range(&field, s.date)?;
        positions.push(Ena {
            leistungserbringergruppe: format!(
                "{}{}",
                contract.codes.abrechnungscode, s.tarifkennzeichen
            ),
            position_number: s.position_number.clone(),
            quantity: s.quantity,
            unit_price: s.unit_price,
            date: s.date,
        });
    }

    let p = &case.prescription;
    date_in_range(&at("prescription.date"), p.date)?;
    for (name, value) in [
        ("prescription.lanr", &p.lanr),
        ("prescription.bsnr", &p.bsnr),
    ] {
        if let Some(v) = value
            && (v.len() != 9 || !v.bytes().all(|b| b.is_ascii_digit()) || v == UNKNOWN_NUMBER)
        {
            return Err(invalid(at(name), "must be 9 digits"));
        }
    }
    if case.diagnoses.is_empty() {
        return Err(invalid(
            at("diagnoses"),
            "at least one ICD-10-GM code is needed",
        ));
    }
    let diagnoses = case
        .diagnoses
        .iter()
        .enumerate()
        .map(|(i, d)| text(&at(&format!("diagnoses[{i}]")), d, 12))
        .collect::<Result<Vec<_>, _>>()?;
    date_in_range(&at("approval.date"), case.approval.date)?;
    money(&at("gross"), settlement.gross)?;

    Ok(Slla {
        version: contract.interchange.slla_version.clone(),
        fkt: fkt.clone(),
        rec: rec.clone(),
        inv: Inv {
            insurance_number: kvnr.to_owned(),
            insurance_status: format!("{status:0<5}"),
            receipt_number: case.receipt_number.clone(),
        },
        uri,
        nad: Nad {
            surname: text(&at("insured.surname"), &insured.surname, 47)?,
            first_name: text(&at("insured.first_name"), &insured.first_name, 30)?,
            birth_date: insured.birth_date,
            street,
            postal_code,
            city,
            country,
        },
        positions,
        zuv: Zuv {
            zuzahlungskennzeichen: settlement.zuzahlungskennzeichen,
            prescription_date: p.date,
            lanr: p.lanr.clone(),
            bsnr: p.bsnr.clone(),
            verordnungsbesonderheit: p.discharge_management.then(|| {
                contract
                    .codes
                    .verordnungsbesonderheit_entlassmanagement
                    .clone()
            }),
        },
        diagnoses,
        skz: Skz {
            approval_number: text(&at("approval.number"), &case.approval.number, 20)?,
            approval_date: case.approval.date,
            kind: contract.codes.kostenzusage_art.clone(),
        },
        bes: Bes {
            gross: settlement.gross,
            copayment: settlement.copayment_total,
            net: settlement.net,
        },
    })
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, Dta302Error> {
    a.checked_add(b)
        .ok_or_else(|| invalid("totals", "overflow"))
}

fn ik(field: &str, value: &str) -> Result<(), Dta302Error> {
    if ik_valid(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a valid IK (9 digits with check digit)"),
        ))
    }
}

/// Free text: trimmed, not empty, at most `max` characters (release characters do not count,
/// per the GKV answer quoted in the reference implementation), and only UNOC characters.
/// Characters outside ISO 8859-1 are refused, not transliterated: names must match the
/// insurer's records, so the source data has to be corrected.
fn text(field: &str, value: &str, max: usize) -> Result<String, Dta302Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if let Some(c) = value.chars().find(|c| !in_repertoire(*c)) {
        return Err(invalid(
            field,
            format!(
                "a character (U+{:04X}) is outside the UNOC repertoire (ISO 8859-1); correct the source data",
                u32::from(c)
            ),
        ));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("is longer than {max} characters")));
    }
    Ok(value.to_owned())
}

fn code(field: &str, value: &str, max: usize) -> Result<(), Dta302Error> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(field, format!("must be 1-{max} letters or digits")));
    }
    Ok(())
}

/// Rechnungsnummer: at most 14, `^[a-z0-9][a-z0-9/-]*[a-z0-9]$` case-insensitive (fact 37).
fn invoice_number(field: &str, value: &str) -> Result<(), Dta302Error> {
    let b = value.as_bytes();
    let inner_ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'/' || *c == b'-');
    let ends_ok = matches!((b.first(), b.last()), (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric());
    if b.len() < 2 || b.len() > 14 || !inner_ok || !ends_ok {
        return Err(invalid(
            field,
            "must be 2-14 letters, digits, '/' or '-', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// Dates are written as 8 digits.
fn date_in_range(field: &str, date: Date) -> Result<(), Dta302Error> {
    if (1000..=9999).contains(&date.year()) {
        Ok(())
    } else {
        Err(invalid(field, "year must have four digits"))
    }
}

/// Amounts have at most 10 digits before the comma and are not negative.
fn money(field: &str, value: Decimal) -> Result<(), Dta302Error> {
    if value.is_sign_negative() || value >= Decimal::from(10_000_000_000_i64) || value.scale() > 2 {
        return Err(invalid(field, format!("amount {value} does not fit 10,2")));
    }
    Ok(())
}

/// Quantities have at most 4 digits before the comma.
fn quantity(field: &str, value: Decimal) -> Result<(), Dta302Error> {
    if value.is_sign_negative() || value >= Decimal::from(10_000) || value.scale() > 2 {
        return Err(invalid(field, format!("quantity {value} does not fit 4,2")));
    }
    Ok(())
}

// ----- writing -----------------------------------------------------------------------------

fn fmt_date(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

fn fmt_time(t: PrimitiveDateTime) -> String {
    format!("{:02}{:02}", t.hour(), t.minute())
}

/// Two decimals with the decimal comma of § 302 data.
fn fmt_decimal(value: Decimal) -> String {
    let mut v = value;
    v.rescale(2);
    v.to_string().replace('.', ",")
}

fn fkt_segment(f: &Fkt) -> Segment {
    Segment::new("FKT")
        .simple(Some(f.processing.code()))
        .simple(None)
        .simple(Some(&f.provider_ik))
        .simple(Some(&f.kostentraeger_ik))
        .simple(Some(&f.krankenkasse_ik))
        .simple(f.rechnungssteller_ik.as_deref())
}

fn rec_segment(r: &Rec) -> Segment {
    Segment::new("REC")
        .composite(&[&r.invoice_number, &r.single_invoice_number])
        .simple(Some(&fmt_date(r.date)))
        .simple(Some(r.rechnungsart.code()))
}

fn message(number: usize, version: &[String], body: Vec<Segment>) -> Vec<Segment> {
    let reference = number.to_string();
    let version: Vec<&str> = version.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(
        Segment::new("UNH")
            .simple(Some(&reference))
            .composite(&version),
    );
    // UNT counts every segment of the message, UNH and UNT included.
    let count = (body.len() + 2).to_string();
    out.extend(body);
    out.push(
        Segment::new("UNT")
            .simple(Some(&count))
            .simple(Some(&reference)),
    );
    out
}

/// The interchange as segments, with message numbers (1, 2, ... within the interchange), UNT
/// segment counts and the UNZ trailer filled in.
pub fn to_segments(interchange: &Interchange302) -> Vec<Segment> {
    let h = &interchange.header;
    let mut segments = vec![
        Segment::new("UNB")
            .composite(&SYNTAX)
            .simple(Some(&h.sender_ik))
            .simple(Some(&h.recipient_ik))
            .composite(&[&fmt_date(h.prepared.date()), &fmt_time(h.prepared)])
            .simple(Some(&h.reference.to_string()))
            .simple(Some(&h.sammelgruppe))
            .simple(Some(&h.application_reference))
            .simple(Some(h.test_indicator.code())),
    ];

    let g = &interchange.invoice;
    let mut body = vec![fkt_segment(&g.fkt), rec_segment(&g.rec)];
    for t in &g.totals {
        body.push(
            Segment::new("GES")
                .simple(Some(t.status.code()))
                .simple(Some(&fmt_decimal(t.net)))
                .simple(Some(&fmt_decimal(t.gross)))
                .simple(Some(&fmt_decimal(t.copayment))),
        );
    }
    body.push(
        Segment::new("NAM")
            .simple(Some(&g.nam.name))
            .simple(g.nam.contact.as_deref()),
    );
    segments.extend(message(1, &g.version, body));

    for (i, c) in interchange.cases.iter().enumerate() {
        let mut body = vec![
            fkt_segment(&c.fkt),
            rec_segment(&c.rec),
            Segment::new("INV")
                .simple(Some(&c.inv.insurance_number))
                .simple(Some(&c.inv.insurance_status))
                .simple(None)
                .simple(Some(&c.inv.receipt_number)),
        ];
        if let Some(u) = &c.uri {
            body.push(
                Segment::new("URI")
                    .simple(Some(&u.provider_ik))
                    .composite(&[&u.invoice_number, &u.single_invoice_number])
                    .simple(Some(&fmt_date(u.invoice_date)))
                    .simple(Some(&u.receipt_number)),
            );
        }
        let n = &c.nad;
        body.push(
            Segment::new("NAD")
                .simple(Some(&n.surname))
                .simple(Some(&n.first_name))
                .simple(Some(&fmt_date(n.birth_date)))
                .simple(n.street.as_deref())
                .simple(n.postal_code.as_deref())
                .simple(n.city.as_deref())
                .simple(n.country.as_deref()),
        );
        for e in &c.positions {
            body.push(
                Segment::new("ENA")
                    .simple(Some(&e.leistungserbringergruppe))
                    .simple(Some(&e.position_number))
                    .simple(Some(&fmt_decimal(e.quantity)))
                    .simple(Some(&fmt_decimal(e.unit_price)))
                    .simple(Some(&fmt_date(e.date))),
            );
        }
        let z = &c.zuv;
        body.push(
            Segment::new("ZUV")
                .simple(Some(z.zuzahlungskennzeichen.code()))
                .simple(Some(&fmt_date(z.prescription_date)))
                .simple(Some(z.lanr.as_deref().unwrap_or(UNKNOWN_NUMBER)))
                .simple(Some(z.bsnr.as_deref().unwrap_or(UNKNOWN_NUMBER)))
                .simple(z.verordnungsbesonderheit.as_deref()),
        );
        for d in &c.diagnoses {
            body.push(Segment::new("DIA").simple(Some(d)));
        }
        body.push(
            Segment::new("SKZ")
                .simple(Some(&c.skz.approval_number))
                .simple(Some(&fmt_date(c.skz.approval_date)))
                .simple(Some(&c.skz.kind)),
        );
        body.push(
            Segment::new("BES")
                .simple(Some(&fmt_decimal(c.bes.gross)))
                .simple(Some(&fmt_decimal(c.bes.copayment)))
                .simple(Some(&fmt_decimal(c.bes.net))),
        );
        segments.extend(message(i + 2, &c.version, body));
    }

    segments.push(
        Segment::new("UNZ")
            .simple(Some(&(interchange.cases.len() + 1).to_string()))
            .simple(Some(&h.reference.to_string())),
    );
    segments
}

/// Writes the interchange as text (UNOC characters only; see [`write_interchange_latin1`]).
pub fn write_interchange(
    interchange: &Interchange302,
    options: &WriteOptions,
) -> Result<String, Dta302Error> {
    Ok(edifact::write_segments(&to_segments(interchange), options)?)
}

/// Writes the interchange as the ISO 8859-1 bytes that are transmitted.
pub fn write_interchange_latin1(
    interchange: &Interchange302,
    options: &WriteOptions,
) -> Result<Vec<u8>, Dta302Error> {
    Ok(edifact::encode_latin1(&write_interchange(
        interchange,
        options,
    )?)?)
}

// ----- parsing -----------------------------------------------------------------------------

/// Reads ISO 8859-1 bytes (as transmitted) with [`parse_interchange`].
pub fn parse_interchange_latin1(bytes: &[u8]) -> Result<Interchange302, Dta302Error> {
    parse_interchange(&edifact::decode_latin1(bytes))
}

/// Reads a file this module writes back into typed values. Checks the envelope (UNB/UNZ
/// reference and message count, UNH numbering, UNT counts), the order and shape of the
/// segments, the codes, and that the totals add up (BES net = gross - co-payment; SLGA GES
/// per status = sum of the cases' BES). Errors name the segment number, byte offset and tag.
pub fn parse_interchange(input: &str) -> Result<Interchange302, Dta302Error> {
    let parsed = edifact::parse_segments(input)?;
    let mut c = Cursor {
        segments: &parsed.segments,
        next: 0,
    };

    let unb = c.expect("UNB")?;
    c.max_elements(unb, 8)?;
    if unb.get(0, 0) != Some(SYNTAX[0]) || unb.get(0, 1) != Some(SYNTAX[1]) {
        return Err(c.error("syntax identifier must be UNOC:3"));
    }
    let reference_text = c.required(unb, 4, 0, "Datenaustauschreferenz")?;
    let reference = reference_text
        .parse::<u32>()
        .ok()
        .filter(|_| reference_text.len() == 5 && reference_text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(InterchangeRef::new)
        .ok_or_else(|| c.error("Datenaustauschreferenz must be 00001-99999"))?;
    let prepared_date = c.date(c.required(unb, 3, 0, "date")?)?;
    let prepared_time = c.time(c.required(unb, 3, 1, "time")?)?;
    let header = Unb {
        sender_ik: c.ik(c.required(unb, 1, 0, "sender IK")?)?,
        recipient_ik: c.ik(c.required(unb, 2, 0, "recipient IK")?)?,
        prepared: PrimitiveDateTime::new(prepared_date, prepared_time),
        reference,
        sammelgruppe: c.required(unb, 5, 0, "Leistungsbereich")?.to_owned(),
        application_reference: c.required(unb, 6, 0, "Anwendungsreferenz")?.to_owned(),
        test_indicator: c.key(unb, 7, "test indicator", TestIndicator::from_code)?,
    };

    let mut number = 0usize;
    let (slga_version, invoice) = c.message(&mut number, "SLGA", |c| {
        let fkt = c.fkt()?;
        let rec = c.rec()?;
        let mut totals = Vec::new();
        while c.peek_tag() == Some("GES") {
            let s = c.expect("GES")?;
            c.max_elements(s, 4)?;
            totals.push(Ges {
                status: c.key(s, 0, "Summenstatus", Summenstatus::from_code)?,
                net: c.money(s, 1)?,
                gross: c.money(s, 2)?,
                copayment: c.money(s, 3)?,
            });
        }
        let s = c.expect("NAM")?;
        c.max_elements(s, 2)?;
        let nam = Nam {
            name: c.required(s, 0, 0, "name")?.to_owned(),
            contact: s.get(1, 0).map(str::to_owned),
        };
        Ok((fkt, rec, totals, nam))
    })?;
    let (fkt, rec, totals, nam) = invoice;
    let invoice = Slga {
        version: slga_version,
        fkt,
        rec,
        totals,
        nam,
    };

    let mut cases = Vec::new();
    while c.peek_tag() == Some("UNH") {
        let (version, slla) = c.message(&mut number, "SLLA", |c| c.slla_body())?;
        // Every SLLA repeats the bill's FKT and REC (one Kasse, one bill per file).
        if slla.fkt != invoice.fkt || slla.rec != invoice.rec {
            return Err(c.error(format!(
                "FKT or REC of message {number} differ from the SLGA message"
            )));
        }
        cases.push(Slla { version, ..slla });
    }
    if cases.is_empty() {
        return Err(c.error("an SLLA message was expected"));
    }

    let unz = c.expect("UNZ")?;
    c.max_elements(unz, 2)?;
    if c.required(unz, 0, 0, "message count")?
        .parse::<usize>()
        .ok()
        != Some(number)
    {
        return Err(c.error(format!("UNZ message count must be {number}")));
    }
    if c.required(unz, 1, 0, "reference")? != header.reference.to_string() {
        return Err(c.error("UNZ reference differs from UNB"));
    }
    if c.next < c.segments.len() {
        c.next += 1;
        return Err(c.error("nothing may follow UNZ"));
    }

    check_totals(&invoice, &cases).map_err(|reason| {
        // The totals live in the SLGA message: point at its first GES segment.
        let index = parsed
            .segments
            .iter()
            .position(|(_, s)| s.tag == "GES")
            .unwrap_or(0);
        let (position, tag) = parsed
            .segments
            .get(index)
            .map(|(p, s)| (*p, s.tag.clone()))
            .unwrap_or_default();
        Dta302Error::Structure {
            segment: index + 1,
            position,
            tag,
            reason,
        }
    })?;

    Ok(Interchange302 {
        header,
        invoice,
        cases,
    })
}

fn check_totals(invoice: &Slga, cases: &[Slla]) -> Result<(), String> {
    let mut expected: BTreeMap<Summenstatus, (Decimal, Decimal)> = BTreeMap::new();
    for slla in cases {
        for status in [
            Summenstatus::Total,
            Summenstatus::of_versichertenstatus(&slla.inv.insurance_status),
        ] {
            let (g, k) = expected.entry(status).or_default();
            *g = g.checked_add(slla.bes.gross).ok_or("totals overflow")?;
            *k = k.checked_add(slla.bes.copayment).ok_or("totals overflow")?;
        }
    }
    let found: BTreeMap<Summenstatus, (Decimal, Decimal)> = invoice
        .totals
        .iter()
        .map(|t| (t.status, (t.gross, t.copayment)))
        .collect();
    if found.len() != invoice.totals.len() {
        return Err("a Summenstatus appears twice in GES".to_owned());
    }
    if invoice.totals.first().map(|t| t.status) != Some(Summenstatus::Total) {
        return Err("the first GES must be Summenstatus 00".to_owned());
    }
    for t in &invoice.totals {
        if t.gross.checked_sub(t.copayment) != Some(t.net) {
            return Err(format!(
                "GES {}: net is not gross minus co-payment",
                t.status.code()
            ));
        }
    }
    if found != expected {
        return Err("GES totals do not match the sum of the SLLA messages' BES".to_owned());
    }
    Ok(())
}

struct Cursor<'a> {
    segments: &'a [(usize, Segment)],
    /// Index of the next segment to read.
    next: usize,
}

impl<'a> Cursor<'a> {
    /// An error about the segment read last.
    fn error(&self, reason: impl Into<String>) -> Dta302Error {
        let index = self.next.saturating_sub(1);
        let (position, tag) = self
            .segments
            .get(index)
            .map(|(p, s)| (*p, s.tag.clone()))
            .unwrap_or_else(|| {
                (
                    self.segments.last().map_or(0, |(p, _)| *p),
                    "end".to_owned(),
                )
            });
        Dta302Error::Structure {
            segment: index + 1,
            position,
            tag,
            reason: reason.into(),
        }
    }

    fn peek_tag(&self) -> Option<&'a str> {
        self.segments.get(self.next).map(|(_, s)| s.tag.as_str())
    }

    fn expect(&mut self, tag: &str) -> Result<&'a Segment, Dta302Error> {
        let Some((_, segment)) = self.segments.get(self.next) else {
            self.next += 1;
            return Err(self.error(format!("{tag} expected, the interchange ends")));
        };
        self.next += 1;
        if segment.tag != tag {
            return Err(self.error(format!("{tag} expected")));
        }
        Ok(segment)
    }

    fn max_elements(&self, segment: &Segment, max: usize) -> Result<(), Dta302Error> {
        if segment.elements.len() > max {
            return Err(self.error(format!("more than {max} data elements")));
        }
        Ok(())
    }

    fn required(
        &self,
        segment: &'a Segment,
        element: usize,
        component: usize,
        what: &str,
    ) -> Result<&'a str, Dta302Error> {
        segment
            .get(element, component)
            .ok_or_else(|| self.error(format!("{what} is missing")))
    }

    fn key<K>(
        &self,
        segment: &Segment,
        element: usize,
        what: &str,
        from_code: fn(&str) -> Option<K>,
    ) -> Result<K, Dta302Error> {
        let code = segment.get(element, 0).unwrap_or_default();
        from_code(code).ok_or_else(|| self.error(format!("{what} {code:?} is not a known key")))
    }

    fn ik(&self, value: &str) -> Result<String, Dta302Error> {
        if ik_valid(value) {
            Ok(value.to_owned())
        } else {
            Err(self.error(format!("{value:?} is not a valid IK")))
        }
    }

    fn date(&self, value: &str) -> Result<Date, Dta302Error> {
        let bad = || self.error(format!("{value:?} is not a date CCYYMMDD"));
        if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = value[0..4].parse().map_err(|_| bad())?;
        let month: u8 = value[4..6].parse().map_err(|_| bad())?;
        let day: u8 = value[6..8].parse().map_err(|_| bad())?;
        let month = Month::try_from(month).map_err(|_| bad())?;
        Date::from_calendar_date(year, month, day).map_err(|_| bad())
    }

    fn time(&self, value: &str) -> Result<Time, Dta302Error> {
        let bad = || self.error(format!("{value:?} is not a time HHMM"));
        if value.len() != 4 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let hour: u8 = value[0..2].parse().map_err(|_| bad())?;
        let minute: u8 = value[2..4].parse().map_err(|_| bad())?;
        Time::from_hms(hour, minute, 0).map_err(|_| bad())
    }

    /// A decimal with a comma and exactly two decimals, at most `digits` before the comma.
    fn decimal(
        &self,
        segment: &Segment,
        element: usize,
        digits: usize,
    ) -> Result<Decimal, Dta302Error> {
        let value = segment.get(element, 0).unwrap_or_default();
        let bad = || {
            self.error(format!(
                "{value:?} is not a decimal {digits},2 with a decimal comma"
            ))
        };
        let (whole, cents) = value.split_once(',').ok_or_else(bad)?;
        if whole.is_empty()
            || whole.len() > digits
            || cents.len() != 2
            || !whole
                .bytes()
                .chain(cents.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let units: i64 = format!("{whole}{cents}").parse().map_err(|_| bad())?;
        Ok(Decimal::new(units, 2))
    }

    fn money(&self, segment: &Segment, element: usize) -> Result<Decimal, Dta302Error> {
        self.decimal(segment, element, 10)
    }

    fn fkt(&mut self) -> Result<Fkt, Dta302Error> {
        let s = self.expect("FKT")?;
        self.max_elements(s, 6)?;
        if s.get(1, 0).is_some() {
            return Err(self.error("Sammelrechnungen are not read yet"));
        }
        Ok(Fkt {
            processing: self.key(
                s,
                0,
                "Verarbeitungskennzeichen",
                Verarbeitungskennzeichen::from_code,
            )?,
            provider_ik: self.ik(self.required(s, 2, 0, "provider IK")?)?,
            kostentraeger_ik: self.ik(self.required(s, 3, 0, "Kostenträger IK")?)?,
            krankenkasse_ik: self.ik(self.required(s, 4, 0, "Krankenkasse IK")?)?,
            rechnungssteller_ik: s.get(5, 0).map(|v| self.ik(v)).transpose()?,
        })
    }

    fn rec(&mut self) -> Result<Rec, Dta302Error> {
        let s = self.expect("REC")?;
        self.max_elements(s, 3)?;
        Ok(Rec {
            invoice_number: self.required(s, 0, 0, "Rechnungsnummer")?.to_owned(),
            single_invoice_number: self.required(s, 0, 1, "Einzelrechnungsnummer")?.to_owned(),
            date: self.date(self.required(s, 1, 0, "Rechnungsdatum")?)?,
            rechnungsart: self.key(s, 2, "Rechnungsart", Rechnungsart::from_code)?,
        })
    }

    /// Reads UNH, the body and UNT of the next message of `kind`, checking the numbering and
    /// the segment count. Returns the message identifier and the body's value.
    fn message<T>(
        &mut self,
        number: &mut usize,
        kind: &str,
        body: impl FnOnce(&mut Self) -> Result<T, Dta302Error>,
    ) -> Result<(Vec<String>, T), Dta302Error> {
        let start = self.next;
        let unh = self.expect("UNH")?;
        self.max_elements(unh, 2)?;
        *number += 1;
        let reference = number.to_string();
        if self.required(unh, 0, 0, "message reference")? != reference {
            return Err(self.error(format!("message reference must be {reference}")));
        }
        if unh.get(1, 0) != Some(kind) {
            return Err(self.error(format!("{kind} message expected")));
        }
        let version: Vec<String> = unh.elements.get(1).cloned().unwrap_or_default();
        if version.len() != 4 || version.iter().any(String::is_empty) {
            return Err(self.error("message identifier must be type:version:release:agency"));
        }
        let value = body(self)?;
        let unt = self.expect("UNT")?;
        self.max_elements(unt, 2)?;
        let count = self.next - start;
        if self
            .required(unt, 0, 0, "segment count")?
            .parse::<usize>()
            .ok()
            != Some(count)
        {
            return Err(self.error(format!("UNT segment count must be {count}")));
        }
        if self.required(unt, 1, 0, "message reference")? != reference {
            return Err(self.error("UNT message reference differs from UNH"));
        }
        Ok((version, value))
    }

    fn slla_body(&mut self) -> Result<Slla, Dta302Error> {
        let fkt = self.fkt()?;
        let rec = self.rec()?;

        let s = self.expect("INV")?;
        self.max_elements(s, 4)?;
        let inv = Inv {
            insurance_number: self.required(s, 0, 0, "Versichertennummer")?.to_owned(),
            insurance_status: self.required(s, 1, 0, "Versichertenstatus")?.to_owned(),
            receipt_number: self.required(s, 3, 0, "Belegnummer")?.to_owned(),
        };

        let uri = if self.peek_tag() == Some("URI") {
            let s = self.expect("URI")?;
            self.max_elements(s, 4)?;
            Some(Uri {
                provider_ik: self.ik(self.required(s, 0, 0, "provider IK")?)?,
                invoice_number: self.required(s, 1, 0, "Rechnungsnummer")?.to_owned(),
                single_invoice_number: self.required(s, 1, 1, "Einzelrechnungsnummer")?.to_owned(),
                invoice_date: self.date(self.required(s, 2, 0, "Rechnungsdatum")?)?,
                receipt_number: self.required(s, 3, 0, "Belegnummer")?.to_owned(),
            })
        } else {
            None
        };
        if (fkt.processing == Verarbeitungskennzeichen::Correction) != uri.is_some() {
            return Err(self.error("URI belongs to corrections (04) and only to them"));
        }

        let s = self.expect("NAD")?;
        self.max_elements(s, 7)?;
        let nad = Nad {
            surname: self.required(s, 0, 0, "surname")?.to_owned(),
            first_name: self.required(s, 1, 0, "first name")?.to_owned(),
            birth_date: self.date(self.required(s, 2, 0, "birth date")?)?,
            street: s.get(3, 0).map(str::to_owned),
            postal_code: s.get(4, 0).map(str::to_owned),
            city: s.get(5, 0).map(str::to_owned),
            country: s.get(6, 0).map(str::to_owned),
        };

        let mut positions = Vec::new();
        while self.peek_tag() == Some("ENA") {
            let s = self.expect("ENA")?;
            self.max_elements(s, 5)?;
            let group = self.required(s, 0, 0, "Leistungserbringergruppe")?;
            if group.len() != 7 || !group.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(self.error(
                    "Leistungserbringergruppe must be Abrechnungscode (2) + Tarifkennzeichen (5)",
                ));
            }
            positions.push(Ena {
                leistungserbringergruppe: group.to_owned(),
                position_number: self.required(s, 1, 0, "Positionsnummer")?.to_owned(),
                quantity: self.decimal(s, 2, 4)?,
                unit_price: self.money(s, 3)?,
                date: self.date(self.required(s, 4, 0, "Leistungsdatum")?)?,
            });
        }
        if positions.is_empty() {
            self.next += 1;
            return Err(self.error("ENA expected"));
        }

        let s = self.expect("ZUV")?;
        self.max_elements(s, 5)?;
        let number = |element: usize| {
            s.get(element, 0)
                .filter(|v| *v != UNKNOWN_NUMBER)
                .map(str::to_owned)
        };
        let zuv = Zuv {
            zuzahlungskennzeichen: self.key(
                s,
                0,
                "Zuzahlungskennzeichen",
                Zuzahlungskennzeichen::from_code,
            )?,
            prescription_date: self.date(self.required(s, 1, 0, "Verordnungsdatum")?)?,
            lanr: number(2),
            bsnr: number(3),
            verordnungsbesonderheit: s.get(4, 0).map(str::to_owned),
        };

        let mut diagnoses = Vec::new();
        while self.peek_tag() == Some("DIA") {
            let s = self.expect("DIA")?;
            self.max_elements(s, 1)?;
            diagnoses.push(self.required(s, 0, 0, "ICD code")?.to_owned());
        }

        let s = self.expect("SKZ")?;
        self.max_elements(s, 3)?;
        let skz = Skz {
            approval_number: self
                .required(s, 0, 0, "Genehmigungskennzeichen")?
                .to_owned(),
            approval_date: self.date(self.required(s, 1, 0, "Genehmigungsdatum")?)?,
            kind: self.required(s, 2, 0, "Art der Genehmigung")?.to_owned(),
        };

        let s = self.expect("BES")?;
        self.max_elements(s, 3)?;
        let bes = Bes {
            gross: self.money(s, 0)?,
            copayment: self.money(s, 1)?,
            net: self.money(s, 2)?,
        };
        if bes.gross.checked_sub(bes.copayment) != Some(bes.net) {
            return Err(self.error("BES net is not gross minus co-payment"));
        }

        Ok(Slla {
            version: Vec::new(),
            fkt,
            rec,
            inv,
            uri,
            nad,
            positions,
            zuv,
            diagnoses,
            skz,
            bes,
        })
    }
}

#[cfg(test)]
#[path = "dta302_tests.rs"]
mod tests;
