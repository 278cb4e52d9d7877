//! `inspect secret`: what a pull Secret holds and who keeps it, never a password or a
//! token. There is no flag to show one: use `kubectl get secret` for that, where RBAC and
//! audit logs see it for what it is.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use regcred_api::names::{MANAGED_LABEL, OWNER_ANNOTATION};
use serde::Serialize;

use crate::clusters::{self, ContextArg, KubeconfigArg, classify};
use crate::output::{self, Format, Table, or_dash, relative};
use crate::pull_secrets::{self, Entry};

/// regcred's annotations on the Secrets it writes with a minted token.
const ISSUED_AT_ANNOTATION: &str = "regcred.io/issued-at";
const EXPIRES_AT_ANNOTATION: &str = "regcred.io/expires-at";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// A pull Secret: its servers, user names, token expiry and who manages it.
    Secret(SecretArgs),
}

#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    /// The Secret's name.
    pub name: String,

    /// Its namespace (default: the context's).
    #[arg(short, long)]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub context: ContextArg,

    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// What `-o json|yaml` prints: built only from what may be shown.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection {
    namespace: String,
    name: String,
    #[serde(rename = "type")]
    type_: String,
    /// Who keeps it: `regcred (<owner>)`, the `app.kubernetes.io/managed-by` label, or
    /// the controllers that own it.
    managed_by: Option<String>,
    /// The credential regcred's annotation names, when regcred manages it.
    #[serde(skip_serializing_if = "Option::is_none")]
    regcred_owner: Option<String>,
    field_managers: Vec<String>,
    owner_references: Vec<String>,
    /// When regcred minted the token in it, and when that expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_issued_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_expires_at: Option<String>,
    entries: Vec<EntryView>,
    /// Why it is not a pull Secret kubelet can use, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryView {
    server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    password_set: bool,
    token_set: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_source: Option<&'static str>,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        EntryView {
            server: e.server,
            username: e.username,
            password_set: e.has_password,
            token_set: e.has_token,
            expires_at: e.expires_at.map(|t| t.to_string()),
            expiry_source: e.expiry_source,
        }
    }
}

pub async fn run(kubeconfig: &KubeconfigArg, what: What) -> anyhow::Result<i32> {
    let What::Secret(args) = what;
    let cluster = clusters::connect_one(kubeconfig, &args.context).await?;
    let namespace = args.namespace.clone().unwrap_or(cluster.namespace.clone());
    let api: Api<Secret> = Api::namespaced(cluster.client, &namespace);
    let secret = api.get(&args.name).await.map_err(|e| match classify(&e) {
        ("NotFound", _) => anyhow::anyhow!("Secret {namespace}/{} not found", args.name),
        (_, message) => anyhow::anyhow!("cannot read Secret {namespace}/{}: {message}", args.name),
    })?;
    let inspection = inspect(&secret);
    match args.output {
        Format::Table => print(&inspection),
        format => output::document(format, &inspection)?,
    }
    Ok(if inspection.problem.is_some() { 1 } else { 0 })
}

fn inspect(secret: &Secret) -> Inspection {
    let labels = secret.labels();
    let annotations = secret.annotations();
    let regcred_owner = (labels.get(MANAGED_LABEL).map(String::as_str) == Some("true"))
        .then(|| annotations.get(OWNER_ANNOTATION).cloned())
        .flatten();
    let owner_references: Vec<String> = secret
        .owner_references()
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    let managed_by = match (&regcred_owner, labels.get(MANAGED_BY_LABEL)) {
        (Some(owner), _) => Some(format!("regcred ({owner})")),
        (None, Some(label)) => Some(label.clone()),
        (None, None) if !owner_references.is_empty() => Some(owner_references.join(", ")),
        _ => None,
    };
    let mut field_managers: Vec<String> = secret
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    field_managers.sort();
    field_managers.dedup();
    let (entries, problem) = match pull_secrets::entries(secret) {
        Ok(entries) => (entries.into_iter().map(EntryView::from).collect(), None),
        Err(problem) => (vec![], Some(problem)),
    };
    Inspection {
        namespace: secret.namespace().unwrap_or_default(),
        name: secret.name_any(),
        type_: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
        managed_by,
        regcred_owner,
        field_managers,
        owner_references,
        token_issued_at: annotations.get(ISSUED_AT_ANNOTATION).cloned(),
        token_expires_at: annotations.get(EXPIRES_AT_ANNOTATION).cloned(),
        entries,
        problem,
    }
}

fn print(i: &Inspection) {
    let now = Timestamp::now();
    let when = |t: &Option<String>| {
        t.as_deref().map(|text| match text.parse::<Timestamp>() {
            Ok(at) if at > now => format!("{text} (in {})", relative(at, now)),
            Ok(at) => format!("{text} (EXPIRED {})", relative(at, now)),
            Err(_) => text.to_owned(),
        })
    };
    println!("Secret:          {}/{}", i.namespace, i.name);
    println!("Type:            {}", i.type_);
    println!("Managed by:      {}", or_dash(i.managed_by.clone()));
    if !i.field_managers.is_empty() {
        println!("Field managers:  {}", i.field_managers.join(", "));
    }
    if !i.owner_references.is_empty() {
        println!("Owners:          {}", i.owner_references.join(", "));
    }
    if let Some(issued) = &i.token_issued_at {
        let ago = issued
            .parse::<Timestamp>()
            .map(|at| format!(" ({})", relative(at, now)))
            .unwrap_or_default();
        println!("Token issued:    {issued}{ago}");
    }
    if i.token_expires_at.is_some() {
        println!("Token expires:   {}", or_dash(when(&i.token_expires_at)));
    }
    if let Some(problem) = &i.problem {
        println!("Problem:         {problem}");
        return;
    }
    println!();
    let mut table = Table::new(&["SERVER", "USER", "PASSWORD", "TOKEN", "EXPIRES"]);
    for e in &i.entries {
        let expires = when(&e.expires_at).map(|t| match e.expiry_source {
            Some(source) => format!("{t} [{source}]"),
            None => t,
        });
        table.row(vec![
            e.server.clone(),
            or_dash(e.username.clone()),
            if e.password_set { "set" } else { "-" }.to_owned(),
            if e.token_set { "set" } else { "-" }.to_owned(),
            or_dash(expires),
        ]);
    }
    table.print();
}
