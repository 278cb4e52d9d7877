//! The process's HTTP endpoints: `/healthz` and `/readyz` for the kubelet's probes, and
//! `/metrics` for Prometheus.
//!
//! Each answer is a few fixed bytes, so this is a minimal HTTP/1.1 responder on tokio
//! rather than a server framework: the dependency tree has hyper's client only, and
//! adding a server stack would rebuild kube and the AWS SDK for two static answers.
//! Every connection is answered once and closed; requests are bounded in size and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use regcred_controller::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// A request head larger than this is refused (kubelet's and Prometheus' are ~200 bytes).
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status code, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

/// What the endpoints report on.
#[derive(Clone)]
pub struct State {
    /// True once every cache has had its first full list.
    pub ready: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

/// The probe port's routes.
pub fn probes(state: &State, path: &str) -> Response {
    match path {
        // Alive: this task answers, so the runtime is not wedged.
        "/healthz" | "/livez" => Response::text(200, "ok\n"),
        "/readyz" if *state.ready.borrow() => Response::text(200, "ok\n"),
        "/readyz" => Response::text(503, "caches not yet listed\n"),
        _ => Response::text(404, "not found\n"),
    }
}

/// The metrics port's routes.
pub fn metrics(state: &State, path: &str) -> Response {
    if path != "/metrics" {
        return Response::text(404, "not found\n");
    }
    Response {
        status: 200,
        content_type: Metrics::CONTENT_TYPE,
        body: state.metrics.encode(),
    }
}

/// Binds `addr` now, so that a taken port fails the start rather than a probe later.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for {what}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving {what}");
    Ok(listener)
}

/// Answers every connection on `listener` with `route(state, path)`, until dropped.
pub async fn serve(
    listener: TcpListener,
    state: State,
    route: fn(&State, &str) -> Response,
) -> std::io::Result<()> {
    let state = Arc::new(state);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving once it passes.
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &state, route).await {
                debug!(%peer, error = %e, "endpoint request failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    state: &State,
    route: fn(&State, &str) -> Response,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let (response, with_body) = match request_line(&head) {
        Some(("GET", path)) => (route(state, path), true),
        Some(("HEAD", path)) => (route(state, path), false),
        Some(_) => (Response::text(405, "method not allowed\n"), true),
        None => (Response::text(400, "bad request\n"), true),
    };
    stream.write_all(&encode(&response, with_body)).await?;
    stream.shutdown().await
}

/// Reads until the blank line that ends the request head (probes send no body).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The method and path (without query) of `GET /readyz?verbose HTTP/1.1`.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some((method, path))
}

fn encode(response: &Response, with_body: bool) -> Vec<u8> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(response.body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ready: bool) -> (watch::Sender<bool>, State) {
        let (tx, rx) = watch::channel(ready);
        let state = State {
            ready: rx,
            metrics: Arc::new(Metrics::new("1.2.3", "abc")),
        };
        (tx, state)
    }

    /// Sends raw bytes to a real listener and returns the raw answer.
    async fn exchange(route: fn(&State, &str) -> Response, state: State, request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, state, route));
        let mut client = TcpStream::connect(addr).await.unwrap();
        // A refused request may be reset mid-write or mid-read: the answer says enough.
        let _ = client.write_all(request).await;
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer).await;
        server.abort();
        answer
    }

    #[tokio::test]
    async fn readyz_follows_the_gate_and_healthz_does_not() {
        let (tx, state) = state(false);
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let answer = exchange(probes, state.clone(), &get("/readyz")).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        let answer = exchange(probes, state.clone(), &get("/healthz")).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        tx.send_replace(true);
        let answer = exchange(probes, state.clone(), &get("/readyz?verbose")).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Content-Length: 3\r\n"), "{answer}");
        let answer = exchange(probes, state, &get("/metrics")).await;
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    }

    #[tokio::test]
    async fn head_has_no_body_and_other_methods_are_refused() {
        let (_tx, state) = state(true);
        let answer = exchange(probes, state.clone(), b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        let answer = exchange(probes, state.clone(), b"POST /healthz HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        let answer = exchange(probes, state, b"nonsense\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_text_format() {
        let (_tx, state) = state(true);
        let answer = exchange(metrics, state, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("regcred_build_info{version=\"1.2.3\",commit=\"abc\"} 1\n"),
            "{answer}"
        );
        // The controller sets it once its caches are listed.
        assert!(answer.contains("\nregcred_ready 0\n"), "{answer}");
        // Per-credential series are described even before any credential exists.
        assert!(
            answer.contains("# TYPE regcred_credential_expiration_timestamp_seconds gauge\n"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn an_oversized_head_is_dropped() {
        let (_tx, state) = state(true);
        let mut request = b"GET /healthz HTTP/1.1\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'x', MAX_HEAD + 2048));
        let answer = exchange(probes, state, &request).await;
        assert_eq!(answer, "");
    }
}
