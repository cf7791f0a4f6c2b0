//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use sociogate::check::Verdict;
use sociogate::decode::Limits;
use sociogate::mappings::Mappings;
use sociogate::pipeline::{Engine, Inbound, Processed};
use sociogate::store::ledger::MemoryLedger;
use time::Date;
use time::macros::date;

/// "Today" for every test, so age and date rules are reproducible.
pub const TODAY: Date = date!(2026 - 11 - 15);

/// The engine over the repository's `mappings/`.
pub fn engine() -> Engine {
    match Engine::load(&Mappings::default_dir(), Limits::default()) {
        Ok(engine) => engine,
        Err(e) => panic!("mappings must load: {e:#?}"),
    }
}

/// Every file under `dir`, recursively (none when it cannot be read).
pub fn all_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Third-party material beside the repository (`../shared/corpus`).
pub fn corpus() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus"));
    assert!(
        dir.is_dir(),
        "the shared corpus must sit beside the repository at {}",
        dir.display()
    );
    dir
}

/// Processes `bytes` with a fresh ledger.
pub fn process(engine: &Engine, bytes: &[u8]) -> Processed {
    let mut ledger = MemoryLedger::default();
    process_with(engine, bytes, &mut ledger)
}

/// Processes `bytes` against `ledger`.
pub fn process_with(engine: &Engine, bytes: &[u8], ledger: &mut MemoryLedger) -> Processed {
    let inbound = Inbound {
        bytes,
        content_type: None,
        message_id: None,
        jurisdiction: None,
    };
    match engine.process(inbound, ledger, TODAY) {
        Ok(p) => p,
        Err(e) => panic!("the in-memory ledger cannot fail: {e}"),
    }
}

/// The rule codes of a result.
pub fn codes(processed: &Processed) -> Vec<&str> {
    processed.issues.iter().map(|i| i.code.as_str()).collect()
}

/// Shorthand for the verdict name.
pub fn verdict(processed: &Processed) -> &'static str {
    match processed.verdict {
        Verdict::Accepted => "accepted",
        Verdict::Rejected => "rejected",
        Verdict::Unreadable => "unreadable",
    }
}

/// Reads a file of the repository.
pub fn read(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub mod service;
