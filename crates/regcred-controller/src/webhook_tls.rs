//! The webhook's TLS without cert-manager: a CA and a serving certificate that the
//! controller makes, keeps in one Secret in its own namespace, rotates before they expire,
//! and publishes as the `caBundle` of its MutatingWebhookConfigurations.
//!
//! Every replica serves with the certificate in that Secret, so all agree: the Secret is
//! created with a plain create (a replica that loses the race reads the winner's, as with
//! the signing key) and replaced only with its resourceVersion (a replica whose rotation
//! loses reads the one that won). Rotation never leaves the API server without a way to
//! trust what a replica serves:
//!
//! - the serving certificate is renewed `cert_rotate_before` its end, by the same CA, and
//!   never outlives its CA: the `caBundle` already trusts it;
//! - the CA is renewed in two steps: `ca_rotate_before` its end a new CA is *staged*, added
//!   to the Secret's bundle and so to every `caBundle`, while the old one still signs; once
//!   every configured webhook configuration carries the new CA and `ca_overlap` has passed
//!   (the API servers' informers have seen it), the new CA starts signing. The old one
//!   stays in the bundle until it expires, so a replica still serving a certificate it
//!   signed stays trusted.
//!
//! With `manage` off (cert-manager writes the Secret and injects the `caBundle`) the
//! controller only reads the Secret's `tls.crt` and `tls.key`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use regcred_api::names::{FIELD_MANAGER, MANAGED_BY};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Where the state lives in the Secret, besides the conventional `tls.crt`, `tls.key` and
/// `ca.crt` (the bundle).
const STATE_KEY: &str = "regcred-state.json";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
/// Certificates start this much in the past, for API servers whose clocks lag.
const BACKDATE: SignedDuration = SignedDuration::from_secs(300);

/// How the webhook's certificate is kept.
#[derive(Clone, Debug)]
pub struct WebhookTlsSettings {
    /// The Secret in the controller's namespace.
    pub secret: String,
    /// The serving certificate's names (DNS names or IP addresses).
    pub names: Vec<String>,
    /// MutatingWebhookConfigurations whose every webhook gets the CA bundle.
    pub webhook_configurations: Vec<String>,
    /// Make, rotate and publish (false: another tool writes the Secret and the bundle).
    pub manage: bool,
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    /// A new CA is staged when the current one has less than this left.
    pub ca_rotate_before: Duration,
    /// The serving certificate is renewed when it has less than this left.
    pub cert_rotate_before: Duration,
    /// How long a staged CA is published before it signs.
    pub ca_overlap: Duration,
    /// How often the Secret and the configurations are checked besides their watches.
    pub check_interval: Duration,
}

impl Default for WebhookTlsSettings {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        WebhookTlsSettings {
            secret: "regcred-webhook-tls".into(),
            names: vec![],
            webhook_configurations: vec![],
            manage: true,
            ca_validity: Duration::from_secs(5 * 365 * DAY),
            cert_validity: Duration::from_secs(90 * DAY),
            ca_rotate_before: Duration::from_secs(365 * DAY),
            cert_rotate_before: Duration::from_secs(30 * DAY),
            ca_overlap: Duration::from_secs(3600),
            check_interval: Duration::from_secs(60),
        }
    }
}

/// A CA, as kept in the Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Authority {
    /// Its subject's common name, unique per CA.
    name: String,
    not_after: Timestamp,
    cert: String,
    /// Dropped once it no longer signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// When it was added to the bundle.
    published_at: Timestamp,
}

/// The serving certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Leaf {
    issuer: String,
    names: Vec<String>,
    not_after: Timestamp,
    cert: String,
    key: String,
}

/// Everything in the Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// Signs serving certificates.
    ca: Authority,
    /// Staged: trusted, not yet signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<Authority>,
    /// No longer signing, still trusted until they expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<Authority>,
    leaf: Leaf,
}

impl State {
    /// Every CA to trust, PEM, current first.
    fn bundle(&self) -> String {
        std::iter::once(&self.ca)
            .chain(&self.next)
            .chain(&self.retired)
            .map(|a| a.cert.as_str())
            .collect()
    }
}

/// What to do next, decided from the state, the clock and the published bundles.
fn step(
    state: Option<&State>,
    now: Timestamp,
    settings: &WebhookTlsSettings,
    published: impl Fn(&Authority) -> bool,
) -> Result<Option<State>, rcgen::Error> {
    let Some(current) = state else {
        let ca = new_authority(now, settings)?;
        let leaf = new_leaf(&ca, now, settings)?;
        return Ok(Some(State {
            ca,
            next: None,
            retired: vec![],
            leaf,
        }));
    };
    let mut state = current.clone();
    state.retired.retain(|a| a.not_after > now);
    if state.next.is_none() && left(state.ca.not_after, now) < settings.ca_rotate_before {
        state.next = Some(new_authority(now, settings)?);
    }
    if let Some(next) = state.next.clone()
        && published(&next)
        && now.duration_since(next.published_at) >= signed(settings.ca_overlap)
    {
        let mut old = std::mem::replace(&mut state.ca, next);
        old.key = None;
        state.retired.insert(0, old);
        state.next = None;
    }
    let leaf = &state.leaf;
    if leaf.issuer != state.ca.name
        || leaf.names != settings.names
        || left(leaf.not_after, now) < settings.cert_rotate_before
    {
        state.leaf = new_leaf(&state.ca, now, settings)?;
    }
    Ok((&state != current).then_some(state))
}

fn left(until: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(now)).unwrap_or_default()
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn offset(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).expect("a timestamp in range")
}

fn ca_params(name: &str, not_before: Timestamp, not_after: Timestamp) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "regcred");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    params
}

fn new_authority(now: Timestamp, settings: &WebhookTlsSettings) -> Result<Authority, rcgen::Error> {
    let not_after = now
        .saturating_add(signed(settings.ca_validity))
        .expect("in range");
    let name = format!("regcred-webhook-ca-{}", now.as_millisecond());
    let key = KeyPair::generate()?;
    let cert = ca_params(
        &name,
        now.saturating_sub(BACKDATE).expect("in range"),
        not_after,
    )
    .self_signed(&key)?;
    Ok(Authority {
        name,
        not_after,
        cert: cert.pem(),
        key: Some(key.serialize_pem()),
        published_at: now,
    })
}

fn new_leaf(
    ca: &Authority,
    now: Timestamp,
    settings: &WebhookTlsSettings,
) -> Result<Leaf, rcgen::Error> {
    let ca_key = KeyPair::from_pem(ca.key.as_deref().unwrap_or_default())?;
    // The issuer is rebuilt from what identifies it in a certificate it signs: its subject
    // and its key (whose identifier becomes the authority key identifier).
    let issuer = Issuer::new(ca_params(&ca.name, now, ca.not_after), ca_key);
    // Never past the CA's own end: a chain is only as valid as its CA.
    let not_after = now
        .saturating_add(signed(settings.cert_validity))
        .expect("in range")
        .min(ca.not_after);
    let mut params = CertificateParams::new(settings.names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        settings
            .names
            .first()
            .map_or("regcred-webhook", String::as_str),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now.saturating_sub(BACKDATE).expect("in range"));
    params.not_after = offset(not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Leaf {
        issuer: ca.name.clone(),
        names: settings.names.clone(),
        not_after,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

fn read_state(secret: &Secret) -> Option<State> {
    serde_json::from_slice(&data(secret, STATE_KEY)?).ok()
}

fn secret_for(name: &str, namespace: &str, state: &State) -> Secret {
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (TLS_CRT.to_owned(), text(&state.leaf.cert)),
            (TLS_KEY.to_owned(), text(&state.leaf.key)),
            (CA_CRT.to_owned(), text(&state.bundle())),
            (
                STATE_KEY.to_owned(),
                ByteString(serde_json::to_vec(state).expect("the state serializes")),
            ),
        ])),
        ..Default::default()
    }
}

/// Serves the certificate of the moment; swapped in place on rotation.
#[derive(Debug, Default)]
pub(crate) struct CertResolver {
    current: RwLock<Option<(Vec<u8>, Arc<CertifiedKey>)>>,
}

impl CertResolver {
    /// Loads `cert` and `key` (PEM) unless they are what is served already.
    fn load(&self, cert: &[u8], key: &[u8]) -> Result<bool, String> {
        let mut fingerprint = cert.to_vec();
        fingerprint.extend_from_slice(key);
        if self
            .current
            .read()
            .expect("resolver lock")
            .as_ref()
            .is_some_and(|(f, _)| *f == fingerprint)
        {
            return Ok(false);
        }
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.crt: {e}"))?;
        if chain.is_empty() {
            return Err("tls.crt holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key: {e}"))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| e.to_string())?;
        *self.current.write().expect("resolver lock") = Some((fingerprint, Arc::new(certified)));
        Ok(true)
    }

    pub(crate) fn loaded(&self) -> bool {
        self.current.read().expect("resolver lock").is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .expect("resolver lock")
            .as_ref()
            .map(|(_, k)| k.clone())
    }
}

/// Keeps the certificate served, rotated and published until the task is dropped. `loaded`
/// turns true once a certificate is served.
pub(crate) async fn run(
    client: Client,
    namespace: String,
    settings: WebhookTlsSettings,
    resolver: Arc<CertResolver>,
    loaded: watch::Sender<bool>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client);
    // Any change to the Secret or a configuration (a Helm upgrade or Argo CD sync that
    // resets the caBundle) is looked at at once; the interval covers a missed event.
    let secret_events = watcher(
        secrets.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.secret)),
    )
    .default_backoff()
    .filter_map(news)
    .boxed();
    let mut triggers = vec![secret_events];
    if settings.manage {
        for name in &settings.webhook_configurations {
            triggers.push(
                watcher(
                    configurations.clone(),
                    watcher::Config::default().fields(&format!("metadata.name={name}")),
                )
                .default_backoff()
                .filter_map(news)
                .boxed(),
            );
        }
    }
    let mut triggers = stream::select_all(triggers);
    let mut interval = tokio::time::interval(settings.check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Err(e) = check(&secrets, &configurations, &namespace, &settings, &resolver).await {
            warn!(error = %e, secret = %settings.secret, "webhook certificate check failed");
        }
        // Ready once a certificate is served, even if publishing its bundle failed (that
        // is retried, and logged): the Deployment must not hang on it.
        if resolver.loaded() {
            loaded.send_if_modified(|l| !std::mem::replace(l, true));
        }
        tokio::select! {
            _ = interval.tick() => {}
            Some(()) = triggers.next() => {
                // Let a burst of events (the watches listing at once, a Helm upgrade)
                // settle into one check.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while triggers.next().now_or_never().flatten().is_some() {}
            }
        }
    }
}

/// Whether a watch event may mean the certificate or a bundle changed. A (re-)list says so
/// once, at its end: its start and each object it lists are the same news again, and each
/// check is two GETs.
async fn news<K>(event: Result<watcher::Event<K>, watcher::Error>) -> Option<()> {
    match event {
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
        Ok(_) | Err(_) => Some(()),
    }
}

/// One round: read, rotate if due (losing a race is fine: the next round reads the
/// winner's), serve what the Secret holds, publish its bundle.
async fn check(
    secrets: &Api<Secret>,
    configurations: &Api<MutatingWebhookConfiguration>,
    namespace: &str,
    settings: &WebhookTlsSettings,
    resolver: &CertResolver,
) -> Result<(), String> {
    let mut secret = secrets
        .get_opt(&settings.secret)
        .await
        .map_err(|e| e.to_string())?;
    if settings.manage {
        let state = secret.as_ref().and_then(read_state);
        if secret.is_some() && state.is_none() {
            warn!(secret = %settings.secret, "the webhook certificate Secret is unreadable; replacing it");
        }
        let mut published = BTreeMap::new();
        if let Some(next) = state.as_ref().and_then(|s| s.next.as_ref()) {
            for name in &settings.webhook_configurations {
                let bundle = configurations
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|c| bundles(&c));
                let has = bundle.is_some_and(|b| b.iter().all(|b| b.contains(&next.cert)));
                published.insert(name.clone(), has);
            }
        }
        let now = Timestamp::now();
        let next = step(state.as_ref(), now, settings, |_| {
            published.values().all(|&p| p)
        })
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
        if let Some(next) = next {
            let mut desired = secret_for(&settings.secret, namespace, &next);
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let written = match &secret {
                None => secrets.create(&params, &desired).await,
                Some(existing) => {
                    // Every key rewritten, guarded by the version the rotation was
                    // computed from (RBAC grants patch, not update).
                    desired.metadata.resource_version = existing.resource_version();
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": desired.metadata.resource_version},
                        "data": desired.data,
                    });
                    secrets
                        .patch(&settings.secret, &patch_params(), &Patch::Merge(patch))
                        .await
                }
            };
            match written {
                Ok(s) => {
                    describe(state.as_ref(), &next);
                    secret = Some(s);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    debug!("another replica wrote the webhook certificate first; reading theirs");
                    secret = secrets
                        .get_opt(&settings.secret)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    let Some(secret) = secret else {
        return Err(format!(
            "Secret {namespace}/{} does not exist yet",
            settings.secret
        ));
    };
    let (Some(cert), Some(key)) = (data(&secret, TLS_CRT), data(&secret, TLS_KEY)) else {
        return Err(format!(
            "Secret {namespace}/{} has no tls.crt and tls.key",
            settings.secret
        ));
    };
    if resolver.load(&cert, &key)? {
        info!(secret = %settings.secret, "serving the webhook certificate");
    }
    if settings.manage
        && let Some(bundle) = data(&secret, CA_CRT)
    {
        for name in &settings.webhook_configurations {
            publish(configurations, name, &bundle).await?;
        }
    }
    Ok(())
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn describe(before: Option<&State>, after: &State) {
    match before {
        None => info!(ca = %after.ca.name, "created the webhook CA and serving certificate"),
        Some(b) => {
            if b.next.is_none() && after.next.is_some() {
                info!(next = ?after.next.as_ref().map(|n| &n.name), "staged a new webhook CA (trusted, not yet signing)");
            }
            if b.ca.name != after.ca.name {
                info!(ca = %after.ca.name, "the new webhook CA signs from now on");
            }
            if b.leaf.cert != after.leaf.cert {
                info!(not_after = %after.leaf.not_after, "renewed the webhook serving certificate");
            }
        }
    }
}

/// Each webhook's caBundle, as text.
fn bundles(configuration: &MutatingWebhookConfiguration) -> Vec<String> {
    configuration
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// Sets every webhook's caBundle of `name` to `bundle` (a replace with the resourceVersion:
/// a concurrent edit is read again next round, never overwritten).
async fn publish(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &[u8],
) -> Result<(), String> {
    let Some(mut configuration) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
        debug!(
            configuration = name,
            "no such MutatingWebhookConfiguration (yet)"
        );
        return Ok(());
    };
    let text = String::from_utf8_lossy(bundle);
    if bundles(&configuration).iter().all(|b| *b == text) {
        return Ok(());
    }
    for webhook in configuration.webhooks.iter_mut().flatten() {
        webhook.client_config.ca_bundle = Some(ByteString(bundle.to_vec()));
    }
    // The whole (atomic) list, as read, with the bundles set: guarded by its version.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": configuration.metadata.resource_version},
        "webhooks": configuration.webhooks,
    });
    match api.patch(name, &patch_params(), &Patch::Merge(patch)).await {
        Ok(_) => {
            info!(configuration = name, "published the webhook CA bundle");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookTlsSettings {
        WebhookTlsSettings {
            names: vec![
                "regcred-webhook.regcred-system.svc".into(),
                "127.0.0.1".into(),
            ],
            ca_validity: Duration::from_secs(100),
            cert_validity: Duration::from_secs(30),
            ca_rotate_before: Duration::from_secs(40),
            cert_rotate_before: Duration::from_secs(10),
            ca_overlap: Duration::from_secs(5),
            ..Default::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_fresh_state_is_stable_until_something_is_due() {
        let s = settings();
        let state = step(None, at(0), &s, |_| true).unwrap().unwrap();
        assert_eq!(state.leaf.issuer, state.ca.name);
        assert_eq!(state.leaf.not_after, at(30));
        assert_eq!(state.bundle(), state.ca.cert);
        assert_eq!(step(Some(&state), at(19), &s, |_| true).unwrap(), None);
        let renewed = step(Some(&state), at(21), &s, |_| true).unwrap().unwrap();
        assert_ne!(renewed.leaf.cert, state.leaf.cert);
        assert_eq!(renewed.ca, state.ca, "the CA is kept");
        let mut moved = s.clone();
        moved.names.push("other.example".into());
        assert!(
            step(Some(&state), at(1), &moved, |_| true)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_new_ca_is_trusted_before_it_signs_and_the_old_one_after() {
        let s = settings();
        let state = step(None, at(0), &s, |_| true).unwrap().unwrap();
        // 40 s before the CA's end a new one is staged; the old one keeps signing.
        let staged = step(Some(&state), at(61), &s, |_| false).unwrap().unwrap();
        let next = staged.next.clone().unwrap();
        assert_eq!(staged.ca, state.ca);
        assert!(staged.bundle().contains(&next.cert) && staged.bundle().contains(&state.ca.cert));
        assert_eq!(staged.leaf.issuer, state.ca.name);
        // Not published yet, or not long enough: nothing changes.
        assert_eq!(step(Some(&staged), at(70), &s, |_| false).unwrap(), None);
        assert_eq!(step(Some(&staged), at(62), &s, |_| true).unwrap(), None);
        // Published for the overlap: the new CA signs, the old one is still trusted.
        let promoted = step(Some(&staged), at(67), &s, |_| true).unwrap().unwrap();
        assert_eq!(promoted.ca.name, next.name);
        assert_eq!(promoted.leaf.issuer, next.name);
        assert_eq!(promoted.retired.len(), 1);
        assert!(
            promoted.retired[0].key.is_none(),
            "a retired CA's key is dropped"
        );
        assert!(promoted.bundle().contains(&state.ca.cert));
        // Once the old CA has expired it leaves the bundle.
        let pruned = step(Some(&promoted), at(101), &s, |_| true)
            .unwrap()
            .unwrap();
        assert!(pruned.retired.is_empty());
        assert!(!pruned.bundle().contains(&state.ca.cert));
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let s = settings();
        let state = step(None, at(0), &s, |_| true).unwrap().unwrap();
        let late = new_leaf(&state.ca, at(90), &s).unwrap();
        assert_eq!(late.not_after, state.ca.not_after);
    }

    #[test]
    fn the_certificates_load_and_chain_to_the_bundle() {
        use rustls::client::danger::ServerCertVerifier;
        let s = settings();
        let state = step(None, at(0), &s, |_| true).unwrap().unwrap();
        let resolver = CertResolver::default();
        assert!(
            resolver
                .load(state.leaf.cert.as_bytes(), state.leaf.key.as_bytes())
                .unwrap()
        );
        assert!(
            !resolver
                .load(state.leaf.cert.as_bytes(), state.leaf.key.as_bytes())
                .unwrap()
        );
        assert!(resolver.loaded());
        let secret = secret_for("regcred-webhook-tls", "regcred-system", &state);
        assert_eq!(read_state(&secret), Some(state.clone()));
        // The leaf verifies against the bundle with rustls' own verifier.
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(state.bundle().as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(state.leaf.cert.as_bytes()).unwrap();
        let name =
            rustls::pki_types::ServerName::try_from("regcred-webhook.regcred-system.svc").unwrap();
        let now = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            at(1).as_second() as u64,
        ));
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], now)
            .expect("the serving certificate chains to the bundle");
    }
}
