//! When a minted token (ECR) is reused, minted anew, or left alone while a failed mint
//! backs off: one pure decision, so "when is a token renewed, and from what" is answered
//! here and tested exhaustively, apart from the I/O around it (`reconcile::gather`).

use jiff::Timestamp;

use crate::schedule;
use crate::tokens::{Failure, Tokens};

/// What to do about a credential's minted token on this reconcile.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The current token is good until its planned refresh.
    Reuse,
    /// No token, the planned refresh is due, or a refresh was requested: mint.
    Mint,
    /// Due, but the last mint from the same inputs failed and its retry time has not come:
    /// report that failure again (a status write of regcred's own triggers reconciles,
    /// which must not turn into retries).
    WaitOutBackoff,
}

/// What the decision depends on, and nothing else.
pub(crate) struct Facts<'a> {
    /// The token in use (cached, or recovered from the Secrets after a restart).
    pub(crate) current: Option<&'a Tokens>,
    /// The failed mints in a row, if the last one failed.
    pub(crate) failure: Option<&'a Failure>,
    /// The digest of what a mint depends on now.
    pub(crate) inputs: &'a str,
    /// A refresh requested through `regcred.io/refresh`, not yet acknowledged.
    pub(crate) force: bool,
    pub(crate) now: Timestamp,
    /// `spec.renewBefore`.
    pub(crate) renew_before: Option<std::time::Duration>,
    /// The credential's UID: its refresh jitter.
    pub(crate) seed: &'a str,
}

pub(crate) fn decide(facts: &Facts<'_>) -> Decision {
    // A failed mint stays due until one succeeds: otherwise the next reconcile (the
    // status write's own echo) would reuse the token in place and forget the failure.
    let failed_with_these_inputs = facts.failure.is_some_and(|f| f.inputs == facts.inputs);
    let due = facts.force
        || failed_with_these_inputs
        || facts.current.is_none_or(|t| {
            let plan =
                schedule::next_refresh(t.issued_at, t.expires_at, facts.renew_before, facts.seed);
            facts.now >= plan.next
        });
    // A changed spec or key ends the backoff: the failure was about other inputs.
    let backing_off = facts
        .failure
        .is_some_and(|f| facts.now < f.retry_at && f.inputs == facts.inputs && !facts.force);
    match (due, backing_off) {
        (false, _) => Decision::Reuse,
        (true, true) => Decision::WaitOutBackoff,
        (true, false) => Decision::Mint,
    }
}

/// How many failures in a row a new failure makes: one more than before if the inputs
/// are the same, else the count starts again.
pub(crate) fn failures_in_a_row(previous: Option<&Failure>, inputs: &str) -> i32 {
    previous
        .filter(|f| f.inputs == inputs)
        .map_or(0, |f| f.failures)
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source_error::SourceError;
    use jiff::SignedDuration;

    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    fn t0() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    /// A 12-hour token issued at t0: refreshed 8 hours in at the latest (a third of its
    /// lifetime before expiry), a little earlier by the jitter.
    fn token() -> Tokens {
        Tokens {
            entries: vec![],
            issued_at: t0(),
            expires_at: t0() + 12 * HOUR,
            inputs: "in".into(),
        }
    }

    fn failure(retry_at: Timestamp, inputs: &str) -> Failure {
        Failure {
            retry_at,
            failures: 2,
            problem: SourceError::Aws {
                reason: "AwsThrottled",
                message: "slow down".into(),
            },
            inputs: inputs.into(),
        }
    }

    fn facts<'a>(
        current: Option<&'a Tokens>,
        failure: Option<&'a Failure>,
        force: bool,
        now: Timestamp,
    ) -> Facts<'a> {
        Facts {
            current,
            failure,
            inputs: "in",
            force,
            now,
            renew_before: None,
            seed: "uid",
        }
    }

    #[test]
    fn a_fresh_token_is_reused_and_a_due_one_is_minted() {
        let token = token();
        assert_eq!(
            decide(&facts(Some(&token), None, false, t0() + HOUR)),
            Decision::Reuse
        );
        assert_eq!(
            decide(&facts(Some(&token), None, false, t0() + 8 * HOUR)),
            Decision::Mint
        );
        assert_eq!(decide(&facts(None, None, false, t0())), Decision::Mint);
    }

    #[test]
    fn renew_before_moves_the_refresh() {
        let token = token();
        let mut early = facts(Some(&token), None, false, t0() + 3 * HOUR);
        early.renew_before = Some(std::time::Duration::from_secs(10 * 3600));
        assert_eq!(decide(&early), Decision::Mint);
    }

    #[test]
    fn a_requested_refresh_mints_even_a_fresh_token_and_ends_the_backoff() {
        let token = token();
        let failed = failure(t0() + 2 * HOUR, "in");
        assert_eq!(
            decide(&facts(Some(&token), Some(&failed), true, t0() + HOUR)),
            Decision::Mint
        );
    }

    #[test]
    fn a_failed_mint_is_not_retried_before_its_time() {
        let token = token();
        let failed = failure(t0() + 9 * HOUR, "in");
        let due = t0() + 8 * HOUR + SignedDuration::from_mins(30);
        assert_eq!(
            decide(&facts(Some(&token), Some(&failed), false, due)),
            Decision::WaitOutBackoff
        );
        assert_eq!(
            decide(&facts(None, Some(&failed), false, due)),
            Decision::WaitOutBackoff,
            "no token at all waits too"
        );
        assert_eq!(
            decide(&facts(Some(&token), Some(&failed), false, t0() + 9 * HOUR)),
            Decision::Mint,
            "retried at retry_at"
        );
    }

    #[test]
    fn a_failure_about_other_inputs_does_not_hold_back_a_mint() {
        let failed = failure(t0() + 9 * HOUR, "old");
        assert_eq!(
            decide(&facts(None, Some(&failed), false, t0())),
            Decision::Mint
        );
    }

    #[test]
    fn a_failed_requested_refresh_is_retried_though_the_token_in_place_is_not_due() {
        let token = token();
        let failed = failure(t0() + 2 * HOUR, "in");
        assert_eq!(
            decide(&facts(Some(&token), Some(&failed), false, t0() + HOUR)),
            Decision::WaitOutBackoff,
            "the failure is reported until its retry time"
        );
        assert_eq!(
            decide(&facts(Some(&token), Some(&failed), false, t0() + 2 * HOUR)),
            Decision::Mint,
            "then retried"
        );
        let about_old_inputs = failure(t0() + 2 * HOUR, "old");
        assert_eq!(
            decide(&facts(
                Some(&token),
                Some(&about_old_inputs),
                false,
                t0() + HOUR
            )),
            Decision::Reuse,
            "a failure about other inputs does not make the token due"
        );
    }

    #[test]
    fn failures_count_up_for_the_same_inputs_only() {
        let failed = failure(t0(), "in");
        assert_eq!(failures_in_a_row(None, "in"), 1);
        assert_eq!(failures_in_a_row(Some(&failed), "in"), 3);
        assert_eq!(failures_in_a_row(Some(&failed), "new"), 1);
    }
}
