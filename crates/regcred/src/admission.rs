//! `regcred run`'s admission webhook flags (docs/admission.md).

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use regcred_controller::{AdmissionMode, AdmissionSettings, WebhookTlsSettings};

use crate::humantime_secs;

/// What the webhook mutates on CREATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// No webhook: the watch path alone patches ServiceAccounts.
    Off,
    /// ServiceAccounts are created with their pull Secret (their Pods copy it).
    ServiceAccounts,
    /// Pods that name no pull Secret of their own get their ServiceAccount's planned list;
    /// ServiceAccounts are not touched at all (nor patched by the watch path).
    Pods,
}

#[derive(clap::Args, Debug)]
pub struct AdmissionArgs {
    /// The mutating admission webhook (every replica serves it).
    #[arg(long = "admission", env = "REGCRED_ADMISSION", value_enum, default_value_t = Mode::Off)]
    mode: Mode,
    /// Where the webhook serves HTTPS.
    #[arg(long, env = "REGCRED_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    webhook_addr: SocketAddr,
    /// The Secret, in the controller's namespace, holding the webhook's CA and certificate.
    #[arg(
        long,
        env = "REGCRED_WEBHOOK_SECRET",
        default_value = "regcred-webhook-tls"
    )]
    webhook_secret: String,
    /// The webhook Service's name: the certificate is made for
    /// NAME.NAMESPACE.svc (and its other in-cluster forms).
    #[arg(
        long,
        env = "REGCRED_WEBHOOK_SERVICE",
        default_value = "regcred-webhook"
    )]
    webhook_service: String,
    /// A further name (DNS name or IP address) for the certificate. Repeat for more.
    #[arg(
        long = "webhook-host",
        env = "REGCRED_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    webhook_hosts: Vec<String>,
    /// The MutatingWebhookConfiguration(s) whose caBundle the controller keeps current.
    /// Repeat for more.
    #[arg(
        long = "webhook-configuration",
        env = "REGCRED_WEBHOOK_CONFIGURATIONS",
        value_delimiter = ',',
        default_value = "regcred"
    )]
    webhook_configurations: Vec<String>,
    /// Who makes the certificate: `self` (the controller: its own CA, rotated, caBundle
    /// published) or `external` (cert-manager or another tool writes the Secret's tls.crt
    /// and tls.key and injects the caBundle; the controller only serves them).
    #[arg(long, env = "REGCRED_WEBHOOK_CERTS", value_enum, default_value_t = Certs::SelfManaged)]
    webhook_certs: Certs,
    // Rotation timing, for tests that force rotations (hidden: the defaults are the
    // supported settings).
    #[arg(long, hide = true, default_value = "43800h", value_parser = humantime_secs)]
    webhook_ca_validity: Duration,
    #[arg(long, hide = true, default_value = "2160h", value_parser = humantime_secs)]
    webhook_cert_validity: Duration,
    #[arg(long, hide = true, default_value = "8760h", value_parser = humantime_secs)]
    webhook_ca_rotate_before: Duration,
    #[arg(long, hide = true, default_value = "720h", value_parser = humantime_secs)]
    webhook_cert_rotate_before: Duration,
    #[arg(long, hide = true, default_value = "1h", value_parser = humantime_secs)]
    webhook_ca_overlap: Duration,
    #[arg(long, hide = true, default_value = "60s", value_parser = humantime_secs)]
    webhook_check_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Certs {
    #[value(name = "self")]
    SelfManaged,
    External,
}

impl AdmissionArgs {
    /// The controller's settings; `None` when admission is off.
    pub fn settings(&self, namespace: &str) -> anyhow::Result<Option<AdmissionSettings>> {
        let mode = match self.mode {
            Mode::Off => return Ok(None),
            Mode::ServiceAccounts => AdmissionMode::ServiceAccounts,
            Mode::Pods => AdmissionMode::Pods,
        };
        let rotate_ok = self.webhook_ca_rotate_before
            > self.webhook_ca_overlap + self.webhook_check_interval
            && self.webhook_ca_rotate_before < self.webhook_ca_validity
            && self.webhook_cert_rotate_before < self.webhook_cert_validity;
        anyhow::ensure!(
            rotate_ok,
            "webhook rotation timing: each rotate-before must be shorter than its validity, \
             and the CA's longer than the overlap plus the check interval"
        );
        let service = &self.webhook_service;
        let mut names = vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
            format!("{service}.{namespace}"),
            service.clone(),
        ];
        names.extend(self.webhook_hosts.iter().cloned());
        Ok(Some(AdmissionSettings {
            mode,
            addr: self.webhook_addr,
            tls: WebhookTlsSettings {
                secret: self.webhook_secret.clone(),
                names,
                webhook_configurations: self
                    .webhook_configurations
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect(),
                manage: self.webhook_certs == Certs::SelfManaged,
                ca_validity: self.webhook_ca_validity,
                cert_validity: self.webhook_cert_validity,
                ca_rotate_before: self.webhook_ca_rotate_before,
                cert_rotate_before: self.webhook_cert_rotate_before,
                ca_overlap: self.webhook_ca_overlap,
                check_interval: self.webhook_check_interval,
            },
        }))
    }
}
