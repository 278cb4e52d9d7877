//! One size, every contender on the same namespaces: cold convergence (the contenders'
//! starts taking turns, each one's work undone before the next), then, one contender after
//! another, steady state and a restart, new namespaces, a rotated source, and (for regcred)
//! ECR tokens rotating over every namespace, each contender's work undone after it.

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

/// One contender of a size, as the size's run goes.
struct Entrant {
    contender: Contender,
    /// The password its source holds at first.
    password: String,
    cold: Option<Cold>,
}

/// What a contender did after its cold starts.
struct Scenarios {
    steady: Steady,
    new_namespaces: Option<NewNamespaces>,
    rotation: Rotation,
    ecr: Option<EcrRotation>,
}

impl Bench {
    /// Every contender in `kinds` at one size, on the same namespaces. Their cold starts
    /// take turns (A B, B A, A B, ...), so that the bed's drift and the order weigh on
    /// each alike; each start's work is undone before the next. Then each contender in
    /// turn goes through the other scenarios, and its work is undone again.
    pub(crate) async fn run(&self, kinds: &[Kind], size: usize, scope: Scope) -> Vec<RunResult> {
        let targets = format!("targets-{size}");
        println!(
            "\n== {size} namespaces × {} ServiceAccounts: {}",
            self.service_accounts,
            kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut entrants = vec![];
        for &kind in kinds {
            let run = format!("{}-{size}", kind.name());
            let password = format!("p0-{run}");
            let source = format!("src-{run}");
            self.create_source(&source, &password).await;
            let job = Job {
                run,
                targets: targets.clone(),
                secret: PULL_SECRET.into(),
                source_namespace: BENCH_NAMESPACE.into(),
                source,
                server: self.bed.registry().host.clone(),
                concurrency: self.concurrency,
            };
            entrants.push(Entrant {
                contender: Contender::new(kind, job, self.bed, self.regcred_bin.clone()),
                password,
                cold: None,
            });
        }

        let started = Instant::now();
        let namespaces =
            seed::namespaces(&self.client, &targets, 0..size, self.service_accounts - 1).await;
        self.until_accounts(&namespaces).await;
        println!("  seeded in {:.1}s", started.elapsed().as_secs_f64());

        // The script way's run takes minutes at these sizes, and no target rests on it: it
        // runs once, with the other scenarios.
        let watching: Vec<usize> = (0..entrants.len())
            .filter(|&i| entrants[i].contender.kind.watches())
            .collect();
        for round in 0..self.cold_starts {
            for turn in 0..watching.len() {
                let entrant = &mut entrants[watching[(turn + round) % watching.len()]];
                self.cold_start(entrant, &namespaces).await;
                self.undo(&mut entrant.contender, &namespaces).await;
            }
        }

        let count = entrants.len();
        let mut runs = vec![];
        for (i, mut entrant) in entrants.into_iter().enumerate() {
            let mut result = None;
            if let Scope::Full { ecr } = scope {
                result = Some(self.scenarios(&mut entrant, &namespaces, size, ecr).await);
                if i + 1 < count {
                    self.undo(&mut entrant.contender, &namespaces).await;
                }
            }
            runs.push(self.finish(entrant, size, result).await);
        }
        let took =
            seed::delete_namespaces(&self.client, &format!("{}={targets}", seed::TARGET_LABEL))
                .await;
        println!("  namespaces deleted in {:.1}s", took.as_secs_f64());
        runs
    }

    /// The scenarios after the cold starts: steady state and a restart, new namespaces,
    /// a rotated source, and (for regcred, if `ecr`) ECR tokens rotating. The namespaces
    /// added meanwhile are deleted after.
    async fn scenarios(
        &self,
        entrant: &mut Entrant,
        namespaces: &[String],
        size: usize,
        ecr: bool,
    ) -> Scenarios {
        let kind = entrant.contender.kind;
        println!("  {}:", kind.name());
        if kind.watches() {
            // Converged again, untimed: the scenarios start from its steady state.
            self.converge(&mut entrant.contender, namespaces, &entrant.password)
                .await;
        } else {
            self.cold_start(entrant, namespaces).await;
        }
        let contender = &mut entrant.contender;
        let steady = self.steady(contender).await;
        let mut covered = namespaces.to_vec();
        let new_namespaces = if self.new_namespaces > 0 {
            contender.until_admission().await;
            let (added, new) = self.new_namespaces(contender, size).await;
            covered.extend(added);
            Some(new)
        } else {
            None
        };
        let rotation = self.rotation(contender, &covered).await;
        let ecr = if ecr && kind == Kind::Regcred {
            Some(self.ecr(contender, &covered).await)
        } else {
            None
        };
        contender.stop().await;
        let added = format!("{}={}", seed::ADDED_LABEL, contender.job.run);
        let took = seed::delete_namespaces(&self.client, &added).await;
        println!("  added namespaces deleted in {:.1}s", took.as_secs_f64());
        Scenarios {
            steady,
            new_namespaces,
            rotation,
            ecr,
        }
    }

    /// The contender's result; its credential (regcred) and source deleted.
    async fn finish(
        &self,
        entrant: Entrant,
        size: usize,
        scenarios: Option<Scenarios>,
    ) -> RunResult {
        let mut contender = entrant.contender;
        contender.remove_webhook().await;
        let job = &contender.job;
        if contender.kind.is_regcred() {
            delete_credential(&self.client, job).await;
        }
        let _ = Api::<Secret>::namespaced(self.client.clone(), BENCH_NAMESPACE)
            .delete(&job.source, &Default::default())
            .await;
        let peak_rss_mib = contender.peak_rss_kib.map(|kib| kib as f64 / 1024.0);
        if let Some(mib) = peak_rss_mib {
            println!("  {}: peak RSS {mib:.1} MiB", contender.kind.name());
        }
        let mut result = RunResult {
            contender: contender.kind,
            namespaces: size,
            service_accounts: self.service_accounts,
            cold: entrant.cold.expect("every contender started cold"),
            steady: None,
            new_namespaces: None,
            rotation: None,
            ecr: None,
            peak_rss_mib,
        };
        if let Some(s) = scenarios {
            result.steady = Some(s.steady);
            result.new_namespaces = s.new_namespaces;
            result.rotation = Some(s.rotation);
            result.ecr = s.ecr;
        }
        result
    }

    /// One cold start of `entrant`, timed; the first also counts its requests.
    async fn cold_start(&self, entrant: &mut Entrant, namespaces: &[String]) {
        let contender = &mut entrant.contender;
        let name = contender.kind.name();
        match &mut entrant.cold {
            None => {
                let cold = self.cold(contender, namespaces, &entrant.password).await;
                println!(
                    "  {name} cold: {:.2}s, {} object writes (necessary {}), {} requests",
                    cold.seconds,
                    cold.requests.object_writes,
                    cold.necessary_writes,
                    cold.requests.total
                );
                entrant.cold = Some(cold);
            }
            Some(cold) => {
                let seconds = self
                    .converge(contender, namespaces, &entrant.password)
                    .await;
                println!("  {name} cold again: {seconds:.2}s");
                cold.samples_seconds.push(seconds);
                cold.seconds = median(&cold.samples_seconds);
            }
        }
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
        let mark = self.audit.mark();
        let seconds = self.converge(contender, namespaces, password).await;
        let job = &contender.job;
        let requests = Requests::since(&self.audit, &mark, contender.kind.user(), &job.targets);
        let necessary_writes = namespaces.len() * (1 + self.service_accounts);
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
        if contender.kind.is_regcred() {
            // Its work was undone with its credential gone: it comes back as new.
            apply_credential(&self.client, &contender.job).await;
        }
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
    /// is cold again; returns once the bench's watches see every entry and Secret gone.
    /// regcred's credential goes too: two credentials over the same Secret name (regcred
    /// as shipped, and with its webhook off) would contend, and neither would be cold. So
    /// does its webhook configuration, which would call a port nobody serves.
    async fn undo(&self, contender: &mut Contender, namespaces: &[String]) {
        contender.stop().await;
        contender.remove_webhook().await;
        let work = namespaces
            .iter()
            .map(|ns| (ns.clone(), self.observer.account_names(ns)))
            .collect();
        seed::undo(&self.client, PULL_SECRET, work).await;
        self.observer
            .until(self.timeout, |o| {
                let left =
                    o.any_listing(namespaces, PULL_SECRET) || o.any_secret(namespaces, PULL_SECRET);
                (!left).then_some(())
            })
            .await
            .expect("the bench's watches see the entries and Secrets removed");
        if contender.kind.is_regcred() {
            delete_credential(&self.client, &contender.job).await;
        }
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
                &contender.job.targets,
            ))
        } else {
            None
        };
        let mark = self.audit.mark();
        let started = Instant::now();
        contender.stop().await;
        contender.start().await;
        let last = until_quiet(&self.audit, &mark, user, QUIET, self.timeout).await;
        let restart = Requests::since(&self.audit, &mark, user, &contender.job.targets);
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
        size: usize,
    ) -> (Vec<String>, NewNamespaces) {
        let count = self.new_namespaces;
        let job = &contender.job;
        // Names of their own: the bench's watches keep what they saw of earlier ones.
        let names: Vec<String> = (size..size + count)
            .map(|i| format!("{}-{}-{i:05}", job.targets, contender.kind.name()))
            .collect();
        let labels = json!({seed::TARGET_LABEL: job.targets, seed::ADDED_LABEL: job.run});
        let user = contender.kind.user();
        let mark = self.audit.mark();
        let period = Duration::from_secs_f64(1.0 / self.new_namespace_rate);
        let mut ticks = tokio::time::interval(period);
        let mut creations = vec![];
        for name in &names {
            ticks.tick().await;
            creations.push(tokio::spawn(seed::create_namespace(
                self.client.clone(),
                labels.clone(),
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
            requests: Requests::since(&self.audit, &mark, user, &contender.job.targets),
        };
        (names, new)
    }

    async fn rotation(&self, contender: &mut Contender, namespaces: &[String]) -> Rotation {
        let source = &contender.job.source;
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
        let requests = Requests::since(&self.audit, &mark, user, &contender.job.targets);
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
    async fn ecr(&self, contender: &mut Contender, namespaces: &[String]) -> EcrRotation {
        let job = contender.job.clone();
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
                "namespaces": {"selector": {"matchLabels": {seed::TARGET_LABEL: job.targets}}},
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
        let requests = Requests::since(&self.audit, &mark, contender.kind.user(), &job.targets);
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
