//! Every request to the API server, counted by resource, verb and response code, from a
//! layer in the client's service stack: nothing regcred does can bypass it, so "no writes
//! in steady state" can be checked in production, as the tests check it on the audit log.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The plural resource, with its subresource (`serviceaccounts/token`): a handful of
    /// values, never a namespace or an object's name.
    resource: String,
    verb: &'static str,
    /// The response's status code, or `error` when none came back.
    code: String,
}

#[derive(Clone, Default)]
pub(super) struct KubeRequests {
    requests: Family<RequestLabels, Counter>,
}

impl KubeRequests {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "kube_requests",
            "Requests to the Kubernetes API server, by resource, verb and response code",
            self.requests.clone(),
        );
    }

    pub(super) fn layer(&self) -> KubeRequestsLayer {
        KubeRequestsLayer {
            requests: self.requests.clone(),
        }
    }
}

/// Counts the requests of the service it wraps (see [`super::Metrics::kube_layer`]).
#[derive(Clone)]
pub struct KubeRequestsLayer {
    requests: Family<RequestLabels, Counter>,
}

impl<S> Layer<S> for KubeRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            requests: self.requests.clone(),
        }
    }
}

/// The counting service.
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    requests: Family<RequestLabels, Counter>,
}

impl<S, B, R> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (resource, verb) = classify(request.method(), request.uri());
        let requests = self.requests.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            requests
                .get_or_create(&RequestLabels {
                    resource,
                    verb,
                    code,
                })
                .inc();
            result
        })
    }
}

/// The resource and the Kubernetes verb of a request, from its method and path.
fn classify(method: &Method, uri: &Uri) -> (String, &'static str) {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return ("other".to_owned(), "other"),
    };
    let rest = match rest {
        ["namespaces", _namespace, tail @ ..] if !tail.is_empty() => tail,
        _ => rest,
    };
    let (resource, named) = match rest {
        [] | [""] => ("discovery".to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (resource, verb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, uri: &str) -> (String, &'static str) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn requests_are_named_as_the_api_server_names_them() {
        let cases = [
            (
                Method::GET,
                "/api/v1/secrets?labelSelector=regcred.io%2Fmanaged%3Dtrue&limit=500",
                "secrets",
                "list",
            ),
            (
                Method::GET,
                "/api/v1/secrets?&watch=true&timeoutSeconds=290",
                "secrets",
                "watch",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/team-a/secrets/ecr-pull?fieldManager=regcred",
                "secrets",
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/team-a/secrets/ecr-pull",
                "secrets",
                "delete",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/team-a/serviceaccounts/default",
                "serviceaccounts",
                "patch",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/team-a/serviceaccounts/ecr/token",
                "serviceaccounts/token",
                "create",
            ),
            (Method::GET, "/api/v1/namespaces", "namespaces", "list"),
            (
                Method::GET,
                "/api/v1/namespaces/team-a",
                "namespaces",
                "get",
            ),
            (
                Method::PATCH,
                "/apis/regcred.io/v1alpha1/clusterregistrycredentials/ecr/status",
                "clusterregistrycredentials/status",
                "patch",
            ),
            (
                Method::PATCH,
                "/apis/regcred.io/v1alpha1/namespaces/team-a/registrycredentials/harbor/status",
                "registrycredentials/status",
                "patch",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/regcred-system/leases/regcred-controller",
                "leases",
                "update",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/team-a/events",
                "events",
                "create",
            ),
            (Method::GET, "/version", "other", "other"),
        ];
        for (method, uri, resource, verb) in cases {
            assert_eq!(of(method, uri), (resource.to_owned(), verb), "{uri}");
        }
    }
}
