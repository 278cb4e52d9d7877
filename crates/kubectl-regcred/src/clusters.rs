//! Which clusters a command talks to (kubeconfig contexts), their clients, paginated
//! lists, and errors told the way an operator reads them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use kube::api::{ListParams, ObjectList};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::de::DeserializeOwned;

use crate::output::parse_duration;

/// The User-Agent of every request, so audit logs attribute them to this tool.
pub const USER_AGENT: &str = concat!("kubectl-regcred/", env!("CARGO_PKG_VERSION"));

/// Where the kubeconfig is.
#[derive(clap::Args, Clone, Debug)]
pub struct KubeconfigArg {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config; without either, the
    /// in-cluster config).
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// How long to wait for a cluster to answer a request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, global = true)]
    pub request_timeout: Duration,
}

/// Several clusters, for the read-only commands.
#[derive(clap::Args, Clone, Debug)]
pub struct ContextsArgs {
    /// A kubeconfig context to query; repeat for more (default: the current context).
    #[arg(long = "context", value_name = "CONTEXT")]
    pub contexts: Vec<String>,

    /// Query every context of the kubeconfig, concurrently.
    #[arg(long, conflicts_with = "contexts")]
    pub all_contexts: bool,
}

/// One cluster, for the commands that act on one object.
#[derive(clap::Args, Clone, Debug)]
pub struct ContextArg {
    /// The kubeconfig context (default: the current context).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
}

/// A cluster to talk to.
#[derive(Clone)]
pub struct Cluster {
    /// The context's name (`in-cluster` without a kubeconfig).
    pub context: String,
    pub client: Client,
    /// The context's namespace, `default` if it names none.
    pub namespace: String,
    /// The API server's URL.
    pub server: String,
}

/// A context that could not even be turned into a client (unknown context, broken
/// credentials section).
pub struct Unusable {
    pub context: String,
    pub error: String,
}

/// The clusters of `contexts` (or the current context), each usable or not; fails only
/// when no kubeconfig can be read at all.
pub async fn connect_many(
    kubeconfig: &KubeconfigArg,
    contexts: &ContextsArgs,
) -> anyhow::Result<Vec<Result<Cluster, Unusable>>> {
    let Some(config) = read_kubeconfig(kubeconfig)? else {
        if contexts.all_contexts || !contexts.contexts.is_empty() {
            anyhow::bail!(
                "no kubeconfig found (set KUBECONFIG or --kubeconfig) to pick contexts from"
            );
        }
        return Ok(vec![Ok(in_cluster(kubeconfig.request_timeout).await?)]);
    };
    let names: Vec<String> = if contexts.all_contexts {
        config.contexts.iter().map(|c| c.name.clone()).collect()
    } else if contexts.contexts.is_empty() {
        vec![
            config
                .current_context
                .clone()
                .context("the kubeconfig has no current context: name one with --context")?,
        ]
    } else {
        contexts.contexts.clone()
    };
    if names.is_empty() {
        anyhow::bail!("the kubeconfig has no contexts");
    }
    let mut clusters = Vec::new();
    for name in names {
        let cluster = for_context(&config, &name, kubeconfig.request_timeout)
            .await
            .map_err(|e| Unusable {
                context: name.clone(),
                error: chain(&*e),
            });
        clusters.push(cluster);
    }
    Ok(clusters)
}

/// The cluster of one context (or the current one).
pub async fn connect_one(
    kubeconfig: &KubeconfigArg,
    context: &ContextArg,
) -> anyhow::Result<Cluster> {
    let Some(config) = read_kubeconfig(kubeconfig)? else {
        if context.context.is_some() {
            anyhow::bail!(
                "no kubeconfig found (set KUBECONFIG or --kubeconfig) to pick a context from"
            );
        }
        return in_cluster(kubeconfig.request_timeout).await;
    };
    let name = match &context.context {
        Some(name) => name.clone(),
        None => config
            .current_context
            .clone()
            .context("the kubeconfig has no current context: name one with --context")?,
    };
    for_context(&config, &name, kubeconfig.request_timeout)
        .await
        .map_err(|e| anyhow::anyhow!("context {name}: {}", chain(&*e)))
}

fn read_kubeconfig(arg: &KubeconfigArg) -> anyhow::Result<Option<Kubeconfig>> {
    if let Some(path) = &arg.kubeconfig {
        return Kubeconfig::read_from(path)
            .map(Some)
            .with_context(|| format!("cannot read the kubeconfig {}", path.display()));
    }
    let from_env = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
    let default = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".kube/config"))
        .is_some_and(|p| p.exists());
    if !from_env && !default {
        return Ok(None);
    }
    Kubeconfig::read()
        .map(Some)
        .context("cannot read the kubeconfig")
}

async fn for_context(
    kubeconfig: &Kubeconfig,
    name: &str,
    timeout: Duration,
) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
    if !kubeconfig.contexts.iter().any(|c| c.name == name) {
        return Err(format!("no context named {name:?} in the kubeconfig").into());
    }
    let options = KubeConfigOptions {
        context: Some(name.to_owned()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig.clone(), &options).await?;
    cluster(name.to_owned(), config, timeout)
}

async fn in_cluster(timeout: Duration) -> anyhow::Result<Cluster> {
    let config = Config::incluster().context(
        "no kubeconfig found (set KUBECONFIG or --kubeconfig) and not running in a cluster",
    )?;
    cluster("in-cluster".to_owned(), config, timeout).map_err(|e| anyhow::anyhow!(chain(&*e)))
}

fn cluster(
    context: String,
    mut config: Config,
    timeout: Duration,
) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    let server = config.cluster_url.to_string();
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config)?;
    Ok(Cluster {
        context,
        client,
        namespace,
        server: server.trim_end_matches('/').to_owned(),
    })
}

/// Every object `api` lists, `page` at a time (following `continue` tokens), and how many
/// requests that took.
pub async fn list_all<K>(
    api: &Api<K>,
    params: &ListParams,
    page: u32,
) -> kube::Result<(Vec<K>, usize)>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut requests = 0;
    let mut params = params.clone().limit(page);
    loop {
        let list: ObjectList<K> = api.list(&params).await?;
        requests += 1;
        items.extend(list.items);
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok((items, requests)),
        }
    }
}

/// What went wrong talking to a cluster, as a reason and a message.
pub fn classify(error: &kube::Error) -> (&'static str, String) {
    let reason = match error {
        kube::Error::Api(status) => match status.code {
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            _ => "ApiError",
        },
        kube::Error::Auth(_) => "AuthFailed",
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => {
            "Unreachable"
        }
        _ => "Error",
    };
    (reason, chain(error))
}

/// An error with its causes, `outer: inner: innermost`, without repeats.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
