//! German rules for delivered sessions (§ 37a SGB V, ST-RL): a session is billable only within
//! the approved period and units, the 120-hour / 3-year budget, the seven days after discharge of
//! a hospital prescription, and at most five trial sessions. Pure: the gateway reads the approval
//! and the usage so far from the store and hands them in.

use time::Date;

use crate::check::{Issue, RuleCatalogue};
use crate::model::{Delivery, Referral, ReferralKind};

use super::DeRulePack;

/// Rule codes of the session check (verified against the catalogue at start).
pub const RULES: &[&str] = &[
    "DE-SE-01", "DE-SE-02", "DE-SE-03", "DE-SE-04", "DE-SE-05", "DE-SE-06", "DE-SE-07",
];

/// The insurer's answer to the preauthorization, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalFacts {
    /// Approved (false: refused).
    pub approved: bool,
    /// Approved period (both ends inclusive), if the insurer named one.
    pub period: Option<(Date, Date)>,
    /// Approved units, if the insurer named them (else the requested units stand).
    pub units: Option<u32>,
}

/// One delivered session as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    /// Day of the session.
    pub date: Date,
    /// Minutes delivered.
    pub minutes: u32,
    /// Individual or group.
    pub delivery: Delivery,
}

/// What was used before this session (read under the patient's lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionUsage {
    /// Unit minutes of this referral's accepted sessions (group minutes scaled to the
    /// referral's unit length, see [`DeRulePack::unit_minutes_of`]).
    pub referral_unit_minutes: u64,
    /// Accepted sessions of this referral.
    pub referral_sessions: u32,
    /// Budget minutes of the patient's accepted sessions in the budget window.
    pub patient_budget_minutes: u64,
}

/// The verdict on one session: findings and what it charges if accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCheck {
    /// Findings; any error rejects the session.
    pub issues: Vec<Issue>,
    /// Minutes the session charges against the 120-hour budget.
    pub budget_minutes: u64,
    /// Minutes the session uses of the approved units.
    pub unit_minutes: u64,
}

impl DeRulePack {
    /// Minutes a session charges against the budget: a group session counts as configured
    /// (`budget.group_unit_budget_minutes` per `units.group_minutes`; UNVERIFIED, facts 26).
    pub fn session_budget_minutes(&self, session: &SessionFacts) -> u64 {
        let minutes = u64::from(session.minutes);
        match session.delivery {
            Delivery::Individual => minutes,
            Delivery::Group => {
                let per_unit = u64::from(self.units.group_minutes.max(1));
                (minutes * u64::from(self.budget.group_unit_budget_minutes)).div_ceil(per_unit)
            }
        }
    }

    /// Minutes a session uses of the approved units: a unit is `units.individual_minutes`
    /// (group: `units.group_minutes`) long; units may be split (facts 26), so minutes count.
    /// Expressed in individual-unit minutes so one referral's sessions add up.
    pub fn unit_minutes_of(&self, session: &SessionFacts) -> u64 {
        let minutes = u64::from(session.minutes);
        match session.delivery {
            Delivery::Individual => minutes,
            Delivery::Group => (minutes * u64::from(self.units.individual_minutes))
                .div_ceil(u64::from(self.units.group_minutes.max(1))),
        }
    }

    /// Checks one delivered session of `referral`.
    pub fn check_session(
        &self,
        rules: &RuleCatalogue,
        referral: &Referral,
        approval: Option<&ApprovalFacts>,
        session: &SessionFacts,
        usage: &SessionUsage,
    ) -> SessionCheck {
        let mut issues = Vec::new();
        let budget_minutes = self.session_budget_minutes(session);
        let unit_minutes = self.unit_minutes_of(session);
        let day = |d: Date| d.to_string();
        match approval {
            None => issues.push(Issue::new(rules, "DE-SE-01").detail("no answer recorded")),
            Some(a) if !a.approved => issues.push(Issue::new(rules, "DE-SE-01").detail("refused")),
            Some(a) => {
                let period = a.period.or_else(|| {
                    referral
                        .requested_period
                        .and_then(|p| Some((p.start?, p.end?)))
                });
                if let Some((start, end)) = period
                    && (session.date < start || session.date > end)
                {
                    issues.push(
                        Issue::new(rules, "DE-SE-02")
                            .detail(day(session.date))
                            .limit(format!("{} – {}", day(start), day(end))),
                    );
                }
                let units = a
                    .units
                    .or_else(|| referral.requested_units.map(|u| u.count));
                if let Some(units) = units {
                    let allowed = u64::from(units) * u64::from(self.units.individual_minutes);
                    let after = usage.referral_unit_minutes + unit_minutes;
                    if after > allowed {
                        issues.push(Issue::new(rules, "DE-SE-03").detail(after).limit(allowed));
                    }
                }
            }
        }
        let after = usage.patient_budget_minutes + budget_minutes;
        if after > self.budget.minutes {
            issues.push(
                Issue::new(rules, "DE-SE-04")
                    .detail(after)
                    .limit(self.budget.minutes),
            );
        }
        if referral.kind == Some(ReferralKind::DischargePrescription)
            && let Some(discharge) = referral.hospital_stay.and_then(|s| s.discharge)
        {
            let last =
                discharge.saturating_add(time::Duration::days(self.discharge_max_days_after));
            if session.date > last {
                issues.push(
                    Issue::new(rules, "DE-SE-05")
                        .detail(day(session.date))
                        .limit(day(last)),
                );
            }
        }
        if referral.kind == Some(ReferralKind::TrialSessions)
            && usage.referral_sessions + 1 > self.trial_sessions_max_units
        {
            issues.push(
                Issue::new(rules, "DE-SE-06")
                    .detail(usage.referral_sessions + 1)
                    .limit(self.trial_sessions_max_units),
            );
        }
        if session.minutes == 0 {
            issues.push(Issue::new(rules, "DE-SE-07"));
        }
        SessionCheck {
            issues,
            budget_minutes,
            unit_minutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use time::macros::date;

    use super::*;
    use crate::mappings::Mappings;
    use crate::model::{DatePeriod, HospitalStay, Jurisdiction, ReferralIds, RequestedUnits};

    static MAPPINGS: LazyLock<Mappings> =
        LazyLock::new(|| match Mappings::load(&Mappings::default_dir()) {
            Ok(m) => m,
            Err(e) => panic!("mappings must load: {e:#?}"),
        });

    fn pack() -> DeRulePack {
        match MAPPINGS
            .parameters(Jurisdiction::De)
            .map(DeRulePack::from_value)
        {
            Some(Ok(pack)) => pack,
            other => panic!("German parameters must parse: {other:?}"),
        }
    }

    fn referral(kind: ReferralKind, units: u32) -> Referral {
        let mut r = Referral::draft(ReferralIds {
            gateway_id: "r".into(),
            sender_id: None,
            idempotency_key: "k".into(),
        });
        r.kind = Some(kind);
        r.requested_units = Some(RequestedUnits {
            count: units,
            unit_minutes: 60,
            delivery: Delivery::Individual,
        });
        r.requested_period = Some(DatePeriod {
            start: Some(date!(2026 - 11 - 01)),
            end: Some(date!(2027 - 02 - 28)),
        });
        r
    }

    const APPROVED: ApprovalFacts = ApprovalFacts {
        approved: true,
        period: Some((date!(2026 - 11 - 02), date!(2027 - 02 - 26))),
        units: Some(30),
    };

    fn session(date: Date, minutes: u32, delivery: Delivery) -> SessionFacts {
        SessionFacts {
            date,
            minutes,
            delivery,
        }
    }

    fn codes(check: &SessionCheck) -> Vec<&str> {
        check.issues.iter().map(|i| i.code.as_str()).collect()
    }

    #[test]
    fn the_120th_hour_is_accepted_and_the_next_minute_rejected() {
        let pack = pack();
        let r = referral(ReferralKind::FirstPrescription, 30);
        let rules = MAPPINGS.rules();
        let at_limit = SessionUsage {
            patient_budget_minutes: 7_140,
            ..SessionUsage::default()
        };
        let last_hour = pack.check_session(
            rules,
            &r,
            Some(&APPROVED),
            &session(date!(2026 - 11 - 20), 60, Delivery::Individual),
            &at_limit,
        );
        assert!(last_hour.issues.is_empty(), "{:?}", codes(&last_hour));
        assert_eq!(last_hour.budget_minutes, 60);
        let full = SessionUsage {
            patient_budget_minutes: 7_200,
            ..SessionUsage::default()
        };
        let one_more = pack.check_session(
            rules,
            &r,
            Some(&APPROVED),
            &session(date!(2026 - 11 - 21), 1, Delivery::Individual),
            &full,
        );
        assert_eq!(codes(&one_more), ["DE-SE-04"]);
        assert_eq!(one_more.issues[0].detail.as_deref(), Some("7201"));
        assert_eq!(one_more.issues[0].limit.as_deref(), Some("7200"));
    }

    #[test]
    fn approval_period_and_units_bound_the_sessions() {
        let pack = pack();
        let r = referral(ReferralKind::FirstPrescription, 30);
        let rules = MAPPINGS.rules();
        let s = session(date!(2026 - 11 - 20), 60, Delivery::Individual);
        let none = pack.check_session(rules, &r, None, &s, &SessionUsage::default());
        assert_eq!(codes(&none), ["DE-SE-01"]);
        let refused = ApprovalFacts {
            approved: false,
            ..APPROVED
        };
        let refused = pack.check_session(rules, &r, Some(&refused), &s, &SessionUsage::default());
        assert_eq!(codes(&refused), ["DE-SE-01"]);
        // The approved period (from 2 November) wins over the requested one (from 1 November).
        let early = session(date!(2026 - 11 - 01), 60, Delivery::Individual);
        let early =
            pack.check_session(rules, &r, Some(&APPROVED), &early, &SessionUsage::default());
        assert_eq!(codes(&early), ["DE-SE-02"]);
        // 29 units used: the 30th fits, a 31st does not.
        let used = SessionUsage {
            referral_unit_minutes: 29 * 60,
            referral_sessions: 29,
            patient_budget_minutes: 29 * 60,
        };
        assert!(
            pack.check_session(rules, &r, Some(&APPROVED), &s, &used)
                .issues
                .is_empty()
        );
        let all_used = SessionUsage {
            referral_unit_minutes: 30 * 60,
            ..used
        };
        let over = pack.check_session(rules, &r, Some(&APPROVED), &s, &all_used);
        assert_eq!(codes(&over), ["DE-SE-03"]);
    }

    #[test]
    fn group_sessions_count_as_configured() {
        let pack = pack();
        let group = session(date!(2026 - 11 - 20), 90, Delivery::Group);
        // A 90-minute group unit is one unit (60 individual-unit minutes) and charges the budget
        // `group_unit_budget_minutes` (90 as shipped).
        assert_eq!(pack.unit_minutes_of(&group), 60);
        assert_eq!(
            pack.session_budget_minutes(&group),
            u64::from(pack.budget.group_unit_budget_minutes)
        );
    }

    #[test]
    fn discharge_units_lapse_after_seven_days_and_trials_stop_at_five() {
        let pack = pack();
        let rules = MAPPINGS.rules();
        let mut discharge = referral(ReferralKind::DischargePrescription, 5);
        discharge.hospital_stay = Some(HospitalStay {
            admission: Some(date!(2026 - 10 - 20)),
            discharge: Some(date!(2026 - 11 - 10)),
        });
        let approval = ApprovalFacts {
            period: None,
            units: None,
            ..APPROVED
        };
        let seventh = session(date!(2026 - 11 - 17), 60, Delivery::Individual);
        assert!(
            pack.check_session(
                rules,
                &discharge,
                Some(&approval),
                &seventh,
                &SessionUsage::default()
            )
            .issues
            .is_empty()
        );
        let eighth = session(date!(2026 - 11 - 18), 60, Delivery::Individual);
        let lapsed = pack.check_session(
            rules,
            &discharge,
            Some(&approval),
            &eighth,
            &SessionUsage::default(),
        );
        assert_eq!(codes(&lapsed), ["DE-SE-05"]);
        assert_eq!(lapsed.issues[0].limit.as_deref(), Some("2026-11-17"));

        let trial = referral(ReferralKind::TrialSessions, 5);
        let s = session(date!(2026 - 11 - 20), 60, Delivery::Individual);
        let four = SessionUsage {
            referral_unit_minutes: 4 * 60,
            referral_sessions: 4,
            patient_budget_minutes: 4 * 60,
        };
        assert!(
            pack.check_session(rules, &trial, Some(&approval), &s, &four)
                .issues
                .is_empty()
        );
        let five = SessionUsage {
            referral_unit_minutes: 5 * 60,
            referral_sessions: 5,
            patient_budget_minutes: 5 * 60,
        };
        let sixth = pack.check_session(rules, &trial, Some(&approval), &s, &five);
        assert_eq!(codes(&sixth), ["DE-SE-03", "DE-SE-06"]);
    }
}
