//! FHIR JSON (a `serde_json::Value`) -> FHIR R4 XML, for subscribers asking for
//! `application/fhir+xml`. The inverse of `decode::fhir_xml`, with the same generated element
//! metadata: elements are written in definition order, `_name` objects become the `id` attribute
//! and `extension` children of their primitive, nested resources are wrapped in their element,
//! and the narrative `div` is written as the XHTML it holds (after a well-formedness check).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::decode::Limits;
use crate::decode::fhir_xml::{
    Ctx, Elem, ElemType, FHIR_NS, Kind, Metadata, XHTML_NS, metadata, xhtml,
};
use crate::decode::xml::{Node, Reader};

/// Why a value cannot be written as FHIR XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The value (or a nested resource) is not an object with a known R4 `resourceType`.
    #[error("not a FHIR R4 resource: {0}")]
    NotAResource(String),
    /// A JSON property that is no element of its FHIR type.
    #[error("unknown element {0}")]
    UnknownElement(String),
    /// A value of the wrong JSON shape or content for its element.
    #[error("invalid value at {path}: {message}")]
    InvalidValue {
        /// Element path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The generated element metadata could not be loaded.
    #[error("the FHIR element metadata is unusable: {0}")]
    Metadata(String),
}

/// Writes a FHIR resource in its JSON shape as FHIR R4 XML (UTF-8, with an XML declaration).
pub fn to_fhir_xml(value: &Value) -> Result<String, EncodeError> {
    let meta = metadata().map_err(|e| EncodeError::Metadata(e.to_string()))?;
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let mut writer = Writer {
        meta,
        out: &mut out,
        buf: String::new(),
        depth: 0,
    };
    writer.resource(value, true)?;
    Ok(out)
}

/// Deepest element nesting written (the writer recurses once per level; a `Value` parsed by
/// serde_json nests at most 128 levels, one built in code is held to this).
const MAX_DEPTH: usize = 256;

struct Writer<'o> {
    meta: &'static Metadata,
    out: &'o mut String,
    /// Reused for metadata look-ups.
    buf: String,
    /// Current element nesting.
    depth: usize,
}

/// One element to write: its definition and the JSON value(s) for it.
struct Field<'v> {
    name: &'v str,
    path: &'static str,
    elem: &'static Elem,
    value: Option<&'v Value>,
    /// The `_name` counterpart of a primitive.
    meta: Option<&'v Value>,
}

impl Writer<'_> {
    fn resource(&mut self, value: &Value, root: bool) -> Result<(), EncodeError> {
        let Some(object) = value.as_object() else {
            return Err(EncodeError::NotAResource(
                "the value is not a JSON object".to_owned(),
            ));
        };
        let Some(name) = object.get("resourceType").and_then(Value::as_str) else {
            return Err(EncodeError::NotAResource(
                "resourceType is missing".to_owned(),
            ));
        };
        let Some((path, ty)) = self.meta.resource(name) else {
            return Err(EncodeError::NotAResource(format!(
                "{name} is not a FHIR R4 resource type"
            )));
        };
        let ctx = Ctx { ty, path };
        let fields = object
            .iter()
            .filter(|(k, _)| k.as_str() != "resourceType")
            .map(|(k, v)| (k.as_str(), v));
        let namespace = root.then_some(FHIR_NS);
        self.element(name, ctx, fields, namespace, None)
    }

    /// Writes `<name ...>children</name>` for the JSON properties `fields` in context `ctx`.
    /// `value_kind` overrides the kind of a primitive's `value` attribute (the definitions declare
    /// the `value` of derived primitives such as positiveInt as a string; the caller has already
    /// written it in its lexical form).
    fn element<'v>(
        &mut self,
        name: &str,
        ctx: Ctx<'static>,
        fields: impl Iterator<Item = (&'v str, &'v Value)>,
        namespace: Option<&str>,
        value_kind: Option<Kind>,
    ) -> Result<(), EncodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(invalid(ctx.path, "the resource nests too deeply"));
        }
        self.depth += 1;
        let written = self.element_at_depth(name, ctx, fields, namespace, value_kind);
        self.depth -= 1;
        written
    }

    fn element_at_depth<'v>(
        &mut self,
        name: &str,
        ctx: Ctx<'static>,
        fields: impl Iterator<Item = (&'v str, &'v Value)>,
        namespace: Option<&str>,
        value_kind: Option<Kind>,
    ) -> Result<(), EncodeError> {
        let mut grouped: Vec<Field<'v>> = Vec::new();
        for (key, value) in fields {
            let (base, underscore) = match key.strip_prefix('_') {
                Some(base) => (base, true),
                None => (key, false),
            };
            let Some((path, elem)) = ctx.child(base, &mut self.buf) else {
                return Err(EncodeError::UnknownElement(format!("{}.{base}", ctx.path)));
            };
            let i = match grouped.iter().position(|f| f.name == base) {
                Some(i) => i,
                None => {
                    grouped.push(Field {
                        name: base,
                        path,
                        elem,
                        value: None,
                        meta: None,
                    });
                    grouped.len() - 1
                }
            };
            if underscore {
                if !matches!(elem.ty, ElemType::Primitive { .. }) {
                    return Err(invalid(path, "only primitives have a _name counterpart"));
                }
                grouped[i].meta = Some(value);
            } else {
                grouped[i].value = Some(value);
            }
        }
        grouped.sort_by_key(|f| f.elem.n);

        self.out.push('<');
        self.out.push_str(name);
        if let Some(ns) = namespace {
            let _ = write!(self.out, " xmlns=\"{ns}\"");
        }
        for field in grouped.iter().filter(|f| f.elem.attr) {
            let Some(value) = field.value else {
                return Err(invalid(
                    field.path,
                    "an attribute cannot carry id or extensions",
                ));
            };
            let kind = match value_kind {
                Some(kind) if field.name == "value" => kind,
                _ => kind_of(field.elem),
            };
            let text = scalar(value, kind, field.path)?;
            let _ = write!(
                self.out,
                " {}=\"{}\"",
                field.name,
                attr_text(&text, field.path)?
            );
        }
        let children: Vec<&Field<'v>> = grouped.iter().filter(|f| !f.elem.attr).collect();
        if children.is_empty() {
            self.out.push_str("/>");
            return Ok(());
        }
        self.out.push('>');
        for field in children {
            self.child(ctx, field)?;
        }
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        Ok(())
    }

    /// Writes every occurrence of one child element.
    fn child(&mut self, ctx: Ctx<'static>, field: &Field<'_>) -> Result<(), EncodeError> {
        let (elem, path) = (field.elem, field.path);
        if let ElemType::Primitive { name, kind } = &elem.ty {
            let Some((type_path, type_def)) = self.meta.ty(name) else {
                return Err(EncodeError::Metadata(format!("type {name} is missing")));
            };
            let prim_ctx = Ctx {
                ty: type_def,
                path: type_path,
            };
            let values = items(field.value, elem.repeats, path)?;
            let metas = items(field.meta, elem.repeats, path)?;
            if field.value.is_some() && field.meta.is_some() && values.len() != metas.len() {
                return Err(invalid(path, "the value and _name arrays differ in length"));
            }
            for i in 0..values.len().max(metas.len()) {
                let value = values.get(i).copied().filter(|v| !v.is_null());
                let extra = match metas.get(i).copied().filter(|v| !v.is_null()) {
                    None => None,
                    Some(Value::Object(m)) => Some(m),
                    Some(_) => return Err(invalid(path, "_name must be an object")),
                };
                if value.is_none() && extra.is_none() {
                    continue;
                }
                if extra.is_some_and(|m| m.contains_key("value")) {
                    return Err(invalid(path, "_name cannot hold a value"));
                }
                // Checked against the primitive's kind here, so an error names the element.
                let lexical = match value {
                    Some(v) => Some(Value::String(scalar(v, *kind, path)?)),
                    None => None,
                };
                let fields = extra
                    .into_iter()
                    .flat_map(Map::iter)
                    .map(|(k, v)| (k.as_str(), v))
                    .chain(lexical.as_ref().map(|v| ("value", v)));
                self.element(field.name, prim_ctx, fields, None, Some(Kind::String))?;
            }
            return Ok(());
        }
        if field.meta.is_some() {
            return Err(invalid(path, "only primitives have a _name counterpart"));
        }
        for item in items(field.value, elem.repeats, path)? {
            match &elem.ty {
                ElemType::Resource => {
                    let _ = write!(self.out, "<{}>", field.name);
                    self.resource(item, false)?;
                    let _ = write!(self.out, "</{}>", field.name);
                }
                ElemType::Xhtml => {
                    let Some(div) = item.as_str() else {
                        return Err(invalid(path, "the narrative div must be a string"));
                    };
                    let div = xhtml_div(div, path)?;
                    self.out.push_str(&div);
                }
                _ => {
                    let Some(object) = item.as_object() else {
                        return Err(invalid(path, "expected a JSON object"));
                    };
                    let Some(child_ctx) = ctx.enter(self.meta, path, elem) else {
                        return Err(EncodeError::Metadata(format!(
                            "{path}: its type is missing"
                        )));
                    };
                    let fields = object.iter().map(|(k, v)| (k.as_str(), v));
                    self.element(field.name, child_ctx, fields, None, None)?;
                }
            }
        }
        Ok(())
    }
}

fn invalid(path: &str, message: &str) -> EncodeError {
    EncodeError::InvalidValue {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// The JSON kind of an attribute element (`id`, `url`, primitive `value` after conversion).
fn kind_of(elem: &Elem) -> Kind {
    match &elem.ty {
        ElemType::Primitive { kind, .. } => *kind,
        _ => Kind::String,
    }
}

/// The occurrences of an element: an array for a repeating one, else the one value.
fn items<'v>(
    value: Option<&'v Value>,
    repeats: bool,
    path: &str,
) -> Result<Vec<&'v Value>, EncodeError> {
    match (value, repeats) {
        (None, _) => Ok(Vec::new()),
        (Some(Value::Array(items)), true) => Ok(items.iter().collect()),
        (Some(_), true) => Err(invalid(path, "a repeating element must be a JSON array")),
        (Some(Value::Array(_)), false) => Err(invalid(path, "a single element cannot be an array")),
        (Some(v), false) => Ok(vec![v]),
    }
}

/// The lexical form of a primitive, checked against its JSON kind.
fn scalar(value: &Value, kind: Kind, path: &str) -> Result<String, EncodeError> {
    match (kind, value) {
        (Kind::Boolean, Value::Bool(b)) => Ok(b.to_string()),
        (Kind::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        (Kind::Decimal, Value::Number(n)) => Ok(n.to_string()),
        (Kind::String, Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid(path, &format!("{value} is not a valid {kind:?}"))),
    }
}

/// Escapes an attribute value; characters XML 1.0 cannot carry at all are an error.
fn attr_text<'a>(text: &'a str, path: &str) -> Result<std::borrow::Cow<'a, str>, EncodeError> {
    if let Some(c) = text.chars().find(|c| {
        (*c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    }) {
        return Err(invalid(
            path,
            &format!("character U+{:04X} cannot be written in XML 1.0", c as u32),
        ));
    }
    Ok(crate::decode::fhir_xml::escape_attr(text))
}

/// The narrative as XML to embed: one well-formed XHTML `div`, parsed with the gateway's XML
/// safety rules and written again, so that what JSON allows but XML would change (a line break
/// inside an attribute value) is written as a reference.
fn xhtml_div(div: &str, path: &str) -> Result<String, EncodeError> {
    let bad = |m: String| invalid(path, &m);
    let limits = Limits::default();
    let mut reader = Reader::new(div, &limits);
    let element = match reader.read().map_err(|e| bad(e.to_string()))? {
        Node::Start(element) => element,
        _ => return Err(bad("the narrative is not an XHTML div".to_owned())),
    };
    let ns = element.ns.map_or("", |id| reader.namespace(id));
    if element.local != "div" || ns != XHTML_NS {
        return Err(bad(format!(
            "the narrative must be a <div xmlns=\"{XHTML_NS}\">"
        )));
    }
    let written = xhtml(&mut reader, &element).map_err(|e| bad(e.to_string()))?;
    match reader.read().map_err(|e| bad(e.to_string()))? {
        Node::Eof => Ok(written),
        _ => Err(bad("content after the narrative div".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elements_are_written_in_definition_order_with_attributes_and_extensions() {
        let patient = json!({
            "resourceType": "Patient",
            "birthDate": "1970-01-01",
            "_birthDate": {"extension": [{"url": "http://example.org/time", "valueTime": "08:00:00"}]},
            "name": [{"given": ["Anna", null], "_given": [null, {"id": "g2"}], "family": "Muster"}],
            "id": "p1",
            "active": true,
            "multipleBirthInteger": 2,
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p title=\"a\nb\">x &amp; y</p></div>"}
        });
        assert_eq!(
            to_fhir_xml(&patient).ok().as_deref(),
            Some(concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http://hl7.org/fhir">"#,
                r#"<id value="p1"/><text><status value="generated"/>"#,
                r#"<div xmlns="http://www.w3.org/1999/xhtml"><p title="a b">x &amp; y</p></div></text>"#,
                r#"<active value="true"/><name><family value="Muster"/><given value="Anna"/><given id="g2"/></name>"#,
                r#"<birthDate value="1970-01-01"><extension url="http://example.org/time"><valueTime value="08:00:00"/></extension></birthDate>"#,
                r#"<multipleBirthInteger value="2"/></Patient>"#
            ))
        );
    }

    #[test]
    fn what_fhir_xml_cannot_say_is_an_error() {
        let cases = [
            (
                json!({"resourceType": "Patient", "foo": 1}),
                "unknown element Patient.foo",
            ),
            (json!({"resourceType": "Nope"}), "not a FHIR R4 resource"),
            (json!({"id": "x"}), "resourceType is missing"),
            (
                json!({"resourceType": "Patient", "active": "yes"}),
                "Patient.active",
            ),
            (
                json!({"resourceType": "Patient", "name": {"family": "x"}}),
                "JSON array",
            ),
            (
                json!({"resourceType": "Patient", "id": "a\u{1}b"}),
                "U+0001",
            ),
            (
                json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"}}),
                "narrative must be",
            ),
        ];
        for (value, expected) in cases {
            let result = to_fhir_xml(&value);
            assert!(
                matches!(&result, Err(e) if e.to_string().contains(expected)),
                "{value}: {result:?}"
            );
        }
    }

    #[test]
    fn nested_resources_are_wrapped() {
        let bundle = json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p"}}]});
        assert_eq!(
            to_fhir_xml(&bundle).ok().as_deref(),
            Some(concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Bundle xmlns="http://hl7.org/fhir">"#,
                r#"<type value="collection"/><entry><fullUrl value="urn:uuid:1"/>"#,
                r#"<resource><Patient><id value="p"/></Patient></resource></entry></Bundle>"#
            ))
        );
    }
}
