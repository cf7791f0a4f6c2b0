//! FHIR R4 XML: a streaming conversion to the FHIR JSON shape, then the same typed parse as the
//! JSON path (fhir-sdk's R4B model).
//!
//! XML lacks what JSON says by syntax: which elements repeat (arrays), which primitives are
//! numbers or booleans, which `value[x]` names exist, where a `contentReference` points. That
//! comes from `schemas/fhir-r4-elements.json`, generated from the official FHIR 4.0.1
//! StructureDefinitions by `tools/gen-fhir-xml-metadata.py` (never a hand-written table).
//! The rules of https://hl7.org/fhir/R4/xml.html and json.html applied here:
//! - the root element names the resource (`resourceType`); `contained`, `Bundle.entry.resource`,
//!   `Parameters.parameter.resource` and `Bundle.entry.response.outcome` wrap a nested resource;
//! - a primitive's `value` attribute is the JSON value, typed by its FHIR type; its `id` attribute
//!   and `extension` children go to `_name` (in arrays aligned with `null`s);
//! - `id` of other elements and `url` of `extension` are attributes;
//! - the XHTML `div` of a narrative is kept as a string, serialised with its namespace;
//! - choice elements (`valueQuantity`) carry their JSON name already.

use std::fmt::Write as _;
use std::sync::OnceLock;

use foldhash::{HashMap, HashMapExt};

use fhir_sdk::r4b::resources::Resource;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::xml::{self, Element, Node, NsId, Reader, XML_SPACE};
use super::{DecodeError, Limits, fhir_json};

/// The FHIR namespace every FHIR element is in.
pub const FHIR_NS: &str = "http://hl7.org/fhir";
/// The XHTML namespace of narrative `div`s.
pub const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Generated data (see the module documentation); parsed once, on first use.
const METADATA_JSON: &str = include_str!("../../schemas/fhir-r4-elements.json");

/// The JSON kind of a primitive type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `true`/`false`.
    Boolean,
    /// A JSON integer (integer, positiveInt, unsignedInt).
    Integer,
    /// A JSON number kept in its lexical form as far as serde_json allows (decimal).
    Decimal,
    /// A JSON string (everything else).
    String,
}

/// What an element holds.
#[derive(Debug)]
pub(crate) enum ElemType {
    /// A primitive of the named type.
    Primitive {
        /// FHIR type name (`string`, `positiveInt`, ...).
        name: String,
        /// Its JSON kind.
        kind: Kind,
    },
    /// A complex datatype (its children are that type's elements).
    Complex(String),
    /// A BackboneElement/Element whose children are defined inline under the element's path.
    Inline,
    /// A nested resource, wrapped in one element naming its type.
    Resource,
    /// An XHTML narrative `div`.
    Xhtml,
    /// A `contentReference`: the children of the element at this path (same type).
    Ref(String),
}

/// One element definition.
#[derive(Debug)]
pub(crate) struct Elem {
    /// Definition order (XML writes children in this order).
    pub n: u32,
    /// Max cardinality above one: a JSON array.
    pub repeats: bool,
    /// Carried as an XML attribute (`id` of elements, `url` of extensions, primitive `value`).
    pub attr: bool,
    /// What it holds.
    pub ty: ElemType,
}

/// One resource or datatype.
#[derive(Debug)]
pub(crate) struct TypeDef {
    /// A resource type (may be the root of a document).
    pub resource: bool,
    /// Elements by full path (`Patient.contact.name`).
    pub elements: HashMap<String, Elem>,
}

/// The element metadata of FHIR R4.
#[derive(Debug)]
pub(crate) struct Metadata {
    types: HashMap<String, TypeDef>,
}

#[derive(Deserialize)]
struct RawMetadata {
    primitives: HashMap<String, String>,
    types: HashMap<String, RawType>,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    elements: HashMap<String, RawElem>,
}

#[derive(Deserialize)]
struct RawElem {
    n: u32,
    max: String,
    #[serde(default)]
    attr: bool,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

impl Metadata {
    fn parse(json: &str) -> Result<Metadata, String> {
        let raw: RawMetadata = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let kind_of = |name: &str| -> Option<Kind> {
            raw.primitives.get(name).map(|k| match k.as_str() {
                "boolean" => Kind::Boolean,
                "integer" => Kind::Integer,
                "decimal" => Kind::Decimal,
                _ => Kind::String,
            })
        };
        let mut types = HashMap::with_capacity(raw.types.len());
        for (name, t) in &raw.types {
            let mut elements = HashMap::with_capacity(t.elements.len());
            for (path, e) in &t.elements {
                let ty = match (&e.reference, e.ty.as_deref()) {
                    (Some(target), _) => ElemType::Ref(target.clone()),
                    (None, Some("xhtml")) => ElemType::Xhtml,
                    (None, Some("BackboneElement" | "Element")) => ElemType::Inline,
                    (None, Some(ty)) => match (kind_of(ty), raw.types.get(ty)) {
                        (Some(kind), _) => ElemType::Primitive {
                            name: ty.to_owned(),
                            kind,
                        },
                        (None, _) if ty == "Resource" => ElemType::Resource,
                        (None, Some(t)) if t.kind == "resource" => ElemType::Resource,
                        (None, Some(_)) => ElemType::Complex(ty.to_owned()),
                        (None, None) => return Err(format!("{path}: unknown type {ty}")),
                    },
                    (None, None) => return Err(format!("{path}: no type")),
                };
                let elem = Elem {
                    n: e.n,
                    repeats: e.max != "1",
                    attr: e.attr,
                    ty,
                };
                elements.insert(path.clone(), elem);
            }
            let def = TypeDef {
                resource: t.kind == "resource",
                elements,
            };
            types.insert(name.clone(), def);
        }
        Ok(Metadata { types })
    }

    /// A type by name.
    pub(crate) fn ty(&self, name: &str) -> Option<(&str, &TypeDef)> {
        self.types.get_key_value(name).map(|(k, v)| (k.as_str(), v))
    }

    /// A resource type by name.
    pub(crate) fn resource(&self, name: &str) -> Option<(&str, &TypeDef)> {
        self.ty(name).filter(|(_, t)| t.resource)
    }
}

/// The metadata, parsed on first use. An error means the checked-in file is broken (a unit test
/// parses it), reported per payload rather than as a panic.
pub(crate) fn metadata() -> Result<&'static Metadata, DecodeError> {
    static METADATA: OnceLock<Result<Metadata, String>> = OnceLock::new();
    METADATA
        .get_or_init(|| Metadata::parse(METADATA_JSON))
        .as_ref()
        .map_err(|e| {
            DecodeError::Unsupported(format!(
                "FHIR XML cannot be read: the element metadata is unusable ({e})"
            ))
        })
}

/// Where child elements are looked up: `{path}.{child}` in `ty`.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'m> {
    /// The type whose elements apply.
    pub ty: &'m TypeDef,
    /// The path of the element within it (the type name at its root).
    pub path: &'m str,
}

impl<'m> Ctx<'m> {
    /// The definition of child `name`, with its full path. `buf` avoids an allocation per call.
    pub(crate) fn child(&self, name: &str, buf: &mut String) -> Option<(&'m str, &'m Elem)> {
        buf.clear();
        buf.push_str(self.path);
        buf.push('.');
        buf.push_str(name);
        self.ty
            .elements
            .get_key_value(buf.as_str())
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The context for the children of `elem` (found at `path` in this context).
    pub(crate) fn enter(
        &self,
        meta: &'m Metadata,
        path: &'m str,
        elem: &'m Elem,
    ) -> Option<Ctx<'m>> {
        match &elem.ty {
            ElemType::Primitive { name, .. } | ElemType::Complex(name) => {
                meta.ty(name).map(|(path, ty)| Ctx { ty, path })
            }
            ElemType::Inline => Some(Ctx { ty: self.ty, path }),
            ElemType::Ref(target) => Some(Ctx {
                ty: self.ty,
                path: target.as_str(),
            }),
            ElemType::Resource | ElemType::Xhtml => None,
        }
    }
}

/// Decodes FHIR R4 XML into the typed model, and returns the FHIR JSON shape it went through
/// (what forwarding passes on: the typed model drops what it does not know).
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(Resource, Value), DecodeError> {
    let text = xml::to_utf8(bytes)?;
    let mut value = to_json(&text, limits)?;
    let resource = typed(&mut value, limits)?;
    Ok((resource, value))
}

/// Decodes FHIR R4 XML bytes into the FHIR JSON shape (before the typed parse, which drops
/// what the model does not know).
pub fn to_json_value(bytes: &[u8], limits: &Limits) -> Result<Value, DecodeError> {
    let text = xml::to_utf8(bytes)?;
    to_json(&text, limits)
}

/// The typed parse of the JSON path. On failure the JSON path's classification explains why
/// (FHIR version, R4-only types, the field fhir-sdk rejected); it runs on the error path only.
fn typed(value: &mut Value, limits: &Limits) -> Result<Resource, DecodeError> {
    if let Some(bundle) = bundle_by_entries(value) {
        return Ok(bundle);
    }
    match Resource::deserialize(&*value) {
        Ok(resource) => Ok(resource),
        Err(_) => {
            let bytes =
                serde_json::to_vec(value).map_err(|e| DecodeError::NotFhir(e.to_string()))?;
            // Each XML level is at most an object plus an array in JSON.
            let json_limits = Limits {
                max_bytes: usize::MAX,
                max_depth: limits.max_depth.saturating_mul(2).saturating_add(2),
            };
            fhir_json::decode(&bytes, &json_limits)
        }
    }
}

/// A Bundle read as the JSON path reads one: the Bundle with its entries' resources left out,
/// then each resource straight into its type, which spares serde's buffering of the
/// `Resource` enum for every entry. `value` is the same afterwards. `None` when anything is
/// unusual: the caller then takes the general path, which decides and explains.
fn bundle_by_entries(value: &mut Value) -> Option<Resource> {
    if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return None;
    }
    // Each resource is taken out of its entry (leaving `null` in its place, which the Bundle
    // reads as no resource) and put back below, whatever the outcome.
    let mut taken: Vec<Option<Value>> = value
        .get_mut("entry")?
        .as_array_mut()?
        .iter_mut()
        .map(|entry| entry.get_mut("resource").map(Value::take))
        .collect();
    // A large attachment is checked where it lies, as on the JSON path, and kept out of the
    // typed model, which would only decode the bytes to drop them again.
    let set_aside: Vec<Vec<Option<String>>> = taken
        .iter_mut()
        .map(|resource| match resource {
            Some(resource) => set_aside_attachments(resource),
            None => Vec::new(),
        })
        .collect();
    let read = (|| {
        let mut resources = Vec::with_capacity(taken.len());
        for resource in &taken {
            resources.push(match resource {
                Some(Value::Null) | None => None,
                Some(resource) => {
                    let name = resource.get("resourceType")?.as_str()?;
                    Some(fhir_json::resource_of_type(name, resource).ok()?)
                }
            });
        }
        let shell = fhir_sdk::r4b::resources::Bundle::deserialize(&*value).ok()?;
        fhir_json::with_entry_resources(shell, resources).map(Resource::Bundle)
    })();
    for (resource, originals) in taken.iter_mut().zip(set_aside) {
        if let Some(resource) = resource {
            restore_attachments(resource, originals);
        }
    }
    let entries = value.get_mut("entry").and_then(Value::as_array_mut);
    for (entry, resource) in entries.into_iter().flatten().zip(taken) {
        if let (Some(slot), Some(resource)) = (entry.get_mut("resource"), resource) {
            *slot = resource;
        }
    }
    read
}

/// Where a DocumentReference (`content[].attachment.data`) or a Binary (`data`) holds its
/// attachments, in a fixed order; nothing for other resources.
fn attachment_slots(resource: &mut Value) -> Vec<&mut Value> {
    let mut slots = Vec::new();
    let Value::Object(members) = resource else {
        return slots;
    };
    let attachments = matches!(
        members.get("resourceType").and_then(Value::as_str),
        Some("DocumentReference" | "Binary")
    );
    if !attachments {
        return slots;
    }
    for (key, member) in members.iter_mut() {
        match (key.as_str(), member) {
            ("data", data) => slots.push(data),
            ("content", Value::Array(contents)) => slots.extend(
                contents
                    .iter_mut()
                    .filter_map(|c| c.get_mut("attachment")?.get_mut("data")),
            ),
            _ => {}
        }
    }
    slots
}

/// Empties every large attachment of `resource` that is canonical base64 and returns the
/// texts (`None` where one was left in place), for [`restore_attachments`]. What is left is
/// exactly what the model would have rejected or has to strip, as on the JSON path.
fn set_aside_attachments(resource: &mut Value) -> Vec<Option<String>> {
    attachment_slots(resource)
        .into_iter()
        .map(|slot| match slot {
            Value::String(text)
                if text.len() >= fhir_json::ATTACHMENT_CHECK_MIN
                    && fhir_json::base64_canonical(text) =>
            {
                Some(std::mem::take(text))
            }
            _ => None,
        })
        .collect()
}

/// Puts back what [`set_aside_attachments`] took out of `resource`.
fn restore_attachments(resource: &mut Value, originals: Vec<Option<String>>) {
    for (slot, original) in attachment_slots(resource).into_iter().zip(originals) {
        if let (Value::String(text), Some(original)) = (slot, original) {
            *text = original;
        }
    }
}

/// Why a resource type is not read: the JSON path's classification of `{"resourceType": name}`
/// (another FHIR version, or not FHIR at all).
fn unknown_resource(name: &str) -> DecodeError {
    let probe = serde_json::json!({ "resourceType": name });
    match serde_json::to_vec(&probe) {
        Ok(bytes) => match fhir_json::decode(&bytes, &Limits::default()) {
            Err(DecodeError::NotFhir(_)) | Ok(_) => {
                DecodeError::NotFhir(format!("{name} is not a FHIR R4 resource type"))
            }
            Err(e) => e,
        },
        Err(e) => DecodeError::NotFhir(e.to_string()),
    }
}

/// A child's value as it is attached to its parent.
enum Child {
    /// An object, a nested resource or a narrative.
    Value(Value),
    /// A primitive: its value and its `_name` object (`id`, `extension`).
    Primitive(Option<Value>, Option<Map<String, Value>>),
}

/// An element being read.
struct ObjectFrame<'m> {
    /// Its JSON key in the parent.
    key: &'m str,
    /// Its definition (none for a resource).
    elem: Option<&'m Elem>,
    /// Where its children are looked up.
    ctx: Ctx<'m>,
    /// What has been read so far.
    map: Map<String, Value>,
    /// Keys of repeating primitives (arrays aligned with `_key`), tidied at the end.
    primitive_arrays: Vec<&'m str>,
    /// Those of them that have a `_key` array (an item had an `id` or extensions).
    underscored: Vec<&'m str>,
    /// `Some` for a primitive element.
    primitive: Option<Kind>,
    /// A primitive's `value` attribute, kept apart from `map` (which then holds only what goes
    /// to `_name`), so that most primitives never build a map.
    value: Option<Value>,
}

/// An element on the open-element stack.
enum Frame<'m> {
    /// A resource, a datatype, a backbone element or a primitive.
    Object(ObjectFrame<'m>),
    /// `contained`, `entry.resource`, ...: wraps one resource.
    Holder {
        key: &'m str,
        elem: &'m Elem,
        resource: Option<Value>,
    },
}

/// A FHIR structure error (not an XML syntax error) at a byte offset.
fn fhir_error(reader: &Reader<'_>, offset: usize, message: &str) -> DecodeError {
    DecodeError::NotFhir(reader.located(offset, message))
}

/// Converts decoded XML text to the FHIR JSON shape.
///
/// Elements the R4 definitions do not know (and elements outside the FHIR namespace) are skipped
/// with everything in them, as the typed JSON parse drops unknown properties: a payload reaches
/// the same typed resource in either format. Text outside the narrative is an error.
pub fn to_json(text: &str, limits: &Limits) -> Result<Value, DecodeError> {
    let meta = metadata()?;
    let mut reader = Reader::new(text, limits);
    let mut stack: Vec<Frame<'static>> = Vec::new();
    let mut buf = String::new();
    loop {
        match reader.read()? {
            Node::Start(element) => {
                let in_fhir = element.ns.is_some_and(|id| reader.namespace(id) == FHIR_NS);
                let empty = element.empty;
                let frame = match stack.last_mut() {
                    None | Some(Frame::Holder { .. }) => {
                        if let Some(Frame::Holder { key, resource, .. }) = stack.last()
                            && resource.is_some()
                        {
                            return Err(fhir_error(
                                &reader,
                                element.offset,
                                &format!("<{key}> holds more than one resource"),
                            ));
                        }
                        open_resource(meta, &reader, &element, in_fhir)?
                    }
                    Some(Frame::Object(parent)) => {
                        let known = parent.ctx.child(element.local, &mut buf);
                        let Some((path, elem)) = known.filter(|(_, e)| !e.attr) else {
                            skip(&mut reader, &element)?;
                            continue;
                        };
                        if matches!(elem.ty, ElemType::Xhtml) {
                            let div = xhtml(&mut reader, &element)?;
                            attach(parent, key_of(path), elem, Child::Value(Value::String(div)))
                                .map_err(|m| fhir_error(&reader, element.offset, &m))?;
                            continue;
                        }
                        if !in_fhir {
                            skip(&mut reader, &element)?;
                            continue;
                        }
                        open_element(meta, &reader, parent.ctx, path, elem, &element, &mut buf)?
                    }
                };
                stack.push(frame);
                if empty && let Some(done) = close(&mut stack, &reader, element.offset)? {
                    return finish(&mut reader, done);
                }
            }
            Node::End => {
                if let Some(done) = close(&mut stack, &reader, reader.offset())? {
                    return finish(&mut reader, done);
                }
            }
            Node::Text(t) => {
                if !t.trim_matches(XML_SPACE).is_empty() {
                    let name = match stack.last() {
                        Some(Frame::Object(f)) => f.ctx.path,
                        Some(Frame::Holder { key, .. }) => key,
                        None => "",
                    };
                    return Err(fhir_error(
                        &reader,
                        reader.offset(),
                        &format!(
                            "text is not allowed in FHIR element {name} (only in the narrative \
                             div): {:?}",
                            t.chars().take(40).collect::<String>()
                        ),
                    ));
                }
            }
            // The reader reports a document without a root element itself.
            Node::Eof => return Err(DecodeError::NotFhir("no FHIR resource found".to_owned())),
        }
    }
}

/// Reads to the end of the document after the root element (comments and white space only),
/// so that what follows the resource is checked like the rest.
fn finish(reader: &mut Reader<'_>, resource: Value) -> Result<Value, DecodeError> {
    match reader.read()? {
        Node::Eof => Ok(resource),
        _ => Err(reader.error_at(reader.offset(), "content after the root element")),
    }
}

/// Skips an element the definitions do not know, with everything in it (still read through the
/// safety layer).
fn skip(reader: &mut Reader<'_>, element: &Element<'_>) -> Result<(), DecodeError> {
    if element.empty {
        return Ok(());
    }
    let mut open = 1usize;
    while open > 0 {
        match reader.read()? {
            Node::Start(e) if !e.empty => open += 1,
            Node::End => open -= 1,
            Node::Eof => return Err(reader.error_at(reader.offset(), "unexpected end")),
            _ => {}
        }
    }
    Ok(())
}

/// The JSON key of an element at `path` (its last segment).
fn key_of(path: &str) -> &str {
    // A byte scan: `rsplit('.')` went through the general char searcher and was ~4 % of a
    // plain XML referral's pipeline (paths are a few dozen bytes).
    match path.bytes().rposition(|b| b == b'.') {
        Some(dot) => &path[dot + 1..],
        None => path,
    }
}

fn not_in_fhir_namespace(reader: &Reader<'_>, element: &Element<'_>) -> DecodeError {
    let ns = element.ns.map_or("no namespace", |id| reader.namespace(id));
    fhir_error(
        reader,
        element.offset,
        &format!(
            "element <{}> is in {ns}, not in the FHIR namespace {FHIR_NS}",
            element.name
        ),
    )
}

/// Opens a resource element (the root, or inside a holder).
fn open_resource(
    meta: &'static Metadata,
    reader: &Reader<'_>,
    element: &Element<'_>,
    in_fhir: bool,
) -> Result<Frame<'static>, DecodeError> {
    if !in_fhir {
        return Err(not_in_fhir_namespace(reader, element));
    }
    let Some((name, ty)) = meta.resource(element.local) else {
        return Err(unknown_resource(element.local));
    };
    let ctx = Ctx { ty, path: name };
    let mut map = Map::new();
    map.insert("resourceType".to_owned(), Value::String(name.to_owned()));
    let mut frame = ObjectFrame {
        key: name,
        elem: None,
        ctx,
        map,
        primitive_arrays: Vec::new(),
        underscored: Vec::new(),
        primitive: None,
        value: None,
    };
    let mut buf = String::new();
    attributes(&mut frame, reader, element, &mut buf)?;
    Ok(Frame::Object(frame))
}

/// Opens a child element of an object.
fn open_element(
    meta: &'static Metadata,
    reader: &Reader<'_>,
    parent: Ctx<'static>,
    path: &'static str,
    elem: &'static Elem,
    element: &Element<'_>,
    buf: &mut String,
) -> Result<Frame<'static>, DecodeError> {
    let key = key_of(path);
    if matches!(elem.ty, ElemType::Resource) {
        // A holder has no attributes of its own (its `id` is not used in FHIR JSON either).
        return Ok(Frame::Holder {
            key,
            elem,
            resource: None,
        });
    }
    let Some(ctx) = parent.enter(meta, path, elem) else {
        return Err(fhir_error(
            reader,
            element.offset,
            &format!("{path}: its type is missing from the metadata"),
        ));
    };
    let primitive = match &elem.ty {
        ElemType::Primitive { kind, .. } => Some(*kind),
        _ => None,
    };
    let mut frame = ObjectFrame {
        key,
        elem: Some(elem),
        ctx,
        map: Map::new(),
        primitive_arrays: Vec::new(),
        underscored: Vec::new(),
        primitive,
        value: None,
    };
    attributes(&mut frame, reader, element, buf)?;
    Ok(Frame::Object(frame))
}

/// Reads the attributes of an element into its frame: `value` of a primitive (typed by the
/// primitive's kind), `id`, `url`. Attributes in other namespaces (`xsi:schemaLocation`) and
/// attributes the definitions do not know are skipped, as unknown JSON properties are.
fn attributes(
    frame: &mut ObjectFrame<'static>,
    reader: &Reader<'_>,
    element: &Element<'_>,
    buf: &mut String,
) -> Result<(), DecodeError> {
    for attr in &element.attrs {
        if attr.ns.is_some() {
            continue;
        }
        let found = frame.ctx.child(attr.local, buf).filter(|(_, e)| e.attr);
        let Some((path, elem)) = found else {
            continue;
        };
        let kind = match (&elem.ty, frame.primitive) {
            // `positiveInt.value` is declared as a string in the definitions; the primitive's
            // own kind decides.
            (_, Some(kind)) if attr.local == "value" => kind,
            (ElemType::Primitive { kind, .. }, _) => *kind,
            _ => Kind::String,
        };
        let value = primitive_value(kind, &attr.value)
            .map_err(|m| fhir_error(reader, element.offset, &format!("{path}: {m}")))?;
        let key = key_of(path);
        if frame.primitive.is_some() && key == "value" {
            frame.value = Some(value);
        } else {
            frame.map.insert(key.to_owned(), value);
        }
    }
    Ok(())
}

/// The JSON value of a primitive's lexical form.
fn primitive_value(kind: Kind, lexical: &str) -> Result<Value, String> {
    match kind {
        Kind::String => Ok(Value::String(lexical.to_owned())),
        Kind::Boolean => match lexical {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{lexical:?} is not a boolean (true or false)")),
        },
        Kind::Integer => {
            let digits = lexical.strip_prefix('-').unwrap_or(lexical);
            let canonical = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            match lexical.parse::<i64>() {
                Ok(n) if canonical => Ok(Value::Number(n.into())),
                _ => Err(format!("{lexical:?} is not an integer")),
            }
        }
        // serde_json reads the lexical form exactly as it reads the JSON twin's number (as an
        // integer when it has no fraction or exponent, else as f64), so both paths agree.
        Kind::Decimal => match lexical.parse::<serde_json::Number>() {
            Ok(n) => Ok(Value::Number(n)),
            Err(_) => Err(format!("{lexical:?} is not a decimal")),
        },
    }
}

/// Closes the innermost element; returns the document when the root closes.
fn close(
    stack: &mut Vec<Frame<'static>>,
    reader: &Reader<'_>,
    offset: usize,
) -> Result<Option<Value>, DecodeError> {
    let Some(frame) = stack.pop() else {
        return Err(reader.error_at(offset, "an end tag without a start tag"));
    };
    let (key, elem, child) = match frame {
        Frame::Holder {
            key,
            elem,
            resource,
        } => {
            let Some(resource) = resource else {
                return Err(DecodeError::NotFhir(format!("<{key}> holds no resource")));
            };
            (key, Some(elem), Child::Value(resource))
        }
        Frame::Object(mut f) => {
            tidy_primitive_arrays(&mut f);
            let child = match f.primitive {
                Some(_) => {
                    let value = f.value.take();
                    let rest = (!f.map.is_empty()).then_some(f.map);
                    Child::Primitive(value, rest)
                }
                None => Child::Value(Value::Object(f.map)),
            };
            (f.key, f.elem, child)
        }
    };
    match (stack.last_mut(), elem, child) {
        (None, None, Child::Value(v)) => Ok(Some(v)),
        (Some(Frame::Holder { resource, .. }), None, Child::Value(v)) => {
            *resource = Some(v);
            Ok(None)
        }
        (Some(Frame::Object(parent)), Some(elem), child) => {
            attach(parent, key, elem, child).map_err(|m| fhir_error(reader, offset, &m))?;
            Ok(None)
        }
        _ => Err(fhir_error(
            reader,
            offset,
            &format!("misplaced element {key}"),
        )),
    }
}

/// Drops `name` arrays of repeating primitives that hold only `null`s (every item had only an
/// `id` or extensions). A `_name` array is made only for an item with one, so it never does.
fn tidy_primitive_arrays(frame: &mut ObjectFrame<'_>) {
    for key in std::mem::take(&mut frame.primitive_arrays) {
        let all_null = frame
            .map
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(Value::is_null));
        if all_null {
            frame.map.remove(key);
        }
    }
}

/// Attaches a finished child to its parent object.
fn attach(
    parent: &mut ObjectFrame<'static>,
    key: &'static str,
    elem: &Elem,
    child: Child,
) -> Result<(), String> {
    let path = parent.ctx.path;
    match child {
        Child::Value(v) if elem.repeats => {
            match parent
                .map
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(v),
                _ => return Err(format!("{path}.{key} appears in two forms")),
            }
        }
        Child::Value(v) => {
            if parent.map.insert(key.to_owned(), v).is_some() {
                return Err(format!("{path}.{key} appears more than once (max 1)"));
            }
        }
        Child::Primitive(value, meta) if elem.repeats => {
            // `name` gets every item (`null` where one has no value); `_name` is made only when
            // an item has an `id` or extensions, padded with `null`s to stay aligned. Keys are
            // looked up by `&str` first: a `String` is made only for a new array.
            if !parent.map.contains_key(key) {
                parent.map.insert(key.to_owned(), Value::Array(Vec::new()));
                parent.primitive_arrays.push(key);
            }
            let Some(Value::Array(items)) = parent.map.get_mut(key) else {
                return Err(format!("{path}.{key} appears in two forms"));
            };
            items.push(value.unwrap_or(Value::Null));
            let aligned = items.len();
            if meta.is_none() && !parent.underscored.contains(&key) {
                return Ok(());
            }
            let underscore = format!("_{key}");
            match (parent.map.get_mut(&underscore), meta) {
                (Some(Value::Array(metas)), meta) => {
                    metas.push(meta.map_or(Value::Null, Value::Object));
                }
                (Some(_), _) => return Err(format!("{path}.{key} appears in two forms")),
                (None, Some(meta)) => {
                    let mut metas = vec![Value::Null; aligned - 1];
                    metas.push(Value::Object(meta));
                    parent.map.insert(underscore, Value::Array(metas));
                    parent.underscored.push(key);
                }
                (None, None) => {}
            }
        }
        Child::Primitive(value, meta) => {
            let mut seen = false;
            if let Some(v) = value {
                seen |= parent.map.insert(key.to_owned(), v).is_some();
            }
            if let Some(m) = meta {
                seen |= parent
                    .map
                    .insert(format!("_{key}"), Value::Object(m))
                    .is_some();
            }
            if seen {
                return Err(format!("{path}.{key} appears more than once (max 1)"));
            }
        }
    }
    Ok(())
}

/// Serialises a narrative `div` (already opened) and everything in it as an XHTML string,
/// with the XHTML namespace declared on the `div` as in FHIR JSON. Comments and processing
/// instructions are dropped; references are written as characters except `& < > "` (and CR,
/// which XML would otherwise turn into LF).
pub(crate) fn xhtml(reader: &mut Reader<'_>, div: &Element<'_>) -> Result<String, DecodeError> {
    let xhtml_ns = div.ns.filter(|id| reader.namespace(*id) == XHTML_NS);
    if xhtml_ns.is_none() || div.local != "div" {
        let ns = div.ns.map_or("no namespace", |id| reader.namespace(id));
        return Err(fhir_error(
            reader,
            div.offset,
            &format!(
                "the narrative must be an XHTML <div> (namespace {XHTML_NS}), found <{}> in {ns}",
                div.name
            ),
        ));
    }
    let mut out = String::with_capacity(256);
    write_start(&mut out, reader, div, true);
    // Open elements (namespace, local name), innermost last.
    let mut open: Vec<(Option<NsId>, String)> = Vec::new();
    if !div.empty {
        open.push((xhtml_ns, div.local.to_owned()));
    }
    while let Some((parent_ns, _)) = open.last() {
        let parent_ns = *parent_ns;
        match reader.read()? {
            Node::Start(element) => {
                // A foreign namespace (SVG, MathML) is declared where it starts.
                write_start(&mut out, reader, &element, element.ns != parent_ns);
                if !element.empty {
                    open.push((element.ns, element.local.to_owned()));
                }
            }
            Node::End => {
                if let Some((_, name)) = open.pop() {
                    out.push_str("</");
                    out.push_str(&name);
                    out.push('>');
                }
            }
            Node::Text(t) => escape_text(&mut out, &t),
            Node::Eof => {
                return Err(DecodeError::NotFhir(
                    "the narrative div is not closed".to_owned(),
                ));
            }
        }
    }
    Ok(out)
}

/// Writes `<name attrs>` (or `<name attrs/>`), declaring the element's namespace when `declare`.
fn write_start(out: &mut String, reader: &Reader<'_>, element: &Element<'_>, declare: bool) {
    out.push('<');
    out.push_str(element.local);
    if declare {
        let uri = element.ns.map_or("", |id| reader.namespace(id));
        let _ = write!(out, " xmlns=\"{}\"", escape_attr(uri));
    }
    for attr in &element.attrs {
        if let (Some(id), Some((prefix, _))) = (attr.ns, attr.name.split_once(':'))
            && prefix != "xml"
        {
            let _ = write!(
                out,
                " xmlns:{prefix}=\"{}\"",
                escape_attr(reader.namespace(id))
            );
        }
        let _ = write!(out, " {}=\"{}\"", attr.name, escape_attr(&attr.value));
    }
    out.push_str(if element.empty { "/>" } else { ">" });
}

/// Escapes character data.
fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Escapes an attribute value (white space as references, so it survives normalisation).
pub(crate) fn escape_attr(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['&', '<', '>', '"', '\t', '\n', '\r']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(xml: &str) -> Result<Value, DecodeError> {
        to_json_value(xml.as_bytes(), &Limits::default())
    }

    #[test]
    fn the_metadata_knows_repeats_kinds_choices_and_content_references() {
        let meta = metadata();
        let Ok(meta) = meta else {
            panic!("{meta:?}");
        };
        let (_, questionnaire) = meta.resource("Questionnaire").unwrap_or_else(|| panic!());
        let nested = &questionnaire.elements["Questionnaire.item.item"];
        assert!(nested.repeats);
        assert!(matches!(&nested.ty, ElemType::Ref(p) if p == "Questionnaire.item"));
        let (_, observation) = meta.resource("Observation").unwrap_or_else(|| panic!());
        assert!(
            matches!(&observation.elements["Observation.valueQuantity"].ty, ElemType::Complex(t) if t == "Quantity")
        );
        assert!(!observation.elements.contains_key("Observation.value[x]"));
        let (_, timing) = meta.ty("Timing").unwrap_or_else(|| panic!());
        assert!(matches!(
            timing.elements["Timing.repeat.count"].ty,
            ElemType::Primitive {
                kind: Kind::Integer,
                ..
            }
        ));
        assert!(timing.elements["Timing.id"].attr);
        assert!(meta.resource("HumanName").is_none());
    }

    #[test]
    fn primitives_are_typed_and_their_ids_and_extensions_go_to_underscore_names() {
        let value = json(
            r#"<Patient xmlns="http://hl7.org/fhir">
                 <active value="true"/>
                 <name>
                   <given value="Anna"/>
                   <given id="g2"><extension url="http://example.org/x"><valueBoolean value="false"/></extension></given>
                   <given value="Lena"/>
                 </name>
                 <multipleBirthInteger value="2"/>
               </Patient>"#,
        );
        assert_eq!(
            value.ok(),
            Some(serde_json::json!({
                "resourceType": "Patient",
                "active": true,
                "name": [{
                    "given": ["Anna", null, "Lena"],
                    "_given": [null, {"id": "g2", "extension": [
                        {"url": "http://example.org/x", "valueBoolean": false}
                    ]}, null]
                }],
                "multipleBirthInteger": 2
            }))
        );
    }

    #[test]
    fn decimals_keep_what_serde_json_reads_from_the_same_lexical_form() {
        let value = json(
            r#"<Observation xmlns="http://hl7.org/fhir"><status value="final"/>
               <code><text value="x"/></code>
               <valueQuantity><value value="1.50"/><unit value="mg"/></valueQuantity>
               <referenceRange><low><value value="100"/></low></referenceRange></Observation>"#,
        );
        let Ok(value) = value else {
            panic!("{value:?}");
        };
        assert_eq!(value["valueQuantity"]["value"], serde_json::json!(1.5));
        assert_eq!(
            value["referenceRange"][0]["low"]["value"],
            serde_json::json!(100)
        );
        assert!(json(r#"<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><text value="x"/></code><valueInteger value="07"/></Observation>"#).is_err());
    }

    #[test]
    fn contained_resources_narratives_and_unknown_elements() {
        let value = json(
            r##"<?xml version="1.0"?>
               <!-- a comment -->
               <ServiceRequest xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="x">
                 <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p class="a">Dr. &amp; <b>Ärztin</b> &#x2013; &lt;1&gt;<br/></p></div></text>
                 <contained><Patient><id value="p"/></Patient></contained>
                 <futureElement><deep value="x"/></futureElement>
                 <status value="active"/><intent value="order"/>
                 <subject><reference value="#p"/></subject>
               </ServiceRequest>"##,
        );
        assert_eq!(
            value.ok(),
            Some(serde_json::json!({
                "resourceType": "ServiceRequest",
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p class=\"a\">Dr. &amp; <b>Ärztin</b> \u{2013} &lt;1&gt;<br/></p></div>"},
                "contained": [{"resourceType": "Patient", "id": "p"}],
                "status": "active", "intent": "order",
                "subject": {"reference": "#p"}
            }))
        );
    }

    #[test]
    fn structure_errors_are_named() {
        let twice = json(
            r#"<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="female"/></Patient>"#,
        );
        assert!(
            matches!(&twice, Err(DecodeError::NotFhir(m)) if m.contains("Patient.gender appears more than once")),
            "{twice:?}"
        );
        let text = json(r#"<Patient xmlns="http://hl7.org/fhir">hello</Patient>"#);
        assert!(matches!(&text, Err(DecodeError::NotFhir(m)) if m.contains("text is not allowed")));
        let stu3 = decode(
            br#"<ReferralRequest xmlns="http://hl7.org/fhir"><status value="active"/></ReferralRequest>"#,
            &Limits::default(),
        );
        assert!(
            matches!(&stu3, Err(DecodeError::WrongFhirVersion(v)) if v.contains("STU3")),
            "{stu3:?}"
        );
        let trailing =
            json(r#"<Patient xmlns="http://hl7.org/fhir"/><Patient xmlns="http://hl7.org/fhir"/>"#);
        assert!(
            matches!(&trailing, Err(DecodeError::MalformedXml(m)) if m.contains("second root"))
        );
    }

    #[test]
    fn a_valid_patient_reaches_the_typed_model() {
        let patient = decode(
            br#"<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><gender value="female"/><birthDate value="1980-02-03"/></Patient>"#,
            &Limits::default(),
        );
        assert!(
            matches!(patient, Ok((Resource::Patient(_), _))),
            "{patient:?}"
        );
    }

    fn bundle_with_attachment(data: &str) -> Vec<u8> {
        format!(
            r#"<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>
              <entry><fullUrl value="urn:uuid:5f6a0d3c-0000-4000-8000-000000000001"/>
                <resource><Patient><id value="p"/></Patient></resource></entry>
              <entry><fullUrl value="urn:uuid:5f6a0d3c-0000-4000-8000-000000000002"/>
                <resource><DocumentReference><status value="current"/><content><attachment>
                  <contentType value="application/pdf"/><data value="{data}"/>
                </attachment></content></DocumentReference></resource></entry></Bundle>"#
        )
        .into_bytes()
    }

    /// The typed model's attachment bytes and the JSON shape's attachment text.
    fn attachment(decoded: &(Resource, Value)) -> (Option<Vec<u8>>, Option<String>) {
        let (resource, shape) = decoded;
        let bytes = fhir_json::tests::attachment_data(resource);
        let text = shape["entry"][1]["resource"]["content"][0]["attachment"]["data"]
            .as_str()
            .map(str::to_owned);
        (bytes, text)
    }

    #[test]
    fn a_large_valid_attachment_is_checked_in_place_and_the_shape_keeps_it() {
        use base64::Engine as _;
        let pdf: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let data = base64::engine::general_purpose::STANDARD.encode(&pdf);
        // Valid: decodes, the model is spared the bytes, and forwarding still has the text.
        let decoded = decode(&bundle_with_attachment(&data), &Limits::default());
        assert_eq!(
            decoded.as_ref().ok().map(attachment),
            Some((Some(Vec::new()), Some(data.clone())))
        );
        // A small attachment is left to the model.
        let small = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.7 small");
        let decoded = decode(&bundle_with_attachment(&small), &Limits::default());
        assert_eq!(
            decoded.as_ref().ok().map(attachment),
            Some((Some(b"%PDF-1.7 small".to_vec()), Some(small)))
        );
        // Invalid base64 is still refused, by the model.
        for broken in [
            format!("{}!", &data[..data.len() - 4]),
            format!("{}Zh==", &data[..data.len() - 4]),
        ] {
            let err = decode(&bundle_with_attachment(&broken), &Limits::default()).err();
            assert!(matches!(err, Some(DecodeError::NotFhir(_))), "{err:?}");
        }
        // White space inside the data is the model's to strip: the same bytes.
        let spaced = format!("{} {}", &data[..400], &data[400..]);
        let decoded = decode(&bundle_with_attachment(&spaced), &Limits::default());
        assert_eq!(
            decoded.as_ref().ok().map(attachment),
            Some((Some(pdf), Some(spaced)))
        );
    }
}
