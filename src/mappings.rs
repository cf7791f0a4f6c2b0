//! Loads the data under `mappings/` once at start: FHIR ConceptMaps, identifier systems, the rule
//! catalogue and each jurisdiction's rule parameters.
//!
//! Code never hard-codes a code list or a limit; it asks [`Mappings`]. Loading validates
//! everything (every ConceptMap parses as FHIR, every rule code the program uses has a catalogue
//! entry with a message in every language), so a broken deployment fails at start, not on the
//! first message.

use foldhash::{HashMap, HashMapExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fhir_sdk::r4b::resources::ConceptMap;
use serde::Deserialize;

use crate::check::Severity;
use crate::model::{IdentifierKind, Jurisdiction};

/// Languages every rule message must exist in.
pub const LANGUAGES: &[&str] = &["en", "de", "nl", "fi"];

/// Problems found while loading `mappings/`.
#[derive(Debug, thiserror::Error)]
pub enum MappingsError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not what its name says.
    #[error("parsing {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The data is inconsistent.
    #[error("invalid mappings: {0}")]
    Invalid(String),
}

/// Everything loaded from `mappings/`.
#[derive(Debug)]
pub struct Mappings {
    root: PathBuf,
    concept_maps: HashMap<String, ConceptMapIndex>,
    identifier_systems: IdentifierSystems,
    rules: RuleCatalogue,
    parameters: BTreeMap<Jurisdiction, serde_json::Value>,
    profile_prefixes: Vec<(String, Jurisdiction)>,
    non_disclosure: NonDisclosure,
    claim_products: BTreeMap<Jurisdiction, ClaimProduct>,
    code_systems: CodeSystems,
}

/// Code systems by OID and by name (`mappings/common/code-systems.json`), for CDA R2, which
/// names code systems by OID where FHIR uses URIs.
#[derive(Debug, Default)]
pub struct CodeSystems {
    by_oid: HashMap<String, (String, Option<String>)>,
    by_name: HashMap<String, String>,
}

#[derive(Deserialize)]
struct CodeSystemsFile {
    systems: Vec<CodeSystemEntry>,
    #[serde(default)]
    names: Vec<CodeSystemName>,
}

#[derive(Deserialize)]
struct CodeSystemEntry {
    oid: String,
    uri: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct CodeSystemName {
    name: String,
    uri: String,
}

impl CodeSystems {
    /// The FHIR URI (and the version an OID implies, e.g. an ICD-10-GM year) of an OID.
    pub fn by_oid(&self, oid: &str) -> Option<(&str, Option<&str>)> {
        self.by_oid
            .get(oid)
            .map(|(uri, version)| (uri.as_str(), version.as_deref()))
    }

    /// The FHIR URI of a code system name (compared without case, spaces, dashes or dots).
    pub fn by_name(&self, name: &str) -> Option<&str> {
        self.by_name.get(&name_key(name)).map(String::as_str)
    }
}

fn name_key(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// What a non-disclosure label withholds from outputs (`mappings/common/non-disclosure.json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NonDisclosure {
    /// Resource types whose elements are withheld.
    pub resource_types: Vec<String>,
    /// Elements removed from those resources.
    pub elements: Vec<String>,
    /// Extensions removed from those resources, by URL.
    pub extension_urls: Vec<String>,
}

/// What the insurer's preauthorization Claim asks for in one jurisdiction (`claim` in
/// `mappings/<j>/parameters.json`): the funding model of that country.
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimProduct {
    /// Code system of the product or service.
    pub product_system: String,
    /// Code.
    pub product_code: String,
    /// Display.
    pub product_display: String,
    /// `units` (requested units) or `days` (stay days over the requested period).
    pub quantity: String,
    /// Why this is the product, for the insurer's reader.
    pub note: String,
}

#[derive(Deserialize)]
struct JurisdictionsFile {
    profile_prefixes: BTreeMap<Jurisdiction, Vec<String>>,
}

impl Mappings {
    /// The folder used when none is configured: `SOCIOGATE_MAPPINGS`, else `./mappings`, else
    /// the source tree's copy (for `cargo run` and tests).
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("SOCIOGATE_MAPPINGS") {
            return PathBuf::from(dir);
        }
        let local = PathBuf::from("mappings");
        if local.join("common").is_dir() {
            return local;
        }
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings"))
    }

    /// Loads and validates every file under `root`.
    pub fn load(root: &Path) -> Result<Mappings, MappingsError> {
        let mut concept_maps = HashMap::new();
        let mut identifier_systems = IdentifierSystems::default();
        let mut rules = RuleCatalogue::default();
        let mut parameters = BTreeMap::new();
        let mut profile_prefixes = Vec::new();
        let mut non_disclosure = NonDisclosure::default();
        let mut claim_products = BTreeMap::new();
        let mut code_systems = CodeSystems::default();

        let mut dirs: Vec<PathBuf> = read_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
        dirs.sort();
        for dir in dirs {
            let folder = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let mut files = read_dir(&dir)?;
            files.sort();
            for path in files {
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !name.ends_with(".json") {
                    continue;
                }
                let bytes = std::fs::read(&path).map_err(|source| MappingsError::Read {
                    path: path.clone(),
                    source,
                })?;
                let parse_err = |source| MappingsError::Parse {
                    path: path.clone(),
                    source,
                };
                if name.starts_with("conceptmap-") {
                    let map: ConceptMap = serde_json::from_slice(&bytes).map_err(parse_err)?;
                    let index = ConceptMapIndex::from_fhir(&map);
                    let id = map.id.clone().ok_or_else(|| {
                        MappingsError::Invalid(format!("{} has no id", path.display()))
                    })?;
                    concept_maps
                        .entry(id)
                        .and_modify(|existing: &mut ConceptMapIndex| existing.merge(&index))
                        .or_insert(index);
                } else if name == "identifier-systems.json" {
                    let file: IdentifierSystemsFile =
                        serde_json::from_slice(&bytes).map_err(parse_err)?;
                    identifier_systems.add(file.systems);
                } else if name == "rules.json" {
                    let file: RulesFile = serde_json::from_slice(&bytes).map_err(parse_err)?;
                    rules.add(file.rules)?;
                } else if name == "jurisdictions.json" {
                    let file: JurisdictionsFile =
                        serde_json::from_slice(&bytes).map_err(parse_err)?;
                    for (j, prefixes) in file.profile_prefixes {
                        profile_prefixes.extend(prefixes.into_iter().map(|p| (p, j)));
                    }
                } else if name == "code-systems.json" {
                    let file: CodeSystemsFile =
                        serde_json::from_slice(&bytes).map_err(parse_err)?;
                    for entry in file.systems {
                        code_systems
                            .by_oid
                            .insert(entry.oid, (entry.uri, entry.version));
                    }
                    for entry in file.names {
                        code_systems
                            .by_name
                            .insert(name_key(&entry.name), entry.uri);
                    }
                } else if name == "non-disclosure.json" {
                    non_disclosure = serde_json::from_slice(&bytes).map_err(parse_err)?;
                } else if name == "parameters.json" {
                    let value: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(parse_err)?;
                    let jurisdiction = Jurisdiction::from_code(&folder).ok_or_else(|| {
                        MappingsError::Invalid(format!(
                            "{}: parameters belong in a jurisdiction folder (de, nl, fi)",
                            path.display()
                        ))
                    })?;
                    if let Some(claim) = value.get("claim") {
                        let product = ClaimProduct::deserialize(claim).map_err(parse_err)?;
                        claim_products.insert(jurisdiction, product);
                    }
                    parameters.insert(jurisdiction, value);
                }
            }
        }
        let mappings = Mappings {
            root: root.to_owned(),
            concept_maps,
            identifier_systems,
            rules,
            parameters,
            profile_prefixes,
            non_disclosure,
            claim_products,
            code_systems,
        };
        mappings.validate()?;
        Ok(mappings)
    }

    fn validate(&self) -> Result<(), MappingsError> {
        let mut problems = Vec::new();
        for code in crate::map::RULES
            .iter()
            .chain(crate::decode::RULES)
            .chain(crate::check::de::RULES)
            .chain(crate::check::de::sessions::RULES)
            .chain(crate::pipeline::RULES)
            .chain(crate::pipeline::billing::RULES)
            .chain(crate::check::nl::RULES)
            .chain(crate::check::fi::RULES)
        {
            if self.rules.get(code).is_none() {
                problems.push(format!("rule {code} has no entry in any rules.json"));
            }
        }
        for rule in self.rules.iter() {
            for lang in LANGUAGES {
                if !rule.message.contains_key(*lang) {
                    problems.push(format!("rule {} has no message in {lang}", rule.code));
                }
            }
        }
        for id in crate::map::CONCEPT_MAPS {
            if !self.concept_maps.contains_key(*id) {
                problems.push(format!("ConceptMap {id} is missing"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(MappingsError::Invalid(problems.join("; ")))
        }
    }

    /// The folder these mappings were loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Translates `(system, code)` through the ConceptMap with id `map`. A code of the map's
    /// target system itself translates to itself.
    pub fn translate(&self, map: &str, system: Option<&str>, code: &str) -> Option<String> {
        let index = self.concept_maps.get(map)?;
        let system = system.unwrap_or_default();
        if system == index.target_uri {
            return Some(code.to_owned()).filter(|c| !c.is_empty());
        }
        index.entries.get(system)?.get(code).cloned()
    }

    /// The target system of ConceptMap `map`.
    pub fn target_system(&self, map: &str) -> Option<&str> {
        self.concept_maps.get(map).map(|m| m.target_uri.as_str())
    }

    /// Code systems by OID and name (for CDA).
    pub fn code_systems(&self) -> &CodeSystems {
        &self.code_systems
    }

    /// Identifier systems.
    pub fn identifier_systems(&self) -> &IdentifierSystems {
        &self.identifier_systems
    }

    /// The rule catalogue.
    pub fn rules(&self) -> &RuleCatalogue {
        &self.rules
    }

    /// The jurisdiction a profile URL points to.
    pub fn jurisdiction_of_profile(&self, profile: &str) -> Option<Jurisdiction> {
        self.profile_prefixes
            .iter()
            .find(|(prefix, _)| profile.starts_with(prefix.as_str()))
            .map(|(_, j)| *j)
    }

    /// What the insurer's Claim asks for in `jurisdiction`.
    pub fn claim_product(&self, jurisdiction: Jurisdiction) -> Option<&ClaimProduct> {
        self.claim_products.get(&jurisdiction)
    }

    /// What a non-disclosure label withholds.
    pub fn non_disclosure(&self) -> &NonDisclosure {
        &self.non_disclosure
    }

    /// Raw rule parameters of `jurisdiction` (`mappings/<j>/parameters.json`).
    pub fn parameters(&self, jurisdiction: Jurisdiction) -> Option<&serde_json::Value> {
        self.parameters.get(&jurisdiction)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, MappingsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MappingsError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MappingsError::Read {
            path: dir.to_owned(),
            source,
        })?;
        out.push(entry.path());
    }
    Ok(out)
}

/// One ConceptMap, indexed by `(source system, source code)`.
#[derive(Debug, Default)]
struct ConceptMapIndex {
    target_uri: String,
    /// Source system -> source code -> target code (looked up by `&str`, no allocation).
    entries: HashMap<String, HashMap<String, String>>,
}

impl ConceptMapIndex {
    fn from_fhir(map: &ConceptMap) -> Self {
        use fhir_sdk::r4b::resources::ConceptMapTarget;
        let target_uri = match &map.target {
            Some(ConceptMapTarget::Uri(uri)) | Some(ConceptMapTarget::Canonical(uri)) => {
                uri.clone()
            }
            _ => String::new(),
        };
        let mut entries = HashMap::new();
        for group in map.group.iter().flatten() {
            let source = group.source.clone().unwrap_or_default();
            for element in group.element.iter().flatten() {
                let Some(code) = &element.code else { continue };
                // The first mapped target wins; unmatched/disjoint targets are not translations.
                let target = element.target.iter().flatten().find(|t| {
                    !matches!(
                        t.equivalence,
                        fhir_sdk::r4b::codes::ConceptMapEquivalence::Unmatched
                            | fhir_sdk::r4b::codes::ConceptMapEquivalence::Disjoint
                    )
                });
                if let Some(target_code) = target.and_then(|t| t.code.clone()) {
                    entries
                        .entry(source.clone())
                        .or_insert_with(HashMap::new)
                        .insert(code.clone(), target_code);
                }
            }
        }
        ConceptMapIndex {
            target_uri,
            entries,
        }
    }

    fn merge(&mut self, other: &ConceptMapIndex) {
        for (system, codes) in &other.entries {
            let mine = self.entries.entry(system.clone()).or_default();
            for (code, target) in codes {
                mine.insert(code.clone(), target.clone());
            }
        }
    }
}

#[derive(Deserialize)]
struct IdentifierSystemsFile {
    systems: Vec<IdentifierSystem>,
}

/// One recognised identifier system.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentifierSystem {
    /// Kind of identifier.
    pub kind: IdentifierKind,
    /// Jurisdiction the identifier points to.
    pub jurisdiction: Jurisdiction,
    /// Canonical system URI.
    pub system: String,
    /// OID, when one is registered.
    #[serde(default)]
    pub oid: Option<String>,
    /// Older or alternative spellings accepted on input.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Identifier systems by every accepted spelling.
#[derive(Debug, Default)]
pub struct IdentifierSystems {
    by_uri: HashMap<String, IdentifierSystem>,
}

impl IdentifierSystems {
    fn add(&mut self, systems: Vec<IdentifierSystem>) {
        for system in systems {
            for alias in &system.aliases {
                self.by_uri.insert(alias.clone(), system.clone());
            }
            if let Some(oid) = &system.oid {
                self.by_uri.insert(oid.clone(), system.clone());
                self.by_uri.insert(format!("urn:oid:{oid}"), system.clone());
            }
            self.by_uri.insert(system.system.clone(), system);
        }
    }

    /// Looks a system up by any accepted spelling (URI, alias, OID or `urn:oid:`).
    pub fn lookup(&self, uri: &str) -> Option<&IdentifierSystem> {
        self.by_uri.get(uri.trim())
    }

    /// The canonical system for `kind`.
    pub fn canonical(&self, kind: IdentifierKind) -> Option<&str> {
        self.by_uri
            .values()
            .find(|s| s.kind == kind)
            .map(|s| s.system.as_str())
    }
}

#[derive(Deserialize)]
struct RulesFile {
    rules: Vec<RuleDef>,
}

/// One rule of the catalogue.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleDef {
    /// Stable code, e.g. `DE-DX-05`.
    pub code: String,
    /// Default severity.
    pub severity: Severity,
    /// FHIR IssueType code.
    #[serde(rename = "type")]
    pub issue_type: String,
    /// FHIRPath location in the inbound profile.
    pub location: String,
    /// Message template per language; `{detail}`, `{limit}` and `{code}` are filled in.
    pub message: BTreeMap<String, String>,
}

/// The rule catalogue, in file order.
#[derive(Debug, Default)]
pub struct RuleCatalogue {
    rules: Vec<RuleDef>,
    by_code: HashMap<String, usize>,
}

impl RuleCatalogue {
    fn add(&mut self, rules: Vec<RuleDef>) -> Result<(), MappingsError> {
        for rule in rules {
            if self.by_code.contains_key(&rule.code) {
                return Err(MappingsError::Invalid(format!(
                    "rule {} is defined twice",
                    rule.code
                )));
            }
            self.by_code.insert(rule.code.clone(), self.rules.len());
            self.rules.push(rule);
        }
        Ok(())
    }

    /// The rule with `code`.
    pub fn get(&self, code: &str) -> Option<&RuleDef> {
        self.by_code.get(code).map(|&i| &self.rules[i])
    }

    /// All rules in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = &RuleDef> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mappings() -> Mappings {
        match Mappings::load(&Mappings::default_dir()) {
            Ok(m) => m,
            Err(e) => panic!("mappings must load: {e:#?}"),
        }
    }

    #[test]
    fn old_and_new_kvid_spellings_normalise_to_one_system() {
        let m = mappings();
        let old = m
            .identifier_systems()
            .lookup("http://fhir.de/NamingSystem/gkv/kvid-10");
        let oid = m.identifier_systems().lookup("urn:oid:1.2.276.0.76.4.8");
        assert_eq!(
            old.map(|s| s.system.as_str()),
            Some("http://fhir.de/sid/gkv/kvid-10")
        );
        assert_eq!(oid.map(|s| s.kind), Some(IdentifierKind::Kvid10));
    }

    #[test]
    fn concept_maps_translate_source_codes_and_accept_target_codes() {
        let m = mappings();
        assert_eq!(
            m.translate(
                "setting",
                Some("http://terminology.hl7.org/CodeSystem/v3-ActCode"),
                "HH"
            ),
            Some("home".to_owned())
        );
        assert_eq!(
            m.translate(
                "setting",
                Some("https://sociogate.org/fhir/CodeSystem/setting"),
                "group-room"
            ),
            Some("group-room".to_owned())
        );
        assert_eq!(m.translate("setting", Some("urn:other"), "HH"), None);
        assert_eq!(
            m.translate(
                "certainty",
                Some("https://fhir.kbv.de/CodeSystem/KBV_CS_SFHIR_ICD_DIAGNOSESICHERHEIT"),
                "V"
            ),
            Some("suspected".to_owned())
        );
    }

    #[test]
    fn every_rule_has_every_language() {
        let m = mappings();
        assert!(m.rules().iter().count() > 50);
        for rule in m.rules().iter() {
            for lang in LANGUAGES {
                assert!(
                    rule.message.contains_key(*lang),
                    "{} lacks {lang}",
                    rule.code
                );
            }
        }
    }
}
