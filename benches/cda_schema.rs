//! CDA R2 schema validation (libxml2, `decode::cda_schema`) on the C-CDA Referral Note of the
//! shared corpus (138 kB), beside a plain quick-xml read of the same text (the baseline), the
//! gateway's XML safety layer, a libxml2 parse without validation, and the once-per-thread
//! schema compilation. Run: `cargo bench --bench cda_schema`.

use libxml::parser::{Parser, ParserOptions};
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
use quick_xml::events::Event;
use sociogate::decode::Limits;
use sociogate::decode::cda_schema;
use sociogate::decode::xml::{self, Node, Reader};

fn main() {
    divan::main();
}

const REFERRAL_NOTE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpus/hl7-c-cda-examples/Documents/Referral Note/Referral_Note.xml"
);

const XSD: &str = include_str!("../schemas/cda-r2-subset.xsd");

/// The Referral Note as the safety layer passes it on.
fn text() -> String {
    let bytes = std::fs::read(REFERRAL_NOTE).unwrap_or_else(|e| panic!("{REFERRAL_NOTE}: {e}"));
    match xml::to_utf8(&bytes) {
        Ok(text) => text.into_owned(),
        Err(e) => panic!("{REFERRAL_NOTE}: {e}"),
    }
}

/// Baseline: every event of the document with quick-xml, nothing checked.
#[divan::bench]
fn quick_xml_read(bencher: divan::Bencher) {
    let text = text();
    bencher.bench_local(|| {
        let mut reader = quick_xml::Reader::from_str(divan::black_box(&text));
        let mut elements = 0usize;
        loop {
            match reader.read_event() {
                Ok(Event::Start(_) | Event::Empty(_)) => elements += 1,
                Ok(Event::Eof) | Err(_) => break,
                Ok(_) => {}
            }
        }
        elements
    });
}

/// The gateway's safety layer (runs before the schema validation).
#[divan::bench]
fn safety_layer_read(bencher: divan::Bencher) {
    let text = text();
    let limits = Limits::default();
    bencher.bench_local(|| {
        let mut reader = Reader::new(divan::black_box(&text), &limits);
        let mut nodes = 0usize;
        while let Ok(node) = reader.read() {
            if matches!(node, Node::Eof) {
                break;
            }
            nodes += 1;
        }
        nodes
    });
}

/// libxml2's parse into a tree alone, with the options `cda_schema` uses.
#[divan::bench]
fn libxml_parse(bencher: divan::Bencher) {
    let text = text();
    let parser = Parser::default();
    bencher.bench_local(|| {
        let options = ParserOptions {
            recover: false,
            no_net: true,
            encoding: Some("UTF-8"),
            ..ParserOptions::default()
        };
        parser
            .parse_string_with_diagnostics(divan::black_box(&text), options)
            .is_ok()
    });
}

/// Parse and validate against the subset schema (compiled once per thread beforehand).
#[divan::bench]
fn libxml_parse_and_validate(bencher: divan::Bencher) {
    let text = text();
    assert!(
        cda_schema::validate(&text).is_ok(),
        "the Referral Note must validate"
    );
    bencher.bench_local(|| cda_schema::validate(divan::black_box(&text)).is_ok());
}

/// What each thread pays once: compiling the embedded schema.
#[divan::bench]
fn compile_schema() -> bool {
    let mut parser = SchemaParserContext::from_buffer(divan::black_box(XSD));
    SchemaValidationContext::from_parser(&mut parser).is_ok()
}
