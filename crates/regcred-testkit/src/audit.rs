//! Counting API requests from the API server's audit log.
//!
//! The log is the server's own record of every resource request, so a count from it cannot
//! miss a request that a client-side counter would (retries, watches, another component).
//! Each request counts once, by its `RequestReceived` event; its response code comes from
//! the matching `ResponseComplete` event, which is written a moment later.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Deref;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::TestBed;

impl TestBed {
    /// The reader of the bed's audit log.
    pub fn audit(&self) -> Audit {
        Audit {
            path: self.info.audit_log.clone(),
        }
    }
}

/// The API server's audit log (JSON lines).
#[derive(Debug, Clone)]
pub struct Audit {
    path: PathBuf,
}

/// A position in the audit log: events after it happened after [`Audit::mark`] was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditMark(u64);

/// One API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `user.username`, e.g. `system:serviceaccount:NS:NAME`.
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`...
    pub verb: String,
    /// `objectRef.resource`, e.g. `secrets`; empty if none.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Empty for the core group.
    pub api_group: String,
    pub uri: String,
    /// The response code, once its `ResponseComplete` event is in the log.
    pub code: Option<u16>,
    /// The client's User-Agent (regcred's names its version and replica).
    pub user_agent: String,
}

impl AuditEvent {
    /// `secrets`, or `serviceaccounts/token` for a subresource.
    pub fn resource_path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// Requests per (verb, resource path), e.g. `("list", "secrets") => 1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<(String, String), usize>);

impl Counts {
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Requests with this verb and resource path.
    pub fn get(&self, verb: &str, resource: &str) -> usize {
        self.0
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

impl Deref for Counts {
    type Target = BTreeMap<(String, String), usize>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// One line per verb and resource, then the total: for benchmark output.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((verb, resource), n) in &self.0 {
            writeln!(f, "{n:6} {verb} {resource}")?;
        }
        write!(f, "{:6} requests in all", self.total())
    }
}

impl Audit {
    /// The current end of the log.
    pub fn mark(&self) -> AuditMark {
        let len = std::fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("audit log {}: {e}", self.path.display()))
            .len();
        AuditMark(len)
    }

    /// The requests received after `mark`, in order, each once (its `RequestReceived` event).
    pub fn events_since(&self, mark: &AuditMark) -> Vec<AuditEvent> {
        let mut text = String::new();
        std::fs::File::open(&self.path)
            .and_then(|mut file| {
                // A log shorter than the mark was rotated: counts would be silently wrong.
                let len = file.metadata()?.len();
                assert!(
                    len >= mark.0,
                    "audit log {} was rotated after the mark",
                    self.path.display()
                );
                file.seek(SeekFrom::Start(mark.0))?;
                file.read_to_string(&mut text)
            })
            .unwrap_or_else(|e| panic!("audit log {}: {e}", self.path.display()));
        parse(&text)
    }

    /// How many requests after `mark` match `filter`.
    pub fn count(&self, mark: &AuditMark, filter: impl Fn(&AuditEvent) -> bool) -> usize {
        self.events_since(mark).iter().filter(|e| filter(e)).count()
    }

    /// The requests `user` made after `mark`, per verb and resource.
    pub fn summary(&self, mark: &AuditMark, user: &str) -> Counts {
        let mut counts = Counts::default();
        for event in self
            .events_since(mark)
            .into_iter()
            .filter(|e| e.user == user)
        {
            *counts
                .0
                .entry((event.verb.clone(), event.resource_path()))
                .or_default() += 1;
        }
        counts
    }

    /// Waits until the number of requests after `mark` matching `filter` has not changed
    /// for `quiet`, and returns it: a client has settled. Panics after `timeout`.
    pub async fn settled_count(
        &self,
        mark: &AuditMark,
        filter: impl Fn(&AuditEvent) -> bool,
        quiet: Duration,
        timeout: Duration,
    ) -> usize {
        let start = Instant::now();
        let mut last = self.count(mark, &filter);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50).min(quiet)).await;
            let now = self.count(mark, &filter);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                return now;
            }
            if start.elapsed() > timeout {
                panic!("audit: requests still arriving after {timeout:?} ({now} so far)");
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    // The log spells it "auditID", not the camelCase "auditId".
    #[serde(default, rename = "auditID")]
    audit_id: String,
    stage: String,
    // And "requestURI", not "requestUri".
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: RawUser,
    object_ref: Option<RawObjectRef>,
    response_status: Option<RawStatus>,
    #[serde(default)]
    user_agent: String,
}

#[derive(Deserialize, Default)]
struct RawUser {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawObjectRef {
    #[serde(default)]
    resource: String,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(default)]
    api_group: String,
}

#[derive(Deserialize)]
struct RawStatus {
    code: Option<u16>,
}

/// Parses complete lines; skips a line cut by the mark or still being written.
fn parse(text: &str) -> Vec<AuditEvent> {
    let raw: Vec<RawEvent> = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let codes: HashMap<&str, u16> = raw
        .iter()
        .filter(|e| e.stage == "ResponseComplete")
        .filter_map(|e| Some((e.audit_id.as_str(), e.response_status.as_ref()?.code?)))
        .collect();
    raw.iter()
        .filter(|e| e.stage == "RequestReceived")
        .map(|e| {
            let object = e.object_ref.as_ref();
            AuditEvent {
                user: e.user.username.clone(),
                verb: e.verb.clone(),
                resource: object.map(|o| o.resource.clone()).unwrap_or_default(),
                subresource: object.and_then(|o| o.subresource.clone()),
                namespace: object.and_then(|o| o.namespace.clone()),
                name: object.and_then(|o| o.name.clone()),
                api_group: object.map(|o| o.api_group.clone()).unwrap_or_default(),
                uri: e.request_uri.clone(),
                code: codes.get(e.audit_id.as_str()).copied(),
                user_agent: e.user_agent.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    const RECEIVED: &str = r#"{"auditID":"a1","stage":"RequestReceived","requestURI":"/api/v1/namespaces/n/secrets/s","verb":"get","user":{"username":"u"},"objectRef":{"resource":"secrets","namespace":"n","name":"s","apiVersion":"v1"}}"#;
    const COMPLETE: &str = r#"{"auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/n/secrets/s","verb":"get","user":{"username":"u"},"objectRef":{"resource":"secrets","namespace":"n","name":"s","apiVersion":"v1"},"responseStatus":{"code":403}}"#;

    #[test]
    fn codes_belong_to_their_own_request() {
        let a = RECEIVED.replace("a1", "a2");
        let b = COMPLETE.replace("a1", "a2").replace("403", "409");
        let text = format!("{RECEIVED}\n{COMPLETE}\n{a}\n{b}\n");
        let events = parse(&text);
        assert_eq!(
            events.iter().map(|e| e.code).collect::<Vec<_>>(),
            [Some(403), Some(409)]
        );
    }

    #[test]
    fn counts_each_request_once_with_its_response_code() {
        let events = parse(&format!("{RECEIVED}\n{COMPLETE}\n"));
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.user.as_str(), e.verb.as_str()), ("u", "get"));
        assert_eq!(e.resource_path(), "secrets");
        assert_eq!(e.namespace.as_deref(), Some("n"));
        assert_eq!(e.name.as_deref(), Some("s"));
        assert_eq!(e.api_group, "");
        assert_eq!(e.code, Some(403));
        assert_eq!(e.uri, "/api/v1/namespaces/n/secrets/s");
    }

    #[test]
    fn ignores_an_unfinished_last_line() {
        let events = parse(&format!("{RECEIVED}\n{}", &RECEIVED[..40]));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].code, None);
    }
}
