//! The entitlement ledger: what each patient's earlier referrals used of the German
//! 120-hours-in-3-years budget (§ 37a SGB V) and of the trial sessions.
//!
//! The check stage never calls the ledger itself (check does no I/O): the pipeline reads a
//! [`PriorUsage`] before checking and records the accepted referral afterwards.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::Date;

/// Usage of one patient's current budget window, as the check stage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PriorUsage {
    /// First day of the current three-year window, if any referral was recorded.
    pub window_start: Option<Date>,
    /// Minutes already granted in the window.
    pub minutes_used: u64,
    /// Trial session units already granted in the window.
    pub trial_units_used: u32,
}

/// One accepted referral's claim on the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Patient key: normalised identifier system and value.
    pub patient_key: String,
    /// First day of care the referral covers.
    pub start: Date,
    /// Minutes charged against the budget.
    pub minutes: u64,
    /// Trial session units (0 unless the referral is for trial sessions).
    pub trial_units: u32,
}

/// Errors of a ledger backend.
#[derive(Debug, thiserror::Error)]
#[error("ledger unavailable: {0}")]
pub struct LedgerError(pub String);

/// A ledger of budget use per patient.
pub trait Ledger {
    /// Usage in the window that contains `start` for `patient_key`. A window opens with the
    /// first recorded referral and lasts `window_years`; a referral starting after it has
    /// ended opens a new window.
    fn prior_usage(
        &self,
        patient_key: &str,
        start: Date,
        window_years: i32,
    ) -> Result<PriorUsage, LedgerError>;

    /// Records an accepted referral.
    fn record(&mut self, entry: LedgerEntry) -> Result<(), LedgerError>;
}

/// Adds `years` to `date`, moving 29 February to 28 February when needed.
pub fn add_years(date: Date, years: i32) -> Date {
    let year = date.year() + years;
    Date::from_calendar_date(year, date.month(), date.day())
        .or_else(|_| Date::from_calendar_date(year, date.month(), date.day() - 1))
        .unwrap_or(date)
}

/// Computes usage from a patient's entries, oldest first. Shared by every backend so that
/// the window arithmetic lives in one place.
pub fn usage_from_entries(entries: &[LedgerEntry], start: Date, window_years: i32) -> PriorUsage {
    let mut sorted: Vec<&LedgerEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.start);
    let mut usage = PriorUsage::default();
    for entry in sorted {
        let window_open = usage
            .window_start
            .is_some_and(|ws| entry.start < add_years(ws, window_years));
        if !window_open {
            usage = PriorUsage {
                window_start: Some(entry.start),
                ..PriorUsage::default()
            };
        }
        usage.minutes_used += entry.minutes;
        usage.trial_units_used += entry.trial_units;
    }
    match usage.window_start {
        Some(ws) if start >= add_years(ws, window_years) => PriorUsage::default(),
        _ => usage,
    }
}

/// A ledger kept in memory, for one `sociogate check` run.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    entries: HashMap<String, Vec<LedgerEntry>>,
}

impl Ledger for MemoryLedger {
    fn prior_usage(
        &self,
        patient_key: &str,
        start: Date,
        window_years: i32,
    ) -> Result<PriorUsage, LedgerError> {
        Ok(self
            .entries
            .get(patient_key)
            .map(|e| usage_from_entries(e, start, window_years))
            .unwrap_or_default())
    }

    fn record(&mut self, entry: LedgerEntry) -> Result<(), LedgerError> {
        self.entries
            .entry(entry.patient_key.clone())
            .or_default()
            .push(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn entry(start: Date, minutes: u64) -> LedgerEntry {
        LedgerEntry {
            patient_key: "p".into(),
            start,
            minutes,
            trial_units: 0,
        }
    }

    #[test]
    fn usage_adds_up_within_the_window_and_resets_after_three_years() {
        let mut ledger = MemoryLedger::default();
        ledger.record(entry(date!(2024 - 01 - 10), 1800)).ok();
        ledger.record(entry(date!(2025 - 06 - 01), 3600)).ok();
        let inside = ledger.prior_usage("p", date!(2026 - 12 - 01), 3).ok();
        assert_eq!(inside.map(|u| u.minutes_used), Some(5400));
        assert_eq!(
            inside.and_then(|u| u.window_start),
            Some(date!(2024 - 01 - 10))
        );
        let after = ledger.prior_usage("p", date!(2027 - 01 - 10), 3).ok();
        assert_eq!(after.map(|u| u.minutes_used), Some(0));
        let other = ledger.prior_usage("q", date!(2026 - 12 - 01), 3).ok();
        assert_eq!(other.map(|u| u.minutes_used), Some(0));
    }

    #[test]
    fn leap_day_windows_end_on_28_february() {
        assert_eq!(add_years(date!(2024 - 02 - 29), 3), date!(2027 - 02 - 28));
    }
}
