//! The tokens each credential uses and its failed mints: what the refresh decision reads.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use regcred_providers::RegistryAuth;

use crate::source_error::SourceError;

/// A set of minted entries and their lifetime.
#[derive(Clone, Debug)]
pub(crate) struct Tokens {
    pub(crate) entries: Vec<RegistryAuth>,
    pub(crate) issued_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    /// What they were minted from; a change means minting anew.
    pub(crate) inputs: String,
}

/// Mints that failed in a row, and when to try again.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) retry_at: Timestamp,
    pub(crate) failures: i32,
    pub(crate) problem: SourceError,
    /// What the failed mints were made from: a change (a fixed spec, a rotated key)
    /// ends the backoff.
    pub(crate) inputs: String,
}

/// The tokens each credential currently uses, and its failed mints, by credential UID.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<String, Tokens>>,
    failures: Mutex<HashMap<String, Failure>>,
    /// The last `regcred.io/refresh` value acted on: status acknowledges it, but the
    /// cached credential may not show that yet, and a request must mint once.
    refreshes_handled: Mutex<HashMap<String, String>>,
}

impl TokenCache {
    pub(crate) fn get(&self, uid: &str, inputs: &str) -> Option<Tokens> {
        let tokens = self.tokens.lock().expect("token cache lock");
        tokens.get(uid).filter(|t| t.inputs == inputs).cloned()
    }

    pub(crate) fn failure(&self, uid: &str) -> Option<Failure> {
        self.failures
            .lock()
            .expect("token cache lock")
            .get(uid)
            .cloned()
    }

    pub(crate) fn fail(&self, uid: &str, failure: Failure) {
        self.failures
            .lock()
            .expect("token cache lock")
            .insert(uid.to_owned(), failure);
    }

    pub(crate) fn clear_failure(&self, uid: &str) {
        self.failures.lock().expect("token cache lock").remove(uid);
    }

    /// Whether the refresh request `request` was already acted on.
    pub(crate) fn refresh_handled(&self, uid: &str, request: &str) -> bool {
        self.refreshes_handled
            .lock()
            .expect("token cache lock")
            .get(uid)
            .is_some_and(|handled| handled == request)
    }

    pub(crate) fn mark_refresh_handled(&self, uid: &str, request: &str) {
        self.refreshes_handled
            .lock()
            .expect("token cache lock")
            .insert(uid.to_owned(), request.to_owned());
    }

    pub(crate) fn put(&self, uid: &str, tokens: Tokens) {
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(uid.to_owned(), tokens);
    }

    /// Drops everything kept for a deleted credential: its tokens must not outlive it in
    /// memory, and a credential churned by GitOps must not grow the cache.
    pub(crate) fn forget(&self, uid: &str) {
        self.tokens.lock().expect("token cache lock").remove(uid);
        self.clear_failure(uid);
        self.refreshes_handled
            .lock()
            .expect("token cache lock")
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_credential_leaves_nothing_behind() {
        let cache = TokenCache::default();
        let now = Timestamp::now();
        let tokens = Tokens {
            entries: vec![],
            issued_at: now,
            expires_at: now,
            inputs: "in".into(),
        };
        cache.put("uid", tokens.clone());
        cache.put("other", tokens);
        cache.fail(
            "uid",
            Failure {
                retry_at: now,
                failures: 1,
                problem: SourceError::ControllerIdentityNotAllowed,
                inputs: "in".into(),
            },
        );
        cache.mark_refresh_handled("uid", "r1");
        cache.forget("uid");
        assert!(cache.get("uid", "in").is_none());
        assert!(cache.failure("uid").is_none());
        assert!(!cache.refresh_handled("uid", "r1"));
        assert!(cache.get("other", "in").is_some(), "others are kept");
    }
}
