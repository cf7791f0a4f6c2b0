//! The billing contract: codes, format settings, unit lengths, co-payment parameters and the
//! tariffs (position numbers and unit prices per insurer and state), loaded from
//! `mappings/de/billing.json`.
//!
//! Prices and position numbers are contract-specific per state and Kasse (facts 7, 41), so
//! they are data, never code. Loading validates everything and reports every problem at once;
//! nothing read from the file is unwrapped. Each group in the file must carry a `source` note
//! (unknown or missing keys are errors), so an unexplained value cannot slip in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use time::Date;

use super::copayment::CopaymentRules;
use super::edifact::{ServiceChars, WriteOptions};
use super::keys::{Rechnungsart, TestIndicator, Verarbeitungskennzeichen};
use crate::check::ids::ik_valid;
use crate::model::Delivery;

/// Problems loading the contract or looking a tariff up.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected JSON shape.
    #[error("parsing the billing contract")]
    Parse(#[source] serde_json::Error),
    /// The values are inconsistent; every problem found is listed.
    #[error("invalid billing contract: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// No tariff applies.
    #[error("no tariff for insurer {insurer_ik} in {state} on {date}")]
    NoTariff {
        /// Insurer IK asked for.
        insurer_ik: String,
        /// State asked for.
        state: String,
        /// Date asked for.
        date: Date,
    },
}

/// How a session's cost is computed from its minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostBasis {
    /// `unit_price * minutes / unit_minutes`, exact, rounded to cents per session. The
    /// quantity written to the file is `minutes / unit_minutes` rounded to
    /// `quantity_decimals`; when that rounding loses something (e.g. 50 of 90 minutes) the
    /// line no longer multiplies out and the file builder refuses the case.
    Minutes,
    /// The quantity is rounded to `quantity_decimals` first and the cost is
    /// `round2(quantity * unit_price)`, so every line multiplies out exactly.
    Quantity,
}

/// Rounding modes that can be named in the contract file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    /// Commercial rounding: half a cent goes away from zero.
    HalfAwayFromZero,
    /// Banker's rounding: half a cent goes to the even cent.
    HalfEven,
    /// Half a cent goes towards zero.
    HalfTowardZero,
    /// Always towards zero (truncate).
    TowardZero,
    /// Always away from zero.
    AwayFromZero,
}

impl Rounding {
    /// The `rust_decimal` strategy.
    pub fn strategy(self) -> RoundingStrategy {
        match self {
            Rounding::HalfAwayFromZero => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::HalfTowardZero => RoundingStrategy::MidpointTowardZero,
            Rounding::TowardZero => RoundingStrategy::ToZero,
            Rounding::AwayFromZero => RoundingStrategy::AwayFromZero,
        }
    }
}

/// How session costs are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCostRules {
    /// Minutes or rounded quantity.
    pub basis: CostBasis,
    /// Rounding to cents (and of the quantity).
    pub rounding: RoundingStrategy,
    /// Decimals of the quantity (Anzahl) written to the file (0-2).
    pub quantity_decimals: u32,
}

impl Default for SessionCostRules {
    fn default() -> Self {
        SessionCostRules {
            basis: CostBasis::Minutes,
            rounding: RoundingStrategy::MidpointAwayFromZero,
            quantity_decimals: 2,
        }
    }
}

/// The billing period a contract uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BillingPeriodKind {
    /// One calendar month.
    Monthly,
}

/// Fixed codes of Soziotherapie billing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    /// Abrechnungscode (`69`).
    pub abrechnungscode: String,
    /// Leistungserbringer-Sammelgruppenschlüssel (`N`).
    pub sammelgruppe: String,
    /// Art der Genehmigung in SKZ (`N1`).
    pub kostenzusage_art: String,
    /// Verordnungsbesonderheit for Entlassmanagement prescriptions (`4`).
    pub verordnungsbesonderheit_entlassmanagement: String,
}

/// Interchange settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterchangeSettings {
    /// Message identifier of SLGA in UNH (`SLGA:16:0:0`).
    pub slga_version: Vec<String>,
    /// Message identifier of SLLA in UNH (`SLLA:16:0:0`).
    pub slla_version: Vec<String>,
    /// Whether the file starts with the UNA service string advice.
    pub una: bool,
    /// Whether segments are followed by a line break.
    pub line_breaks: bool,
    /// Test indicator written to UNB.
    pub test_indicator: TestIndicator,
    /// Rechnungsart written to REC.
    pub rechnungsart: Rechnungsart,
}

/// Which Verarbeitungskennzeichen to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingCodes {
    /// For a first bill (`01`).
    pub first_bill: Verarbeitungskennzeichen,
    /// For a correction (`04`).
    pub correction: Verarbeitungskennzeichen,
}

/// A position number and unit price of one kind of delivery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricePoint {
    /// Abrechnungspositionsnummer (contract-specific, UNVERIFIED format, fact 41).
    pub position_number: String,
    /// Price of one unit in EUR (a JSON string, e.g. `"60.00"`).
    pub unit_price: Decimal,
}

/// One tariff line of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffEntry {
    /// The Kasse IK it applies to, `*` for every Kasse.
    pub insurer_ik: String,
    /// The provider's state, e.g. `NW`.
    pub state: String,
    /// Tarifkennzeichen: Tarifbereich (2) + Sondertarif (3), fact 35.
    pub tarifkennzeichen: String,
    /// First day it applies.
    pub valid_from: Date,
    /// Last day it applies, open-ended if `None`.
    pub valid_until: Option<Date>,
    /// Whether the values are placeholders (then no real data may be sent with them).
    pub placeholder: bool,
    /// Individual sessions.
    pub individual: Option<PricePoint>,
    /// Group sessions.
    pub group: Option<PricePoint>,
    /// Where the values come from.
    pub source: String,
}

impl TariffEntry {
    fn applies_on(&self, date: Date) -> bool {
        self.valid_from <= date && self.valid_until.is_none_or(|until| date <= until)
    }
}

/// What one kind of session is billed with: resolved from the contract for a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    /// Abrechnungspositionsnummer.
    pub position_number: String,
    /// Price of one unit in EUR.
    pub unit_price: Decimal,
    /// Minutes in one unit (60 individual, 90 group).
    pub unit_minutes: u32,
    /// Tarifkennzeichen (5 characters).
    pub tarifkennzeichen: String,
    /// Whether the price is a placeholder.
    pub placeholder: bool,
}

/// The tariffs of one billing case, per kind of delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseTariff {
    /// For individual sessions.
    pub individual: Option<Tariff>,
    /// For group sessions.
    pub group: Option<Tariff>,
}

impl CaseTariff {
    /// The tariff for `delivery`.
    pub fn for_delivery(&self, delivery: Delivery) -> Option<&Tariff> {
        match delivery {
            Delivery::Individual => self.individual.as_ref(),
            Delivery::Group => self.group.as_ref(),
        }
    }
}

/// The loaded and validated contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    /// Fixed codes.
    pub codes: Codes,
    /// Interchange settings.
    pub interchange: InterchangeSettings,
    /// Verarbeitungskennzeichen to use.
    pub processing: ProcessingCodes,
    /// Billing period.
    pub billing_period: BillingPeriodKind,
    /// Minutes of an individual unit.
    pub individual_minutes: u32,
    /// Minutes of a group unit.
    pub group_minutes: u32,
    /// Session cost computation.
    pub session_cost: SessionCostRules,
    /// Co-payment parameters.
    pub copayment: CopaymentRules,
    /// State code -> Tarifbereich.
    pub tarifbereiche: BTreeMap<String, String>,
    /// Tariff lines.
    pub tariffs: Vec<TariffEntry>,
}

// ----- the file's shape --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractFile {
    #[allow(dead_code)] // documentation for people reading the file
    description: String,
    codes: CodesFile,
    interchange: InterchangeFile,
    verarbeitungskennzeichen: ProcessingFile,
    billing_period: BillingPeriodFile,
    units: UnitsFile,
    session_cost: SessionCostFile,
    copayment: CopaymentFile,
    tarifbereiche: TarifbereicheFile,
    tariffs: Vec<TariffFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodesFile {
    abrechnungscode: String,
    sammelgruppe: String,
    kostenzusage_art: String,
    verordnungsbesonderheit_entlassmanagement: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InterchangeFile {
    slga_version: Vec<String>,
    slla_version: Vec<String>,
    una: bool,
    line_breaks: bool,
    test_indicator: TestIndicator,
    rechnungsart: Rechnungsart,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessingFile {
    first_bill: Verarbeitungskennzeichen,
    correction: Verarbeitungskennzeichen,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BillingPeriodFile {
    kind: BillingPeriodKind,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsFile {
    individual_minutes: u32,
    group_minutes: u32,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionCostFile {
    basis: CostBasis,
    rounding: Rounding,
    quantity_decimals: u32,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopaymentFile {
    percent: Decimal,
    minimum: Decimal,
    maximum: Decimal,
    adult_age: i32,
    rounding: Rounding,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TarifbereicheFile {
    values: BTreeMap<String, String>,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TariffFile {
    insurer_ik: String,
    state: String,
    tarifkennzeichen: String,
    #[serde(with = "iso_date")]
    valid_from: Date,
    #[serde(default, with = "iso_date_opt")]
    valid_until: Option<Date>,
    placeholder: bool,
    #[serde(default)]
    individual: Option<PricePoint>,
    #[serde(default)]
    group: Option<PricePoint>,
    source: String,
}

time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");

mod iso_date_opt {
    use serde::{Deserialize, Deserializer};
    use time::Date;
    use time::macros::format_description;

    /// `null` or a `YYYY-MM-DD` string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            Date::parse(&t, format_description!("[year]-[month]-[day]"))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

impl Contract {
    /// Where the shipped contract lives: `de/billing.json` under the mappings folder
    /// ([`crate::mappings::Mappings::default_dir`]).
    pub fn default_path() -> PathBuf {
        crate::mappings::Mappings::default_dir()
            .join("de")
            .join("billing.json")
    }

    /// Reads and validates a contract file.
    pub fn load(path: &Path) -> Result<Contract, ContractError> {
        let text = std::fs::read_to_string(path).map_err(|source| ContractError::Read {
            path: path.to_owned(),
            source,
        })?;
        Contract::from_json(&text)
    }

    /// Parses and validates a contract from JSON text.
    pub fn from_json(json: &str) -> Result<Contract, ContractError> {
        let file: ContractFile = serde_json::from_str(json).map_err(ContractError::Parse)?;
        let mut problems = Vec::new();
        let mut need = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };

        for (group, source) in [
            ("codes", &file.codes.source),
            ("interchange", &file.interchange.source),
            (
                "verarbeitungskennzeichen",
                &file.verarbeitungskennzeichen.source,
            ),
            ("billing_period", &file.billing_period.source),
            ("units", &file.units.source),
            ("session_cost", &file.session_cost.source),
            ("copayment", &file.copayment.source),
            ("tarifbereiche", &file.tarifbereiche.source),
        ] {
            need(
                !source.trim().is_empty(),
                format!("{group}.source is empty"),
            );
        }

        let c = &file.codes;
        need(
            c.abrechnungscode.len() == 2 && all_digits(&c.abrechnungscode),
            format!(
                "codes.abrechnungscode {:?} is not 2 digits",
                c.abrechnungscode
            ),
        );
        need(
            c.sammelgruppe.len() == 1 && c.sammelgruppe.bytes().all(|b| b.is_ascii_uppercase()),
            format!("codes.sammelgruppe {:?} is not one letter", c.sammelgruppe),
        );
        need(
            (1..=2).contains(&c.kostenzusage_art.len()) && all_alnum(&c.kostenzusage_art),
            format!(
                "codes.kostenzusage_art {:?} is not 1-2 characters",
                c.kostenzusage_art
            ),
        );
        need(
            c.verordnungsbesonderheit_entlassmanagement.len() == 1
                && all_digits(&c.verordnungsbesonderheit_entlassmanagement),
            "codes.verordnungsbesonderheit_entlassmanagement is not one digit".to_owned(),
        );

        let i = &file.interchange;
        for (name, version, kind) in [
            ("slga_version", &i.slga_version, "SLGA"),
            ("slla_version", &i.slla_version, "SLLA"),
        ] {
            need(
                version.len() == 4
                    && version[0] == kind
                    && version[1..].iter().all(|v| !v.is_empty() && all_alnum(v)),
                format!("interchange.{name} must be [\"{kind}\", version, release, agency]"),
            );
        }

        let p = &file.verarbeitungskennzeichen;
        need(
            p.first_bill == Verarbeitungskennzeichen::FirstBill,
            "verarbeitungskennzeichen.first_bill must be 01".to_owned(),
        );
        need(
            p.correction == Verarbeitungskennzeichen::Correction,
            "verarbeitungskennzeichen.correction must be 04 (02/03 are not produced yet)"
                .to_owned(),
        );

        let u = &file.units;
        for (name, minutes) in [
            ("individual_minutes", u.individual_minutes),
            ("group_minutes", u.group_minutes),
        ] {
            need(
                (1..=1440).contains(&minutes),
                format!("units.{name} must be 1-1440"),
            );
        }

        let s = &file.session_cost;
        need(
            s.quantity_decimals <= 2,
            "session_cost.quantity_decimals must be 0-2 (Anzahl has 2 decimals in the file)"
                .to_owned(),
        );

        let k = &file.copayment;
        need(
            Decimal::ZERO <= k.percent && k.percent <= Decimal::ONE,
            "copayment.percent must be between 0 and 1".to_owned(),
        );
        need(
            Decimal::ZERO <= k.minimum && k.minimum <= k.maximum,
            "copayment needs 0 <= minimum <= maximum".to_owned(),
        );
        need(
            k.minimum.scale() <= 2 && k.maximum.scale() <= 2,
            "copayment minimum and maximum are whole cents".to_owned(),
        );
        need(
            (0..=120).contains(&k.adult_age),
            "copayment.adult_age must be 0-120".to_owned(),
        );

        for (state, bereich) in &file.tarifbereiche.values {
            need(
                bereich.len() == 2 && all_digits(bereich),
                format!("tarifbereiche.{state} {bereich:?} is not 2 digits"),
            );
        }

        need(!file.tariffs.is_empty(), "tariffs is empty".to_owned());
        for (n, t) in file.tariffs.iter().enumerate() {
            let at = format!("tariffs[{n}]");
            need(!t.source.trim().is_empty(), format!("{at}.source is empty"));
            need(
                t.insurer_ik == "*" || ik_valid(&t.insurer_ik),
                format!(
                    "{at}.insurer_ik {:?} is neither * nor a valid IK",
                    t.insurer_ik
                ),
            );
            need(!t.state.trim().is_empty(), format!("{at}.state is empty"));
            let tk = t.tarifkennzeichen.as_str();
            // is_ascii first: the slices below must not split a multi-byte character.
            let tk_ok = tk.len() == 5
                && tk.is_ascii()
                && all_digits(&tk[..2])
                && tk[2..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
            need(
                tk_ok,
                format!(
                    "{at}.tarifkennzeichen {tk:?} is not Tarifbereich (2 digits) + Sondertarif (3)"
                ),
            );
            // A Land's Tarifbereich (01-16) must be that of the tariff's state; other ranges
            // (national, Bundesverträge, Kasse-level contracts) may be used anywhere.
            if tk_ok
                && ("01".."17").contains(&&tk[..2])
                && let Some(expected) = file.tarifbereiche.values.get(&t.state)
            {
                need(
                    &tk[..2] == expected,
                    format!(
                        "{at}.tarifkennzeichen {tk} starts with Tarifbereich {} but {} is {expected}",
                        &tk[..2],
                        t.state
                    ),
                );
            }
            need(
                t.valid_until.is_none_or(|until| t.valid_from <= until),
                format!("{at}.valid_until is before valid_from"),
            );
            need(
                t.individual.is_some() || t.group.is_some(),
                format!("{at} prices neither individual nor group sessions"),
            );
            for (kind, point) in [("individual", &t.individual), ("group", &t.group)] {
                let Some(point) = point else { continue };
                need(
                    (1..=10).contains(&point.position_number.len())
                        && point
                            .position_number
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                    format!("{at}.{kind}.position_number must be 1-10 digits or capitals"),
                );
                need(
                    point.unit_price > Decimal::ZERO && point.unit_price.scale() <= 2,
                    format!("{at}.{kind}.unit_price must be positive whole cents"),
                );
            }
            for (m, other) in file.tariffs.iter().enumerate().skip(n + 1) {
                if other.insurer_ik == t.insurer_ik
                    && other.state == t.state
                    && windows_overlap(t, other)
                {
                    need(false, format!("tariffs[{n}] and tariffs[{m}] overlap"));
                }
            }
            if t.placeholder && i.test_indicator == TestIndicator::Production {
                need(
                    false,
                    format!("{at} is a placeholder; real data (test indicator 2) is refused"),
                );
            }
        }

        if !problems.is_empty() {
            return Err(ContractError::Invalid(problems));
        }

        let ContractFile {
            codes,
            interchange,
            verarbeitungskennzeichen,
            billing_period,
            units,
            session_cost,
            copayment,
            tarifbereiche,
            tariffs,
            ..
        } = file;
        Ok(Contract {
            codes: Codes {
                abrechnungscode: codes.abrechnungscode,
                sammelgruppe: codes.sammelgruppe,
                kostenzusage_art: codes.kostenzusage_art,
                verordnungsbesonderheit_entlassmanagement: codes
                    .verordnungsbesonderheit_entlassmanagement,
            },
            interchange: InterchangeSettings {
                slga_version: interchange.slga_version,
                slla_version: interchange.slla_version,
                una: interchange.una,
                line_breaks: interchange.line_breaks,
                test_indicator: interchange.test_indicator,
                rechnungsart: interchange.rechnungsart,
            },
            processing: ProcessingCodes {
                first_bill: verarbeitungskennzeichen.first_bill,
                correction: verarbeitungskennzeichen.correction,
            },
            billing_period: billing_period.kind,
            individual_minutes: units.individual_minutes,
            group_minutes: units.group_minutes,
            session_cost: SessionCostRules {
                basis: session_cost.basis,
                rounding: session_cost.rounding.strategy(),
                quantity_decimals: session_cost.quantity_decimals,
            },
            copayment: CopaymentRules {
                percent: copayment.percent,
                minimum: copayment.minimum,
                maximum: copayment.maximum,
                adult_age: copayment.adult_age,
                rounding: copayment.rounding.strategy(),
            },
            tarifbereiche: tarifbereiche.values,
            tariffs: tariffs
                .into_iter()
                .map(|t| TariffEntry {
                    insurer_ik: t.insurer_ik,
                    state: t.state,
                    tarifkennzeichen: t.tarifkennzeichen,
                    valid_from: t.valid_from,
                    valid_until: t.valid_until,
                    placeholder: t.placeholder,
                    individual: t.individual,
                    group: t.group,
                    source: t.source,
                })
                .collect(),
        })
    }

    /// The tariff line for a Kasse in a state on a date: a line for that exact Kasse IK wins
    /// over a `*` line.
    pub fn tariff_entry(
        &self,
        insurer_ik: &str,
        state: &str,
        on: Date,
    ) -> Result<&TariffEntry, ContractError> {
        let applicable = |ik: &str| {
            self.tariffs
                .iter()
                .find(|t| t.insurer_ik == ik && t.state == state && t.applies_on(on))
        };
        applicable(insurer_ik)
            .or_else(|| applicable("*"))
            .ok_or_else(|| ContractError::NoTariff {
                insurer_ik: insurer_ik.to_owned(),
                state: state.to_owned(),
                date: on,
            })
    }

    /// The tariffs of a case: the applicable line turned into [`Tariff`]s with the unit
    /// lengths of this contract. `on` is the day prices are taken from (normally the first
    /// day of the billing period: prices are fixed per case and period).
    pub fn case_tariff(
        &self,
        insurer_ik: &str,
        state: &str,
        on: Date,
    ) -> Result<CaseTariff, ContractError> {
        let entry = self.tariff_entry(insurer_ik, state, on)?;
        let tariff = |point: &PricePoint, unit_minutes| Tariff {
            position_number: point.position_number.clone(),
            unit_price: point.unit_price,
            unit_minutes,
            tarifkennzeichen: entry.tarifkennzeichen.clone(),
            placeholder: entry.placeholder,
        };
        Ok(CaseTariff {
            individual: entry
                .individual
                .as_ref()
                .map(|p| tariff(p, self.individual_minutes)),
            group: entry.group.as_ref().map(|p| tariff(p, self.group_minutes)),
        })
    }

    /// Whether any tariff line is a placeholder.
    pub fn has_placeholders(&self) -> bool {
        self.tariffs.iter().any(|t| t.placeholder)
    }

    /// How files are written under this contract.
    pub fn write_options(&self) -> WriteOptions {
        WriteOptions {
            chars: ServiceChars::SGB_V_302,
            una: self.interchange.una,
            line_breaks: self.interchange.line_breaks,
        }
    }
}

fn windows_overlap(a: &TariffFile, b: &TariffFile) -> bool {
    let a_before_b = a.valid_until.is_some_and(|end| end < b.valid_from);
    let b_before_a = b.valid_until.is_some_and(|end| end < a.valid_from);
    !(a_before_b || b_before_a)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn all_alnum(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    fn shipped_text() -> String {
        match std::fs::read_to_string(Contract::default_path()) {
            Ok(t) => t,
            Err(e) => panic!("mappings/de/billing.json must be readable: {e}"),
        }
    }

    fn contract(json: &str) -> Result<Contract, ContractError> {
        Contract::from_json(json)
    }

    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut value: serde_json::Value = match serde_json::from_str(&shipped_text()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        edit(&mut value);
        value.to_string()
    }

    fn problems(json: &str) -> Vec<String> {
        match contract(json) {
            Err(ContractError::Invalid(p)) => p,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn the_shipped_contract_loads() {
        let c = match Contract::load(&Contract::default_path()) {
            Ok(c) => c,
            Err(e) => panic!("mappings/de/billing.json must load: {e}"),
        };
        assert_eq!(c.codes.abrechnungscode, "69");
        assert_eq!(c.codes.sammelgruppe, "N");
        assert_eq!(c.codes.kostenzusage_art, "N1");
        assert_eq!(c.individual_minutes, 60);
        assert_eq!(c.group_minutes, 90);
        assert_eq!(c.copayment, CopaymentRules::default());
        assert_eq!(c.session_cost, SessionCostRules::default());
        assert_eq!(c.interchange.test_indicator, TestIndicator::Test);
        assert_eq!(c.billing_period, BillingPeriodKind::Monthly);
        assert!(c.has_placeholders());
    }

    #[test]
    fn tariffs_resolve_with_unit_lengths() {
        let c = match contract(&shipped_text()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let t = match c.case_tariff("109519005", "NW", date!(2026 - 10 - 01)) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let group = t.for_delivery(Delivery::Group);
        assert_eq!(group.map(|g| g.unit_minutes), Some(90));
        assert_eq!(group.map(|g| g.tarifkennzeichen.as_str()), Some("08000"));
        assert!(matches!(
            c.case_tariff("109519005", "BY", date!(2026 - 10 - 01)),
            Err(ContractError::NoTariff { .. })
        ));
        assert!(
            c.case_tariff("109519005", "NW", date!(2025 - 12 - 31))
                .is_err()
        );
    }

    #[test]
    fn a_kasse_specific_line_wins_over_the_wildcard() {
        let json = edited(|v| {
            let mut specific = v["tariffs"][0].clone();
            specific["insurer_ik"] = "109519005".into();
            specific["individual"]["unit_price"] = "61.50".into();
            if let Some(list) = v["tariffs"].as_array_mut() {
                list.push(specific);
            }
        });
        let c = match contract(&json) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let price = |ik| {
            c.case_tariff(ik, "NW", date!(2026 - 10 - 01))
                .ok()
                .and_then(|t| t.individual.map(|i| i.unit_price.to_string()))
        };
        assert_eq!(price("109519005").as_deref(), Some("61.50"));
        assert_eq!(price("101575519").as_deref(), Some("60.00"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let json = edited(|v| {
            v["codes"]["abrechnungscode"] = "6".into();
            v["tariffs"][0]["tarifkennzeichen"] = "07000".into();
            v["tariffs"][0]["insurer_ik"] = "260326828".into();
            v["tariffs"][0]["individual"]["unit_price"] = "60.001".into();
            v["copayment"]["minimum"] = "11.00".into();
            v["units"]["group_minutes"] = 0.into();
        });
        let p = problems(&json);
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p.iter().any(|m| m.contains("but NW is 08")));
    }

    #[test]
    fn a_multi_byte_tarifkennzeichen_is_a_problem_not_a_panic() {
        let json = edited(|v| v["tariffs"][0]["tarifkennzeichen"] = "1\u{e4}12".into());
        assert!(
            problems(&json)
                .iter()
                .any(|m| m.contains("tarifkennzeichen"))
        );
    }

    #[test]
    fn placeholders_refuse_real_data() {
        let json = edited(|v| v["interchange"]["test_indicator"] = "2".into());
        let p = problems(&json);
        assert!(p.iter().any(|m| m.contains("placeholder")), "{p:?}");
    }

    #[test]
    fn overlapping_tariff_windows_are_refused() {
        let json = edited(|v| {
            let copy = v["tariffs"][0].clone();
            if let Some(list) = v["tariffs"].as_array_mut() {
                list.push(copy);
            }
        });
        assert!(problems(&json).iter().any(|m| m.contains("overlap")));
    }

    #[test]
    fn unknown_keys_missing_sources_and_numeric_prices_are_refused() {
        let typo = edited(|v| v["units"]["group_minuts"] = 90.into());
        assert!(matches!(contract(&typo), Err(ContractError::Parse(_))));
        let no_source = edited(|v| {
            if let Some(o) = v["units"].as_object_mut() {
                o.remove("source");
            }
        });
        assert!(matches!(contract(&no_source), Err(ContractError::Parse(_))));
        // Money is a JSON string; a JSON number would pass through f64 first.
        let number = edited(|v| v["tariffs"][0]["individual"]["unit_price"] = 60.into());
        assert!(matches!(contract(&number), Err(ContractError::Parse(_))));
        assert!(matches!(contract("{"), Err(ContractError::Parse(_))));
        assert!(matches!(
            Contract::load(Path::new("/nonexistent/billing.json")),
            Err(ContractError::Read { .. })
        ));
    }

    #[test]
    fn serde_json_arbitrary_precision_stays_off() {
        // With serde_json's `arbitrary_precision` (which rust_decimal's
        // `serde-arbitrary-precision` features turn on) numbers keep their text: "1.10" would
        // stay "1.10". fhir-model breaks under that feature (shared dependency notes, 1.5).
        let value: serde_json::Value = match serde_json::from_str("1.10") {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(value.to_string(), "1.1");
    }
}
