//! When to mint the next token (pure): `renewBefore` ahead of expiry (default: a third of
//! the token's lifetime, as cert-manager renews at two thirds), a little earlier by a
//! per-credential jitter so that many credentials do not renew in the same second, and
//! never sooner than [`MIN_INTERVAL`] from now, so a short-lived or already expired token
//! cannot cause a hot loop.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// The shortest time between two mints of one credential.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Up to this share of the renewal window is taken off, by credential.
const JITTER_SHARE: f64 = 0.05;

/// A refresh plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) next: Timestamp,
    /// Said in the condition when the token lives shorter than the renewal window.
    pub(crate) warning: Option<String>,
}

/// Plans the next refresh of a token issued at `issued_at` that expires at `expires_at`.
/// `seed` (the credential's UID) makes the jitter stable across restarts. The result
/// depends on nothing else, so a restarted controller resumes the same schedule.
pub(crate) fn next_refresh(
    issued_at: Timestamp,
    expires_at: Timestamp,
    renew_before: Option<Duration>,
    seed: &str,
) -> Plan {
    let lifetime = expires_at
        .duration_since(issued_at)
        .max(SignedDuration::ZERO);
    let default_window = lifetime / 3;
    let (window, warning) = match renew_before
        .map(|d| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
    {
        Some(wanted) if wanted >= lifetime => (
            default_window,
            Some(format!(
                "renewBefore ({}) is not shorter than the token's lifetime ({}); renewing a third of the lifetime ahead instead",
                human(wanted),
                human(lifetime)
            )),
        ),
        Some(wanted) => (wanted, None),
        None => (default_window, None),
    };
    let jitter = window.as_secs_f64() * JITTER_SHARE * fraction(seed);
    // Checked: the times come from an outside answer and must never panic the controller;
    // out of range means "as early as allowed".
    let planned = expires_at
        .checked_sub(window)
        .and_then(|t| t.checked_sub(SignedDuration::from_secs_f64(jitter)))
        .unwrap_or(Timestamp::MIN);
    let earliest = issued_at
        .checked_add(SignedDuration::try_from(MIN_INTERVAL).expect("a small duration"))
        .unwrap_or(issued_at);
    Plan {
        next: planned.max(earliest),
        warning,
    }
}

/// Parses `renewBefore` (`4h`, `90m`, `1h30m`, `45s`; the schema allows only these forms).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (digits.is_empty() && !text.is_empty()).then(|| Duration::from_secs(total))
}

fn fraction(seed: &str) -> f64 {
    let mut hasher = DefaultHasher::new();
    seed.hash(&mut hasher);
    (hasher.finish() % 10_000) as f64 / 10_000.0
}

fn human(d: SignedDuration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn ecr_tokens_renew_about_four_hours_ahead() {
        let plan = next_refresh(at(0), at(12 * 3600), None, "uid");
        let ahead = at(12 * 3600).duration_since(plan.next);
        assert!(ahead >= SignedDuration::from_hours(4), "{ahead:?}");
        assert!(
            ahead <= SignedDuration::from_mins(4 * 60 + 12),
            "jitter stays small: {ahead:?}"
        );
        assert_eq!(plan.warning, None);
    }

    #[test]
    fn renew_before_is_honoured_and_jitter_is_stable_per_credential() {
        let hour = Some(Duration::from_secs(3600));
        let a = next_refresh(at(0), at(43200), hour, "a");
        assert_eq!(a, next_refresh(at(0), at(43200), hour, "a"));
        let ahead = at(43200).duration_since(a.next);
        assert!(ahead >= SignedDuration::from_hours(1) && ahead <= SignedDuration::from_mins(63));
    }

    #[test]
    fn short_lived_or_expired_tokens_never_cause_a_hot_loop() {
        let plan = next_refresh(at(0), at(60), Some(Duration::from_secs(3600)), "uid");
        let warning = plan.warning.expect("a warning");
        assert!(
            warning.contains("not shorter than the token's lifetime"),
            "{warning}"
        );
        assert!(plan.next > at(0));
        let brief = next_refresh(at(0), at(1), None, "uid");
        assert_eq!(brief.next, at(5), "at least MIN_INTERVAL after issue");
        let expired = next_refresh(at(-100), at(-10), None, "uid");
        assert!(expired.next < at(0), "an expired token is due at once");
    }

    #[test]
    fn extreme_times_never_panic() {
        for (issued, expires) in [
            (Timestamp::MIN, Timestamp::MAX),
            (Timestamp::MAX, Timestamp::MIN),
            (Timestamp::MAX, Timestamp::MAX),
            (Timestamp::MIN, Timestamp::MIN),
        ] {
            for renew in [None, Some(Duration::MAX), Some(Duration::ZERO)] {
                let _ = next_refresh(issued, expires, renew, "uid");
            }
        }
    }

    #[test]
    fn durations_parse_in_the_schema_forms() {
        assert_eq!(parse_duration("4h"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("90"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("4d"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_duration("9999999999999999h"), None, "overflows");
    }
}
