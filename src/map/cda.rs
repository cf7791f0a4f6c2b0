//! Maps an HL7 CDA R2 `ClinicalDocument` (a referral note, a discharge letter with a
//! sociotherapy order, a Kanta document) into the canonical referral. What is read from where is
//! documented in `docs/inbound-profile.md` ("CDA R2"); code systems named by OID are translated
//! to the FHIR URIs the ConceptMaps use through `mappings/common/code-systems.json`, so both
//! formats share one set of translations.

use time::Date;

use crate::check::Issue;
use crate::decode::cda::{CdaDocument, El};
use crate::mappings::Mappings;
use crate::model::{
    Address, CarePlanRef, Certainty, Coded, Coverage, CoverageKind, DatePeriod, Delivery,
    Diagnosis, ExceptionCriterion, Frequency, FunctionalAssessment, Gender, HospitalStay,
    HumanName, Identifier, IdentifierKind, ImpairmentArea, Jurisdiction, Patient, PeriodUnit,
    Prescriber, Provider, Qualification, Referral, ReferralIds, ReferralKind, RequestedUnits,
    Setting, from_code,
};

use super::{decide_jurisdiction, is_sociotherapy_service, normalise_identifier};

const ORDER_DETAIL: &str = "https://sociogate.org/fhir/CodeSystem/order-detail";
const ASSESSMENT: &str = "https://sociogate.org/fhir/CodeSystem/assessment";
const IMPAIRMENT: &str = "https://sociogate.org/fhir/CodeSystem/impairment-area";
const EXCEPTION: &str = "https://sociogate.org/fhir/CodeSystem/exception-criterion";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const KBV_FACHGRUPPE: &str = "https://fhir.kbv.de/CodeSystem/KBV_CS_SFHIR_BAR2_ARZTNRFACHGRUPPE";
/// Entry acts that can carry a planned service.
const PLANNED_ACTS: &[&str] = &["procedure", "act", "encounter", "observation", "supply"];
/// LOINC code of the family history section.
const FAMILY_HISTORY_SECTION: &str = "10157-6";
/// C-CDA Problem Concern Act.
const PROBLEM_CONCERN: &str = "2.16.840.1.113883.10.20.22.4.3";
/// Prefix of C-CDA entry templates.
const CCDA_ENTRY_TEMPLATES: &str = "2.16.840.1.113883.10.20.22.4.";
/// C-CDA Problem Observation.
const PROBLEM_OBSERVATION: &str = "2.16.840.1.113883.10.20.22.4.4";
/// C-CDA entry templates that carry problem observations: Problem Concern Act, Problem
/// Observation, Encounter Diagnosis, Hospital Discharge Diagnosis, Hospital Admission Diagnosis.
const PROBLEM_CARRIERS: &[&str] = &[
    "2.16.840.1.113883.10.20.22.4.3",
    "2.16.840.1.113883.10.20.22.4.4",
    "2.16.840.1.113883.10.20.22.4.80",
    "2.16.840.1.113883.10.20.22.4.33",
    "2.16.840.1.113883.10.20.22.4.34",
];
/// C-CDA Family History Organizer.
const FAMILY_HISTORY_ORGANIZER: &str = "2.16.840.1.113883.10.20.22.4.45";
/// Inpatient encounter codes (v3 ActCode) that make the encompassing encounter a hospital stay.
const INPATIENT: &[&str] = &["IMP", "ACUTE", "NONAC"];

/// A code as CDA sends it, with its system translated to a URI.
#[derive(Debug, Clone)]
struct CdaCode {
    system: Option<String>,
    version: Option<String>,
    code: String,
    display: Option<String>,
}

impl CdaCode {
    fn coded(&self) -> Coded {
        Coded {
            system: self.system.clone(),
            version: self.version.clone(),
            code: self.code.clone(),
            display: self.display.clone(),
        }
    }

    fn describe(&self) -> String {
        match &self.system {
            Some(s) => format!("{s}#{}", self.code),
            None => self.code.clone(),
        }
    }

    fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code == code
    }
}

/// Maps `doc` into a referral.
pub fn map(
    doc: &CdaDocument,
    mappings: &Mappings,
    ids: ReferralIds,
    jurisdiction: Option<Jurisdiction>,
) -> (Referral, Vec<Issue>) {
    let mut mapper = Mapper {
        m: mappings,
        issues: Vec::new(),
    };
    let root = doc.root();
    let mut referral = Referral::draft(ids);
    referral.patient = root
        .path(&["recordTarget", "patientRole"])
        .map(|role| mapper.patient(root, role));
    if referral.patient.is_none() {
        let issue = mapper.issue("GW-MAP-04");
        mapper.issues.push(issue);
    }
    referral.prescriber = mapper.prescriber(root);
    referral.coverage = mapper.coverage(root);
    referral.hospital_stay = hospital_stay(&mapper, root);
    referral.issue_date = root
        .children("author")
        .find_map(|a| a.child("time").and_then(ts_date))
        .or_else(|| root.child("effectiveTime").and_then(ts_date));
    if root
        .children("authorization")
        .filter_map(|a| a.child("consent"))
        .any(|c| {
            c.child("statusCode")
                .and_then(|s| s.attr("code"))
                .is_none_or(|s| s == "completed" || s == "active")
        })
    {
        referral.plan_agreed_with_client = Some(true);
    }

    let body = root.path(&["component", "structuredBody"]);
    if let Some(body) = body {
        mapper.walk(body, &mut referral, false);
    }
    match body.and_then(|b| mapper.order(b)) {
        Some(order) => mapper.map_order(order, &mut referral),
        None => {
            let found = describe_planned(&mapper, body);
            let issue = mapper.issue("GW-MAP-12").detail(found);
            mapper.issues.push(issue);
        }
    }

    if jurisdiction.is_none() {
        let templates: Vec<String> = root
            .children("templateId")
            .filter_map(|t| t.attr("root"))
            .map(|r| format!("urn:oid:{r}"))
            .collect();
        decide_jurisdiction(&mut referral, &templates, mappings, &mut mapper.issues);
    } else {
        referral.jurisdiction = jurisdiction;
    }
    if let Some(j) = referral.jurisdiction {
        super::fhir::apply_unit_defaults(&mut referral, mappings, j);
    }
    (referral, mapper.issues)
}

/// `ClinicalDocument/id` as `root|extension` (or the root alone).
pub fn idempotency_hint(doc: &CdaDocument) -> Option<String> {
    let id = doc.root().child("id")?;
    let root = id.attr("root")?;
    Some(match id.attr("extension") {
        Some(ext) => format!("{root}|{ext}"),
        None => root.to_owned(),
    })
}

struct Mapper<'m> {
    m: &'m Mappings,
    issues: Vec<Issue>,
}

impl Mapper<'_> {
    fn issue(&self, code: &str) -> Issue {
        Issue::new(self.m.rules(), code)
    }

    /// A CD/CE/CV element's code and its translations, the element's own code first.
    fn codes(&self, el: El<'_>) -> Vec<CdaCode> {
        std::iter::once(el)
            .chain(el.children("translation"))
            .filter_map(|c| self.code(c))
            .collect()
    }

    fn code(&self, el: El<'_>) -> Option<CdaCode> {
        let code = el.attr("code")?.trim().to_owned();
        let systems = self.m.code_systems();
        let by_oid = el.attr("codeSystem").map(|oid| match systems.by_oid(oid) {
            Some((uri, version)) => (uri.to_owned(), version.map(str::to_owned)),
            None => (system_of_uid(oid), None),
        });
        let (system, implied_version) = match by_oid {
            Some((uri, version)) if !uri.starts_with("urn:") => (Some(uri), version),
            // An unknown OID: a known codeSystemName may still say what it is.
            other => {
                let named = el
                    .attr("codeSystemName")
                    .and_then(|n| systems.by_name(n))
                    .map(str::to_owned);
                match named {
                    Some(uri) => (Some(uri), None),
                    None => other.map_or((None, None), |(uri, v)| (Some(uri), v)),
                }
            }
        };
        Some(CdaCode {
            system,
            version: el
                .attr("codeSystemVersion")
                .map(str::to_owned)
                .or(implied_version),
            code,
            display: el.attr("displayName").map(str::to_owned),
        })
    }

    /// Translates the first translatable code of `el` through ConceptMap `map` into `T`.
    /// With `report`, a code that does not translate is a GW-MAP-05 finding.
    fn translate<T: serde::de::DeserializeOwned>(
        &mut self,
        map: &str,
        el: El<'_>,
        path: &str,
        report: bool,
    ) -> Option<T> {
        let codes = self.codes(el);
        for c in &codes {
            if let Some(target) = self.m.translate(map, c.system.as_deref(), &c.code)
                && let Some(value) = from_code(&target)
            {
                return Some(value);
            }
        }
        if report && let Some(first) = codes.first() {
            let issue = self.issue("GW-MAP-05").detail(first.describe()).at(path);
            self.issues.push(issue);
        }
        None
    }

    fn identifier(&self, id: El<'_>) -> Option<Identifier> {
        if id.is_null() {
            return None;
        }
        let root = id.attr("root")?.trim();
        Some(match id.attr("extension") {
            Some(ext) => normalise_identifier(self.m, Some(&system_of_uid(root)), ext),
            // A root alone is the identifier itself (RFC 3986 form, as FHIR writes it).
            None => Identifier {
                kind: IdentifierKind::Other,
                system: Some("urn:ietf:rfc:3986".to_owned()),
                value: system_of_uid(root),
            },
        })
    }

    fn identifiers(&self, el: El<'_>) -> Vec<Identifier> {
        el.children("id")
            .filter_map(|id| self.identifier(id))
            .collect()
    }

    fn patient(&mut self, root: El<'_>, role: El<'_>) -> Patient {
        let person = role.child("patient");
        let gender = person
            .and_then(|p| p.child("administrativeGenderCode"))
            .and_then(|g| {
                self.translate::<Gender>("gender", g, "patient.administrativeGenderCode", true)
            });
        let non_disclosure = root.children("confidentialityCode").any(|c| {
            self.codes(c).iter().any(|code| {
                self.m
                    .translate("security-label", code.system.as_deref(), &code.code)
                    .is_some()
            })
        });
        Patient {
            ids: self.identifiers(role),
            name: person.and_then(pick_name),
            birth_date: person.and_then(|p| p.child("birthTime")).and_then(ts_date),
            gender,
            address: role.children("addr").find(|a| !a.is_null()).map(address),
            non_disclosure,
        }
    }

    /// The first author who is a person, else the legal authenticator; the organisation of the
    /// author, else the custodian.
    fn prescriber(&mut self, root: El<'_>) -> Option<Prescriber> {
        let assigned = root
            .children("author")
            .filter_map(|a| a.child("assignedAuthor"))
            .find(|a| a.child("assignedPerson").is_some())
            .or_else(|| root.path(&["legalAuthenticator", "assignedEntity"]))?;
        let mut out = Prescriber {
            person_ids: self.identifiers(assigned),
            name: assigned.child("assignedPerson").and_then(pick_name),
            ..Prescriber::default()
        };
        if let Some(code) = assigned.child("code")
            && let Some(q) = self.translate::<Qualification>(
                "qualification",
                code,
                "author.assignedAuthor.code",
                true,
            )
        {
            out.qualifications.push(q);
        }
        let organisation = assigned.child("representedOrganization").or_else(|| {
            root.path(&[
                "custodian",
                "assignedCustodian",
                "representedCustodianOrganization",
            ])
        });
        if let Some(org) = organisation {
            out.organisation_ids = self.identifiers(org);
            out.organisation_name = org.child("name").map(|n| n.all_text());
        }
        if out.qualifications.is_empty() {
            // The LANR's last two digits are the Fachgruppe, as on the FHIR path.
            let specialty = out
                .person_ids
                .iter()
                .filter(|id| id.kind == IdentifierKind::Lanr)
                .find_map(|id| crate::check::ids::lanr_specialty(&id.value).map(str::to_owned));
            if let Some(q) = specialty
                .and_then(|code| {
                    self.m
                        .translate("qualification", Some(KBV_FACHGRUPPE), &code)
                })
                .and_then(|t| from_code(&t))
            {
                out.qualifications.push(q);
            }
        }
        Some(out)
    }

    /// The payer: `participant[@typeCode='HLD']/associatedEntity` (the policy holder role, its
    /// id the member number, its scoping organisation the insurer).
    fn coverage(&mut self, root: El<'_>) -> Option<Coverage> {
        let entity = root
            .children("participant")
            .filter(|p| p.attr("typeCode") == Some("HLD"))
            .find_map(|p| p.child("associatedEntity"))?;
        let mut out = Coverage {
            member_number: entity
                .children("id")
                .find_map(|id| id.attr("extension").map(str::to_owned)),
            ..Coverage::default()
        };
        if let Some(code) = entity.child("code") {
            out.kind = self.translate::<CoverageKind>(
                "coverage-kind",
                code,
                "participant.associatedEntity.code",
                true,
            );
        }
        if let Some(org) = entity.child("scopingOrganization") {
            out.payer_ids = self.identifiers(org);
            out.payer_name = org.child("name").map(|n| n.all_text());
        }
        Some(out)
    }

    /// The planned sociotherapy: the first planned act (moodCode RQO or INT) whose code is a
    /// sociotherapy service.
    fn order<'d>(&self, body: El<'d>) -> Option<El<'d>> {
        planned_acts(body).into_iter().find(|act| {
            act.child("code").is_some_and(|code| {
                self.codes(code).iter().any(|c| {
                    self.m
                        .translate("service", c.system.as_deref(), &c.code)
                        .is_some_and(|s| is_sociotherapy_service(&s))
                })
            })
        })
    }

    fn map_order(&mut self, order: El<'_>, referral: &mut Referral) {
        referral.is_sociotherapy = true;
        if let Some(code) = order.child("code") {
            referral.service = self.codes(code).first().map(CdaCode::coded);
        }
        referral.ids.sender_id = order.children("id").find_map(|id| self.identifier(id));
        let status = order
            .child("statusCode")
            .and_then(|s| s.attr("code"))
            .unwrap_or("active");
        if !matches!(status, "active" | "new" | "held") {
            let mood = order.attr("moodCode").unwrap_or("");
            let issue = self
                .issue("GW-MAP-08")
                .detail(format!("statusCode {status}, moodCode {mood}"));
            self.issues.push(issue);
        }
        if let Some(time) = order.path(&["author", "time"]).and_then(ts_date) {
            referral.issue_date = Some(time);
        }
        if let Some(period) = order.child("effectiveTime").and_then(ivl_period) {
            referral.requested_period = Some(period);
        }
        if let Some(entity) = order.path(&["performer", "assignedEntity"]) {
            let mut provider = Provider {
                ids: self.identifiers(entity),
                name: None,
            };
            if let Some(org) = entity.child("representedOrganization") {
                provider.ids.extend(self.identifiers(org));
                provider.name = org.child("name").map(|n| n.all_text());
            }
            referral.requested_provider = Some(provider);
        }
        for reference in order.children("reference") {
            if let Some(doc) = reference.child("externalDocument")
                && referral.care_plan.is_none()
            {
                let ids = self.identifiers(doc);
                let shown = ids
                    .first()
                    .map(|id| format!("{}|{}", id.system.as_deref().unwrap_or(""), id.value))
                    .unwrap_or_else(|| "externalDocument".to_owned());
                referral.care_plan = Some(CarePlanRef {
                    reference: shown,
                    ids,
                });
            }
        }
        let mut unit_count: Option<u32> = None;
        let mut unit_minutes: Option<u32> = None;
        for detail in order
            .children("entryRelationship")
            .flat_map(|r| r.elements().collect::<Vec<_>>())
        {
            let Some(code) = detail.child("code").and_then(|c| self.code(c)) else {
                continue;
            };
            if code.system.as_deref() != Some(ORDER_DETAIL) {
                // Assessments, goals and diagnoses nested in the order are read by `walk`.
                continue;
            }
            let value = detail.child("value");
            let path = format!("order.entryRelationship.observation[{}]", code.code);
            match code.code.as_str() {
                "units" => match value.and_then(pq_value) {
                    Some((v, _)) if v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => {
                        unit_count = Some(v as u32);
                    }
                    _ => self.invalid(&path, "units must be a positive whole number (PQ or INT)"),
                },
                "unit-length" => match value.and_then(pq_value) {
                    Some((v, unit)) => {
                        let factor = match unit.as_deref() {
                            Some("min") => 1.0,
                            Some("h") => 60.0,
                            _ => f64::NAN,
                        };
                        let minutes = v * factor;
                        if minutes >= 1.0 && minutes.fract() == 0.0 && minutes <= 1440.0 {
                            unit_minutes = Some(minutes as u32);
                        } else {
                            self.invalid(&path, "unit length must be whole minutes (min or h)");
                        }
                    }
                    None => self.invalid(&path, "unit length must be a PQ"),
                },
                "frequency" => match value.and_then(pq_value) {
                    Some((count, Some(unit)))
                        if count >= 1.0 && count.fract() == 0.0 && count < 1000.0 =>
                    {
                        let period_unit = match unit.as_str() {
                            "/d" => Some(PeriodUnit::Day),
                            "/wk" => Some(PeriodUnit::Week),
                            "/mo" => Some(PeriodUnit::Month),
                            _ => None,
                        };
                        match period_unit {
                            Some(unit) => {
                                referral.frequency = Some(Frequency {
                                    count: count as u32,
                                    period: 1.0,
                                    unit,
                                });
                            }
                            None => self.invalid(&path, "frequency unit must be /d, /wk or /mo"),
                        }
                    }
                    _ => self.invalid(&path, "frequency must be a PQ such as 2 /wk"),
                },
                "delivery-mode" => {
                    if let Some(v) = value
                        && let Some(mode) =
                            self.translate::<Delivery>("delivery-mode", v, &path, true)
                        && !referral.delivery_modes.contains(&mode)
                    {
                        referral.delivery_modes.push(mode);
                    }
                }
                "setting" => {
                    if let Some(v) = value
                        && let Some(setting) = self.translate::<Setting>("setting", v, &path, true)
                        && !referral.settings.contains(&setting)
                    {
                        referral.settings.push(setting);
                    }
                }
                "referral-kind" => {
                    if let Some(v) = value {
                        referral.kind =
                            self.translate::<ReferralKind>("referral-kind", v, &path, true);
                    }
                }
                "prescribing-approval" => {
                    if let Some(approved) = value.and_then(bl_value)
                        && let Some(p) = referral.prescriber.as_mut()
                    {
                        p.sociotherapy_approval = Some(approved);
                    }
                }
                "copayment-exempt" => {
                    if let Some(exempt) = value.and_then(bl_value)
                        && let Some(c) = referral.coverage.as_mut()
                    {
                        c.copayment_exempt = Some(exempt);
                    }
                }
                other => {
                    let issue = self
                        .issue("GW-MAP-05")
                        .detail(format!("{ORDER_DETAIL}#{other}"))
                        .at(path.clone());
                    self.issues.push(issue);
                }
            }
        }
        if let Some(count) = unit_count {
            referral.requested_units = Some(RequestedUnits {
                count,
                unit_minutes: unit_minutes.unwrap_or(0),
                delivery: referral
                    .delivery_modes
                    .first()
                    .copied()
                    .unwrap_or(Delivery::Individual),
            });
        }
    }

    fn invalid(&mut self, path: &str, message: &str) {
        let issue = self.issue("GW-MAP-10").detail(message).at(path);
        self.issues.push(issue);
    }

    /// Reads the clinical statements of the body, skipping what is not about this patient's
    /// current problems: family history sections and resolved problem concerns.
    ///
    /// Inside another C-CDA entry template (a referral act, a wound assessment, a medication
    /// indication) an untemplated assertion belongs to that entry, not to the problem list:
    /// there only Problem Observations count (`foreign`).
    fn walk(&mut self, el: El<'_>, referral: &mut Referral, foreign: bool) {
        for child in el.elements() {
            let skip = match child.name() {
                "section" => child
                    .child("code")
                    .is_some_and(|c| c.attr("code") == Some(FAMILY_HISTORY_SECTION)),
                "act" => {
                    child.has_template(PROBLEM_CONCERN)
                        && child.child("statusCode").and_then(|s| s.attr("code"))
                            == Some("completed")
                }
                "organizer" => child.has_template(FAMILY_HISTORY_ORGANIZER),
                _ => false,
            };
            if skip {
                continue;
            }
            let own_template = child
                .children("templateId")
                .filter_map(|t| t.attr("root"))
                .find(|r| r.starts_with(CCDA_ENTRY_TEMPLATES));
            let inside_foreign =
                foreign || own_template.is_some_and(|t| !PROBLEM_CARRIERS.contains(&t));
            if child.name() == "observation"
                && (!inside_foreign || child.has_template(PROBLEM_OBSERVATION))
            {
                self.clinical_statement(child, referral);
            }
            self.walk(child, referral, inside_foreign);
        }
    }

    /// Reads one clinical statement of the body: a diagnosis, an assessment or a goal.
    fn clinical_statement(&mut self, act: El<'_>, referral: &mut Referral) {
        if act.name() != "observation" || act.attr("negationInd") == Some("true") {
            return;
        }
        let mood = act.attr("moodCode").unwrap_or("EVN");
        if mood == "GOL" {
            push_goal(act, referral);
            return;
        }
        if mood != "EVN" {
            return;
        }
        let code = act.child("code").and_then(|c| self.code(c));
        if let Some(code) = &code
            && code.system.as_deref() == Some(ASSESSMENT)
        {
            self.assessment(act, code, referral);
            return;
        }
        if is_problem(act, code.as_ref()) {
            self.diagnosis(act, referral);
        }
    }

    fn diagnosis(&mut self, obs: El<'_>, referral: &mut Referral) {
        let Some(value) = obs.child("value") else {
            return;
        };
        let codes = self.codes(value);
        // Prefer an ICD-10 code (the primary code or a translation).
        let Some(chosen) = codes
            .iter()
            .find(|c| c.system.as_deref().is_some_and(|s| s.contains("icd-10")))
            .or_else(|| codes.first())
        else {
            return;
        };
        if referral
            .diagnoses
            .iter()
            .any(|d| d.code == chosen.code && d.system == chosen.system)
        {
            return;
        }
        let certainty = value
            .children("qualifier")
            .filter_map(|q| q.child("value"))
            .find_map(|v| {
                self.codes(v).iter().find_map(|c| {
                    self.m
                        .translate("certainty", c.system.as_deref(), &c.code)
                        .and_then(|t| from_code::<Certainty>(&t))
                })
            });
        referral.diagnoses.push(Diagnosis {
            code: chosen.code.clone(),
            system: chosen.system.clone(),
            system_version: chosen.version.clone(),
            display: chosen.display.clone(),
            certainty,
        });
    }

    fn assessment(&mut self, obs: El<'_>, code: &CdaCode, referral: &mut Referral) {
        let effective = obs
            .child("effectiveTime")
            .and_then(|e| ts_date(e).or_else(|| e.child("low").and_then(ts_date)));
        if code.is(ASSESSMENT, "service-needs-assessment") {
            referral.service_needs_assessment_date =
                effective.or(referral.service_needs_assessment_date);
            return;
        }
        if !code.is(ASSESSMENT, "gaf") {
            return;
        }
        let assessment = referral
            .functional_assessment
            .get_or_insert_with(FunctionalAssessment::default);
        assessment.gaf_score = obs
            .child("value")
            .and_then(pq_value)
            .filter(|(v, _)| v.fract() == 0.0 && v.abs() < 1e9)
            .map(|(v, _)| v as i64);
        assessment.gaf_date = effective;
        for part in obs
            .children("entryRelationship")
            .filter_map(|r| r.child("observation"))
        {
            let Some(part_code) = part.child("code").and_then(|c| self.code(c)) else {
                continue;
            };
            let value = part.child("value");
            let value_code = |system: &str| {
                value
                    .and_then(|v| self.code(v))
                    .filter(|c| c.system.as_deref() == Some(system))
                    .map(|c| c.code)
            };
            if part_code.is(ASSESSMENT, "impairment-area") {
                if let Some(area) =
                    value_code(IMPAIRMENT).and_then(|c| from_code::<ImpairmentArea>(&c))
                {
                    assessment.impairment_areas.push(area);
                }
            } else if part_code.is(ASSESSMENT, "exception-criterion") {
                if let Some(criterion) =
                    value_code(EXCEPTION).and_then(|c| from_code::<ExceptionCriterion>(&c))
                {
                    assessment.exception_criteria.push(criterion);
                }
            } else if part_code.is(ASSESSMENT, "exception-justification")
                && let Some(text) = value.map(|v| v.all_text()).filter(|t| !t.is_empty())
            {
                assessment.exception_justification = Some(text);
            }
        }
    }
}

/// Whether an observation states a problem or diagnosis: the C-CDA Problem Observation
/// template, or a diagnosis-like code (SNOMED "Diagnosis"/"Problem"/"Disease", LOINC problem
/// codes), or a value coded in ICD-10.
fn is_problem(obs: El<'_>, code: Option<&CdaCode>) -> bool {
    const PROBLEM_CODES: &[&str] = &[
        "282291009",
        "55607006",
        "64572001",
        "404684003",
        "409586006",
        "29308-4",
        "75326-9",
        "11450-4",
        "29548-5",
    ];
    if obs.has_template(PROBLEM_OBSERVATION) {
        return true;
    }
    // Another C-CDA entry template (an indication, a family member's condition, a result)
    // says what the observation is: not a problem of this patient.
    if obs
        .children("templateId")
        .filter_map(|t| t.attr("root"))
        .any(|r| r.starts_with(CCDA_ENTRY_TEMPLATES))
    {
        return false;
    }
    if code.is_some_and(|c| PROBLEM_CODES.contains(&c.code.as_str())) {
        return true;
    }
    obs.child("value").is_some_and(|v| {
        v.attr("xsi:type")
            .is_some_and(|t| matches!(t, "CD" | "CE" | "CV"))
            && code.is_some_and(|c| c.system.as_deref() == Some(ACT_CODE) && c.code == "ASSERTION")
    })
}

/// Every planned act (moodCode RQO or INT) in the body, in document order.
fn planned_acts<'d>(body: El<'d>) -> Vec<El<'d>> {
    body.descendants_where(|e| {
        PLANNED_ACTS.contains(&e.name()) && matches!(e.attr("moodCode"), Some("RQO" | "INT"))
    })
}

/// What planned acts the document holds instead of a sociotherapy order (for the rejection).
fn describe_planned(mapper: &Mapper<'_>, body: Option<El<'_>>) -> String {
    let Some(body) = body else {
        return "no structured body".to_owned();
    };
    let acts = planned_acts(body);
    if acts.is_empty() {
        return "no planned act (moodCode RQO or INT)".to_owned();
    }
    let shown: Vec<String> = acts
        .iter()
        .take(5)
        .map(|a| {
            let code = a
                .child("code")
                .and_then(|c| mapper.code(c))
                .map_or_else(|| "(no code)".to_owned(), |c| c.describe());
            format!("{} {}", a.name(), code)
        })
        .collect();
    let more = acts.len().saturating_sub(shown.len());
    let mut text = format!("{} planned acts: {}", acts.len(), shown.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

fn hospital_stay(mapper: &Mapper<'_>, root: El<'_>) -> Option<HospitalStay> {
    let encounter = root.path(&["componentOf", "encompassingEncounter"])?;
    let inpatient = encounter
        .child("code")
        .and_then(|c| mapper.code(c))
        .is_some_and(|c| {
            c.system.as_deref() == Some(ACT_CODE) && INPATIENT.contains(&c.code.as_str())
        });
    if !inpatient && encounter.child("dischargeDispositionCode").is_none() {
        return None;
    }
    let time = encounter.child("effectiveTime")?;
    Some(HospitalStay {
        admission: time.child("low").and_then(ts_date),
        discharge: time.child("high").and_then(ts_date),
    })
}

fn push_goal(obs: El<'_>, referral: &mut Referral) {
    let text = obs
        .child("value")
        .filter(|v| v.attr("xsi:type") == Some("ST"))
        .map(|v| v.all_text())
        .or_else(|| obs.child("text").map(|t| t.all_text()))
        .filter(|t| !t.is_empty())
        .or_else(|| {
            obs.child("code")
                .and_then(|c| c.attr("displayName"))
                .map(str::to_owned)
        });
    if let Some(text) = text
        && !referral.goals.contains(&text)
    {
        referral.goals.push(text);
    }
    let due = obs
        .child("effectiveTime")
        .and_then(|e| e.child("high").and_then(ts_date).or_else(|| ts_date(e)));
    if let Some(day) = due
        && !referral.plan_evaluation_dates.contains(&day)
    {
        referral.plan_evaluation_dates.push(day);
    }
}

/// `urn:oid:` for an OID root, `urn:uuid:` for a UUID root (CDA II roots are one or the other).
fn system_of_uid(root: &str) -> String {
    let root = root.trim();
    if root.len() == 36 && root.chars().filter(|c| *c == '-').count() == 4 {
        format!("urn:uuid:{}", root.to_ascii_lowercase())
    } else {
        format!("urn:oid:{root}")
    }
}

/// The first name with no use, or a legal/official one; else the first.
fn pick_name(person: El<'_>) -> Option<HumanName> {
    let names: Vec<El<'_>> = person.children("name").filter(|n| !n.is_null()).collect();
    let name = names
        .iter()
        .find(|n| {
            n.attr("use")
                .is_none_or(|u| u.split_whitespace().any(|p| p == "L"))
        })
        .or_else(|| names.first())?;
    // A "call me" given name (qualifier CL) is a nickname, not part of the legal name.
    let parts = |part: &'static str| -> Vec<String> {
        name.children(part)
            .filter(|p| p.attr("qualifier") != Some("CL"))
            .filter_map(|p| p.text().map(str::to_owned))
            .collect()
    };
    let family = name
        .child("family")
        .and_then(|f| f.text())
        .map(str::to_owned);
    let given = parts("given");
    let text = (family.is_none() && given.is_empty())
        .then(|| name.text().map(str::to_owned))
        .flatten();
    Some(HumanName {
        family,
        given,
        prefix: parts("prefix"),
        suffix: parts("suffix"),
        text,
    })
}

fn address(addr: El<'_>) -> Address {
    let text = |name: &'static str| addr.child(name).and_then(|e| e.text()).map(str::to_owned);
    let mut lines: Vec<String> = addr
        .children("streetAddressLine")
        .filter_map(|l| l.text().map(str::to_owned))
        .collect();
    if lines.is_empty()
        && let Some(street) = text("streetName")
    {
        lines.push(match text("houseNumber") {
            Some(number) => format!("{street} {number}"),
            None => street,
        });
    }
    Address {
        lines,
        postal_code: text("postalCode"),
        city: text("city"),
        district: text("county"),
        country: text("country"),
    }
}

/// The date of an HL7 TS (`YYYYMMDD[HHMM[SS]][+ZZZZ]`) in the element's `value`; a TS with
/// less than a day's precision is no date.
fn ts_date(el: El<'_>) -> Option<Date> {
    let value = el.attr("value")?;
    let digits = value.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

/// An IVL_TS (low/high, or a single value) as a date period.
fn ivl_period(el: El<'_>) -> Option<DatePeriod> {
    let single = ts_date(el);
    let start = el.child("low").and_then(ts_date).or(single);
    let end = el.child("high").and_then(ts_date).or(single);
    (start.is_some() || end.is_some()).then_some(DatePeriod { start, end })
}

/// A PQ or INT value: `(value, unit)`.
fn pq_value(el: El<'_>) -> Option<(f64, Option<String>)> {
    let v: f64 = el.attr("value")?.trim().parse().ok()?;
    v.is_finite()
        .then(|| (v, el.attr("unit").map(str::to_owned).filter(|u| u != "1")))
}

/// A BL value.
fn bl_value(el: El<'_>) -> Option<bool> {
    match el.attr("value")? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}
