//! A small UN/EDIFACT syntax layer (ISO 9735, syntax level C version 3 = `UNOC:3`) for the
//! § 302 SGB V data exchange: segments in, text out, and text back into segments.
//!
//! # Why hand-written
//!
//! crates.io was checked first (2026-11). `edifact-parser` only parses. `edifact-rs` (0.18.0)
//! parses and writes, reads the UNA service string advice and decodes UNOC (ISO 8859-1), but it
//! was first published in May 2026 and has had 18 breaking 0.x releases since, from one
//! maintainer; pinning it would mean re-reading its changelog on every upgrade of a component
//! that produces invoices. What § 302 needs from the syntax is small (one fixed set of service
//! characters, escaping, the Latin-1 repertoire, positions in errors), so owning these ~400 lines
//! is cheaper than following that API. Revisit when `edifact-rs` reaches 1.0.
//!
//! # What this layer does
//!
//! * Service characters are those of § 302 data: component `:`, data element `+`, decimal mark
//!   `,`, release `?`, segment terminator `'` ([`ServiceChars::SGB_V_302`]).
//! * Writing escapes the release character, the component and element separators and the
//!   segment terminator with the release character. The decimal mark is **not** escaped: the
//!   GKV-Spitzenverband answered a public implementer that the comma is only a decimal mark and
//!   not a separator (quoted in the reference implementation coop-care/paid,
//!   `src/edifact/writer.ts`). Trailing empty components and elements are omitted.
//! * Writing checks the UNOC repertoire (ISO 8859-1, U+0020..U+007E and U+00A0..U+00FF) and
//!   **rejects** any other character, naming the segment and element: a name on an invoice must
//!   match the insurer's records, so it is not transliterated behind the caller's back; the
//!   caller fixes the data.
//! * Parsing undoes the escaping, honours a leading `UNA` service string advice, ignores line
//!   breaks between segments (some producers write one segment per line) and rejects malformed
//!   input with a [`SyntaxError`] that gives the byte offset, the segment number and the reason.
//!   It never panics.
//! * [`encode_latin1`] / [`decode_latin1`] convert between Rust strings and the ISO 8859-1
//!   bytes that go over the wire.

use std::fmt;

/// The service characters of an interchange (ISO 9735 UNA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceChars {
    /// Component data element separator.
    pub component: char,
    /// Data element separator.
    pub element: char,
    /// Decimal mark (not escaped; see the module documentation).
    pub decimal: char,
    /// Release character: makes the next service character data.
    pub release: char,
    /// Segment terminator.
    pub segment: char,
}

impl ServiceChars {
    /// The service characters of § 302 SGB V data (facts 33; decimal comma per the TA).
    pub const SGB_V_302: ServiceChars = ServiceChars {
        component: ':',
        element: '+',
        decimal: ',',
        release: '?',
        segment: '\'',
    };

    /// The UNA service string advice announcing these characters (9 characters; the sixth
    /// position, reserved for a repetition separator in syntax version 4, is a space).
    pub fn una(&self) -> String {
        format!(
            "UNA{}{}{}{} {}",
            self.component, self.element, self.decimal, self.release, self.segment
        )
    }

    fn is_escaped(&self, c: char) -> bool {
        c == self.component || c == self.element || c == self.release || c == self.segment
    }

    fn distinct(&self) -> bool {
        let s = [self.component, self.element, self.release, self.segment];
        (0..s.len()).all(|i| (i + 1..s.len()).all(|j| s[i] != s[j]))
    }
}

impl Default for ServiceChars {
    fn default() -> Self {
        ServiceChars::SGB_V_302
    }
}

/// One segment: a tag and its data elements, each a list of components (a simple data element
/// is an element with one component).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    /// Three upper-case letters, e.g. `UNB`.
    pub tag: String,
    /// Data elements after the tag, each a list of components.
    pub elements: Vec<Vec<String>>,
}

impl Segment {
    /// A segment with no elements yet.
    pub fn new(tag: &str) -> Segment {
        Segment {
            tag: tag.to_owned(),
            elements: Vec::new(),
        }
    }

    /// Appends a simple data element (one component); `None` writes an empty element so that
    /// the positions of later elements stay right.
    pub fn simple(mut self, value: Option<&str>) -> Segment {
        self.elements
            .push(vec![value.unwrap_or_default().to_owned()]);
        self
    }

    /// Appends a composite data element.
    pub fn composite(mut self, components: &[&str]) -> Segment {
        self.elements
            .push(components.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// Component `component` of element `element` (both 0-based), `None` if absent or empty.
    pub fn get(&self, element: usize, component: usize) -> Option<&str> {
        self.elements
            .get(element)
            .and_then(|e| e.get(component))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// Why a text is not well-formed EDIFACT, or why a segment cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (byte {position}, segment {segment})")]
pub struct SyntaxError {
    /// Byte offset in the input (or in the output being written) where the problem is.
    pub position: usize,
    /// 1-based number of the segment concerned (0 when before the first segment).
    pub segment: usize,
    /// What is wrong.
    pub reason: SyntaxErrorKind,
}

/// The kinds of [`SyntaxError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxErrorKind {
    /// The input is empty.
    Empty,
    /// A `UNA` header is shorter than 9 characters or repeats a service character.
    BadServiceStringAdvice,
    /// A segment tag is not three upper-case letters.
    BadTag(String),
    /// The input ends inside a segment (no segment terminator).
    Unterminated,
    /// The input ends right after a release character.
    DanglingRelease,
    /// A release character precedes a character that is not a service character.
    NeedlessRelease(char),
    /// A character outside the UNOC repertoire (ISO 8859-1 printable characters).
    NotInRepertoire(char),
    /// A segment has nothing in it (two terminators in a row).
    EmptySegment,
}

impl fmt::Display for SyntaxErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxErrorKind::Empty => write!(f, "empty interchange"),
            SyntaxErrorKind::BadServiceStringAdvice => {
                write!(f, "UNA must be followed by six distinct service characters")
            }
            SyntaxErrorKind::BadTag(tag) => {
                write!(f, "segment tag {tag:?} is not three upper-case letters")
            }
            SyntaxErrorKind::Unterminated => write!(f, "segment has no terminator"),
            SyntaxErrorKind::DanglingRelease => {
                write!(f, "release character at the end of the input")
            }
            SyntaxErrorKind::NeedlessRelease(c) => {
                write!(
                    f,
                    "release character before {c:?}, which is not a service character"
                )
            }
            SyntaxErrorKind::NotInRepertoire(c) => write!(
                f,
                "a character (U+{:04X}) is outside the UNOC (ISO 8859-1) repertoire",
                u32::from(*c)
            ),
            SyntaxErrorKind::EmptySegment => write!(f, "empty segment"),
        }
    }
}

/// Whether `c` may appear in UNOC data: the printable characters of ISO 8859-1. Control
/// characters (C0, DEL, C1) are refused too: they have no business in invoice fields and line
/// breaks would be taken for segment separators by some readers.
pub fn in_repertoire(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0x7E | 0xA0..=0xFF)
}

/// How [`write_segments`] lays out its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// The service characters.
    pub chars: ServiceChars,
    /// Whether to start with the `UNA` service string advice.
    pub una: bool,
    /// Whether to write `\r\n` after every segment terminator (readability; readers must
    /// ignore it).
    pub line_breaks: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chars: ServiceChars::SGB_V_302,
            una: true,
            line_breaks: false,
        }
    }
}

/// Writes segments as EDIFACT text (a Rust string holding only UNOC characters; see
/// [`encode_latin1`] for the bytes). Fails on a character outside the repertoire or a bad tag.
pub fn write_segments(segments: &[Segment], options: &WriteOptions) -> Result<String, SyntaxError> {
    let chars = options.chars;
    let mut out = String::new();
    if options.una {
        out.push_str(&chars.una());
        if options.line_breaks {
            out.push_str("\r\n");
        }
    }
    for (index, segment) in segments.iter().enumerate() {
        let number = index + 1;
        if !valid_tag(&segment.tag) {
            return Err(SyntaxError {
                position: out.len(),
                segment: number,
                reason: SyntaxErrorKind::BadTag(segment.tag.clone()),
            });
        }
        out.push_str(&segment.tag);
        // Trailing empty elements (and trailing empty components of each element) are left out,
        // as ISO 9735 allows; the reader treats a missing element as empty.
        let used = segment
            .elements
            .iter()
            .rposition(|e| e.iter().any(|c| !c.is_empty()))
            .map_or(0, |i| i + 1);
        for element in &segment.elements[..used] {
            out.push(chars.element);
            let used_components = element
                .iter()
                .rposition(|c| !c.is_empty())
                .map_or(0, |i| i + 1);
            for (ci, component) in element[..used_components].iter().enumerate() {
                if ci > 0 {
                    out.push(chars.component);
                }
                for c in component.chars() {
                    if !in_repertoire(c) {
                        return Err(SyntaxError {
                            position: out.len(),
                            segment: number,
                            reason: SyntaxErrorKind::NotInRepertoire(c),
                        });
                    }
                    if chars.is_escaped(c) {
                        out.push(chars.release);
                    }
                    out.push(c);
                }
            }
        }
        out.push(chars.segment);
        if options.line_breaks {
            out.push_str("\r\n");
        }
    }
    Ok(out)
}

fn valid_tag(tag: &str) -> bool {
    tag.len() == 3 && tag.bytes().all(|b| b.is_ascii_uppercase())
}

/// Text after parsing: the service characters in force and the segments with their byte
/// offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The service characters (from `UNA`, else [`ServiceChars::SGB_V_302`]).
    pub chars: ServiceChars,
    /// Whether the text started with `UNA`.
    pub una: bool,
    /// The segments, in order, each with the byte offset of its tag.
    pub segments: Vec<(usize, Segment)>,
}

/// Parses EDIFACT text into segments. Without a `UNA` header the § 302 service characters are
/// assumed (their decimal comma differs from the ISO 9735 default, so § 302 senders are
/// expected to announce them; either way is read).
pub fn parse_segments(input: &str) -> Result<Parsed, SyntaxError> {
    let err = |position, segment, reason| SyntaxError {
        position,
        segment,
        reason,
    };
    if input.trim().is_empty() {
        return Err(err(0, 0, SyntaxErrorKind::Empty));
    }
    let (chars, una, body_start) = if let Some(after_una) = input.strip_prefix("UNA") {
        let advice: Vec<char> = after_una.chars().take(6).collect();
        let parsed = match advice.as_slice() {
            [component, element, decimal, release, _reserved, segment] => ServiceChars {
                component: *component,
                element: *element,
                decimal: *decimal,
                release: *release,
                segment: *segment,
            },
            _ => return Err(err(0, 0, SyntaxErrorKind::BadServiceStringAdvice)),
        };
        if !parsed.distinct() || [parsed.component, parsed.element].contains(&parsed.decimal) {
            return Err(err(0, 0, SyntaxErrorKind::BadServiceStringAdvice));
        }
        let len = 3 + advice.iter().map(|c| c.len_utf8()).sum::<usize>();
        (parsed, true, len)
    } else {
        (ServiceChars::SGB_V_302, false, 0)
    };

    let mut segments = Vec::new();
    let mut rest = input[body_start..].char_indices().peekable();
    loop {
        // Line breaks between segments are layout, not data.
        while let Some((_, c)) = rest.peek() {
            if *c == '\r' || *c == '\n' {
                rest.next();
            } else {
                break;
            }
        }
        let Some(&(start, _)) = rest.peek() else {
            break;
        };
        let start = body_start + start;
        let number = segments.len() + 1;
        let mut fields: Vec<Vec<String>> = vec![vec![String::new()]];
        let mut terminated = false;
        while let Some((offset, c)) = rest.next() {
            let position = body_start + offset;
            if c == chars.release {
                let Some((_, next)) = rest.next() else {
                    return Err(err(position, number, SyntaxErrorKind::DanglingRelease));
                };
                if !chars.is_escaped(next) {
                    return Err(err(
                        position,
                        number,
                        SyntaxErrorKind::NeedlessRelease(next),
                    ));
                }
                push_char(&mut fields, next);
            } else if c == chars.segment {
                terminated = true;
                break;
            } else if c == chars.element {
                fields.push(vec![String::new()]);
            } else if c == chars.component {
                if let Some(element) = fields.last_mut() {
                    element.push(String::new());
                }
            } else if in_repertoire(c) {
                push_char(&mut fields, c);
            } else {
                return Err(err(position, number, SyntaxErrorKind::NotInRepertoire(c)));
            }
        }
        if !terminated {
            return Err(err(start, number, SyntaxErrorKind::Unterminated));
        }
        let mut fields = fields.into_iter();
        let tag_element = fields.next().unwrap_or_default();
        let tag = tag_element.concat();
        if tag.is_empty() && tag_element.len() == 1 {
            return Err(err(start, number, SyntaxErrorKind::EmptySegment));
        }
        if tag_element.len() != 1 || !valid_tag(&tag) {
            return Err(err(start, number, SyntaxErrorKind::BadTag(tag)));
        }
        segments.push((
            start,
            Segment {
                tag,
                elements: fields.collect(),
            },
        ));
    }
    if segments.is_empty() {
        return Err(err(0, 0, SyntaxErrorKind::Empty));
    }
    Ok(Parsed {
        chars,
        una,
        segments,
    })
}

fn push_char(fields: &mut [Vec<String>], c: char) {
    if let Some(component) = fields.last_mut().and_then(|e| e.last_mut()) {
        component.push(c);
    }
}

/// The ISO 8859-1 bytes of `text`. Fails on the first character above U+00FF (byte offset in
/// `text`); call it on the output of [`write_segments`], which already refused those.
pub fn encode_latin1(text: &str) -> Result<Vec<u8>, SyntaxError> {
    text.char_indices()
        .map(|(position, c)| {
            u8::try_from(u32::from(c)).map_err(|_| SyntaxError {
                position,
                segment: 0,
                reason: SyntaxErrorKind::NotInRepertoire(c),
            })
        })
        .collect()
}

/// Decodes ISO 8859-1 bytes. Every byte is a character (U+0000..U+00FF), so this cannot fail;
/// the parser then refuses control characters.
pub fn decode_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Parsed {
        match parse_segments(input) {
            Ok(p) => p,
            Err(e) => panic!("{input:?} must parse: {e}"),
        }
    }

    fn write(segments: &[Segment], una: bool) -> String {
        let options = WriteOptions {
            una,
            ..WriteOptions::default()
        };
        match write_segments(segments, &options) {
            Ok(s) => s,
            Err(e) => panic!("must write: {e}"),
        }
    }

    #[test]
    fn escapes_every_service_character_but_the_decimal_mark() {
        let seg = Segment::new("NAD")
            .simple(Some("O'Neil-Müller+Söhne"))
            .simple(Some("Wer? Was: 12,50"));
        let text = write(std::slice::from_ref(&seg), false);
        assert_eq!(text, "NAD+O?'Neil-Müller?+Söhne+Wer?? Was?: 12,50'");
        let parsed = parse(&text);
        assert_eq!(parsed.segments.len(), 1);
        assert_eq!(parsed.segments[0].1, seg);
        assert!(!parsed.una);
    }

    #[test]
    fn una_is_written_and_read() {
        let seg = Segment::new("UNZ").simple(Some("1")).simple(Some("00001"));
        let text = write(&[seg], true);
        assert_eq!(text, "UNA:+,? 'UNZ+1+00001'");
        let parsed = parse(&text);
        assert!(parsed.una);
        assert_eq!(parsed.chars, ServiceChars::SGB_V_302);
        assert_eq!(parsed.segments[0].0, 9);
    }

    #[test]
    fn other_service_characters_from_una_are_honoured() {
        let parsed = parse("UNA|*.# !ABC*x|y#*z*!DEF!");
        let segs: Vec<&Segment> = parsed.segments.iter().map(|(_, s)| s).collect();
        assert_eq!(segs[0].tag, "ABC");
        assert_eq!(segs[0].get(0, 0), Some("x"));
        assert_eq!(segs[0].get(0, 1), Some("y*z"));
        assert_eq!(segs[1].tag, "DEF");
    }

    #[test]
    fn trailing_empty_elements_and_components_are_left_out() {
        let seg = Segment::new("FKT")
            .simple(Some("01"))
            .simple(None)
            .composite(&["a", "", ""])
            .simple(None);
        assert_eq!(write(&[seg], false), "FKT+01++a'");
    }

    #[test]
    fn line_breaks_between_segments_are_ignored() {
        let parsed = parse("UNA:+,? '\r\nAAA+1'\r\nBBB+2'\n");
        assert_eq!(parsed.segments.len(), 2);
        assert_eq!(parsed.segments[1].1.get(0, 0), Some("2"));
    }

    #[test]
    fn characters_outside_latin1_are_rejected_when_writing() {
        let seg = Segment::new("NAD").simple(Some("Łukasz"));
        let err = write_segments(&[seg], &WriteOptions::default());
        assert!(matches!(
            err,
            Err(SyntaxError {
                segment: 1,
                reason: SyntaxErrorKind::NotInRepertoire('Ł'),
                ..
            })
        ));
        let tab = Segment::new("TXT").simple(Some("a\tb"));
        assert!(write_segments(&[tab], &WriteOptions::default()).is_err());
    }

    #[test]
    fn malformed_input_is_rejected_with_position_and_reason() {
        let cases: &[(&str, SyntaxErrorKind, usize)] = &[
            ("", SyntaxErrorKind::Empty, 0),
            ("UNA:+", SyntaxErrorKind::BadServiceStringAdvice, 0),
            ("UNA::,? '", SyntaxErrorKind::BadServiceStringAdvice, 0),
            ("AAA+1'BBB+2", SyntaxErrorKind::Unterminated, 6),
            ("AAA+1?", SyntaxErrorKind::DanglingRelease, 5),
            ("AAA+1?x'", SyntaxErrorKind::NeedlessRelease('x'), 5),
            ("AAA+1''", SyntaxErrorKind::EmptySegment, 6),
            ("aaa+1'", SyntaxErrorKind::BadTag("aaa".into()), 0),
            ("AA:A+1'", SyntaxErrorKind::BadTag("AAA".into()), 0),
            ("AAA+\u{1}'", SyntaxErrorKind::NotInRepertoire('\u{1}'), 4),
            ("AAA+€'", SyntaxErrorKind::NotInRepertoire('€'), 4),
        ];
        for (input, kind, position) in cases {
            match parse_segments(input) {
                Ok(p) => panic!("{input:?} must be rejected, got {p:?}"),
                Err(e) => {
                    assert_eq!(&e.reason, kind, "{input:?}");
                    assert_eq!(e.position, *position, "{input:?}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn latin1_bytes_round_trip() {
        let text = "NAD+Müller+Jörg+Straße ÄÖÜ'";
        let bytes = match encode_latin1(text) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(bytes.len(), text.chars().count());
        assert!(bytes.contains(&0xFC)); // ü
        assert!(bytes.contains(&0xDF)); // ß
        assert_eq!(decode_latin1(&bytes), text);
        assert!(encode_latin1("Ł").is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for fuzzing: every prefix of a valid text, and some byte soup.
        let text = "UNA:+,? 'UNB+UNOC:3+1+2'NAD+O?'N?+e:x'UNZ+1'";
        for end in 0..=text.len() {
            if text.is_char_boundary(end) {
                let _ = parse_segments(&text[..end]);
            }
        }
        let soup: Vec<u8> = (0..=255u8).cycle().take(2000).collect();
        let _ = parse_segments(&decode_latin1(&soup));
    }
}
