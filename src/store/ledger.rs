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

/// Minutes used in the window that contains `date`. Windows chain from the first entry: each
/// starts at the first entry (or `date`) on or after the end of the previous one. Unlike
/// [`usage_from_entries`], which answers for the newest window, this finds the window of a
/// date in the past too (a session reported late is charged to its own window).
pub fn minutes_in_window_of(entries: &[LedgerEntry], date: Date, window_years: i32) -> u64 {
    let mut starts: Vec<Date> = entries
        .iter()
        .map(|e| e.start)
        .chain(std::iter::once(date))
        .collect();
    starts.sort();
    let mut window: Option<Date> = None;
    let mut window_of_date = None;
    for day in starts {
        if window.is_none_or(|ws| day >= add_years(ws, window_years)) {
            window = Some(day);
        }
        if day == date && window_of_date.is_none() {
            window_of_date = window;
        }
    }
    let Some(ws) = window_of_date else { return 0 };
    let end = add_years(ws, window_years);
    entries
        .iter()
        .filter(|e| e.start >= ws && e.start < end)
        .map(|e| e.minutes)
        .sum()
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

    #[test]
    fn a_late_session_is_charged_to_the_window_it_falls_in() {
        use time::macros::date;
        let entry = |start, minutes| LedgerEntry {
            patient_key: "p".into(),
            start,
            minutes,
            trial_units: 0,
        };
        let entries = [
            entry(date!(2023 - 01 - 10), 7_200),
            entry(date!(2026 - 02 - 01), 60),
        ];
        // The first window (2023-01-10 .. 2026-01-10) is full; a late report from 2025 is in it.
        assert_eq!(
            minutes_in_window_of(&entries, date!(2025 - 12 - 15), 3),
            7_200
        );
        // A session in the second window sees only that window.
        assert_eq!(minutes_in_window_of(&entries, date!(2026 - 03 - 01), 3), 60);
        // A date after every window opens its own.
        assert_eq!(minutes_in_window_of(&entries, date!(2030 - 01 - 01), 3), 0);
    }
}
