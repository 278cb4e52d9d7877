//! One contender at one size, through the scenarios in order, on namespaces of its own:
//! cold convergence (repeated: its work undone and the contender started again), steady
//! state and a restart, new namespaces, a rotated source, and (for
//! regcred) ECR tokens rotating over every namespace. Then its namespaces are deleted, so
//! the next contender starts on the same cluster.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use regcred_api::ClusterRegistryCredential;
use regcred_testkit::{Audit, TestBed};
use serde_json::json;

use crate::contenders::{Contender, Job, Kind, apply_credential, delete_credential};
use crate::dockerconfig::digest;
use crate::observe::{Observer, all_arrived};
use crate::requests::{Requests, until_quiet};
use crate::results::{
    Cold, EcrRotation, NewNamespaces, Percentiles, Rotation, RunResult, Steady, millis,
};
use crate::seed::{self, BENCH_NAMESPACE};

/// The pull Secret every contender writes.
pub(crate) const PULL_SECRET: &str = "bench-pull";
/// The pull Secret of the ECR scenario.
pub(crate) const ECR_SECRET: &str = "bench-ecr";
/// A contender is done when it made no request for this long.
const QUIET: Duration = Duration::from_secs(3);

/// What every run shares.
pub(crate) struct Bench {
    pub(crate) bed: &'static TestBed,
    pub(crate) client: Client,
    pub(crate) audit: Audit,
    pub(crate) observer: Observer,
    pub(crate) regcred_bin: PathBuf,
    pub(crate) service_accounts: usize,
    pub(crate) concurrency: usize,
    /// Cold starts timed per run (the median is reported).
    pub(crate) cold_starts: usize,
    pub(crate) idle: Duration,
    pub(crate) new_namespaces: usize,
    pub(crate) new_namespace_rate: f64,
    pub(crate) ecr_lifetime: u64,
    pub(crate) ecr_refreshes: usize,
    /// No scenario may take longer than this to complete.
    pub(crate) timeout: Duration,
}

/// Which scenarios a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// All of them.
    Full { ecr: bool },
    /// Cold convergence and memory only (the large sizes).
    ColdOnly,
}

impl Bench {
    pub(crate) async fn run(&self, kind: Kind, size: usize, scope: Scope) -> RunResult {
        let run = format!("{}-{size}", kind.name());
        println!(
            "\n== {run}: {size} namespaces × {} ServiceAccounts",
            self.service_accounts
        );
        let password = format!("p0-{run}");
        let source = format!("src-{run}");
        self.create_source(&source, &password).await;
        let job = Job {
            run: run.clone(),
            secret: PULL_SECRET.into(),
            source_namespace: BENCH_NAMESPACE.into(),
            source: source.clone(),
            server: self.bed.registry().host.clone(),
            concurrency: self.concurrency,
        };
        let mut contender = Contender::new(kind, job.clone(), self.bed, self.regcred_bin.clone());

        let started = Instant::now();
        let mut namespaces =
            seed::namespaces(&self.client, &run, 0..size, self.service_accounts - 1).await;
        self.until_accounts(&namespaces).await;
        println!("  seeded in {:.1}s", started.elapsed().as_secs_f64());

        let mut cold = self.cold(&mut contender, &namespaces, &password).await;
        // The script way's run takes minutes at these sizes, and no target rests on it.
        let starts = if kind.watches() { self.cold_starts } else { 1 };
        for _ in 1..starts {
            self.undo(&mut contender, &namespaces).await;
            let seconds = self.converge(&mut contender, &namespaces, &password).await;
            println!("  cold again: {seconds:.1}s");
            cold.samples_seconds.push(seconds);
        }
        cold.seconds = median(&cold.samples_seconds);
        let mut result = RunResult {
            contender: kind,
            namespaces: size,
            service_accounts: self.service_accounts,
            cold,
            steady: None,
            new_namespaces: None,
            rotation: None,
            ecr: None,
            peak_rss_mib: None,
        };
        if let Scope::Full { ecr } = scope {
            result.steady = Some(self.steady(&mut contender).await);
            if self.new_namespaces > 0 {
                let (added, new) = self.new_namespaces(&mut contender, &run, size).await;
                namespaces.extend(added);
                result.new_namespaces = Some(new);
            }
            result.rotation = Some(self.rotation(&mut contender, &namespaces, &source).await);
            if ecr && kind == Kind::Regcred {
                result.ecr = Some(self.ecr(&mut contender, &job, &namespaces).await);
            }
        }
        contender.stop().await;
        result.peak_rss_mib = contender.peak_rss_kib.map(|kib| kib as f64 / 1024.0);
        if let Some(mib) = result.peak_rss_mib {
            println!("  peak RSS {mib:.1} MiB");
        }

        if kind == Kind::Regcred {
            delete_credential(&self.client, &job).await;
        }
        let took = seed::delete_namespaces(&self.client, &run).await;
        let _ = Api::<Secret>::namespaced(self.client.clone(), BENCH_NAMESPACE)
            .delete(&source, &Default::default())
            .await;
        println!("  namespaces deleted in {:.1}s", took.as_secs_f64());
        result
    }

    async fn create_source(&self, name: &str, password: &str) {
        let source =
            regcred_e2e::source_secret(name, &self.bed.registry().username, password, true);
        Api::<Secret>::namespaced(self.client.clone(), BENCH_NAMESPACE)
            .create(&PostParams::default(), &source)
            .await
            .unwrap_or_else(|e| panic!("source {name}: {e}"));
    }

    async fn until_accounts(&self, namespaces: &[String]) {
        let want = namespaces.len() * self.service_accounts;
        self.observer
            .until(self.timeout, |o| {
                (o.account_count(namespaces) >= want).then_some(())
            })
            .await
            .unwrap_or_else(|| {
                panic!("fewer than {want} ServiceAccounts after {:?}", self.timeout)
            });
    }

    /// Waits for `done`, failing with the contender's log if it dies or time runs out.
    async fn until<T>(
        &self,
        contender: &mut Contender,
        what: &str,
        mut done: impl FnMut(&Observer) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(t) = done(&self.observer) {
                return t;
            }
            contender.sample_memory();
            assert!(
                contender.alive(),
                "{} died waiting for {what}:\n{}",
                contender.kind.name(),
                contender.log_tail()
            );
            assert!(
                started.elapsed() < self.timeout,
                "{} did not reach {what} within {:?}:\n{}",
                contender.kind.name(),
                self.timeout,
                contender.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first cold start: its time and every request it made.
    async fn cold(&self, contender: &mut Contender, namespaces: &[String], password: &str) -> Cold {
        let kind = contender.kind;
        if kind == Kind::Regcred {
            apply_credential(&self.client, &contender.job).await;
        }
        let mark = self.audit.mark();
        let seconds = self.converge(contender, namespaces, password).await;
        let requests = Requests::since(&self.audit, &mark, kind.user(), &contender.job.run);
        let necessary_writes = namespaces.len() * (1 + self.service_accounts);
        println!(
            "  cold: {seconds:.1}s, {} object writes (necessary {necessary_writes}), {} requests",
            requests.object_writes, requests.total
        );
        Cold {
            seconds,
            samples_seconds: vec![seconds],
            necessary_writes,
            requests,
        }
    }

    /// Starts the contender and times it from its start to the last Secret and entry the
    /// bench's watches see; returns once it made no request for [`QUIET`].
    async fn converge(
        &self,
        contender: &mut Contender,
        namespaces: &[String],
        password: &str,
    ) -> f64 {
        let password = digest(password);
        let accounts = self.service_accounts;
        let mark = self.audit.mark();
        let started = Instant::now();
        contender.start().await;
        let last = self
            .until(contender, "every Secret and entry", |o| {
                let secrets =
                    all_arrived(&o.password_arrivals(namespaces, PULL_SECRET, &password, started))?;
                let entries =
                    all_arrived(&o.entry_arrivals(namespaces, accounts, PULL_SECRET, started))?;
                Some(secrets.max(entries))
            })
            .await;
        until_quiet(
            &self.audit,
            &mark,
            contender.kind.user(),
            QUIET,
            self.timeout,
        )
        .await;
        last.saturating_duration_since(started).as_secs_f64()
    }

    /// Stops the contender and takes its work back (as the admin), so that the next start
    /// is cold again; returns once the bench's watches see every entry gone.
    async fn undo(&self, contender: &mut Contender, namespaces: &[String]) {
        contender.stop().await;
        let work = namespaces
            .iter()
            .map(|ns| (ns.clone(), self.observer.account_names(ns)))
            .collect();
        seed::undo(&self.client, PULL_SECRET, work).await;
        self.observer
            .until(self.timeout, |o| {
                (!o.any_listing(namespaces, PULL_SECRET)).then_some(())
            })
            .await
            .expect("the bench's watches see the entries removed");
    }

    async fn steady(&self, contender: &mut Contender) -> Steady {
        let user = contender.kind.user();
        let idle = if contender.kind.watches() {
            let mark = self.audit.mark();
            tokio::time::sleep(self.idle).await;
            contender.sample_memory();
            Some(Requests::since(
                &self.audit,
                &mark,
                user,
                &contender.job.run,
            ))
        } else {
            None
        };
        let mark = self.audit.mark();
        let started = Instant::now();
        contender.stop().await;
        contender.start().await;
        let last = until_quiet(&self.audit, &mark, user, QUIET, self.timeout).await;
        let restart = Requests::since(&self.audit, &mark, user, &contender.job.run);
        println!(
            "  steady: {} writes idle; restart: {} requests, {} writes",
            idle.as_ref()
                .map_or(0, |r| r.object_writes + r.other_writes),
            restart.total,
            restart.object_writes + restart.other_writes
        );
        Steady {
            idle_seconds: self.idle.as_secs(),
            idle,
            restart,
            restart_seconds: last.saturating_duration_since(started).as_secs_f64(),
        }
    }

    /// Creates namespaces at a steady rate while the contender runs (the script way runs
    /// once they are all there) and times each one's coverage.
    async fn new_namespaces(
        &self,
        contender: &mut Contender,
        run: &str,
        size: usize,
    ) -> (Vec<String>, NewNamespaces) {
        let count = self.new_namespaces;
        let names: Vec<String> = (size..size + count)
            .map(|i| format!("{run}-{i:05}"))
            .collect();
        let user = contender.kind.user();
        let mark = self.audit.mark();
        let period = Duration::from_secs_f64(1.0 / self.new_namespace_rate);
        let mut ticks = tokio::time::interval(period);
        let mut creations = vec![];
        for name in &names {
            ticks.tick().await;
            creations.push(tokio::spawn(seed::create_namespace(
                self.client.clone(),
                run.to_owned(),
                name.clone(),
                self.service_accounts - 1,
            )));
        }
        for creation in creations {
            creation.await.expect("namespace created");
        }
        contender.nudge().await;
        let (entries, secrets) = self
            .until(contender, "the new namespaces covered", |o| {
                let mut entries = vec![];
                let mut secrets = vec![];
                let arrived = o.secret_arrivals(&names, PULL_SECRET);
                for (ns, secret) in names.iter().zip(arrived) {
                    let (appeared, entry) = o.account(ns, "default", PULL_SECRET)?;
                    entries.push(millis(entry?.saturating_duration_since(appeared)));
                    secrets.push(millis(secret?.saturating_duration_since(appeared)));
                }
                Some((entries, secrets))
            })
            .await;
        until_quiet(&self.audit, &mark, user, QUIET, self.timeout).await;
        let mut entries = entries;
        let mut secrets = secrets;
        entries.sort_by(f64::total_cmp);
        secrets.sort_by(f64::total_cmp);
        let (entry_ms, secret_ms) = (Percentiles::of(&entries), Percentiles::of(&secrets));
        println!(
            "  {count} new namespaces: entry p50/p95/p99 {:.0}/{:.0}/{:.0} ms, Secret p99 {:.0} ms",
            entry_ms.p50, entry_ms.p95, entry_ms.p99, secret_ms.p99
        );
        let new = NewNamespaces {
            count,
            per_second: self.new_namespace_rate,
            entry_ms,
            secret_ms,
            entry_samples_ms: entries,
            requests: Requests::since(&self.audit, &mark, user, &contender.job.run),
        };
        (names, new)
    }

    async fn rotation(
        &self,
        contender: &mut Contender,
        namespaces: &[String],
        source: &str,
    ) -> Rotation {
        let user = contender.kind.user();
        let password = format!("p1-{}", contender.job.run);
        let wanted = digest(&password);
        let mark = self.audit.mark();
        let started = Instant::now();
        let patch = json!({"stringData": {"password": password}});
        Api::<Secret>::namespaced(self.client.clone(), BENCH_NAMESPACE)
            .patch(source, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("rotate the source");
        contender.nudge().await;
        let last = self
            .until(contender, "the new password everywhere", |o| {
                all_arrived(&o.password_arrivals(namespaces, PULL_SECRET, &wanted, started))
            })
            .await;
        until_quiet(&self.audit, &mark, user, QUIET, self.timeout).await;
        let seconds = last.saturating_duration_since(started).as_secs_f64();
        let requests = Requests::since(&self.audit, &mark, user, &contender.job.run);
        println!(
            "  rotation: {seconds:.1}s, {} object writes for {} namespaces",
            requests.object_writes,
            namespaces.len()
        );
        Rotation {
            seconds,
            namespaces: namespaces.len(),
            requests,
        }
    }

    /// A short-lived ECR token over every namespace: AWS calls per refresh, time to
    /// rewrite every Secret, and how long any namespace held only an expired token.
    async fn ecr(
        &self,
        contender: &mut Contender,
        job: &Job,
        namespaces: &[String],
    ) -> EcrRotation {
        let aws = &self.bed.info.aws;
        let control = self.bed.aws();
        control.set_token_lifetime(self.ecr_lifetime).await;
        let keys =
            regcred_e2e::aws_keys_secret("bench-aws", &aws.access_key_id, &aws.secret_access_key);
        let secrets = Api::<Secret>::namespaced(self.client.clone(), BENCH_NAMESPACE);
        let _ = secrets.create(&PostParams::default(), &keys).await;
        let name = format!("{}-ecr", job.run);
        let credential: ClusterRegistryCredential = serde_json::from_value(json!({
            "apiVersion": "regcred.io/v1alpha1",
            "kind": "ClusterRegistryCredential",
            "metadata": {"name": name},
            "spec": {
                "registries": [{"ecr": {
                    "region": aws.region,
                    "registryIds": [aws.account_id],
                    "auth": {"secretRef": {"name": "bench-aws", "namespace": BENCH_NAMESPACE}},
                }}],
                "secretName": ECR_SECRET,
                "namespaces": {"selector": {"matchLabels": {seed::TARGET_LABEL: job.run}}},
            }
        }))
        .expect("a ClusterRegistryCredential");
        let credentials = Api::<ClusterRegistryCredential>::all(self.client.clone());
        let calls_before = token_calls(&control.calls().await);
        let mark = self.audit.mark();
        regcred_e2e::apply(&credentials, &credential).await;
        let distinct = |o: &Observer, ns: &str| {
            o.versions(ns, ECR_SECRET)
                .into_iter()
                .filter_map(|v| v.password)
                .collect::<BTreeSet<_>>()
                .len()
        };
        let refreshes = self.ecr_refreshes;
        self.until(contender, "ECR refreshes in every namespace", |o| {
            namespaces
                .iter()
                .all(|ns| distinct(o, ns) > refreshes)
                .then_some(())
        })
        .await;
        let ended = Timestamp::now();
        let calls = token_calls(&control.calls().await) - calls_before;
        until_quiet(
            &self.audit,
            &mark,
            contender.kind.user(),
            QUIET,
            self.timeout,
        )
        .await;
        let requests = Requests::since(&self.audit, &mark, contender.kind.user(), &job.run);
        let _ = credentials.delete(&name, &Default::default()).await;
        control.set_token_lifetime(43_200).await;

        // Each token's expiry, by the digest of the password (the emulator's record).
        let expiries: HashMap<String, Timestamp> = control
            .tokens()
            .await
            .into_iter()
            .filter_map(|t| Some((t.sha256, t.expires_at.parse().ok()?)))
            .collect();
        let mut first_seen: HashMap<String, (Timestamp, Timestamp)> = HashMap::new();
        let mut expired_only = Duration::ZERO;
        for ns in namespaces {
            let versions = self.observer.versions(ns, ECR_SECRET);
            for (i, v) in versions.iter().enumerate() {
                let Some(password) = &v.password else {
                    continue;
                };
                let span = first_seen
                    .entry(password.clone())
                    .or_insert((v.wall, v.wall));
                span.0 = span.0.min(v.wall);
                span.1 = span.1.max(v.wall);
                let until = versions.get(i + 1).map_or(ended, |next| next.wall);
                let expires = expiries.get(password).copied().unwrap_or(Timestamp::MIN);
                if until > expires {
                    let from = v.wall.max(expires);
                    let held = Duration::try_from(until.duration_since(from)).unwrap_or_default();
                    expired_only = expired_only.max(held);
                }
            }
        }
        // Rewrite times: per token (after the first), first to last namespace seeing it.
        let mut spans: Vec<(Timestamp, Timestamp)> = first_seen.into_values().collect();
        spans.sort();
        let rewrite_seconds: Vec<f64> = spans
            .iter()
            .skip(1)
            .map(|(first, last)| {
                Duration::try_from(last.duration_since(*first))
                    .unwrap_or_default()
                    .as_secs_f64()
            })
            .collect();
        println!(
            "  ECR: {calls} GetAuthorizationToken calls for {refreshes} refreshes over {} namespaces; rewrites {rewrite_seconds:.1?}s; expired-only {} ms",
            namespaces.len(),
            expired_only.as_millis()
        );
        EcrRotation {
            token_lifetime_seconds: self.ecr_lifetime,
            refreshes,
            get_authorization_token_calls: calls,
            rewrite_seconds,
            max_expired_only_ms: millis(expired_only),
            requests,
        }
    }
}

/// The middle value (of an odd count; the upper middle of an even one).
fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn token_calls(calls: &[regcred_testkit::AwsCall]) -> usize {
    calls
        .iter()
        .filter(|c| c.operation == "GetAuthorizationToken")
        .count()
}
