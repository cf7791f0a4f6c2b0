//! HL7 CDA R2: reads a `ClinicalDocument` into a small read-only element tree.
//!
//! The text goes through the same safety layer as FHIR XML ([`super::xml::Reader`]: no DTDs, no
//! entities, bounded depth and attributes), then the structure is validated against the subset
//! schema in `schemas/cda-r2-subset.xsd` ([`super::cda_schema`]). Mapping into the canonical
//! referral happens in `map::cda`; this module knows no sociotherapy.

use std::borrow::Cow;

use super::xml::{self, Node, Reader, XML_SPACE};
use super::{DecodeError, Limits};

/// The CDA R2 namespace.
pub const HL7_NS: &str = "urn:hl7-org:v3";
/// The XML Schema instance namespace (for `xsi:type`).
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A decoded CDA R2 document: its elements in document order.
#[derive(Debug)]
pub struct CdaDocument {
    elements: Vec<ElementData>,
}

#[derive(Debug)]
struct ElementData {
    /// Local name.
    local: String,
    /// In the HL7 v3 namespace (elements of other namespaces, e.g. `sdtc:`, are kept but never
    /// matched by name lookups).
    hl7: bool,
    /// Attributes by local name; `xsi:type` is stored as `xsi:type`.
    attrs: Vec<(String, String)>,
    children: Vec<usize>,
    /// Character data inside this element before its first child element.
    text: String,
    /// Character data after this element's end tag, up to the next sibling (as ElementTree's
    /// `tail`): keeps mixed content in document order.
    tail: String,
}

/// One element of a [`CdaDocument`].
#[derive(Debug, Clone, Copy)]
pub struct El<'d> {
    doc: &'d CdaDocument,
    at: usize,
}

impl CdaDocument {
    /// The `ClinicalDocument` element.
    pub fn root(&self) -> El<'_> {
        El { doc: self, at: 0 }
    }

    /// Number of elements (for limits and statistics).
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the document has no elements (never true for a decoded document).
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

impl<'d> El<'d> {
    fn data(&self) -> &'d ElementData {
        &self.doc.elements[self.at]
    }

    /// The element's local name.
    pub fn name(&self) -> &'d str {
        &self.data().local
    }

    /// An attribute by local name (`xsi:type` for the instance type).
    pub fn attr(&self, name: &str) -> Option<&'d str> {
        self.data()
            .attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// HL7 child elements named `name`.
    pub fn children(&self, name: &'d str) -> impl Iterator<Item = El<'d>> + 'd {
        let doc = self.doc;
        self.data()
            .children
            .iter()
            .map(move |&at| El { doc, at })
            .filter(move |e| e.data().hl7 && e.name() == name)
    }

    /// All HL7 child elements.
    pub fn elements(&self) -> impl Iterator<Item = El<'d>> + 'd {
        let doc = self.doc;
        self.data()
            .children
            .iter()
            .map(move |&at| El { doc, at })
            .filter(|e| e.data().hl7)
    }

    /// The first HL7 child element named `name`.
    pub fn child(&self, name: &'d str) -> Option<El<'d>> {
        self.children(name).next()
    }

    /// Follows a path of child names (first match at each step).
    pub fn path(&self, names: &[&'d str]) -> Option<El<'d>> {
        names.iter().try_fold(*self, |el, name| el.child(name))
    }

    /// Whether the element carries a `nullFlavor` (its value is unknown or withheld).
    pub fn is_null(&self) -> bool {
        self.attr("nullFlavor").is_some()
    }

    /// The element's own character data, trimmed; `None` when empty.
    pub fn text(&self) -> Option<&'d str> {
        let t = self.data().text.trim_matches(XML_SPACE);
        (!t.is_empty()).then_some(t)
    }

    /// All character data in the element and its descendants, white space collapsed (for
    /// narrative and mixed content).
    pub fn all_text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn collect_text(&self, out: &mut String) {
        out.push_str(&self.data().text);
        for &child in &self.data().children {
            let child = El {
                doc: self.doc,
                at: child,
            };
            // Element boundaries separate words in narrative (`<td>a</td><td>b</td>`).
            out.push(' ');
            child.collect_text(out);
            out.push(' ');
            out.push_str(&child.data().tail);
        }
    }

    /// Every HL7 descendant named `name`, in document order.
    pub fn descendants(&self, name: &'d str) -> Vec<El<'d>> {
        self.descendants_where(|e| e.name() == name)
    }

    /// Every HL7 descendant that `keep` accepts, in document order.
    pub fn descendants_where(&self, keep: impl Fn(&El<'d>) -> bool) -> Vec<El<'d>> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = self.data().children.iter().rev().copied().collect();
        while let Some(at) = stack.pop() {
            let el = El { doc: self.doc, at };
            if el.data().hl7 && keep(&el) {
                out.push(el);
            }
            stack.extend(el.data().children.iter().rev().copied());
        }
        out
    }

    /// Whether a `templateId` child has this root.
    pub fn has_template(&self, root: &str) -> bool {
        self.children("templateId")
            .any(|t| t.attr("root") == Some(root))
    }
}

/// Decodes CDA R2 bytes: safety layer, element tree, subset schema.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<CdaDocument, DecodeError> {
    let text = xml::to_utf8(bytes)?;
    let document = read_tree(&text, limits)?;
    validate_structure(&text)?;
    Ok(document)
}

/// Validates against the accepted subset's schema; the violations become one decode error.
fn validate_structure(text: &str) -> Result<(), DecodeError> {
    super::cda_schema::validate(text).map_err(|violations| {
        let shown: Vec<String> = violations
            .iter()
            .take(3)
            .map(|v| match v.line {
                Some(line) => format!("line {line}: {}", v.message),
                None => v.message.clone(),
            })
            .collect();
        let more = violations.len().saturating_sub(shown.len());
        let mut detail = shown.join("; ");
        if more > 0 {
            detail.push_str(&format!(" (and {more} more)"));
        }
        DecodeError::NotCda(detail)
    })
}

/// Builds the element tree; the root must be `ClinicalDocument` in the HL7 v3 namespace.
fn read_tree(text: &str, limits: &Limits) -> Result<CdaDocument, DecodeError> {
    let mut reader = Reader::new(text, limits);
    let mut elements: Vec<ElementData> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    loop {
        match reader.read()? {
            Node::Start(element) => {
                let ns = element.ns.map(|id| reader.namespace(id));
                let hl7 = ns == Some(HL7_NS);
                if elements.is_empty() && !(hl7 && element.local == "ClinicalDocument") {
                    return Err(DecodeError::NotCda(format!(
                        "the root element is <{}> in namespace {}, not <ClinicalDocument> in {HL7_NS}",
                        element.name,
                        ns.unwrap_or("(none)")
                    )));
                }
                let attrs = element
                    .attrs
                    .iter()
                    .map(|a| {
                        let key = match a.ns.map(|id| reader.namespace(id)) {
                            Some(XSI_NS) => format!("xsi:{}", a.local),
                            _ => a.local.to_owned(),
                        };
                        (key, Cow::into_owned(a.value.clone()))
                    })
                    .collect();
                let at = elements.len();
                elements.push(ElementData {
                    local: element.local.to_owned(),
                    hl7,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                    tail: String::new(),
                });
                if let Some(&parent) = open.last() {
                    elements[parent].children.push(at);
                }
                if !element.empty {
                    open.push(at);
                }
            }
            Node::End => {
                open.pop();
            }
            Node::Text(t) => {
                if let Some(&current) = open.last() {
                    match elements[current].children.last() {
                        Some(&previous) => elements[previous].tail.push_str(&t),
                        None => elements[current].text.push_str(&t),
                    }
                }
            }
            Node::Eof => break,
        }
    }
    if elements.is_empty() {
        return Err(DecodeError::NotCda("no root element".to_owned()));
    }
    Ok(CdaDocument { elements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(xml: &str) -> Result<CdaDocument, DecodeError> {
        read_tree(xml, &Limits::default())
    }

    #[test]
    fn reads_elements_attributes_and_text() -> Result<(), DecodeError> {
        let doc = tree(
            r#"<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:sdtc="urn:hl7-org:sdtc">
              <id root="1.2.3" extension="A-1"/>
              <recordTarget><patientRole><patient><name><given>Eva</given><family>Muster &amp; Co</family></name>
              <sdtc:raceCode code="x"/></patient></patientRole></recordTarget>
              <component><structuredBody><component><section><text><paragraph>Ein <content>Satz</content>.</paragraph></text>
              <entry><observation><value xsi:type="CD" code="F20.0"/></observation></entry></section></component></structuredBody></component>
            </ClinicalDocument>"#,
        )?;
        let root = doc.root();
        assert_eq!(root.name(), "ClinicalDocument");
        assert_eq!(
            root.child("id").and_then(|i| i.attr("extension")),
            Some("A-1")
        );
        let name = root.path(&["recordTarget", "patientRole", "patient", "name"]);
        assert_eq!(
            name.and_then(|n| n.child("family")).and_then(|f| f.text()),
            Some("Muster & Co")
        );
        // Elements of other namespaces are not matched by HL7 names.
        let patient = root.path(&["recordTarget", "patientRole", "patient"]);
        assert!(patient.is_some_and(|p| p.child("raceCode").is_none()));
        let value = root.descendants("value");
        assert_eq!(value.len(), 1);
        assert_eq!(value[0].attr("xsi:type"), Some("CD"));
        let text = root.descendants("text");
        assert_eq!(text[0].all_text(), "Ein Satz .");
        Ok(())
    }

    #[test]
    fn refuses_other_roots() {
        let fhir = tree(r#"<Patient xmlns="http://hl7.org/fhir"/>"#);
        assert!(matches!(fhir, Err(DecodeError::NotCda(m)) if m.contains("<Patient>")));
        let no_ns = tree("<ClinicalDocument/>");
        assert!(matches!(no_ns, Err(DecodeError::NotCda(m)) if m.contains("(none)")));
    }

    #[test]
    fn refuses_dtds_like_every_xml_input() {
        let xxe = tree(
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><ClinicalDocument xmlns=\"urn:hl7-org:v3\">&e;</ClinicalDocument>",
        );
        assert!(matches!(xxe, Err(DecodeError::Unsupported(m)) if m.contains("DTD")));
    }
}
