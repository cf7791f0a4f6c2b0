//! File intake for the command line: files and directories, read with a size cap so a huge file
//! is refused without loading it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Expands the arguments: a file stays itself, a directory becomes every file below it (sorted,
/// hidden files skipped). Missing paths are kept so that the caller reports them.
pub fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found);
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        out.push(dir.to_owned());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Reads at most `limit + 1` bytes: enough for decode to see that a file is over the limit.
pub fn read_capped(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Content type guessed from the file extension, as a transport would declare it.
pub fn content_type_of(path: &Path) -> Option<&'static str> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Some("application/fhir+json"),
        Some("xml") => Some("application/xml"),
        _ => None,
    }
}
