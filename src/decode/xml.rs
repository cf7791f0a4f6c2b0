//! The XML safety layer every XML decoder reads through (FHIR XML now, CDA later).
//!
//! Nothing here expands an entity the payload declares: a document type declaration
//! (`<!DOCTYPE`, and with it every `<!ENTITY`, internal or external) is refused outright, so
//! billion-laughs and XXE inputs cost one scan and end as an `unreadable` verdict. Only the five
//! predefined entities and character references of legal XML 1.0 characters are resolved.
//!
//! Also enforced before a caller sees an element: nesting depth ([`Limits::max_depth`]), the number
//! of attributes per element ([`MAX_ATTRIBUTES`]) and of namespace bindings, the XML 1.0 character
//! set (no C0 control characters but tab, LF and CR, no U+FFFE/U+FFFF), one root element, and the
//! text encoding: UTF-8 (with or without a byte order mark) or UTF-16 LE/BE with a byte order mark
//! and a matching declaration; a declared encoding that is not the one the bytes use is refused.
//! The size of text and attribute values is bounded by [`Limits::max_bytes`], checked before.

use std::borrow::Cow;

use quick_xml::NsReader;
use quick_xml::events::attributes::Attributes;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};

use super::{DecodeError, Limits};

/// Most attributes one element may carry (FHIR elements carry at most three; XHTML a few more).
pub const MAX_ATTRIBUTES: usize = 256;

/// XML's white space (§ 2.3 `S`).
pub const XML_SPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Most namespace bindings in scope at once (quick-xml's own guard against binding floods).
const MAX_NAMESPACE_BINDINGS: usize = 64;

/// The encoding the bytes of a payload use, from their byte order mark (or its absence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 without a byte order mark.
    Utf8,
    /// UTF-8 with a byte order mark.
    Utf8Bom,
    /// UTF-16 little endian with a byte order mark.
    Utf16Le,
    /// UTF-16 big endian with a byte order mark.
    Utf16Be,
}

/// Tells the encoding from the first bytes. UTF-16 without a byte order mark and UTF-32 are
/// refused: XML 1.0 (§ 4.3.3) requires the mark for UTF-16, and FHIR knows no UTF-32.
pub fn detect_encoding(bytes: &[u8]) -> Result<Encoding, DecodeError> {
    match bytes {
        [0xEF, 0xBB, 0xBF, ..] => Ok(Encoding::Utf8Bom),
        [0xFF, 0xFE, 0, 0, ..] | [0, 0, 0xFE, 0xFF, ..] => Err(DecodeError::Unsupported(
            "UTF-32 encoded XML; send UTF-8".to_owned(),
        )),
        [0xFF, 0xFE, ..] => Ok(Encoding::Utf16Le),
        [0xFE, 0xFF, ..] => Ok(Encoding::Utf16Be),
        [b'<', 0, ..] | [0, b'<', ..] => Err(DecodeError::Unsupported(
            "UTF-16 encoded XML without a byte order mark; send UTF-8".to_owned(),
        )),
        _ => Ok(Encoding::Utf8),
    }
}

/// The first `max` bytes of a payload with a UTF-16 byte order mark, decoded leniently (for
/// sniffing the format); `None` when the payload does not start with one.
pub fn utf16_head(bytes: &[u8], max: usize) -> Option<String> {
    let unit: fn([u8; 2]) -> u16 = match bytes {
        [0xFF, 0xFE, ..] => u16::from_le_bytes,
        [0xFE, 0xFF, ..] => u16::from_be_bytes,
        _ => return None,
    };
    let head = &bytes[2..bytes.len().min(max.max(2))];
    let units = head.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    Some(
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    )
}

/// Decodes the bytes of an XML document to text: strips a UTF-8 byte order mark, converts
/// UTF-16 with a byte order mark, checks the declared encoding against the bytes and rejects
/// characters XML 1.0 forbids. Borrows when the input is UTF-8 already.
pub fn to_utf8(bytes: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    let encoding = detect_encoding(bytes)?;
    let text: Cow<'_, str> = match encoding {
        Encoding::Utf8 | Encoding::Utf8Bom => {
            let body = super::strip_bom(bytes);
            // The declaration is ASCII: check it before the bytes, so that a document declared
            // as Shift_JIS is refused for its encoding rather than as broken UTF-8.
            let head = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            check_declared_encoding(&head, encoding)?;
            // simdutf8's `compat` check says where the first bad byte is, as std's does, and
            // reads mixed-language text several times faster.
            match simdutf8::compat::from_utf8(body) {
                Ok(text) => Cow::Borrowed(text),
                Err(e) => {
                    return Err(DecodeError::NotUtf8(format!(
                        "invalid UTF-8 byte sequence at byte {}",
                        e.valid_up_to() + (bytes.len() - body.len())
                    )));
                }
            }
        }
        Encoding::Utf16Le | Encoding::Utf16Be => {
            let unit = if encoding == Encoding::Utf16Le {
                u16::from_le_bytes
            } else {
                u16::from_be_bytes
            };
            let text = utf16(&bytes[2..], unit)?;
            check_declared_encoding(&text, encoding)?;
            Cow::Owned(text)
        }
    };
    check_chars(&text)?;
    Ok(text)
}

/// Decodes UTF-16 code units; an odd byte count or an unpaired surrogate is an error.
fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, DecodeError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(DecodeError::NotUtf8(
            "UTF-16 text with an odd number of bytes".to_owned(),
        ));
    }
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut out = String::with_capacity(bytes.len() / 2 + bytes.len() / 8);
    for (index, c) in char::decode_utf16(units).enumerate() {
        match c {
            Ok(c) => out.push(c),
            Err(e) => {
                return Err(DecodeError::NotUtf8(format!(
                    "invalid UTF-16: unpaired surrogate {:#06x} at code unit {index}",
                    e.unpaired_surrogate()
                )));
            }
        }
    }
    Ok(out)
}

/// The `encoding` pseudo-attribute of the XML declaration, if the text starts with one.
fn declared_encoding(text: &str) -> Option<&str> {
    let decl = text.strip_prefix("<?xml")?;
    let end = decl.find("?>")?;
    let decl = &decl[..end];
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let value = &rest[1..];
    Some(&value[..value.find(quote)?])
}

/// A declared encoding must be the one the bytes use. UTF-16 must be declared: the FHIR
/// specification requires UTF-8, and UTF-16 is accepted only when the sender says so both in
/// the byte order mark and in the declaration (the FHIR validator fails UTF-16 without one).
fn check_declared_encoding(text: &str, encoding: Encoding) -> Result<(), DecodeError> {
    let declared = declared_encoding(text).map(str::to_ascii_uppercase);
    let utf16 = matches!(encoding, Encoding::Utf16Le | Encoding::Utf16Be);
    let ok = match (declared.as_deref(), utf16) {
        (None, false) => true,
        (None, true) => {
            return Err(DecodeError::Unsupported(
                "UTF-16 XML without an XML declaration naming encoding=\"UTF-16\"; FHIR XML is \
                 UTF-8"
                    .to_owned(),
            ));
        }
        (Some("UTF-8" | "UTF8"), false) => true,
        // ASCII is a subset of UTF-8: the declaration holds when every byte is ASCII.
        (Some("US-ASCII" | "ASCII"), false) => text.is_ascii(),
        (Some("UTF-16"), true) => true,
        (Some("UTF-16LE"), true) => encoding == Encoding::Utf16Le,
        (Some("UTF-16BE"), true) => encoding == Encoding::Utf16Be,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let actual = match encoding {
        Encoding::Utf8 => "UTF-8",
        Encoding::Utf8Bom => "UTF-8 with a byte order mark",
        Encoding::Utf16Le => "UTF-16LE",
        Encoding::Utf16Be => "UTF-16BE",
    };
    Err(DecodeError::Unsupported(format!(
        "the XML declaration names encoding {}, but the payload is {actual}",
        declared.unwrap_or_default()
    )))
}

/// Rejects characters outside XML 1.0's `Char` production (§ 2.2): C0 controls other than tab,
/// LF and CR, and U+FFFE/U+FFFF. Surrogates cannot occur in a `str`. Scans bytes: in UTF-8 the
/// controls are single bytes and U+FFFE/U+FFFF are `EF BF BE`/`EF BF BF`.
fn check_chars(text: &str) -> Result<(), DecodeError> {
    let bytes = text.as_bytes();
    // Whole chunks without a suspect byte (a control character or the lead byte 0xEF of
    // U+F000..U+FFFF) are passed over in one vectorised test; only a chunk with one is looked
    // at byte by byte.
    let mut from = 0;
    for chunk in bytes.chunks(CHUNK) {
        let suspect = chunk.iter().fold(false, |any, &b| {
            any | (b < 0x20) & !matches!(b, b'\t' | b'\n' | b'\r') | (b == 0xEF)
        });
        if suspect {
            check_chars_from(text, from, from + chunk.len())?;
        }
        from += chunk.len();
    }
    Ok(())
}

/// Bytes tested at once by the chunked searches of this module.
const CHUNK: usize = 32;

/// The byte-by-byte test of [`check_chars`] over `text[from..to]` (a character starting
/// before `to` may end after it).
fn check_chars_from(text: &str, from: usize, to: usize) -> Result<(), DecodeError> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate().take(to).skip(from) {
        let bad = match b {
            b'\t' | b'\n' | b'\r' => false,
            0..0x20 => true,
            0xEF => {
                bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF))
            }
            _ => false,
        };
        if bad {
            let c = text.get(i..).and_then(|t| t.chars().next()).unwrap_or('\0');
            return Err(malformed(
                text,
                i,
                &format!("character U+{:04X} is not allowed in XML 1.0", c as u32),
            ));
        }
    }
    Ok(())
}

/// A malformed-XML error with a 1-based line and column computed from a byte offset.
pub fn malformed(text: &str, offset: usize, message: &str) -> DecodeError {
    let (line, column) = line_column(text, offset);
    DecodeError::MalformedXml(format!("line {line}, column {column}: {message}"))
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The error for a document type declaration anywhere in the payload.
fn doctype_refused() -> DecodeError {
    DecodeError::Unsupported(
        "XML with a document type declaration (<!DOCTYPE ...>): DTDs, entity declarations and \
         external entities are refused (no entity expansion, no external entities)"
            .to_owned(),
    )
}

/// Resolves one entity or character reference (`name` without `&` and `;`): the five
/// predefined entities and references to legal XML 1.0 characters only.
pub fn resolve_reference(name: &str) -> Result<char, String> {
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let Some(number) = name.strip_prefix('#') else {
                return Err(format!(
                    "entity &{name}; is not declared (only &lt; &gt; &amp; &apos; &quot; and \
                     character references are accepted)"
                ));
            };
            let code = match number.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => number.parse::<u32>(),
            };
            let c = code.ok().and_then(char::from_u32);
            match c {
                Some(c) if is_xml_char(c) => c,
                _ => {
                    return Err(format!(
                        "character reference &{name}; is not a legal XML 1.0 character"
                    ));
                }
            }
        }
    };
    Ok(c)
}

/// XML 1.0 `Char`: `#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// The first byte of an attribute value that normalisation must look at (`&`, `<`, tab, line
/// feed, carriage return), a chunk at a time: a base64 attachment of half a megabyte is one
/// pass without a branch per byte. All five are ASCII, so the position is a character boundary.
fn attribute_special(bytes: &[u8]) -> Option<usize> {
    let special = |b: u8| matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r');
    let mut from = 0;
    for chunk in bytes.chunks(CHUNK) {
        if chunk.iter().fold(false, |any, &b| any | special(b)) {
            return chunk.iter().position(|&b| special(b)).map(|i| from + i);
        }
        from += chunk.len();
    }
    None
}

/// Unescapes an attribute value as XML 1.0 attribute-value normalisation does (§ 3.3.3):
/// literal tab, CR, LF and CR LF become one space each; references are resolved afterwards and
/// keep their character (`&#10;` stays a line feed). `<` may not appear literally.
pub fn attribute_value(raw: &str) -> Result<Cow<'_, str>, String> {
    let mut next = attribute_special(raw.as_bytes());
    if next.is_none() {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = next {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.as_bytes()[0] {
            b'&' => {
                let Some(end) = tail.find(';') else {
                    return Err("an unterminated reference (& without ;) in an attribute".into());
                };
                out.push(resolve_reference(&tail[1..end])?);
                rest = &tail[end + 1..];
            }
            b'<' => return Err("a literal < in an attribute value".into()),
            b'\r' => {
                out.push(' ');
                rest = tail.strip_prefix("\r\n").unwrap_or(&tail[1..]);
            }
            _ => {
                out.push(' ');
                rest = &tail[1..];
            }
        }
        next = attribute_special(rest.as_bytes());
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Normalises line ends of literal text (§ 2.11): CR LF and lone CR become LF.
fn normalise_eols(text: Cow<'_, str>) -> Cow<'_, str> {
    if !text.contains('\r') {
        return text;
    }
    Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// The index of `uri` in `namespaces`, added when new (documents use a handful).
fn intern(namespaces: &mut Vec<String>, uri: &str) -> NsId {
    match namespaces.iter().position(|n| n == uri) {
        Some(id) => id,
        None => {
            namespaces.push(uri.to_owned());
            namespaces.len() - 1
        }
    }
}

/// A namespace seen in the document, interned per reader (compare with [`Reader::namespace`]).
pub type NsId = usize;

/// One attribute of an element, its value unescaped and normalised.
#[derive(Debug)]
pub struct Attr<'a> {
    /// The name as written (`value`, `xml:lang`, `xsi:schemaLocation`).
    pub name: &'a str,
    /// The local part of the name.
    pub local: &'a str,
    /// The namespace of a prefixed name; unprefixed attributes have none (XML Namespaces § 6.2).
    pub ns: Option<NsId>,
    /// The value.
    pub value: Cow<'a, str>,
}

/// A start tag with its attributes; namespace declarations (`xmlns`, `xmlns:p`) are left out.
#[derive(Debug)]
pub struct Element<'a> {
    /// The name as written, with its prefix.
    pub name: &'a str,
    /// The local part of the name.
    pub local: &'a str,
    /// The element's namespace, if it is in one.
    pub ns: Option<NsId>,
    /// Attributes other than namespace declarations (two inline: a FHIR element has a `value`
    /// or an `id`, rarely more).
    pub attrs: smallvec::SmallVec<[Attr<'a>; 2]>,
    /// `<x/>`: no content and no end event follows.
    pub empty: bool,
    /// Byte offset of the tag (for error messages).
    pub offset: usize,
}

/// What a [`Reader`] yields.
#[derive(Debug)]
pub enum Node<'a> {
    /// A start tag (or an empty element, see [`Element::empty`]).
    Start(Element<'a>),
    /// The end of the innermost open element.
    End,
    /// Character data: adjacent text, references and CDATA sections merged, references resolved,
    /// line ends normalised.
    Text(Cow<'a, str>),
    /// The end of the document (the root element was closed).
    Eof,
}

/// A checked, namespace-aware pull reader over decoded text (see [`to_utf8`]).
pub struct Reader<'a> {
    inner: NsReader<&'a [u8]>,
    text: &'a str,
    namespaces: Vec<String>,
    max_depth: usize,
    depth: usize,
    root_seen: bool,
    first_event: bool,
    /// An event read ahead while merging text.
    pending: Option<Event<'a>>,
    /// The namespace resolved for the pending event.
    pending_ns: Option<NsId>,
    /// Where the pending event starts.
    pending_offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `text`, enforcing `limits.max_depth`.
    pub fn new(text: &'a str, limits: &Limits) -> Reader<'a> {
        let mut inner = NsReader::from_str(text);
        let config = inner.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.allow_dangling_amp = false;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        inner
            .resolver_mut()
            .set_max_namespace_bindings(MAX_NAMESPACE_BINDINGS);
        Reader {
            inner,
            text,
            namespaces: Vec::new(),
            max_depth: limits.max_depth,
            depth: 0,
            root_seen: false,
            first_event: true,
            pending: None,
            pending_ns: None,
            pending_offset: 0,
        }
    }

    /// The URI of an interned namespace.
    pub fn namespace(&self, id: NsId) -> &str {
        self.namespaces.get(id).map_or("", String::as_str)
    }

    /// The current nesting depth (0 outside the root element).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The byte offset the reader has reached.
    pub fn offset(&self) -> usize {
        self.position()
    }

    /// `line L, column C: message` for a byte offset (for errors that are not about XML syntax).
    pub fn located(&self, offset: usize, message: &str) -> String {
        let (line, column) = line_column(self.text, offset);
        format!("line {line}, column {column}: {message}")
    }

    /// A malformed-XML error at a byte offset.
    pub fn error_at(&self, offset: usize, message: &str) -> DecodeError {
        malformed(self.text, offset, message)
    }

    /// `s` as a slice of the input with the input's lifetime, if it is one.
    fn reborrow(&self, s: &str) -> Option<&'a str> {
        let base = self.text.as_ptr() as usize;
        let at = (s.as_ptr() as usize).checked_sub(base)?;
        self.text.get(at..at.checked_add(s.len())?)
    }

    fn position(&self) -> usize {
        usize::try_from(self.inner.buffer_position()).unwrap_or(usize::MAX)
    }

    /// Reads one raw event, the namespace of a start tag and the offset where the event starts.
    fn raw(&mut self) -> Result<(Option<NsId>, Event<'a>, usize), DecodeError> {
        if let Some(event) = self.pending.take() {
            return Ok((self.pending_ns.take(), event, self.pending_offset));
        }
        let start = self.position();
        let (ns, event) = match self.inner.read_resolved_event() {
            Ok((resolved, event)) => {
                let is_start = matches!(event, Event::Start(_) | Event::Empty(_));
                let ns = match resolved {
                    // Interned without a copy per element: the resolver and the table are
                    // different fields.
                    ResolveResult::Bound(ns) if is_start => {
                        Ok(Some(intern(&mut self.namespaces, ns.into_inner())))
                    }
                    ResolveResult::Unknown(prefix) if is_start => Err(prefix),
                    _ => Ok(None),
                };
                (ns, event)
            }
            Err(e) => {
                let at = usize::try_from(self.inner.error_position()).unwrap_or(0);
                return Err(match e {
                    quick_xml::Error::Syntax(quick_xml::errors::SyntaxError::UnclosedDoctype) => {
                        doctype_refused()
                    }
                    e => malformed(self.text, at, &e.to_string()),
                });
            }
        };
        let ns = ns.map_err(|prefix| {
            self.error_at(
                start,
                &format!("namespace prefix {prefix}: is not declared"),
            )
        })?;
        Ok((ns, event, start))
    }

    /// The next node. Comments and processing instructions are skipped; a DTD is an error.
    pub fn read(&mut self) -> Result<Node<'a>, DecodeError> {
        let mut text: Option<Cow<'a, str>> = None;
        loop {
            let first = std::mem::replace(&mut self.first_event, false);
            let (ns, event, start) = self.raw()?;
            let piece: Cow<'a, str> = match event {
                Event::Text(t) => normalise_eols(t.into_inner()),
                Event::CData(c) => normalise_eols(c.into_inner()),
                Event::GeneralRef(r) => {
                    let name = r.into_inner();
                    match resolve_reference(&name) {
                        Ok(c) => Cow::Owned(c.to_string()),
                        Err(message) => return Err(self.error_at(start, &message)),
                    }
                }
                other => {
                    if let Some(text) = text.take() {
                        // Hand out the merged text first; the event comes next time.
                        self.pending = Some(other);
                        self.pending_ns = ns;
                        self.pending_offset = start;
                        if self.depth > 0 {
                            return Ok(Node::Text(text));
                        }
                        if !text.trim_matches(XML_SPACE).is_empty() {
                            return Err(
                                self.error_at(self.position(), "text outside the root element")
                            );
                        }
                        continue;
                    }
                    match self.node(ns, other, first, start)? {
                        Some(node) => return Ok(node),
                        None => continue,
                    }
                }
            };
            text = Some(match text {
                None => piece,
                Some(mut t) => {
                    t.to_mut().push_str(&piece);
                    t
                }
            });
        }
    }

    /// Checks a non-text event; `None` for events a caller never sees.
    fn node(
        &mut self,
        ns: Option<NsId>,
        event: Event<'a>,
        first: bool,
        offset: usize,
    ) -> Result<Option<Node<'a>>, DecodeError> {
        match event {
            Event::DocType(_) => Err(doctype_refused()),
            Event::Decl(_) if first => Ok(None),
            Event::Decl(_) => Err(self.error_at(
                offset,
                "an XML declaration is allowed only at the very start",
            )),
            Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Start(_) | Event::Empty(_) if self.depth == 0 && self.root_seen => {
                Err(self.error_at(offset, "a second root element"))
            }
            Event::Start(start) => {
                self.depth += 1;
                if self.depth > self.max_depth {
                    return Err(DecodeError::TooDeep {
                        limit: self.max_depth,
                    });
                }
                self.root_seen = true;
                let element = self.element(ns, start, false, offset)?;
                Ok(Some(Node::Start(element)))
            }
            Event::Empty(start) => {
                if self.depth + 1 > self.max_depth {
                    return Err(DecodeError::TooDeep {
                        limit: self.max_depth,
                    });
                }
                self.root_seen = true;
                let element = self.element(ns, start, true, offset)?;
                Ok(Some(Node::Start(element)))
            }
            Event::End(_) => {
                self.depth = self.depth.saturating_sub(1);
                Ok(Some(Node::End))
            }
            Event::Eof => {
                if self.depth > 0 {
                    return Err(self.error_at(
                        offset,
                        &format!("the document ends inside {} open elements", self.depth),
                    ));
                }
                if !self.root_seen {
                    return Err(self.error_at(offset, "no root element"));
                }
                Ok(Some(Node::Eof))
            }
            // Text, CDATA and references are merged by `read`.
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => Ok(None),
        }
    }

    /// Reads the attributes of a start tag under the limits.
    fn element(
        &mut self,
        ns: Option<NsId>,
        start: BytesStart<'a>,
        empty: bool,
        offset: usize,
    ) -> Result<Element<'a>, DecodeError> {
        // The reader runs over a `&'a str`, so every event borrows the input: re-borrow the tag
        // with the input's lifetime so names and values need no copies.
        let Some(tag) = self.reborrow(&start) else {
            return Err(self.error_at(offset, "a start tag that does not borrow the input"));
        };
        let name_len = start.name().into_inner().len();
        let name = &tag[..name_len];
        let local = name.rsplit(':').next().unwrap_or(name);
        let mut attrs = smallvec::SmallVec::new();
        let mut count = 0usize;
        let mut attributes = Attributes::new(tag, name_len);
        attributes.with_checks(true);
        for attr in attributes {
            let attr = attr.map_err(|e| self.error_at(offset, &e.to_string()))?;
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(DecodeError::MalformedXml(format!(
                    "element <{name}> at line {} has more than {MAX_ATTRIBUTES} attributes",
                    line_column(self.text, offset).0
                )));
            }
            let key: QName<'a> = attr.key;
            let raw_name: &'a str = key.into_inner();
            if key.as_namespace_binding().is_some() {
                // Namespace declarations are resolved by the reader itself; their values still
                // may not hold undeclared entities.
                attribute_value(&attr.value).map_err(|m| self.error_at(offset, &m))?;
                continue;
            }
            let (resolved, local) = self.inner.resolver().resolve_attribute(key);
            let attr_ns = match resolved {
                ResolveResult::Bound(ns) => Some(intern(&mut self.namespaces, ns.into_inner())),
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(prefix) => {
                    return Err(self.error_at(
                        offset,
                        &format!("namespace prefix {prefix}: is not declared"),
                    ));
                }
            };
            let local: &'a str = local.into_inner();
            let value = match attr.value {
                Cow::Borrowed(raw) => attribute_value(raw),
                Cow::Owned(raw) => attribute_value(&raw).map(|v| Cow::Owned(v.into_owned())),
            }
            .map_err(|m| self.error_at(offset, &m))?;
            attrs.push(Attr {
                name: raw_name,
                local,
                ns: attr_ns,
                value,
            });
        }
        Ok(Element {
            name,
            local,
            ns,
            attrs,
            empty,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str, limits: &Limits) -> Result<Vec<String>, DecodeError> {
        let mut reader = Reader::new(text, limits);
        let mut out = Vec::new();
        loop {
            match reader.read()? {
                Node::Start(e) => out.push(format!(
                    "<{}{}{}>",
                    e.local,
                    e.attrs
                        .iter()
                        .map(|a| format!(" {}={}", a.name, a.value))
                        .collect::<String>(),
                    if e.empty { "/" } else { "" }
                )),
                Node::End => out.push("</>".to_owned()),
                Node::Text(t) => out.push(t.into_owned()),
                Node::Eof => return Ok(out),
            }
        }
    }

    #[test]
    fn encodings_are_told_from_the_byte_order_mark() {
        assert_eq!(detect_encoding(b"<a/>"), Ok(Encoding::Utf8));
        assert_eq!(detect_encoding(b"\xEF\xBB\xBF<a/>"), Ok(Encoding::Utf8Bom));
        assert_eq!(detect_encoding(b"\xFF\xFE<\0"), Ok(Encoding::Utf16Le));
        assert_eq!(detect_encoding(b"\xFE\xFF\0<"), Ok(Encoding::Utf16Be));
        assert!(detect_encoding(b"<\0a\0").is_err());
        assert!(detect_encoding(b"\xFF\xFE\0\0<\0\0\0").is_err());
        assert_eq!(
            declared_encoding("<?xml version='1.0' encoding = 'utf-8' ?><a/>"),
            Some("utf-8")
        );
        assert_eq!(declared_encoding("<?xml version=\"1.0\"?><a/>"), None);
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>\u{00FC}\u{1F600}</a>"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        assert_eq!(
            to_utf8(&utf16).map(Cow::into_owned),
            Ok("<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>\u{00FC}\u{1F600}</a>".to_owned())
        );
        // An unpaired surrogate.
        assert!(matches!(
            to_utf8(&[0xFF, 0xFE, b'<', 0, 0x00, 0xD8, b'>', 0]),
            Err(DecodeError::NotUtf8(_))
        ));
        // Broken UTF-8 is refused with the position of its first bad byte, counted from the
        // start of the message (the BOM included).
        let mut broken = b"\xEF\xBB\xBF<a>R\xC3\xBCckzug \xC3</a>".to_vec();
        assert_eq!(
            to_utf8(&broken),
            Err(DecodeError::NotUtf8(
                "invalid UTF-8 byte sequence at byte 15".to_owned()
            ))
        );
        broken.drain(..3);
        assert_eq!(
            to_utf8(&broken),
            Err(DecodeError::NotUtf8(
                "invalid UTF-8 byte sequence at byte 12".to_owned()
            ))
        );
    }

    #[test]
    fn only_predefined_entities_and_legal_characters_resolve() {
        assert_eq!(resolve_reference("amp"), Ok('&'));
        assert_eq!(resolve_reference("#x41"), Ok('A'));
        assert_eq!(resolve_reference("#228"), Ok('\u{E4}'));
        assert_eq!(resolve_reference("#x1F600"), Ok('\u{1F600}'));
        for bad in [
            "nbsp", "#0", "#x1", "#xD800", "#xFFFE", "#x110000", "#", "#x",
        ] {
            assert!(resolve_reference(bad).is_err(), "{bad}");
        }
        assert!(is_xml_char('\t') && !is_xml_char('\u{B}'));
    }

    #[test]
    fn attribute_values_are_normalised_as_xml_requires() {
        assert_eq!(attribute_value("plain"), Ok(Cow::Borrowed("plain")));
        assert_eq!(
            attribute_value("a\tb\r\nc\rd\ne").map(Cow::into_owned),
            Ok("a b c d e".to_owned())
        );
        assert_eq!(
            attribute_value("x&#10;y&lt;&quot;").map(Cow::into_owned),
            Ok("x\ny<\"".to_owned())
        );
        assert!(attribute_value("a<b").is_err());
        assert!(attribute_value("a&b").is_err());
        assert!(attribute_value("&foo;").is_err());
    }

    #[test]
    fn the_reader_merges_text_and_checks_structure() {
        let limits = Limits::default();
        assert_eq!(
            nodes(
                "<?xml version=\"1.0\"?>\r\n<a x=\"1\">t&amp;u<![CDATA[<v>]]>\r\nw<b/></a>\n",
                &limits
            ),
            Ok(vec![
                "<a x=1>".to_owned(),
                "t&u<v>\nw".to_owned(),
                "<b/>".to_owned(),
                "</>".to_owned()
            ])
        );
        for (bad, expected) in [
            ("<a/><b/>", "second root"),
            ("<a/>text", "text outside the root"),
            ("<a><b></a>", "malformed XML"),
            ("<a>", "open elements"),
            ("", "no root element"),
            ("<a/><?xml version=\"1.0\"?>", "malformed XML"),
            ("<p:a/>", "prefix p"),
            ("<a x=\"1\" x=\"2\"/>", "malformed XML"),
        ] {
            let result = nodes(bad, &limits);
            assert!(
                matches!(&result, Err(e) if e.to_string().contains(expected)),
                "{bad}: {result:?}"
            );
        }
        assert!(matches!(
            nodes("<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>", &limits),
            Err(DecodeError::Unsupported(m)) if m.contains("DOCTYPE")
        ));
        let shallow = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert!(nodes("<a><b/></a>", &shallow).is_ok());
        assert_eq!(
            nodes("<a><b><c/></b></a>", &shallow),
            Err(DecodeError::TooDeep { limit: 2 })
        );
    }

    #[test]
    fn errors_carry_line_and_column() {
        assert_eq!(line_column("ab\ncd\u{E4}e", 7), (2, 4));
        assert!(matches!(
            to_utf8(b"<a>\n  <b>\x07</b></a>"),
            Err(DecodeError::MalformedXml(m)) if m.contains("line 2, column 6") && m.contains("U+0007")
        ));
        assert!(to_utf8("<a>\u{FFFF}</a>".as_bytes()).is_err());
    }

    /// The chunked searches find what the byte-by-byte ones found, at every position around
    /// a chunk's edge, and pass over what is allowed.
    #[test]
    fn the_chunked_searches_find_every_suspect_byte_at_any_position() {
        for len in [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            for at in 0..len {
                let mut text = "a".repeat(len);
                text.replace_range(at..=at, "&");
                assert_eq!(attribute_special(text.as_bytes()), Some(at), "{len} {at}");
                let spaced = attribute_value(&text.replace('&', "\t")).map(Cow::into_owned);
                assert_eq!(spaced, Ok(text.replace('&', " ")));
                let mut doc = format!("<a>{}</a>", "b".repeat(len));
                doc.replace_range(3 + at..=3 + at, "\u{1}");
                assert!(
                    matches!(to_utf8(doc.as_bytes()), Err(DecodeError::MalformedXml(ref m)) if m.contains("U+0001")),
                    "{len} {at}"
                );
                let mut doc = format!("<a>{}</a>", "b".repeat(len + 2));
                doc.replace_range(3 + at..3 + at + 3, "\u{FFFE}");
                assert!(to_utf8(doc.as_bytes()).is_err(), "{len} {at}");
            }
        }
        // Allowed: tab, line feed, carriage return, and other characters led by 0xEF.
        let fine = format!("<a>\t\r\n{}\u{F8FF}\u{FFFD}</a>", "x".repeat(2 * CHUNK));
        assert!(to_utf8(fine.as_bytes()).is_ok());
        assert_eq!(
            attribute_special(b"plain text, no specials at all here, none"),
            None
        );
    }
}
