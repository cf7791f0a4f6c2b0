//! The published JSON Schema of the canonical model must match the Rust types.
//!
//! Regenerate with `UPDATE_SCHEMA=1 cargo test --test schema`.

use sociogate::model::Referral;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/referral.schema.json");

#[test]
fn checked_in_schema_matches_the_model() {
    let schema = schemars::schema_for!(Referral);
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    );
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(PATH, &generated).unwrap_or_else(|e| panic!("writing {PATH}: {e}"));
    }
    let checked_in = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        checked_in == generated,
        "schemas/referral.schema.json is stale: run UPDATE_SCHEMA=1 cargo test --test schema"
    );
    // The schema names the model's required shape, not just any object.
    let value: serde_json::Value = serde_json::from_str(&checked_in).unwrap_or_default();
    assert_eq!(value["title"], "Referral");
    assert!(value["properties"]["diagnoses"].is_object());
}
