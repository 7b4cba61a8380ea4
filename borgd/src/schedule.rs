//! When jobs run next: cron expressions evaluated in local time.

use chrono::{DateTime, Local};
use croner::Cron;

/// The first time after `after` that `schedule` matches, or `None` when
/// it never matches again (such as a date that does not exist).
pub fn next_run(schedule: &Cron, after: DateTime<Local>) -> Option<DateTime<Local>> {
    schedule.find_next_occurrence(&after, false).ok()
}

/// The next `count` run times after `after`, for `borgd check`.
pub fn upcoming(schedule: &Cron, after: DateTime<Local>, count: usize) -> Vec<DateTime<Local>> {
    let mut times = Vec::with_capacity(count);
    let mut from = after;
    while times.len() < count {
        let Some(next) = next_run(schedule, from) else {
            break;
        };
        times.push(next);
        from = next;
    }
    times
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Timelike};

    use super::*;
    use crate::config::parse_schedule;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Local> {
        let naive = NaiveDate::from_ymd_opt(2026, 3, day)
            .unwrap()
            .and_hms_opt(hour, minute, 0)
            .unwrap();
        Local.from_local_datetime(&naive).earliest().unwrap()
    }

    #[test]
    fn daily_schedule_runs_next_at_its_time() {
        let daily = parse_schedule("15 2 * * *").unwrap();
        assert_eq!(next_run(&daily, at(10, 1, 0)), Some(at(10, 2, 15)));
        assert_eq!(
            next_run(&daily, at(10, 2, 15)),
            Some(at(11, 2, 15)),
            "strictly after"
        );
        assert_eq!(next_run(&daily, at(10, 3, 0)), Some(at(11, 2, 15)));
    }

    #[test]
    fn upcoming_lists_consecutive_runs() {
        let every_quarter = parse_schedule("*/15 * * * *").unwrap();
        let runs = upcoming(&every_quarter, at(10, 9, 7), 3);
        let minutes: Vec<u32> = runs.iter().map(Timelike::minute).collect();
        assert_eq!(minutes, [15, 30, 45]);
        let weekly = parse_schedule("0 4 * * SUN").unwrap();
        let sunday = next_run(&weekly, at(10, 0, 0)).unwrap();
        assert_eq!(chrono::Datelike::weekday(&sunday), chrono::Weekday::Sun);
    }

    #[test]
    fn impossible_dates_never_run() {
        let never = parse_schedule("0 0 31 2 *").unwrap();
        assert_eq!(next_run(&never, at(10, 0, 0)), None);
    }

    #[test]
    fn invalid_expressions_are_refused() {
        for text in ["", "61 * * * *", "* * *", "0 25 * * *", "every day"] {
            assert!(parse_schedule(text).is_err(), "{text:?}");
        }
    }
}
