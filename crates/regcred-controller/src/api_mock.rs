//! A scripted API server for unit tests of code that calls the Kubernetes API, in the
//! style of controller-rs' fixtures: each test says which requests it expects, in order,
//! with their exact method, path and body, what each gets back, and that nothing else
//! was sent.

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{self, Handle};

/// The server side of a mocked client.
pub(crate) struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// A request the code under test sent.
pub(crate) struct Sent {
    pub(crate) method: Method,
    /// Path and query, e.g. `/api/v1/namespaces/app/secrets/pull?fieldManager=regcred`.
    pub(crate) uri: String,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Value,
}

/// A client whose every request is answered by the returned [`ApiServer`].
pub(crate) fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

impl ApiServer {
    /// Takes the next request, answers it with `status` and `body`, and returns it.
    pub(crate) async fn answer(&mut self, status: StatusCode, body: Value) -> Sent {
        self.try_answer_by(|_| (status, body))
            .await
            .expect("the code under test sent a request")
    }

    /// Like [`Self::answer`], but `None` once the code under test has dropped its client,
    /// and the answer made from the request.
    pub(crate) async fn try_answer_by(
        &mut self,
        answer: impl FnOnce(&Sent) -> (StatusCode, Value),
    ) -> Option<Sent> {
        let (request, respond) = self.0.next_request().await?;
        let (parts, body_in) = request.into_parts();
        let bytes = body_in.collect_bytes().await.expect("a readable body");
        let sent = Sent {
            method: parts.method,
            uri: parts
                .uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            },
        };
        let (status, body) = answer(&sent);
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        respond.send_response(response);
        Some(sent)
    }

    /// Fails if the code under test sent anything more (call once it has returned and
    /// dropped its client).
    pub(crate) async fn nothing_more(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

/// The `Status` body the API server sends with an error.
pub(crate) fn status(code: u16, reason: &str) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": reason, "reason": reason, "code": code,
    })
}
