//! Key lists (Schlüssel) of the § 302 SGB V data exchange that the billing core uses, each with
//! its code as written in the file (facts 38-39).

use serde::{Deserialize, Serialize};

/// Generates `code()` and `from_code()` for a key enum, so the two directions cannot drift.
macro_rules! key_codes {
    ($name:ident { $($variant:ident => $code:literal),+ $(,)? }) => {
        impl $name {
            /// The code as written in the § 302 file.
            pub fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code),+
                }
            }

            /// The key for a code read from a file, `None` if the code is not in the list.
            pub fn from_code(code: &str) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

/// Test indicator of the interchange header (UNB), fact 39.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TestIndicator {
    /// `0` Testdatei: test data, not processed.
    #[serde(rename = "0")]
    Test,
    /// `1` Erprobungsdatei: trial run in parallel to paper billing.
    #[serde(rename = "1")]
    Trial,
    /// `2` Echtdatei: real billing data.
    #[serde(rename = "2")]
    Production,
}
key_codes!(TestIndicator { Test => "0", Trial => "1", Production => "2" });

/// Rechnungsart (who bills and who is paid), fact 38.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rechnungsart {
    /// `1`: the provider bills and is paid itself.
    #[serde(rename = "1")]
    Provider,
    /// `2`: a billing centre without collection authority bills; the provider is paid.
    #[serde(rename = "2")]
    CentreWithoutCollection,
    /// `3`: a billing centre with collection authority bills and is paid.
    #[serde(rename = "3")]
    CentreWithCollection,
}
key_codes!(Rechnungsart {
    Provider => "1",
    CentreWithoutCollection => "2",
    CentreWithCollection => "3",
});

/// Verarbeitungskennzeichen of the FKT segment, fact 38.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verarbeitungskennzeichen {
    /// `01`: first bill.
    #[serde(rename = "01")]
    FirstBill,
    /// `02`: Nachforderung (additional claim). Not produced yet.
    #[serde(rename = "02")]
    AdditionalClaim,
    /// `03`: Zuzahlungsnachforderung (co-payment claim). Not produced yet.
    #[serde(rename = "03")]
    CopaymentClaim,
    /// `04`: correction of an earlier bill.
    #[serde(rename = "04")]
    Correction,
}
key_codes!(Verarbeitungskennzeichen {
    FirstBill => "01",
    AdditionalClaim => "02",
    CopaymentClaim => "03",
    Correction => "04",
});

/// Zuzahlungskennzeichen, fact 38.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Zuzahlungskennzeichen {
    /// `0`: no statutory co-payment (e.g. under 18).
    #[serde(rename = "0")]
    None,
    /// `1`: exempt (Befreiung).
    #[serde(rename = "1")]
    Exempt,
    /// `2`: not paid despite a written request.
    #[serde(rename = "2")]
    NotPaidDespiteRequest,
    /// `3`: liable.
    #[serde(rename = "3")]
    Liable,
    /// `4`: transition liable -> free within the period.
    #[serde(rename = "4")]
    LiableToFree,
    /// `5`: transition free -> liable within the period.
    #[serde(rename = "5")]
    FreeToLiable,
}
key_codes!(Zuzahlungskennzeichen {
    None => "0",
    Exempt => "1",
    NotPaidDespiteRequest => "2",
    Liable => "3",
    LiableToFree => "4",
    FreeToLiable => "5",
});

/// Summenstatus of the SLGA totals (GES), fact 38.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Summenstatus {
    /// `00`: all cases.
    #[serde(rename = "00")]
    Total,
    /// `11`: members.
    #[serde(rename = "11")]
    Members,
    /// `31`: family members.
    #[serde(rename = "31")]
    Family,
    /// `51`: pensioners.
    #[serde(rename = "51")]
    Pensioners,
    /// `99`: not assignable.
    #[serde(rename = "99")]
    Unassignable,
}
key_codes!(Summenstatus {
    Total => "00",
    Members => "11",
    Family => "31",
    Pensioners => "51",
    Unassignable => "99",
});

impl Summenstatus {
    /// The group of an insured person's Versichertenstatus: first digit 1 members, 3 family,
    /// 5 pensioners, anything else unassignable. UNVERIFIED: this follows the public reference
    /// implementation (coop-care/paid `getSummenstatus`), not the TA text.
    pub fn of_versichertenstatus(status: &str) -> Summenstatus {
        match status.as_bytes().first() {
            Some(b'1') => Summenstatus::Members,
            Some(b'3') => Summenstatus::Family,
            Some(b'5') => Summenstatus::Pensioners,
            _ => Summenstatus::Unassignable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for k in [
            Verarbeitungskennzeichen::FirstBill,
            Verarbeitungskennzeichen::AdditionalClaim,
            Verarbeitungskennzeichen::CopaymentClaim,
            Verarbeitungskennzeichen::Correction,
        ] {
            assert_eq!(Verarbeitungskennzeichen::from_code(k.code()), Some(k));
        }
        assert_eq!(Verarbeitungskennzeichen::Correction.code(), "04");
        assert_eq!(
            TestIndicator::from_code("2"),
            Some(TestIndicator::Production)
        );
        assert_eq!(Zuzahlungskennzeichen::from_code("6"), None);
        assert_eq!(
            Summenstatus::of_versichertenstatus("30000"),
            Summenstatus::Family
        );
        assert_eq!(
            Summenstatus::of_versichertenstatus(""),
            Summenstatus::Unassignable
        );
    }
}
