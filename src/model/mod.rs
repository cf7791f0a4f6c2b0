//! The canonical sociotherapy referral: one jurisdiction-neutral shape that every intake format
//! maps into and every rule pack checks.
//!
//! The model knows neither FHIR nor CDA. It is versioned ([`MODEL_VERSION`]) and its JSON Schema
//! is published in `schemas/referral.schema.json` (generated from these types; a test fails when
//! the checked-in copy drifts).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::Date;

mod identifier;
pub use identifier::{Identifier, IdentifierKind};

/// The code of a canonical enum value: its serde name (kebab-case, e.g. `other-place`), as the
/// ConceptMaps' targets and the store spell it.
pub fn code_of<T: Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(code)) => Some(code),
        _ => None,
    }
}

/// The canonical enum value a code names, if it names one.
pub fn from_code<T: serde::de::DeserializeOwned>(code: &str) -> Option<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(code)).ok()
}

/// Version of the canonical model's JSON shape. Bump on any breaking change.
pub const MODEL_VERSION: &str = "1";

/// A sociotherapy referral or prescription in canonical form.
///
/// Every field the sender may omit is optional: the mapper fills what it finds, and the rule packs
/// report what is missing. A draft with gaps is still a valid `Referral`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub struct Referral {
    /// Version of this model ([`MODEL_VERSION`]).
    pub model_version: String,
    /// Gateway, sender and idempotency identifiers.
    pub ids: ReferralIds,
    /// Jurisdiction whose rules apply, once decided.
    pub jurisdiction: Option<Jurisdiction>,
    /// How the jurisdiction was decided (e.g. `identifier http://fhir.de/sid/gkv/kvid-10`).
    pub jurisdiction_basis: Option<String>,
    /// The kind of prescription or referral.
    pub kind: Option<ReferralKind>,
    /// The requested service as coded by the sender.
    pub service: Option<Coded>,
    /// Whether the requested service code maps to sociotherapy / social rehabilitation.
    pub is_sociotherapy: bool,
    /// Date the prescription was issued.
    #[schemars(with = "Option<String>")]
    pub issue_date: Option<Date>,
    /// Requested period of care.
    pub requested_period: Option<DatePeriod>,
    /// Requested units and their length.
    pub requested_units: Option<RequestedUnits>,
    /// Settings in which the care may be delivered.
    pub settings: Vec<Setting>,
    /// Every delivery mode the sender stated (individual, group, or both parts).
    pub delivery_modes: Vec<Delivery>,
    /// Requested meeting frequency.
    pub frequency: Option<Frequency>,
    /// Therapy goals as free text.
    pub goals: Vec<String>,
    /// Diagnoses that justify the referral.
    pub diagnoses: Vec<Diagnosis>,
    /// Functional assessment (GAF, impairments, exception criteria).
    pub functional_assessment: Option<FunctionalAssessment>,
    /// The patient.
    pub patient: Option<Patient>,
    /// The prescribing or referring practitioner.
    pub prescriber: Option<Prescriber>,
    /// Payer and coverage.
    pub coverage: Option<Coverage>,
    /// Provider the sender asks to deliver the care, if chosen.
    pub requested_provider: Option<Provider>,
    /// Hospital stay preceding a discharge prescription.
    pub hospital_stay: Option<HospitalStay>,
    /// Reference to the care plan (treatment plan, Betreuungsplan, client plan).
    pub care_plan: Option<CarePlanRef>,
    /// Whether the plan was agreed with / made together with the client (a recorded consent,
    /// or the patient as a contributor of the plan).
    pub plan_agreed_with_client: Option<bool>,
    /// Dates on which the plan's goals are to be evaluated.
    #[schemars(with = "Vec<String>")]
    pub plan_evaluation_dates: Vec<Date>,
    /// Date of the service-needs assessment that precedes the service (FI).
    #[schemars(with = "Option<String>")]
    pub service_needs_assessment_date: Option<Date>,
}

impl Referral {
    /// An empty draft carrying only its identifiers.
    pub fn draft(ids: ReferralIds) -> Self {
        Referral {
            model_version: MODEL_VERSION.to_owned(),
            ids,
            jurisdiction: None,
            jurisdiction_basis: None,
            kind: None,
            service: None,
            is_sociotherapy: false,
            issue_date: None,
            requested_period: None,
            requested_units: None,
            settings: Vec::new(),
            delivery_modes: Vec::new(),
            frequency: None,
            goals: Vec::new(),
            diagnoses: Vec::new(),
            functional_assessment: None,
            patient: None,
            prescriber: None,
            coverage: None,
            requested_provider: None,
            hospital_stay: None,
            care_plan: None,
            plan_agreed_with_client: None,
            plan_evaluation_dates: Vec::new(),
            service_needs_assessment_date: None,
        }
    }
}

/// Identifiers of one referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReferralIds {
    /// Identifier the gateway assigned (UUID v7).
    pub gateway_id: String,
    /// The sender's own identifier of the request (ServiceRequest.identifier).
    pub sender_id: Option<Identifier>,
    /// Key under which a resent message is recognised: transport message id, Bundle.identifier,
    /// MessageHeader.id, or a SHA-256 of the payload.
    pub idempotency_key: String,
}

/// Jurisdiction whose rule pack applies (ISO 3166-1 alpha-2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Jurisdiction {
    /// Germany: ambulante Soziotherapie, § 37a SGB V.
    De,
    /// The Netherlands: clinical sociotherapie within a treatment agreement (WGBO).
    Nl,
    /// Finland: sosiaalinen kuntoutus, Sosiaalihuoltolaki 17 §.
    Fi,
}

impl Jurisdiction {
    /// Every jurisdiction the gateway has rules for.
    pub const ALL: [Jurisdiction; 3] = [Jurisdiction::De, Jurisdiction::Nl, Jurisdiction::Fi];

    /// Lower-case code used for folders under `mappings/`.
    pub fn code(self) -> &'static str {
        match self {
            Jurisdiction::De => "de",
            Jurisdiction::Nl => "nl",
            Jurisdiction::Fi => "fi",
        }
    }

    /// The jurisdiction whose [`code`](Self::code) is `code` (lower case, as written).
    pub fn from_code(code: &str) -> Option<Jurisdiction> {
        Self::ALL.into_iter().find(|j| j.code() == code)
    }
}

/// Kind of prescription or referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReferralKind {
    /// DE Probestunden: up to 5 trial sessions, a suspected diagnosis suffices.
    TrialSessions,
    /// DE Erstverordnung.
    FirstPrescription,
    /// DE Folgeverordnung.
    FollowUpPrescription,
    /// DE Verordnung im Entlassmanagement (hospital discharge, up to 7 days after discharge).
    DischargePrescription,
    /// DE Muster 28: referral for indication by a physician without prescribing approval.
    GpIndicationReferral,
}

/// A code with its system, as the sender sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Coded {
    /// Code system URI.
    pub system: Option<String>,
    /// Code system version.
    pub version: Option<String>,
    /// The code.
    pub code: String,
    /// Display text.
    pub display: Option<String>,
}

/// A closed period of calendar dates (both ends inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DatePeriod {
    /// First day.
    #[schemars(with = "Option<String>")]
    pub start: Option<Date>,
    /// Last day.
    #[schemars(with = "Option<String>")]
    pub end: Option<Date>,
}

/// Requested units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RequestedUnits {
    /// Number of units (Therapieeinheiten).
    pub count: u32,
    /// Minutes per unit.
    pub unit_minutes: u32,
    /// Individual or group delivery.
    pub delivery: Delivery,
}

impl RequestedUnits {
    /// Total requested minutes.
    pub fn total_minutes(&self) -> u64 {
        u64::from(self.count) * u64::from(self.unit_minutes)
    }
}

/// Individual or group delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// One patient per session.
    Individual,
    /// A group measure.
    Group,
}

/// Where care is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// The patient's home.
    Home,
    /// Another suitable place in the patient's environment.
    OtherPlace,
    /// Phone or video.
    Remote,
    /// A group room.
    GroupRoom,
    /// A clinic ward (intramural).
    ClinicWard,
}

/// How often meetings are planned: `count` per `period` `unit`s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Frequency {
    /// Meetings per period.
    pub count: u32,
    /// Length of the period in `unit`s.
    pub period: f64,
    /// Unit of the period.
    pub unit: PeriodUnit,
}

impl Frequency {
    /// Meetings per week, for comparisons across units.
    pub fn per_week(&self) -> f64 {
        let days = self.period
            * match self.unit {
                PeriodUnit::Day => 1.0,
                PeriodUnit::Week => 7.0,
                PeriodUnit::Month => 30.4375,
            };
        if days <= 0.0 {
            return 0.0;
        }
        f64::from(self.count) * 7.0 / days
    }
}

/// Unit of a frequency period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodUnit {
    /// Days.
    Day,
    /// Weeks.
    Week,
    /// Months.
    Month,
}

/// A diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnosis {
    /// The code (e.g. ICD-10-GM `F20.0`).
    pub code: String,
    /// Code system URI.
    pub system: Option<String>,
    /// Code system version (e.g. ICD-10-GM year).
    pub system_version: Option<String>,
    /// Display text.
    pub display: Option<String>,
    /// Diagnostic certainty.
    pub certainty: Option<Certainty>,
}

/// Diagnostic certainty (KBV Diagnosesicherheit A/G/V/Z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Certainty {
    /// G: gesichert.
    Confirmed,
    /// V: Verdacht.
    Suspected,
    /// A: ausgeschlossen.
    Excluded,
    /// Z: Zustand nach.
    StatusAfter,
}

/// Functional assessment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct FunctionalAssessment {
    /// Global Assessment of Functioning score as sent (range is checked by the rules).
    pub gaf_score: Option<i64>,
    /// Date of the GAF assessment.
    #[schemars(with = "Option<String>")]
    pub gaf_date: Option<Date>,
    /// Impairment areas (Fähigkeitsstörungen).
    pub impairment_areas: Vec<ImpairmentArea>,
    /// Exception criteria for diagnoses outside the listed ones.
    pub exception_criteria: Vec<ExceptionCriterion>,
    /// Free-text justification of the exception.
    pub exception_justification: Option<String>,
}

/// Impairment areas characterising the illness (ST-RL § 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ImpairmentArea {
    /// Drive, endurance, structuring, planning.
    DriveStructure,
    /// Contact ability and conflict resolution.
    ContactConflict,
    /// Cognitive deficits.
    Cognition,
    /// Access to one's own symptoms, recognising crises.
    IllnessInsight,
}

/// Exception criteria (ST-RL § 2 Abs. 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionCriterion {
    /// Relevant psychiatric or somatic co-morbidity.
    Comorbidity,
    /// Severely limited ability to plan and structure daily tasks.
    DailyStructure,
    /// Limited ability to use and coordinate services on one's own.
    ServiceCoordination,
    /// Severely limited ability to get around.
    Mobility,
}

/// The patient.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Patient {
    /// National and insurance identifiers, normalised.
    pub ids: Vec<Identifier>,
    /// Name.
    pub name: Option<HumanName>,
    /// Birth date.
    #[schemars(with = "Option<String>")]
    pub birth_date: Option<Date>,
    /// Administrative gender.
    pub gender: Option<Gender>,
    /// Address.
    pub address: Option<Address>,
    /// The patient asked that address and contact details are not disclosed (e.g. turvakielto).
    pub non_disclosure: bool,
}

/// A person's name in parts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct HumanName {
    /// Family name.
    pub family: Option<String>,
    /// Given names.
    pub given: Vec<String>,
    /// Prefixes (titles).
    pub prefix: Vec<String>,
    /// Suffixes.
    pub suffix: Vec<String>,
    /// Full name as text.
    pub text: Option<String>,
}

/// Administrative gender, including German `divers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Gender {
    /// Male.
    Male,
    /// Female.
    Female,
    /// German `divers` (gender-amtlich-de D).
    Diverse,
    /// German `unbestimmt` (gender-amtlich-de X).
    Undetermined,
    /// Other.
    Other,
    /// Unknown.
    Unknown,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Address {
    /// Street lines.
    pub lines: Vec<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// City.
    pub city: Option<String>,
    /// District or municipality.
    pub district: Option<String>,
    /// Country.
    pub country: Option<String>,
}

/// The prescriber.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Prescriber {
    /// Person identifiers (LANR, Telematik-ID, AGB, ...).
    pub person_ids: Vec<Identifier>,
    /// Name of the person.
    pub name: Option<HumanName>,
    /// Organisation identifiers (BSNR, IK, ...).
    pub organisation_ids: Vec<Identifier>,
    /// Name of the organisation.
    pub organisation_name: Option<String>,
    /// Specialties and qualifications, mapped.
    pub qualifications: Vec<Qualification>,
    /// Whether the prescriber holds the approval to prescribe sociotherapy (KV Genehmigung).
    pub sociotherapy_approval: Option<bool>,
}

/// Prescriber specialty or qualification relevant to who may prescribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Qualification {
    /// Facharzt Neurologie.
    Neurology,
    /// Facharzt Nervenheilkunde.
    NerveMedicine,
    /// Facharzt Psychiatrie und Psychotherapie.
    PsychiatryPsychotherapy,
    /// Facharzt Psychosomatische Medizin und Psychotherapie.
    PsychosomaticMedicine,
    /// Facharzt Kinder- und Jugendpsychiatrie.
    ChildAdolescentPsychiatry,
    /// Facharzt mit Zusatz-Weiterbildung Psychotherapie.
    PsychotherapyAdditionalTraining,
    /// Psychologischer Psychotherapeut.
    PsychologicalPsychotherapist,
    /// Kinder- und Jugendlichenpsychotherapeut.
    ChildAdolescentPsychotherapist,
    /// Psychiatrische Institutsambulanz (PIA).
    PsychiatricOutpatientClinic,
    /// General practitioner (Hausarzt).
    GeneralPractitioner,
    /// Hospital physician (Entlassmanagement).
    HospitalPhysician,
    /// NL: psychiater.
    Psychiatrist,
    /// NL: GZ-psycholoog.
    HealthcarePsychologist,
    /// NL: klinisch (neuro)psycholoog.
    ClinicalPsychologist,
    /// NL: psychotherapeut.
    Psychotherapist,
    /// NL: verpleegkundig specialist GGZ.
    NursePractitionerMentalHealth,
    /// NL: (sociaal-psychiatrisch) verpleegkundige.
    MentalHealthNurse,
    /// NL: sociotherapeut (not a profession that may carry the treatment).
    Sociotherapist,
    /// FI: sosiaalityöntekijä.
    SocialWorker,
    /// FI: sosiaaliohjaaja.
    SocialCounsellor,
    /// Any other specialty.
    Other,
}

/// Payer and coverage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Coverage {
    /// Payer identifiers (IK, UZOVI, ...).
    pub payer_ids: Vec<Identifier>,
    /// Payer name.
    pub payer_name: Option<String>,
    /// Kind of coverage.
    pub kind: Option<CoverageKind>,
    /// Member number.
    pub member_number: Option<String>,
    /// Exempt from co-payment.
    pub copayment_exempt: Option<bool>,
}

/// Kind of coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CoverageKind {
    /// Statutory health insurance (GKV, Zvw).
    Statutory,
    /// Private insurance.
    Private,
    /// Public body (e.g. wellbeing services county, social welfare).
    Public,
    /// Anything else (accident insurance, self-pay, ...).
    Other,
}

/// A provider.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Provider {
    /// Identifiers.
    pub ids: Vec<Identifier>,
    /// Name.
    pub name: Option<String>,
}

/// A hospital stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HospitalStay {
    /// Admission date.
    #[schemars(with = "Option<String>")]
    pub admission: Option<Date>,
    /// Discharge date.
    #[schemars(with = "Option<String>")]
    pub discharge: Option<Date>,
}

/// Reference to a care plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CarePlanRef {
    /// The reference as the sender wrote it (e.g. `CarePlan/123`).
    pub reference: String,
    /// The plan's own identifiers.
    pub ids: Vec<Identifier>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jurisdiction_codes_read_back_and_nothing_else_does() {
        for j in Jurisdiction::ALL {
            assert_eq!(Jurisdiction::from_code(j.code()), Some(j));
        }
        assert_eq!(Jurisdiction::from_code("nl"), Some(Jurisdiction::Nl));
        for other in ["DE", "", "se", "fi "] {
            assert_eq!(Jurisdiction::from_code(other), None, "{other:?}");
        }
    }
}
