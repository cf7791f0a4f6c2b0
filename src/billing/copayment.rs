//! Statutory co-payment (Zuzahlung) for Soziotherapie: § 37a Abs. 3 with § 61 Satz 1 SGB V
//! (facts 5-6).
//!
//! Per calendar day with at least one session:
//!
//! ```text
//! cost_day  = sum of that day's session costs
//! copay_day = min(cost_day, clamp(round2(0.10 * cost_day), 5.00, 10.00))
//! ```
//!
//! and 0 on days on which the patient is under 18 (age from the birth date on that session
//! date) or when the patient is exempt (Befreiung). The co-payment is per day, not per session:
//! two sessions on one day give one co-payment on their summed cost.
//!
//! **Rounding is UNVERIFIED**: the facts do not say how 10 % of the day's cost is rounded to
//! cents. [`CopaymentRules::rounding`] is therefore configurable (`mappings/de/billing.json`,
//! `copayment.rounding`); the default is commercial rounding, half away from zero
//! ([`RoundingStrategy::MidpointAwayFromZero`]).

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use time::Date;

use super::CopaymentStatus;
use super::keys::Zuzahlungskennzeichen;
use crate::check::de::age_on;

/// The parameters of the co-payment, normally from `mappings/de/billing.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopaymentRules {
    /// Share of the day's cost (0.10).
    pub percent: Decimal,
    /// Minimum per day (5.00 EUR), still capped at the day's cost.
    pub minimum: Decimal,
    /// Maximum per day (10.00 EUR).
    pub maximum: Decimal,
    /// Age from which the co-payment is due (18).
    pub adult_age: i32,
    /// How `percent * cost` is rounded to cents. UNVERIFIED; default half away from zero.
    pub rounding: RoundingStrategy,
}

impl Default for CopaymentRules {
    /// The statutory values of facts 5-6 with commercial rounding.
    fn default() -> Self {
        CopaymentRules {
            percent: Decimal::new(10, 2),
            minimum: Decimal::new(500, 2),
            maximum: Decimal::new(1000, 2),
            adult_age: 18,
            rounding: RoundingStrategy::MidpointAwayFromZero,
        }
    }
}

/// Why a day's co-payment is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayOutcome {
    /// The patient is liable on that day.
    Charged,
    /// The patient is under the adult age on that day.
    UnderAge,
    /// The patient is exempt.
    Exempt,
}

/// One calendar day with sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopaymentDay {
    /// The day.
    pub date: Date,
    /// Sum of that day's session costs.
    pub cost: Decimal,
    /// The co-payment for that day.
    pub copayment: Decimal,
    /// Why.
    pub outcome: DayOutcome,
}

/// The co-payments of one billing case.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopaymentSummary {
    /// One entry per calendar day with sessions, in date order.
    pub days: Vec<CopaymentDay>,
    /// Sum of the daily co-payments.
    pub total: Decimal,
}

impl CopaymentSummary {
    /// The Zuzahlungskennzeichen that describes these days: `1` exempt; `0` when no day was
    /// liable (under 18 throughout); `3` when every day was liable; `5` (free -> liable) when
    /// the patient turned 18 within the period. UNVERIFIED: using the transition keys 4/5 for
    /// the 18th birthday is our reading of fact 38, not confirmed by the TA.
    pub fn zuzahlungskennzeichen(&self, status: CopaymentStatus) -> Zuzahlungskennzeichen {
        if status == CopaymentStatus::Exempt {
            return Zuzahlungskennzeichen::Exempt;
        }
        let charged = self
            .days
            .iter()
            .filter(|d| d.outcome == DayOutcome::Charged)
            .count();
        if charged == 0 {
            Zuzahlungskennzeichen::None
        } else if charged == self.days.len() {
            Zuzahlungskennzeichen::Liable
        } else {
            Zuzahlungskennzeichen::FreeToLiable
        }
    }
}

/// The co-payment for one day's summed cost of a liable adult:
/// `min(cost, clamp(round2(percent * cost), minimum, maximum))`; 0 for a cost of 0 or less.
/// `None` only on arithmetic overflow (costs beyond 10^26 EUR).
pub fn copayment_for_day(cost: Decimal, rules: &CopaymentRules) -> Option<Decimal> {
    if cost <= Decimal::ZERO {
        return Some(Decimal::ZERO);
    }
    let share = cost
        .checked_mul(rules.percent)?
        .round_dp_with_strategy(2, rules.rounding);
    let clamped = share.max(rules.minimum).min(rules.maximum);
    Some(clamped.min(cost))
}

/// The co-payments for sessions given as `(date, cost)` pairs: grouped per calendar day, with
/// the age on each day computed from `birth_date`. `status` [`CopaymentStatus::Exempt`] makes
/// every day 0. [`CopaymentStatus::Liable`] and [`CopaymentStatus::Under18`] compute the same
/// way: the law ties the co-payment to the age on the day, so the birth date decides and a
/// patient marked "under 18" who turns 18 in the period pays from the birthday on.
/// `None` only on arithmetic overflow.
pub fn copayments<I>(
    sessions: I,
    birth_date: Date,
    status: CopaymentStatus,
    rules: &CopaymentRules,
) -> Option<CopaymentSummary>
where
    I: IntoIterator<Item = (Date, Decimal)>,
{
    let mut per_day: BTreeMap<Date, Decimal> = BTreeMap::new();
    for (date, cost) in sessions {
        let sum = per_day.entry(date).or_insert(Decimal::ZERO);
        *sum = sum.checked_add(cost)?;
    }
    let mut summary = CopaymentSummary::default();
    for (date, cost) in per_day {
        let (copayment, outcome) = if status == CopaymentStatus::Exempt {
            (Decimal::ZERO, DayOutcome::Exempt)
        } else if age_on(birth_date, date) < rules.adult_age {
            (Decimal::ZERO, DayOutcome::UnderAge)
        } else {
            (copayment_for_day(cost, rules)?, DayOutcome::Charged)
        };
        summary.total = summary.total.checked_add(copayment)?;
        summary.days.push(CopaymentDay {
            date,
            cost,
            copayment,
            outcome,
        });
    }
    Some(summary)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use time::macros::date;

    use super::*;

    fn eur(s: &str) -> Decimal {
        match Decimal::from_str(s) {
            Ok(d) => d,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn day(cost: &str) -> Decimal {
        match copayment_for_day(eur(cost), &CopaymentRules::default()) {
            Some(d) => d,
            None => panic!("overflow"),
        }
    }

    fn summary(
        sessions: &[(Date, &str)],
        birth: Date,
        status: CopaymentStatus,
        rules: &CopaymentRules,
    ) -> CopaymentSummary {
        match copayments(
            sessions.iter().map(|(d, c)| (*d, eur(c))),
            birth,
            status,
            rules,
        ) {
            Some(s) => s,
            None => panic!("overflow"),
        }
    }

    const ADULT: Date = date!(1980 - 05 - 17);

    #[test]
    fn ten_percent_between_the_limits() {
        assert_eq!(day("73.40"), eur("7.34"));
        assert_eq!(day("60.00"), eur("6.00"));
        assert_eq!(day("99.99"), eur("10.00")); // 9.999 rounds to 10.00
    }

    #[test]
    fn minimum_of_five_euros_but_never_more_than_the_cost() {
        assert_eq!(day("30.00"), eur("5.00"));
        assert_eq!(day("5.00"), eur("5.00"));
        assert_eq!(day("4.20"), eur("4.20"));
        assert_eq!(day("0.00"), eur("0.00"));
    }

    #[test]
    fn capped_at_ten_euros() {
        assert_eq!(day("100.00"), eur("10.00"));
        assert_eq!(day("180.00"), eur("10.00"));
    }

    #[test]
    fn half_a_cent_rounds_away_from_zero_by_default_and_is_configurable() {
        // 10 % of 73.45 is 7.345: exactly half a cent.
        assert_eq!(day("73.45"), eur("7.35"));
        assert_eq!(day("73.44"), eur("7.34"));
        let even = CopaymentRules {
            rounding: RoundingStrategy::MidpointNearestEven,
            ..CopaymentRules::default()
        };
        assert_eq!(copayment_for_day(eur("73.45"), &even), Some(eur("7.34")));
        assert_eq!(copayment_for_day(eur("73.55"), &even), Some(eur("7.36")));
        let down = CopaymentRules {
            rounding: RoundingStrategy::ToZero,
            ..CopaymentRules::default()
        };
        assert_eq!(copayment_for_day(eur("73.49"), &down), Some(eur("7.34")));
    }

    #[test]
    fn two_sessions_on_one_day_pay_once_on_the_summed_cost() {
        let rules = CopaymentRules::default();
        let s = summary(
            &[
                (date!(2026 - 10 - 05), "45.00"),
                (date!(2026 - 10 - 05), "30.00"),
                (date!(2026 - 10 - 07), "60.00"),
            ],
            ADULT,
            CopaymentStatus::Liable,
            &rules,
        );
        assert_eq!(s.days.len(), 2);
        assert_eq!(s.days[0].cost, eur("75.00"));
        assert_eq!(s.days[0].copayment, eur("7.50"));
        assert_eq!(s.days[1].copayment, eur("6.00"));
        assert_eq!(s.total, eur("13.50"));
        assert_eq!(
            s.zuzahlungskennzeichen(CopaymentStatus::Liable),
            Zuzahlungskennzeichen::Liable
        );
        // Charged separately the two sessions would have cost 5.00 + 5.00.
        assert!(s.days[0].copayment < eur("10.00"));
    }

    #[test]
    fn exempt_patients_pay_nothing() {
        let s = summary(
            &[
                (date!(2026 - 10 - 05), "73.40"),
                (date!(2026 - 10 - 06), "120.00"),
            ],
            ADULT,
            CopaymentStatus::Exempt,
            &CopaymentRules::default(),
        );
        assert_eq!(s.total, Decimal::ZERO);
        assert!(s.days.iter().all(|d| d.outcome == DayOutcome::Exempt));
        assert_eq!(
            s.zuzahlungskennzeichen(CopaymentStatus::Exempt),
            Zuzahlungskennzeichen::Exempt
        );
    }

    #[test]
    fn under_18_pays_nothing() {
        let s = summary(
            &[
                (date!(2026 - 10 - 05), "73.40"),
                (date!(2026 - 10 - 12), "60.00"),
            ],
            date!(2010 - 03 - 01),
            CopaymentStatus::Under18,
            &CopaymentRules::default(),
        );
        assert_eq!(s.total, Decimal::ZERO);
        assert!(s.days.iter().all(|d| d.outcome == DayOutcome::UnderAge));
        assert_eq!(
            s.zuzahlungskennzeichen(CopaymentStatus::Under18),
            Zuzahlungskennzeichen::None
        );
    }

    #[test]
    fn turning_18_mid_period_pays_from_the_birthday_on() {
        // Born 2008-10-15: 17 on the 14th, 18 on the 15th.
        let s = summary(
            &[
                (date!(2026 - 10 - 14), "60.00"),
                (date!(2026 - 10 - 15), "60.00"),
                (date!(2026 - 10 - 20), "73.40"),
            ],
            date!(2008 - 10 - 15),
            CopaymentStatus::Under18,
            &CopaymentRules::default(),
        );
        let got: Vec<_> = s.days.iter().map(|d| (d.copayment, d.outcome)).collect();
        assert_eq!(
            got,
            vec![
                (eur("0.00"), DayOutcome::UnderAge),
                (eur("6.00"), DayOutcome::Charged),
                (eur("7.34"), DayOutcome::Charged),
            ]
        );
        assert_eq!(s.total, eur("13.34"));
        assert_eq!(
            s.zuzahlungskennzeichen(CopaymentStatus::Under18),
            Zuzahlungskennzeichen::FreeToLiable
        );
    }

    #[test]
    fn born_on_29_february_turns_18_on_1_march_in_a_common_year() {
        let birth = date!(2008 - 02 - 29);
        let s = summary(
            &[
                (date!(2026 - 02 - 28), "60.00"),
                (date!(2026 - 03 - 01), "60.00"),
            ],
            birth,
            CopaymentStatus::Liable,
            &CopaymentRules::default(),
        );
        assert_eq!(s.days[0].outcome, DayOutcome::UnderAge);
        assert_eq!(s.days[1].outcome, DayOutcome::Charged);
    }

    #[test]
    fn overflow_is_reported_not_panicked() {
        let huge = Decimal::MAX;
        assert_eq!(
            copayments(
                [(date!(2026 - 10 - 05), huge), (date!(2026 - 10 - 05), huge)],
                ADULT,
                CopaymentStatus::Liable,
                &CopaymentRules::default(),
            ),
            None
        );
    }
}
