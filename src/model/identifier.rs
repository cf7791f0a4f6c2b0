//! Identifiers with a recognised kind and a normalised system URI.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An identifier with its normalised system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Identifier {
    /// What the identifier is, when the system is recognised.
    pub kind: IdentifierKind,
    /// The system URI, normalised to its current spelling.
    pub system: Option<String>,
    /// The value, trimmed.
    pub value: String,
}

/// Recognised identifier kinds (see `mappings/*/identifier-systems.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IdentifierKind {
    /// DE: Krankenversichertennummer, 10-character unchangeable part (KVID-10).
    Kvid10,
    /// DE: private insurance KVID.
    PkvId,
    /// DE: Institutionskennzeichen.
    Iknr,
    /// DE: lebenslange Arztnummer.
    Lanr,
    /// DE: Betriebsstättennummer.
    Bsnr,
    /// DE: Telematik-ID.
    TelematikId,
    /// NL: Burgerservicenummer.
    Bsn,
    /// NL: AGB code.
    Agb,
    /// NL: URA number.
    Ura,
    /// NL: UZI number.
    Uzi,
    /// NL: UZOVI insurer number.
    Uzovi,
    /// NL: BIG register number.
    Big,
    /// FI: henkilötunnus.
    Hetu,
    /// FI: organisation OID.
    FiOrganisation,
    /// FI: Terhikki professional register.
    Terhikki,
    /// Not recognised.
    Other,
}
