//! Maps a FHIR R4 message, document, collection/transaction Bundle or lone ServiceRequest into
//! the canonical referral. See `docs/inbound-profile.md` for what is read from where.

use foldhash::{HashMap, HashMapExt};

use fhir_sdk::r4b::resources::{
    BundleEntry, CarePlan, Condition, Coverage as FhirCoverage, DocumentReference, Encounter, Goal,
    GoalTargetDue, MessageHeader, Observation, ObservationComponentValue, ObservationEffective,
    ObservationValue, Organization, Patient as FhirPatient, Practitioner, PractitionerRole,
    Resource, ServiceRequest, ServiceRequestOccurrence, ServiceRequestQuantity,
};
use fhir_sdk::r4b::types::{
    CodeableConcept, Coding, Extension, ExtensionValue, HumanName as FhirName,
    Identifier as FhirIdentifier, Period, Reference, TimingRepeatBounds,
};
use fhir_sdk::{Date as FhirDate, DateTime as FhirDateTime};
use time::Date;

use crate::check::Issue;
use crate::mappings::Mappings;
use crate::model::{
    Address, CarePlanRef, Certainty, Coded, Coverage, CoverageKind, DatePeriod, Delivery,
    Diagnosis, ExceptionCriterion, Frequency, FunctionalAssessment, Gender, HospitalStay,
    HumanName, Identifier, IdentifierKind, ImpairmentArea, Jurisdiction, Patient, PeriodUnit,
    Prescriber, Provider, Qualification, Referral, ReferralIds, ReferralKind, RequestedUnits,
    Setting,
};

use super::{decide_jurisdiction, is_sociotherapy_service, normalise_identifier};

const EXT_UNIT_LENGTH: &str = "https://sociogate.org/fhir/StructureDefinition/unit-length";
const EXT_APPROVAL: &str =
    "https://sociogate.org/fhir/StructureDefinition/sociotherapy-prescribing-approval";
const EXT_COPAYMENT: &str = "https://fhir.kbv.de/StructureDefinition/KBV_EX_FOR_StatusCoPayment";
const EXT_GENDER_DE: &str = "http://fhir.de/StructureDefinition/gender-amtlich-de";
const EXT_CERTAINTY_DE: &str = "http://fhir.de/StructureDefinition/icd-10-gm-diagnosesicherheit";
const ASSESSMENT_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/assessment";
const IMPAIRMENT_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/impairment-area";
const EXCEPTION_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/exception-criterion";
const CARE_PLAN_DOC_SYSTEM: &str = "http://dvmd.de/fhir/CodeSystem/kdl";
const CARE_PLAN_DOC_CODE: &str = "AM190202";
const ADMINISTRATIVE_GENDER: &str = "http://hl7.org/fhir/administrative-gender";
const KBV_FACHGRUPPE: &str = "https://fhir.kbv.de/CodeSystem/KBV_CS_SFHIR_BAR2_ARZTNRFACHGRUPPE";

/// Maps `root` into a referral.
pub fn map(
    root: &Resource,
    mappings: &Mappings,
    ids: ReferralIds,
    jurisdiction: Option<Jurisdiction>,
) -> (Referral, Vec<Issue>) {
    let index = Index::build(root);
    let mut mapper = Mapper {
        index: &index,
        m: mappings,
        issues: Vec::new(),
    };
    let mut referral = Referral::draft(ids);
    match mapper.focus(root) {
        Some(sr_idx) => mapper.map_service_request(sr_idx, &mut referral),
        None => {
            let found = index.describe();
            mapper
                .issues
                .push(Issue::new(mappings.rules(), "GW-MAP-01").detail(found));
            // Still keep what identifies the patient, so the rejection can be routed.
            if let Some(p) = index.first_of(|r| matches!(r, Resource::Patient(_))) {
                referral.patient = mapper.patient(p);
            }
        }
    }
    if jurisdiction.is_none() {
        let profiles = index.profiles();
        decide_jurisdiction(&mut referral, &profiles, mappings, &mut mapper.issues);
    } else {
        referral.jurisdiction = jurisdiction;
    }
    if let Some(j) = referral.jurisdiction {
        apply_unit_defaults(&mut referral, mappings, j);
    }
    (referral, mapper.issues)
}

/// Bundle.identifier, else the MessageHeader's id.
pub fn idempotency_hint(root: &Resource) -> Option<String> {
    let Resource::Bundle(bundle) = root else {
        return None;
    };
    if let Some(id) = &bundle.identifier
        && let Some(value) = id.value.as_deref().filter(|v| !v.trim().is_empty())
    {
        return Some(match id.system.as_deref() {
            Some(system) => format!("{system}|{value}"),
            None => value.to_owned(),
        });
    }
    bundle
        .entry
        .iter()
        .flatten()
        .find_map(|e| match &e.resource {
            Some(Resource::MessageHeader(mh)) => {
                mh.id.as_ref().map(|id| format!("MessageHeader/{id}"))
            }
            _ => None,
        })
}

/// Fills the unit length from the jurisdiction's parameters when the sender gave none.
pub(super) fn apply_unit_defaults(referral: &mut Referral, mappings: &Mappings, j: Jurisdiction) {
    let Some(units) = referral.requested_units.as_mut() else {
        return;
    };
    if units.unit_minutes != 0 {
        return;
    }
    let key = match units.delivery {
        Delivery::Individual => "individual_minutes",
        Delivery::Group => "group_minutes",
    };
    units.unit_minutes = mappings
        .parameters(j)
        .and_then(|p| p.pointer(&format!("/units/{key}")))
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(60);
}

/// Every resource in the document, addressable by fullUrl, `Type/id` and `#contained`.
struct Index<'a> {
    items: Vec<Indexed<'a>>,
    by_url: HashMap<&'a str, usize>,
    by_type_id: HashMap<(&'static str, &'a str), usize>,
}

struct Indexed<'a> {
    resource: &'a Resource,
    full_url: Option<&'a str>,
    /// For a contained resource: the index of its container.
    container: Option<usize>,
}

fn type_name(resource: &Resource) -> &'static str {
    resource.resource_type().as_str()
}

fn resource_id(resource: &Resource) -> Option<&str> {
    resource.as_base_resource().id().as_deref()
}

impl<'a> Index<'a> {
    fn build(root: &'a Resource) -> Index<'a> {
        let mut index = Index {
            items: Vec::new(),
            by_url: HashMap::new(),
            by_type_id: HashMap::new(),
        };
        index.add(root, None, None);
        index
    }

    fn add(&mut self, resource: &'a Resource, full_url: Option<&'a str>, container: Option<usize>) {
        let at = self.items.len();
        self.items.push(Indexed {
            resource,
            full_url,
            container,
        });
        if container.is_none() {
            if let Some(url) = full_url {
                self.by_url.entry(url).or_insert(at);
            }
            if let Some(id) = resource_id(resource) {
                self.by_type_id
                    .entry((type_name(resource), id))
                    .or_insert(at);
            }
        }
        if let Some(domain) = resource.as_domain_resource() {
            for contained in domain.contained() {
                self.add(contained, None, Some(at));
            }
        }
        if let Resource::Bundle(bundle) = resource {
            for entry in bundle.entry.iter().flatten() {
                self.add_entry(entry);
            }
        }
    }

    fn add_entry(&mut self, entry: &'a BundleEntry) {
        if let Some(resource) = &entry.resource {
            self.add(resource, entry.full_url.as_deref(), None);
        }
    }

    fn get(&self, at: usize) -> &'a Resource {
        self.items[at].resource
    }

    fn first_of(&self, pred: impl Fn(&Resource) -> bool) -> Option<usize> {
        self.items.iter().position(|i| pred(i.resource))
    }

    fn all_of(&self, pred: impl Fn(&Resource) -> bool) -> Vec<usize> {
        (0..self.items.len())
            .filter(|&i| pred(self.items[i].resource))
            .collect()
    }

    /// Resolves `reference` as seen from the resource at `from`.
    fn resolve(&self, from: usize, reference: &str) -> Option<usize> {
        let reference = reference.trim();
        if let Some(local) = reference.strip_prefix('#') {
            // Contained resources are resolved within the nearest container.
            let container = self.items[from].container.unwrap_or(from);
            return (0..self.items.len()).find(|&i| {
                self.items[i].container == Some(container)
                    && resource_id(self.items[i].resource) == Some(local)
            });
        }
        let reference = match reference.find("/_history/") {
            Some(i) => &reference[..i],
            None => reference,
        };
        if let Some(&at) = self.by_url.get(reference) {
            return Some(at);
        }
        // A relative reference is relative to the base of the referencing entry's fullUrl.
        let root = self.items[from].container.unwrap_or(from);
        if let Some(base_url) = self.items[root].full_url {
            let parts: Vec<&str> = base_url.rsplitn(3, '/').collect();
            if parts.len() == 3 && !reference.contains("://") {
                let absolute = format!("{}/{reference}", parts[2]);
                if let Some(&at) = self.by_url.get(absolute.as_str()) {
                    return Some(at);
                }
            }
        }
        let mut tail = reference.rsplitn(3, '/');
        let id = tail.next()?;
        let type_name = tail.next()?;
        self.by_type_id
            .iter()
            .find(|((t, i), _)| *t == type_name && *i == id)
            .map(|(_, &at)| at)
    }

    fn describe(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for item in &self.items {
            let name = type_name(item.resource);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names.join(", ")
    }

    fn profiles(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|i| i.resource.as_base_resource().meta().as_ref())
            .flat_map(|meta| meta.profile.iter().flatten().cloned())
            .collect()
    }
}

struct Mapper<'i, 'a> {
    index: &'i Index<'a>,
    m: &'i Mappings,
    issues: Vec<Issue>,
}

impl<'a> Mapper<'_, 'a> {
    fn push(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    fn new_issue(&self, code: &str) -> Issue {
        Issue::new(self.m.rules(), code)
    }

    fn resolve_ref(&mut self, from: usize, reference: &Reference, path: &str) -> Option<usize> {
        let text = reference.reference.as_deref()?;
        let found = self.index.resolve(from, text);
        if found.is_none() {
            let issue = self.new_issue("GW-MAP-02").detail(text).at(path);
            self.push(issue);
        }
        found
    }

    /// Finds the ServiceRequest the message is about.
    fn focus(&mut self, root: &'a Resource) -> Option<usize> {
        if let Resource::ServiceRequest(_) = root {
            return Some(0);
        }
        let header = self
            .index
            .first_of(|r| matches!(r, Resource::MessageHeader(_)));
        if let Some(h) = header
            && let Resource::MessageHeader(mh) = self.index.get(h)
        {
            let mh: &MessageHeader = mh;
            for (n, focus) in mh.focus.iter().flatten().enumerate() {
                if let Some(at) = self.resolve_ref(h, focus, &format!("MessageHeader.focus[{n}]"))
                    && matches!(self.index.get(at), Resource::ServiceRequest(_))
                {
                    return Some(at);
                }
            }
        }
        let requests = self
            .index
            .all_of(|r| matches!(r, Resource::ServiceRequest(_)));
        match requests.as_slice() {
            [] => None,
            [only] => Some(*only),
            several => {
                let count = several.len();
                let chosen = several
                    .iter()
                    .copied()
                    .find(|&at| self.service_request_is_sociotherapy(at))
                    .unwrap_or(several[0]);
                let issue = self.new_issue("GW-MAP-11").detail(count);
                self.push(issue);
                Some(chosen)
            }
        }
    }

    fn service_request_is_sociotherapy(&self, at: usize) -> bool {
        let Resource::ServiceRequest(sr) = self.index.get(at) else {
            return false;
        };
        sr.code.as_ref().is_some_and(|cc| {
            codings(cc).any(|c| {
                c.code.as_deref().is_some_and(|code| {
                    self.m
                        .translate("service", c.system.as_deref(), code)
                        .is_some_and(|t| is_sociotherapy_service(&t))
                })
            })
        })
    }

    fn check_modifiers(&mut self, extensions: &[Extension], path: &str) {
        for ext in extensions {
            let issue = self
                .new_issue("GW-MAP-09")
                .detail(&ext.url)
                .at(format!("{path}.modifierExtension"));
            self.push(issue);
        }
    }

    fn map_service_request(&mut self, at: usize, referral: &mut Referral) {
        let Resource::ServiceRequest(sr) = self.index.get(at) else {
            return;
        };
        let sr: &ServiceRequest = sr;
        self.check_modifiers(&sr.modifier_extension, "ServiceRequest");

        referral.ids.sender_id = sr
            .identifier
            .iter()
            .flatten()
            .find_map(|id| self.identifier(id));

        let status = sr.status.to_string();
        let intent = sr.intent.to_string();
        let intent_ok = matches!(
            intent.as_str(),
            "order" | "original-order" | "reflex-order" | "filler-order" | "instance-order"
        );
        if status != "active" || !intent_ok {
            let issue = self
                .new_issue("GW-MAP-08")
                .detail(format!("status {status}, intent {intent}"));
            self.push(issue);
        }

        // Kind
        for (n, cc) in sr.category.iter().flatten().enumerate() {
            if let Some(kind) = self.translate_cc::<ReferralKind>(
                "referral-kind",
                cc,
                &format!("ServiceRequest.category[{n}]"),
            ) {
                referral.kind = Some(kind);
                break;
            }
        }

        // Service
        match &sr.code {
            Some(cc) => {
                let coded = codings(cc).find_map(coded);
                let service = codings(cc).find_map(|c| {
                    c.code
                        .as_deref()
                        .and_then(|code| self.m.translate("service", c.system.as_deref(), code))
                });
                referral.is_sociotherapy = service.as_deref().is_some_and(is_sociotherapy_service);
                if !referral.is_sociotherapy {
                    let shown = coded
                        .as_ref()
                        .map(describe_code)
                        .or_else(|| cc.text.clone())
                        .unwrap_or_else(|| "(no code)".to_owned());
                    let issue = self.new_issue("GW-MAP-03").detail(shown);
                    self.push(issue);
                }
                referral.service = coded;
            }
            None => {
                let issue = self.new_issue("GW-MAP-03").detail("(no code)");
                self.push(issue);
            }
        }

        // Units, delivery and unit length
        for (n, cc) in sr.order_detail.iter().flatten().enumerate() {
            let path = format!("ServiceRequest.orderDetail[{n}]");
            if let Some(mode) = self.translate_cc::<Delivery>("delivery-mode", cc, &path)
                && !referral.delivery_modes.contains(&mode)
            {
                referral.delivery_modes.push(mode);
            }
        }
        // Units are counted in the first stated mode (a plan with both parts states the
        // individual part first by convention of the inbound profile).
        let delivery = referral
            .delivery_modes
            .first()
            .copied()
            .unwrap_or(Delivery::Individual);
        let unit_minutes = self.unit_length(&sr.extension);
        if let Some(ServiceRequestQuantity::Quantity(q)) = &sr.quantity {
            match q.value {
                Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => {
                    referral.requested_units = Some(RequestedUnits {
                        count: v as u32,
                        unit_minutes: unit_minutes.unwrap_or(0),
                        delivery,
                    });
                }
                Some(v) => {
                    let issue = self
                        .new_issue("GW-MAP-10")
                        .detail(format!("{v} is not a positive whole number of units"))
                        .at("ServiceRequest.quantityQuantity.value");
                    self.push(issue);
                }
                None => {}
            }
        } else if sr.quantity.is_some() {
            let issue = self
                .new_issue("GW-MAP-10")
                .detail("units must be given as quantityQuantity")
                .at("ServiceRequest.quantity");
            self.push(issue);
        }

        // Period and frequency
        match &sr.occurrence {
            Some(ServiceRequestOccurrence::Period(p)) => {
                referral.requested_period = Some(period(p));
            }
            Some(ServiceRequestOccurrence::DateTime(dt)) => {
                let day = date_of(dt);
                referral.requested_period = Some(DatePeriod {
                    start: day,
                    end: day,
                });
            }
            Some(ServiceRequestOccurrence::Timing(timing)) => {
                if let Some(repeat) = &timing.repeat {
                    if let Some(TimingRepeatBounds::Period(p)) = &repeat.bounds {
                        referral.requested_period = Some(period(p));
                    }
                    if let (Some(freq), Some(per)) = (repeat.frequency, repeat.period) {
                        let unit = match repeat.period_unit.as_deref() {
                            Some("d") => Some(PeriodUnit::Day),
                            Some("wk") => Some(PeriodUnit::Week),
                            Some("mo") => Some(PeriodUnit::Month),
                            _ => None,
                        };
                        match unit {
                            Some(unit) => {
                                referral.frequency = Some(Frequency {
                                    count: freq.get(),
                                    period: per,
                                    unit,
                                });
                            }
                            None => {
                                let issue = self
                                    .new_issue("GW-MAP-10")
                                    .detail(format!(
                                        "frequency period unit {:?} (use d, wk or mo)",
                                        repeat.period_unit.as_deref().unwrap_or("")
                                    ))
                                    .at("ServiceRequest.occurrenceTiming.repeat.periodUnit");
                                self.push(issue);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        referral.issue_date = sr.authored_on.as_ref().and_then(date_of);

        // Settings
        for (n, cc) in sr.location_code.iter().flatten().enumerate() {
            if let Some(setting) = self.translate_cc::<Setting>(
                "setting",
                cc,
                &format!("ServiceRequest.locationCode[{n}]"),
            ) && !referral.settings.contains(&setting)
            {
                referral.settings.push(setting);
            }
        }

        // Patient
        match self.resolve_ref(at, &sr.subject, "ServiceRequest.subject") {
            Some(p) if matches!(self.index.get(p), Resource::Patient(_)) => {
                referral.patient = self.patient(p);
            }
            _ => {
                let issue = self.new_issue("GW-MAP-04");
                self.push(issue);
            }
        }

        // Prescriber
        if let Some(requester) = &sr.requester {
            referral.prescriber = Some(self.prescriber(at, requester));
        }
        // Requested provider
        if let Some(performer) = sr.performer.iter().flatten().next() {
            referral.requested_provider = Some(self.provider(at, performer));
        }

        // Diagnoses
        for (n, reference) in sr.reason_reference.iter().flatten().enumerate() {
            if let Some(c) = self.resolve_ref(
                at,
                reference,
                &format!("ServiceRequest.reasonReference[{n}]"),
            ) && let Resource::Condition(condition) = self.index.get(c)
            {
                self.condition(condition, referral);
            }
        }
        for cc in sr.reason_code.iter().flatten() {
            // reasonCode also carries non-diagnostic reasons; only ICD-10 codings are diagnoses.
            let icd =
                codings(cc).filter(|c| c.system.as_deref().is_some_and(|s| s.contains("icd-10")));
            for coding in icd {
                if let Some(code) = coding.code.clone() {
                    referral.diagnoses.push(Diagnosis {
                        code,
                        system: coding.system.clone(),
                        system_version: coding.version.clone(),
                        display: coding.display.clone(),
                        certainty: None,
                    });
                }
            }
        }

        // Supporting information, encounter, care plan, coverage
        let mut supporting: Vec<(usize, String)> = Vec::new();
        for (n, reference) in sr.supporting_info.iter().flatten().enumerate() {
            if let Some(s) = self.resolve_ref(
                at,
                reference,
                &format!("ServiceRequest.supportingInfo[{n}]"),
            ) {
                supporting.push((s, reference.reference.clone().unwrap_or_default()));
            }
        }
        if let Some(encounter) = &sr.encounter
            && let Some(e) = self.resolve_ref(at, encounter, "ServiceRequest.encounter")
        {
            supporting.push((e, encounter.reference.clone().unwrap_or_default()));
        }
        for (n, reference) in sr.based_on.iter().flatten().enumerate() {
            if let Some(b) =
                self.resolve_ref(at, reference, &format!("ServiceRequest.basedOn[{n}]"))
            {
                supporting.push((b, reference.reference.clone().unwrap_or_default()));
            }
        }
        for (s, reference) in supporting {
            match self.index.get(s) {
                Resource::Observation(obs) => self.observation(obs, referral),
                Resource::Encounter(enc) => self.encounter(enc, referral),
                Resource::Goal(goal) => push_goal(goal, referral),
                Resource::Consent(consent) if consent.status.to_string() == "active" => {
                    referral.plan_agreed_with_client = Some(true);
                }
                Resource::CarePlan(plan) => self.care_plan(s, plan, reference, referral),
                Resource::DocumentReference(doc) => {
                    care_plan_document(doc, reference, referral, self)
                }
                _ => {}
            }
        }
        if let Some(reference) = sr.insurance.iter().flatten().next()
            && let Some(c) = self.resolve_ref(at, reference, "ServiceRequest.insurance[0]")
            && let Resource::Coverage(coverage) = self.index.get(c)
        {
            referral.coverage = Some(self.coverage(c, coverage));
        }
    }

    /// Translates the first translatable coding of `cc` through `map` into `T` (a canonical
    /// enum in kebab-case). Codes that do not translate are reported once.
    fn translate_cc<T: serde::de::DeserializeOwned>(
        &mut self,
        map: &str,
        cc: &CodeableConcept,
        path: &str,
    ) -> Option<T> {
        let mut unknown = None;
        for coding in codings(cc) {
            let Some(code) = coding.code.as_deref() else {
                continue;
            };
            match self.m.translate(map, coding.system.as_deref(), code) {
                Some(target) => {
                    if let Ok(value) = serde_json::from_value(serde_json::Value::String(target)) {
                        return Some(value);
                    }
                    unknown.get_or_insert_with(|| describe_coding(coding));
                }
                None => {
                    unknown.get_or_insert_with(|| describe_coding(coding));
                }
            }
        }
        if let Some(code) = unknown {
            let issue = self.new_issue("GW-MAP-05").detail(code).at(path);
            self.push(issue);
        }
        None
    }

    fn unit_length(&mut self, extensions: &[Extension]) -> Option<u32> {
        let ext = extensions.iter().find(|e| e.url == EXT_UNIT_LENGTH)?;
        let minutes = match &ext.value {
            Some(ExtensionValue::Duration(d)) => {
                let factor = match d.code.as_deref().or(d.unit.as_deref()) {
                    Some("min") => 1.0,
                    Some("h") => 60.0,
                    _ => f64::NAN,
                };
                d.value.map(|v| v * factor)
            }
            _ => None,
        };
        match minutes {
            Some(m) if m >= 1.0 && m.fract() == 0.0 && m <= 1440.0 => Some(m as u32),
            _ => {
                let issue = self
                    .new_issue("GW-MAP-10")
                    .detail("unit length must be a Duration in whole minutes (code min or h)")
                    .at("ServiceRequest.extension('unit-length')");
                self.push(issue);
                None
            }
        }
    }

    fn identifier(&self, id: &FhirIdentifier) -> Option<Identifier> {
        let value = id.value.as_deref()?.trim();
        if value.is_empty() {
            return None;
        }
        Some(normalise_identifier(self.m, id.system.as_deref(), value))
    }

    fn identifiers<'x>(
        &self,
        ids: impl IntoIterator<Item = &'x Option<FhirIdentifier>>,
    ) -> Vec<Identifier> {
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.identifier(id))
            .collect()
    }

    fn patient(&mut self, at: usize) -> Option<Patient> {
        let Resource::Patient(p) = self.index.get(at) else {
            return None;
        };
        let p: &FhirPatient = p;
        self.check_modifiers(&p.modifier_extension, "Patient");
        let gender_de = p.gender_ext.as_ref().and_then(|ext| {
            ext.extension
                .iter()
                .find(|e| e.url == EXT_GENDER_DE)
                .and_then(|e| match &e.value {
                    Some(ExtensionValue::Coding(c)) => c
                        .code
                        .as_deref()
                        .and_then(|code| self.m.translate("gender", c.system.as_deref(), code)),
                    _ => None,
                })
        });
        let gender = gender_de
            .or_else(|| {
                p.gender.as_ref().and_then(|g| {
                    self.m
                        .translate("gender", Some(ADMINISTRATIVE_GENDER), g.as_ref())
                })
            })
            .and_then(|code| {
                serde_json::from_value::<Gender>(serde_json::Value::String(code)).ok()
            });
        let non_disclosure = p.meta.as_ref().is_some_and(|meta| {
            meta.security.iter().flatten().any(|c| {
                c.code.as_deref().is_some_and(|code| {
                    self.m
                        .translate("security-label", c.system.as_deref(), code)
                        .is_some()
                })
            })
        });
        let name = pick_name(&p.name);
        let address = p.address.iter().flatten().next().map(|a| Address {
            lines: a.line.iter().flatten().cloned().collect(),
            postal_code: a.postal_code.clone(),
            city: a.city.clone(),
            district: a.district.clone(),
            country: a.country.clone(),
        });
        Some(Patient {
            ids: self.identifiers(&p.identifier),
            name,
            birth_date: p.birth_date.as_ref().and_then(full_date),
            gender,
            address,
            non_disclosure,
        })
    }

    fn qualifications_of(
        &mut self,
        cc: &CodeableConcept,
        path: &str,
        out: &mut Vec<Qualification>,
    ) {
        if let Some(q) = self.translate_cc::<Qualification>("qualification", cc, path)
            && !out.contains(&q)
        {
            out.push(q);
        }
    }

    fn approval(extensions: &[Extension]) -> Option<bool> {
        extensions
            .iter()
            .find(|e| e.url == EXT_APPROVAL)
            .and_then(|e| match e.value {
                Some(ExtensionValue::Boolean(b)) => Some(b),
                _ => None,
            })
    }

    fn practitioner_into(&mut self, pr: &Practitioner, out: &mut Prescriber) {
        self.check_modifiers(&pr.modifier_extension, "Practitioner");
        out.person_ids.extend(self.identifiers(&pr.identifier));
        if out.name.is_none() {
            out.name = pick_name(&pr.name);
        }
        for (n, q) in pr.qualification.iter().flatten().enumerate() {
            self.qualifications_of(
                &q.code,
                &format!("Practitioner.qualification[{n}].code"),
                &mut out.qualifications,
            );
        }
        if let Some(approval) = Self::approval(&pr.extension) {
            // The most specific resource (the role) is read first and wins.
            out.sociotherapy_approval.get_or_insert(approval);
        }
    }

    fn organisation_into(&mut self, org: &Organization, out: &mut Prescriber) {
        out.organisation_ids
            .extend(self.identifiers(&org.identifier));
        if out.organisation_name.is_none() {
            out.organisation_name = org.name.clone();
        }
        for (n, cc) in org.r#type.iter().flatten().enumerate() {
            // Organisation types that are not qualifications (e.g. a practice) are common.
            let before = self.issues.len();
            self.qualifications_of(
                cc,
                &format!("Organization.type[{n}]"),
                &mut out.qualifications,
            );
            self.issues.truncate(before);
        }
        if let Some(approval) = Self::approval(&org.extension) {
            // The most specific resource (the role) is read first and wins.
            out.sociotherapy_approval.get_or_insert(approval);
        }
    }

    fn prescriber(&mut self, from: usize, requester: &Reference) -> Prescriber {
        let mut out = Prescriber::default();
        if let Some(id) = requester
            .identifier
            .as_ref()
            .and_then(|id| self.identifier(id))
        {
            out.person_ids.push(id);
        }
        if let Some(at) = self.resolve_ref(from, requester, "ServiceRequest.requester") {
            match self.index.get(at) {
                Resource::Practitioner(pr) => self.practitioner_into(pr, &mut out),
                Resource::PractitionerRole(role) => {
                    let role: &PractitionerRole = role;
                    for (n, cc) in role.specialty.iter().flatten().enumerate() {
                        self.qualifications_of(
                            cc,
                            &format!("PractitionerRole.specialty[{n}]"),
                            &mut out.qualifications,
                        );
                    }
                    for (n, cc) in role.code.iter().flatten().enumerate() {
                        let before = self.issues.len();
                        self.qualifications_of(
                            cc,
                            &format!("PractitionerRole.code[{n}]"),
                            &mut out.qualifications,
                        );
                        // Role codes are often job titles; an unmapped one is no finding.
                        self.issues.truncate(before);
                    }
                    if let Some(approval) = Self::approval(&role.extension) {
                        // The most specific resource (the role) is read first and wins.
                        out.sociotherapy_approval.get_or_insert(approval);
                    }
                    if let Some(r) = &role.practitioner
                        && let Some(p) = self.resolve_ref(at, r, "PractitionerRole.practitioner")
                        && let Resource::Practitioner(pr) = self.index.get(p)
                    {
                        self.practitioner_into(pr, &mut out);
                    }
                    if let Some(r) = &role.organization
                        && let Some(o) = self.resolve_ref(at, r, "PractitionerRole.organization")
                        && let Resource::Organization(org) = self.index.get(o)
                    {
                        self.organisation_into(org, &mut out);
                    }
                }
                Resource::Organization(org) => self.organisation_into(org, &mut out),
                _ => {}
            }
        }
        if out.qualifications.is_empty() {
            // The LANR's last two digits are the Fachgruppe.
            let specialty = out
                .person_ids
                .iter()
                .filter(|id| id.kind == IdentifierKind::Lanr)
                .find_map(|id| crate::check::ids::lanr_specialty(&id.value).map(str::to_owned));
            if let Some(code) = specialty
                && let Some(q) = self
                    .m
                    .translate("qualification", Some(KBV_FACHGRUPPE), &code)
                    .and_then(|t| serde_json::from_value(serde_json::Value::String(t)).ok())
            {
                out.qualifications.push(q);
            }
        }
        out
    }

    fn provider(&mut self, from: usize, performer: &Reference) -> Provider {
        let mut out = Provider {
            ids: performer
                .identifier
                .as_ref()
                .and_then(|id| self.identifier(id))
                .into_iter()
                .collect(),
            name: performer.display.clone(),
        };
        if let Some(at) = self.resolve_ref(from, performer, "ServiceRequest.performer[0]") {
            match self.index.get(at) {
                Resource::Organization(org) => {
                    out.ids.extend(self.identifiers(&org.identifier));
                    out.name = org.name.clone().or(out.name);
                }
                Resource::Practitioner(pr) => {
                    out.ids.extend(self.identifiers(&pr.identifier));
                    out.name = pick_name(&pr.name)
                        .and_then(|n| n.text.or(n.family))
                        .or(out.name);
                }
                Resource::PractitionerRole(role) => {
                    out.ids.extend(self.identifiers(&role.identifier));
                }
                _ => {}
            }
        }
        out
    }

    fn condition(&mut self, condition: &Condition, referral: &mut Referral) {
        self.check_modifiers(&condition.modifier_extension, "Condition");
        let Some(cc) = &condition.code else { return };
        let fallback_certainty = condition.verification_status.as_ref().and_then(|vs| {
            codings(vs).find_map(|c| {
                c.code
                    .as_deref()
                    .and_then(|code| self.m.translate("certainty", c.system.as_deref(), code))
            })
        });
        // Prefer ICD-10 codings; take the first coding otherwise.
        let chosen = codings(cc)
            .find(|c| c.system.as_deref().is_some_and(|s| s.contains("icd-10")))
            .or_else(|| codings(cc).next());
        let Some(coding) = chosen else { return };
        let Some(code) = coding.code.clone() else {
            return;
        };
        let certainty = coding
            .extension
            .iter()
            .find(|e| e.url == EXT_CERTAINTY_DE)
            .and_then(|e| match &e.value {
                Some(ExtensionValue::Coding(c)) => c
                    .code
                    .as_deref()
                    .and_then(|code| self.m.translate("certainty", c.system.as_deref(), code)),
                _ => None,
            })
            .or(fallback_certainty)
            .and_then(|t| serde_json::from_value::<Certainty>(serde_json::Value::String(t)).ok());
        referral.diagnoses.push(Diagnosis {
            code,
            system: coding.system.clone(),
            system_version: coding.version.clone(),
            display: coding.display.clone(),
            certainty,
        });
    }

    fn observation(&mut self, obs: &Observation, referral: &mut Referral) {
        let effective = match &obs.effective {
            Some(ObservationEffective::DateTime(dt)) => date_of(dt),
            Some(ObservationEffective::Period(p)) => p.start.as_ref().and_then(date_of),
            _ => None,
        };
        if has_code(&obs.code, ASSESSMENT_SYSTEM, "service-needs-assessment") {
            referral.service_needs_assessment_date =
                effective.or(referral.service_needs_assessment_date);
            return;
        }
        if !has_code(&obs.code, ASSESSMENT_SYSTEM, "gaf") {
            return;
        }
        self.check_modifiers(&obs.modifier_extension, "Observation");
        let assessment = referral
            .functional_assessment
            .get_or_insert_with(FunctionalAssessment::default);
        assessment.gaf_score = match &obs.value {
            Some(ObservationValue::Integer(v)) => Some(i64::from(*v)),
            Some(ObservationValue::Quantity(q)) => q
                .value
                .filter(|v| v.fract() == 0.0 && v.abs() < 1e9)
                .map(|v| v as i64),
            _ => None,
        };
        assessment.gaf_date = effective;
        for component in obs.component.iter().flatten() {
            let value_code = |system: &str| -> Option<String> {
                match &component.value {
                    Some(ObservationComponentValue::CodeableConcept(cc)) => codings(cc)
                        .find(|c| c.system.as_deref() == Some(system))
                        .and_then(|c| c.code.clone()),
                    _ => None,
                }
            };
            if has_code(&component.code, ASSESSMENT_SYSTEM, "impairment-area") {
                if let Some(area) = value_code(IMPAIRMENT_SYSTEM).and_then(|c| {
                    serde_json::from_value::<ImpairmentArea>(serde_json::Value::String(c)).ok()
                }) {
                    assessment.impairment_areas.push(area);
                }
            } else if has_code(&component.code, ASSESSMENT_SYSTEM, "exception-criterion") {
                if let Some(criterion) = value_code(EXCEPTION_SYSTEM).and_then(|c| {
                    serde_json::from_value::<ExceptionCriterion>(serde_json::Value::String(c)).ok()
                }) {
                    assessment.exception_criteria.push(criterion);
                }
            } else if has_code(
                &component.code,
                ASSESSMENT_SYSTEM,
                "exception-justification",
            ) && let Some(ObservationComponentValue::String(text)) = &component.value
                && !text.trim().is_empty()
            {
                assessment.exception_justification = Some(text.clone());
            }
        }
    }

    fn encounter(&mut self, enc: &Encounter, referral: &mut Referral) {
        if let Some(p) = &enc.period {
            referral.hospital_stay = Some(HospitalStay {
                admission: p.start.as_ref().and_then(date_of),
                discharge: p.end.as_ref().and_then(date_of),
            });
        }
    }

    fn care_plan(
        &mut self,
        at: usize,
        plan: &CarePlan,
        reference: String,
        referral: &mut Referral,
    ) {
        referral.care_plan = Some(CarePlanRef {
            reference,
            ids: self.identifiers(&plan.identifier),
        });
        // The patient as author or contributor means the plan was made with the client.
        let by_patient = plan
            .author
            .iter()
            .chain(plan.contributor.iter().flatten())
            .filter_map(|r| r.reference.as_deref())
            .any(|r| {
                self.index
                    .resolve(at, r)
                    .is_some_and(|p| matches!(self.index.get(p), Resource::Patient(_)))
            });
        if by_patient {
            referral.plan_agreed_with_client = Some(true);
        }
        for (n, goal_ref) in plan.goal.iter().flatten().enumerate() {
            if let Some(g) = self.resolve_ref(at, goal_ref, &format!("CarePlan.goal[{n}]"))
                && let Resource::Goal(goal) = self.index.get(g)
            {
                push_goal(goal, referral);
            }
        }
    }

    fn coverage(&mut self, at: usize, coverage: &FhirCoverage) -> Coverage {
        self.check_modifiers(&coverage.modifier_extension, "Coverage");
        let kind = coverage
            .r#type
            .as_ref()
            .and_then(|cc| self.translate_cc::<CoverageKind>("coverage-kind", cc, "Coverage.type"));
        let mut out = Coverage {
            kind,
            member_number: coverage.subscriber_id.clone(),
            ..Coverage::default()
        };
        for (n, payor) in coverage.payor.iter().flatten().enumerate() {
            if let Some(id) = payor.identifier.as_ref().and_then(|id| self.identifier(id)) {
                out.payer_ids.push(id);
            }
            if out.payer_name.is_none() {
                out.payer_name = payor.display.clone();
            }
            if payor.reference.is_some()
                && let Some(o) = self.resolve_ref(at, payor, &format!("Coverage.payor[{n}]"))
                && let Resource::Organization(org) = self.index.get(o)
            {
                out.payer_ids.extend(self.identifiers(&org.identifier));
                out.payer_name = org.name.clone().or(out.payer_name);
            }
        }
        out.copayment_exempt = coverage
            .extension
            .iter()
            .find(|e| e.url == EXT_COPAYMENT)
            .and_then(|e| match &e.value {
                Some(ExtensionValue::Coding(c)) => match c.code.as_deref() {
                    Some("1") => Some(true),
                    Some("0") => Some(false),
                    _ => None,
                },
                _ => None,
            });
        out
    }
}

fn care_plan_document(
    doc: &DocumentReference,
    reference: String,
    referral: &mut Referral,
    mapper: &Mapper<'_, '_>,
) {
    let is_plan = doc
        .r#type
        .as_ref()
        .is_some_and(|cc| has_code(cc, CARE_PLAN_DOC_SYSTEM, CARE_PLAN_DOC_CODE));
    if is_plan && referral.care_plan.is_none() {
        referral.care_plan = Some(CarePlanRef {
            reference,
            ids: mapper.identifiers(&doc.identifier),
        });
    }
}

fn push_goal(goal: &Goal, referral: &mut Referral) {
    for target in goal.target.iter().flatten() {
        if let Some(GoalTargetDue::Date(due)) = &target.due
            && let Some(day) = full_date(due)
            && !referral.plan_evaluation_dates.contains(&day)
        {
            referral.plan_evaluation_dates.push(day);
        }
    }
    let text = goal
        .description
        .text
        .clone()
        .or_else(|| codings(&goal.description).find_map(|c| c.display.clone()));
    if let Some(text) = text
        && !referral.goals.contains(&text)
    {
        referral.goals.push(text);
    }
}

fn codings(cc: &CodeableConcept) -> impl Iterator<Item = &Coding> {
    cc.coding.iter().flatten()
}

fn has_code(cc: &CodeableConcept, system: &str, code: &str) -> bool {
    codings(cc).any(|c| c.system.as_deref() == Some(system) && c.code.as_deref() == Some(code))
}

fn coded(c: &Coding) -> Option<Coded> {
    Some(Coded {
        system: c.system.clone(),
        version: c.version.clone(),
        code: c.code.clone()?,
        display: c.display.clone(),
    })
}

fn describe_code(c: &Coded) -> String {
    let mut s = format!("{}|{}", c.system.as_deref().unwrap_or(""), c.code);
    if let Some(d) = &c.display {
        s.push_str(&format!(" ({d})"));
    }
    s
}

fn describe_coding(c: &Coding) -> String {
    format!(
        "{}|{}",
        c.system.as_deref().unwrap_or(""),
        c.code.as_deref().unwrap_or("")
    )
}

fn pick_name(names: &[Option<FhirName>]) -> Option<HumanName> {
    let official = names
        .iter()
        .flatten()
        .find(|n| n.r#use.as_ref().is_some_and(|u| u.as_ref() == "official"));
    let name = official.or_else(|| names.iter().flatten().next())?;
    Some(HumanName {
        family: name.family.clone(),
        given: name.given.iter().flatten().cloned().collect(),
        prefix: name.prefix.iter().flatten().cloned().collect(),
        suffix: name.suffix.iter().flatten().cloned().collect(),
        text: name.text.clone(),
    })
}

fn full_date(d: &FhirDate) -> Option<Date> {
    match d {
        FhirDate::Date(d) => Some(*d),
        _ => None,
    }
}

fn date_of(dt: &FhirDateTime) -> Option<Date> {
    match dt {
        FhirDateTime::Date(d) => full_date(d),
        FhirDateTime::DateTime(instant) => Some(instant.0.date()),
    }
}

fn period(p: &Period) -> DatePeriod {
    DatePeriod {
        start: p.start.as_ref().and_then(date_of),
        end: p.end.as_ref().and_then(date_of),
    }
}
