//! Micro-benchmarks of the pure stages on the accepted example referral, beside the bare JSON
//! parse of the same bytes. Run: `cargo bench --bench pipeline`.

use sociogate::bench::inprocess::pipeline_once;
use sociogate::config::AmqpConfig;
use sociogate::decode::{self, Limits};
use sociogate::mappings::Mappings;
use sociogate::pipeline::{Engine, Inbound};
use sociogate::store::ledger::MemoryLedger;

fn main() {
    divan::main();
}

const EXAMPLE: &[u8] = include_bytes!("../examples/de-first-prescription-message.json");

fn engine() -> Engine {
    match Engine::load(&Mappings::default_dir(), Limits::default()) {
        Ok(e) => e,
        Err(e) => panic!("mappings: {e}"),
    }
}

#[divan::bench]
fn baseline_parse_value() -> Option<serde_json::Value> {
    serde_json::from_slice(divan::black_box(EXAMPLE)).ok()
}

#[divan::bench]
fn decode_typed() -> bool {
    decode::decode(divan::black_box(EXAMPLE), None, &Limits::default()).is_ok()
}

#[divan::bench]
fn decode_map_check(bencher: divan::Bencher) {
    let engine = engine();
    let today = time::OffsetDateTime::now_utc().date();
    bencher.bench_local(|| {
        let mut ledger = MemoryLedger::default();
        let inbound = Inbound {
            bytes: divan::black_box(EXAMPLE),
            content_type: None,
            message_id: None,
            jurisdiction: None,
        };
        engine.process(inbound, &mut ledger, today).ok()
    });
}

/// Everything the in-process row of `sociogate bench` measures: decode, map, check, the
/// OperationOutcome and every planned output.
#[divan::bench]
fn pipeline_with_outputs(bencher: divan::Bencher) {
    let engine = engine();
    let cfg = AmqpConfig::default();
    let today = time::OffsetDateTime::now_utc().date();
    bencher.bench_local(|| {
        let mut ledger = MemoryLedger::default();
        pipeline_once(&engine, &cfg, divan::black_box(EXAMPLE), &mut ledger, today)
    });
}
