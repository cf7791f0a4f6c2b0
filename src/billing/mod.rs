//! The pure billing core: from delivered sessions to a § 302 SGB V billing file for a statutory
//! insurer. No I/O apart from [`Contract::load`]; the gateway wires it to the store, AMQP and
//! the insurers' answers elsewhere.
//!
//! * [`BillingCase`]: one referral in one billing period, with the sessions delivered.
//! * [`contract`]: codes, unit lengths, co-payment parameters and tariffs from
//!   `mappings/de/billing.json`.
//! * [`BillingCase::settle`]: prices the sessions (exact [`Decimal`], never `f64`) and computes
//!   the co-payment per calendar day ([`copayment`]).
//! * [`dta302`]: builds, writes and parses the interchange (UNB, SLGA, SLLA ..., UNZ) over the
//!   hand-written UNOC:3 syntax layer in [`edifact`].
//! * [`fhir`]: the FHIR R4 edges: the insurer's approval (ClaimResponse), the provider's session
//!   report (Encounters) and the billing Claim (`docs/billing-fhir.md`).
//!
//! What is and is not verified about the file format is in `docs/billing-302.md`.

pub mod contract;
pub mod copayment;
pub mod dta302;
pub mod edifact;
pub mod fhir;
pub mod funding;
pub mod keys;

use rust_decimal::Decimal;
use time::{Date, Month, Time};

pub use contract::{CaseTariff, Contract, ContractError, CostBasis, SessionCostRules, Tariff};
pub use copayment::{CopaymentRules, CopaymentSummary};
pub use keys::{Rechnungsart, TestIndicator, Verarbeitungskennzeichen, Zuzahlungskennzeichen};

use crate::model::{Delivery, Setting};

/// One delivered session, as recorded by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredSession {
    /// Day of the session (Leistungsdatum).
    pub date: Date,
    /// Start time, when recorded (not transmitted yet; kept for audit and double-booking checks).
    pub start: Option<Time>,
    /// Minutes delivered (a 60-minute unit may be split, fact 26).
    pub minutes: u32,
    /// Individual or group; selects the tariff and unit length.
    pub delivery: Delivery,
    /// Where it took place (not transmitted in § 302 data; kept for audit).
    pub setting: Setting,
    /// The provider's internal id of the sociotherapist (not transmitted).
    pub professional_id: Option<String>,
}

/// Co-payment status as recorded on the prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopaymentStatus {
    /// The patient pays the statutory co-payment (from the 18th birthday on).
    Liable,
    /// The patient holds an exemption (Befreiung, Zuzahlungskennzeichen 1).
    Exempt,
    /// The prescription is marked free because the patient is under 18. The birth date still
    /// decides per day (see [`copayment::copayments`]).
    Under18,
}

/// Postal address of the insured person (NAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostalAddress {
    /// Street and house number (at most 30 characters in the file).
    pub street: String,
    /// Postal code (at most 7).
    pub postal_code: String,
    /// City (at most 25).
    pub city: String,
    /// Country code when not Germany (`None` = DE).
    pub country: Option<String>,
}

/// The insured person as billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsuredPerson {
    /// Versichertennummer (KVNR, at most 12 characters).
    pub kvnr: String,
    /// Versichertenstatus as on the prescription (digits; padded to 5 with `0` in the file).
    pub status: String,
    /// Surname (at most 47).
    pub surname: String,
    /// First name (at most 30).
    pub first_name: String,
    /// Birth date; decides the under-18 co-payment rule per day.
    pub birth_date: Date,
    /// Address, when known.
    pub address: Option<PostalAddress>,
}

/// The insurer's approval of the sociotherapy (Kostenzusage, SKZ, fact 36).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Genehmigungskennzeichen (at most 20 characters).
    pub number: String,
    /// Genehmigungsdatum.
    pub date: Date,
}

/// The prescription (Verordnung) the sessions were delivered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prescription {
    /// Verordnungsdatum.
    pub date: Date,
    /// LANR of the prescriber (9 digits), when known.
    pub lanr: Option<String>,
    /// BSNR of the prescriber's site (9 digits), when known.
    pub bsnr: Option<String>,
    /// Prescribed within Entlassmanagement (Verordnungsbesonderheit 4, facts 30-32).
    pub discharge_management: bool,
}

/// A calendar month of billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BillingPeriod {
    /// Year.
    pub year: i32,
    /// Month.
    pub month: Month,
}

impl BillingPeriod {
    /// The month containing `date`.
    pub fn of(date: Date) -> BillingPeriod {
        BillingPeriod {
            year: date.year(),
            month: date.month(),
        }
    }

    /// Whether `date` falls in this month.
    pub fn contains(&self, date: Date) -> bool {
        date.year() == self.year && date.month() == self.month
    }

    /// The first day of the month (`None` only for years outside `time`'s range).
    pub fn first_day(&self) -> Option<Date> {
        Date::from_calendar_date(self.year, self.month, 1).ok()
    }

    /// The last day of the month (`None` only for years outside `time`'s range).
    pub fn last_day(&self) -> Option<Date> {
        let days = self.month.length(self.year);
        Date::from_calendar_date(self.year, self.month, days).ok()
    }
}

/// The bill a correction (Verarbeitungskennzeichen 04) replaces (URI segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalBill {
    /// Rechnungsnummer of the original bill.
    pub invoice_number: String,
    /// Rechnungsdatum of the original bill.
    pub invoice_date: Date,
    /// Belegnummer of the case in the original bill.
    pub receipt_number: String,
}

/// One referral in one billing period: everything one SLLA message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingCase {
    /// The billing month; every session must fall in it.
    pub period: BillingPeriod,
    /// The insured person.
    pub insured: InsuredPerson,
    /// IK of the Krankenkasse (from the insurance card).
    pub insurer_ik: String,
    /// IK of the provider (Leistungserbringer).
    pub provider_ik: String,
    /// Belegnummer of this case (at most 10 characters), unique within the bill.
    pub receipt_number: String,
    /// The insurer's approval.
    pub approval: Approval,
    /// The prescription.
    pub prescription: Prescription,
    /// ICD-10-GM codes (at least one).
    pub diagnoses: Vec<String>,
    /// Co-payment status.
    pub copayment: CopaymentStatus,
    /// Position numbers and unit prices from the contract ([`Contract::case_tariff`]).
    pub tariff: CaseTariff,
    /// The sessions delivered in the period.
    pub sessions: Vec<DeliveredSession>,
    /// For a correction: the bill it replaces.
    pub original: Option<OriginalBill>,
}

/// One session with its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedSession {
    /// Day of the session.
    pub date: Date,
    /// Individual or group.
    pub delivery: Delivery,
    /// Abrechnungspositionsnummer.
    pub position_number: String,
    /// Tarifkennzeichen.
    pub tarifkennzeichen: String,
    /// Units (Anzahl) as written to the file: minutes / unit minutes, rounded to the
    /// contract's quantity decimals.
    pub quantity: Decimal,
    /// Price of one unit (Einzelbetrag).
    pub unit_price: Decimal,
    /// Cost of the session in EUR, rounded to cents.
    pub cost: Decimal,
    /// Whether the price is a contract placeholder.
    pub placeholder: bool,
}

/// A case with its money worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The sessions in date order.
    pub sessions: Vec<PricedSession>,
    /// The co-payment per day.
    pub copayment: CopaymentSummary,
    /// Zuzahlungskennzeichen for the file.
    pub zuzahlungskennzeichen: Zuzahlungskennzeichen,
    /// Gesamtbruttobetrag: sum of the session costs.
    pub gross: Decimal,
    /// Sum of the co-payments.
    pub copayment_total: Decimal,
    /// Gesamtnettobetrag: gross minus co-payments (what the insurer pays).
    pub net: Decimal,
}

/// Why a case cannot be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// The case has no sessions.
    #[error("the case has no sessions")]
    NoSessions,
    /// A session has no minutes.
    #[error("the session on {0} has no minutes")]
    NoMinutes(Date),
    /// A session lies outside the billing period.
    #[error("the session on {date} is outside the billing period {year}-{month:02}")]
    OutsidePeriod {
        /// The session's date.
        date: Date,
        /// Period year.
        year: i32,
        /// Period month.
        month: u8,
    },
    /// The case has no tariff for a kind of delivery.
    #[error("no tariff for {0:?} sessions")]
    NoTariff(Delivery),
    /// A tariff has a unit length of 0 minutes.
    #[error("a tariff has a unit length of 0 minutes")]
    ZeroUnit,
    /// The amounts overflow (only for absurd input).
    #[error("amounts overflow")]
    Overflow,
}

/// The quantity and cost of `minutes` of a session under `tariff` (see [`CostBasis`]):
/// `(quantity, cost)`, both rounded with `rules.rounding`. `None` on a zero unit length or
/// overflow.
pub fn session_cost(
    tariff: &Tariff,
    minutes: u32,
    rules: &SessionCostRules,
) -> Option<(Decimal, Decimal)> {
    if tariff.unit_minutes == 0 {
        return None;
    }
    let minutes = Decimal::from(minutes);
    let unit = Decimal::from(tariff.unit_minutes);
    let exact_quantity = minutes.checked_div(unit)?;
    let quantity = exact_quantity.round_dp_with_strategy(rules.quantity_decimals, rules.rounding);
    let cost = match rules.basis {
        // Multiply before dividing so that e.g. 60.00 * 50 / 90 loses nothing before the one
        // rounding to cents.
        CostBasis::Minutes => tariff.unit_price.checked_mul(minutes)?.checked_div(unit)?,
        CostBasis::Quantity => tariff.unit_price.checked_mul(quantity)?,
    };
    Some((quantity, cost.round_dp_with_strategy(2, rules.rounding)))
}

impl BillingCase {
    /// Prices the sessions and computes the co-payment. Session costs are rounded to cents
    /// per session (so a day's cost, the co-payment base, is a sum of cent amounts); the
    /// co-payment is per calendar day.
    pub fn settle(
        &self,
        cost_rules: &SessionCostRules,
        copayment_rules: &CopaymentRules,
    ) -> Result<Settlement, BillingError> {
        if self.sessions.is_empty() {
            return Err(BillingError::NoSessions);
        }
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for s in &self.sessions {
            if s.minutes == 0 {
                return Err(BillingError::NoMinutes(s.date));
            }
            if !self.period.contains(s.date) {
                return Err(BillingError::OutsidePeriod {
                    date: s.date,
                    year: self.period.year,
                    month: u8::from(self.period.month),
                });
            }
            let tariff = self
                .tariff
                .for_delivery(s.delivery)
                .ok_or(BillingError::NoTariff(s.delivery))?;
            if tariff.unit_minutes == 0 {
                return Err(BillingError::ZeroUnit);
            }
            let (quantity, cost) =
                session_cost(tariff, s.minutes, cost_rules).ok_or(BillingError::Overflow)?;
            sessions.push(PricedSession {
                date: s.date,
                delivery: s.delivery,
                position_number: tariff.position_number.clone(),
                tarifkennzeichen: tariff.tarifkennzeichen.clone(),
                quantity,
                unit_price: tariff.unit_price,
                cost,
                placeholder: tariff.placeholder,
            });
        }
        // Stable: sessions of one day keep the order they were recorded in.
        sessions.sort_by_key(|s| s.date);
        let copayment = copayment::copayments(
            sessions.iter().map(|s| (s.date, s.cost)),
            self.insured.birth_date,
            self.copayment,
            copayment_rules,
        )
        .ok_or(BillingError::Overflow)?;
        let gross = sessions
            .iter()
            .try_fold(Decimal::ZERO, |sum, s| sum.checked_add(s.cost))
            .ok_or(BillingError::Overflow)?;
        let copayment_total = copayment.total;
        let net = gross
            .checked_sub(copayment_total)
            .ok_or(BillingError::Overflow)?;
        Ok(Settlement {
            zuzahlungskennzeichen: copayment.zuzahlungskennzeichen(self.copayment),
            sessions,
            copayment,
            gross,
            copayment_total,
            net,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use time::macros::{date, time};

    use super::*;

    pub(crate) fn eur(s: &str) -> Decimal {
        match Decimal::from_str(s) {
            Ok(d) => d,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    pub(crate) fn tariff(price: &str, unit_minutes: u32, position: &str) -> Tariff {
        Tariff {
            position_number: position.to_owned(),
            unit_price: eur(price),
            unit_minutes,
            tarifkennzeichen: "08000".to_owned(),
            placeholder: false,
        }
    }

    pub(crate) fn session(date: Date, minutes: u32, delivery: Delivery) -> DeliveredSession {
        DeliveredSession {
            date,
            start: Some(time!(10:00)),
            minutes,
            delivery,
            setting: if delivery == Delivery::Group {
                Setting::GroupRoom
            } else {
                Setting::Home
            },
            professional_id: Some("st-07".to_owned()),
        }
    }

    /// A realistic case: an adult in NRW, October 2026, individual and group sessions.
    pub(crate) fn case() -> BillingCase {
        BillingCase {
            period: BillingPeriod {
                year: 2026,
                month: Month::October,
            },
            insured: InsuredPerson {
                kvnr: "A123456780".to_owned(),
                status: "1".to_owned(),
                surname: "Müller-Lüdenscheidt".to_owned(),
                first_name: "Jürgen".to_owned(),
                birth_date: date!(1975 - 04 - 12),
                address: Some(PostalAddress {
                    street: "Königsallee 12".to_owned(),
                    postal_code: "40212".to_owned(),
                    city: "Düsseldorf".to_owned(),
                    country: None,
                }),
            },
            insurer_ik: "109519005".to_owned(),
            provider_ik: "260326822".to_owned(),
            receipt_number: "2026100001".to_owned(),
            approval: Approval {
                number: "GEN-2026/4711".to_owned(),
                date: date!(2026 - 09 - 20),
            },
            prescription: Prescription {
                date: date!(2026 - 09 - 10),
                lanr: Some("754236701".to_owned()),
                bsnr: Some("201234500".to_owned()),
                discharge_management: false,
            },
            diagnoses: vec!["F20.0".to_owned()],
            copayment: CopaymentStatus::Liable,
            tariff: CaseTariff {
                individual: Some(tariff("58.72", 60, "6900001")),
                group: Some(tariff("29.36", 90, "6900002")),
            },
            sessions: vec![
                session(date!(2026 - 10 - 05), 75, Delivery::Individual),
                session(date!(2026 - 10 - 07), 45, Delivery::Individual),
                session(date!(2026 - 10 - 07), 90, Delivery::Group),
                session(date!(2026 - 10 - 14), 150, Delivery::Individual),
            ],
            original: None,
        }
    }

    fn settle(case: &BillingCase) -> Settlement {
        match case.settle(&SessionCostRules::default(), &CopaymentRules::default()) {
            Ok(s) => s,
            Err(e) => panic!("must settle: {e}"),
        }
    }

    #[test]
    fn session_cost_is_exact_and_rounded_per_session() {
        let rules = SessionCostRules::default();
        let t = tariff("58.72", 60, "6900001");
        // 58.72 * 75 / 60 = 73.40
        assert_eq!(
            session_cost(&t, 75, &rules),
            Some((eur("1.25"), eur("73.40")))
        );
        // 58.72 * 45 / 60 = 44.04
        assert_eq!(
            session_cost(&t, 45, &rules),
            Some((eur("0.75"), eur("44.04")))
        );
        // 58.72 * 10 / 60 = 9.78666.. -> 9.79; the quantity 0.1666.. is written as 0.17
        assert_eq!(
            session_cost(&t, 10, &rules),
            Some((eur("0.17"), eur("9.79")))
        );
        // Quantity basis: 0.17 * 58.72 = 9.9824 -> 9.98
        let by_quantity = SessionCostRules {
            basis: CostBasis::Quantity,
            ..rules
        };
        assert_eq!(
            session_cost(&t, 10, &by_quantity),
            Some((eur("0.17"), eur("9.98")))
        );
        let group = tariff("29.36", 90, "6900002");
        assert_eq!(
            session_cost(&group, 90, &rules),
            Some((eur("1.00"), eur("29.36")))
        );
        let zero = tariff("29.36", 0, "6900002");
        assert_eq!(session_cost(&zero, 90, &rules), None);
    }

    #[test]
    fn a_case_settles_with_daily_copayments() {
        let s = settle(&case());
        let costs: Vec<String> = s.sessions.iter().map(|p| p.cost.to_string()).collect();
        assert_eq!(costs, ["73.40", "44.04", "29.36", "146.80"]);
        assert_eq!(s.gross, eur("293.60"));
        // 05.: 73.40 -> 7.34; 07.: 44.04 + 29.36 = 73.40 -> 7.34; 14.: 146.80 -> 10.00
        let daily: Vec<String> = s
            .copayment
            .days
            .iter()
            .map(|d| d.copayment.to_string())
            .collect();
        assert_eq!(daily, ["7.34", "7.34", "10.00"]);
        assert_eq!(s.copayment_total, eur("24.68"));
        assert_eq!(s.net, eur("268.92"));
        assert_eq!(s.zuzahlungskennzeichen, Zuzahlungskennzeichen::Liable);
    }

    #[test]
    fn bad_cases_are_refused() {
        let mut c = case();
        c.sessions.clear();
        assert_eq!(
            c.settle(&SessionCostRules::default(), &CopaymentRules::default()),
            Err(BillingError::NoSessions)
        );
        let mut c = case();
        c.sessions[1].minutes = 0;
        assert!(matches!(
            c.settle(&SessionCostRules::default(), &CopaymentRules::default()),
            Err(BillingError::NoMinutes(_))
        ));
        let mut c = case();
        c.sessions[0].date = date!(2026 - 11 - 02);
        assert!(matches!(
            c.settle(&SessionCostRules::default(), &CopaymentRules::default()),
            Err(BillingError::OutsidePeriod { .. })
        ));
        let mut c = case();
        c.tariff.group = None;
        assert_eq!(
            c.settle(&SessionCostRules::default(), &CopaymentRules::default()),
            Err(BillingError::NoTariff(Delivery::Group))
        );
        let mut c = case();
        c.sessions[0].minutes = u32::MAX;
        c.tariff.individual = Some(Tariff {
            unit_price: Decimal::MAX,
            ..tariff("1.00", 60, "6900001")
        });
        assert_eq!(
            c.settle(&SessionCostRules::default(), &CopaymentRules::default()),
            Err(BillingError::Overflow)
        );
    }

    #[test]
    fn billing_period_bounds() {
        let p = BillingPeriod::of(date!(2026 - 02 - 14));
        assert!(p.contains(date!(2026 - 02 - 28)));
        assert!(!p.contains(date!(2026 - 03 - 01)));
        assert_eq!(p.first_day(), Some(date!(2026 - 02 - 01)));
    }
}
