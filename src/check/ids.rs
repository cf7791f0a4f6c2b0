//! Check digits and formats of national identifiers (facts A9, B60, C68).
//!
//! Pure functions over the identifier text; the rule packs decide how severe a failure is.

/// Digit sum of a product below 100 (used by the mod-10 schemes).
fn digit_sum(n: u32) -> u32 {
    n / 10 + n % 10
}

fn digits(s: &str) -> Option<Vec<u32>> {
    s.chars().map(|c| c.to_digit(10)).collect()
}

/// German KVNR / KVID-10: a capital letter and nine digits, the last a check digit.
///
/// The letter becomes its two-digit position (A=01 .. Z=26); with the next eight digits that
/// gives ten digits, weighted 1,2,1,2,... left to right; products are replaced by their digit
/// sums; the check digit is the sum mod 10.
pub fn kvnr_valid(kvnr: &str) -> bool {
    let bytes = kvnr.as_bytes();
    if bytes.len() != 10 || !bytes[0].is_ascii_uppercase() {
        return false;
    }
    let Some(rest) = digits(&kvnr[1..]) else {
        return false;
    };
    let letter = u32::from(bytes[0] - b'A' + 1);
    let mut ten = vec![letter / 10, letter % 10];
    ten.extend_from_slice(&rest[..8]);
    let sum: u32 = ten
        .iter()
        .enumerate()
        .map(|(i, d)| digit_sum(d * if i % 2 == 0 { 1 } else { 2 }))
        .sum();
    sum % 10 == rest[8]
}

/// German IK (Institutionskennzeichen): nine digits; the check digit is computed over digits
/// 3 to 8 only, weighted 2,1,2,1,2,1, products replaced by digit sums, sum mod 10.
pub fn ik_valid(ik: &str) -> bool {
    let Some(d) = digits(ik).filter(|d| d.len() == 9) else {
        return false;
    };
    let weights = [2, 1, 2, 1, 2, 1];
    let sum: u32 = (2..8).map(|i| digit_sum(d[i] * weights[i - 2])).sum();
    sum % 10 == d[8]
}

/// German LANR: nine digits; digit 7 checks digits 1 to 6 weighted 4,9,4,9,4,9:
/// `c = 10 - (sum mod 10)`, and 10 becomes 0.
pub fn lanr_valid(lanr: &str) -> bool {
    let Some(d) = digits(lanr).filter(|d| d.len() == 9) else {
        return false;
    };
    let weights = [4, 9, 4, 9, 4, 9];
    let sum: u32 = (0..6).map(|i| d[i] * weights[i]).sum();
    let check = (10 - sum % 10) % 10;
    check == d[6]
}

/// The Fachgruppe (digits 8-9) of a nine-digit LANR.
pub fn lanr_specialty(lanr: &str) -> Option<&str> {
    (lanr.len() == 9 && lanr.bytes().all(|b| b.is_ascii_digit())).then(|| &lanr[7..9])
}

/// German BSNR: nine digits (no check digit is defined).
pub fn bsnr_valid(bsnr: &str) -> bool {
    bsnr.len() == 9 && bsnr.bytes().all(|b| b.is_ascii_digit())
}

/// Dutch BSN: nine digits (eight are padded with a leading zero) passing the 11-proef with
/// weights 9..2 and -1; the weighted sum must be a positive multiple of 11.
pub fn bsn_valid(bsn: &str) -> bool {
    let padded;
    let bsn = if bsn.len() == 8 {
        padded = format!("0{bsn}");
        padded.as_str()
    } else {
        bsn
    };
    let Some(d) = digits(bsn).filter(|d| d.len() == 9) else {
        return false;
    };
    let weights: [i64; 9] = [9, 8, 7, 6, 5, 4, 3, 2, -1];
    let sum: i64 = d.iter().zip(weights).map(|(&d, w)| i64::from(d) * w).sum();
    sum > 0 && sum % 11 == 0
}

/// Parts of a Finnish henkilötunnus that passed its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hetu {
    /// Birth year with century.
    pub birth_year: i32,
    /// Birth month.
    pub birth_month: u8,
    /// Birth day.
    pub birth_day: u8,
    /// Individual numbers 900-999 are temporary identifiers.
    pub temporary: bool,
}

/// Finnish HETU: `DDMMYY`, a century sign, a three-digit individual number and a check
/// character `"0123456789ABCDEFHJKLMNPRSTUVWXY"[DDMMYYNNN mod 31]`. Century signs: `+` 1800s;
/// `-` `Y` `X` `W` `V` `U` 1900s; `A` to `F` 2000s (the extra signs exist since 2023).
pub fn hetu_parse(hetu: &str) -> Option<Hetu> {
    const CHECK: &[u8] = b"0123456789ABCDEFHJKLMNPRSTUVWXY";
    let b = hetu.as_bytes();
    if b.len() != 11 {
        return None;
    }
    let century = match b[6] {
        b'+' => 1800,
        b'-' | b'Y' | b'X' | b'W' | b'V' | b'U' => 1900,
        b'A'..=b'F' => 2000,
        _ => return None,
    };
    let date_digits = digits(&hetu[0..6])?;
    let individual = digits(&hetu[7..10])?;
    let number = date_digits
        .iter()
        .chain(individual.iter())
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d));
    let expected = CHECK[(number % 31) as usize];
    if b[10] != expected {
        return None;
    }
    let day = (date_digits[0] * 10 + date_digits[1]) as u8;
    let month = (date_digits[2] * 10 + date_digits[3]) as u8;
    let year = century + (date_digits[4] * 10 + date_digits[5]) as i32;
    let month_enum = time::Month::try_from(month).ok()?;
    time::Date::from_calendar_date(year, month_enum, day).ok()?;
    let individual_number = individual[0] * 100 + individual[1] * 10 + individual[2];
    if individual_number < 2 {
        return None;
    }
    Some(Hetu {
        birth_year: year,
        birth_month: month,
        birth_day: day,
        temporary: individual_number >= 900,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvnr_vectors_from_the_facts() {
        assert!(kvnr_valid("X110411675"));
        assert!(kvnr_valid("A123456780"));
        assert!(!kvnr_valid("X110411674"));
        // Known official test identities that fail the check (facts 43).
        assert!(!kvnr_valid("G995030567"));
        assert!(!kvnr_valid("x110411675"));
        assert!(!kvnr_valid("X11041167"));
        assert!(!kvnr_valid("X1104116755"));
        assert!(!kvnr_valid("ÄX10411675"));
    }

    #[test]
    fn ik_vectors_use_digits_three_to_eight_not_luhn() {
        for valid in [
            "260326822",
            "101575519",
            "107815761",
            "108310400",
            "109519005",
        ] {
            assert!(ik_valid(valid), "{valid}");
        }
        assert!(!ik_valid("260326828"));
        assert!(!ik_valid("26032682"));
        assert!(!ik_valid("26032682a"));
    }

    #[test]
    fn lanr_vectors() {
        for valid in ["754236701", "776299002", "123456601"] {
            assert!(lanr_valid(valid), "{valid}");
        }
        assert!(!lanr_valid("123456789"));
        assert_eq!(lanr_specialty("754236701"), Some("01"));
        assert_eq!(lanr_specialty("75423670"), None);
    }

    #[test]
    fn bsnr_is_nine_digits() {
        assert!(bsnr_valid("031234567"));
        assert!(!bsnr_valid("03123456"));
        assert!(!bsnr_valid("03123456X"));
    }

    #[test]
    fn bsn_eleven_test() {
        for valid in ["111222333", "123456782", "999996708"] {
            assert!(bsn_valid(valid), "{valid}");
        }
        assert!(!bsn_valid("123456789"));
        assert!(!bsn_valid("000000000"));
        assert!(!bsn_valid("12345678a"));
    }

    #[test]
    fn hetu_check_character_and_century_signs() {
        let h = hetu_parse("131052-308T");
        assert_eq!(
            h,
            Some(Hetu {
                birth_year: 1952,
                birth_month: 10,
                birth_day: 13,
                temporary: false
            })
        );
        assert_eq!(hetu_parse("131052-308U"), None);
        // The 2023 century signs map to the same centuries with the same check character.
        assert_eq!(hetu_parse("131052Y308T").map(|h| h.birth_year), Some(1952));
        assert_eq!(hetu_parse("131052A308T").map(|h| h.birth_year), Some(2052));
        assert_eq!(hetu_parse("131052+308T").map(|h| h.birth_year), Some(1852));
        // 900-999 are temporary numbers.
        assert_eq!(hetu_parse("010190-900P").map(|h| h.temporary), Some(true));
        assert_eq!(hetu_parse("010190-900"), None, "11 characters are required");
        assert_eq!(hetu_parse("310290-123A"), None, "31 February is no date");
    }
}
