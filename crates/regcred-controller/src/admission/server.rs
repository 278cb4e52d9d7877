//! The webhook's HTTPS server: TLS (rustls, the certificate from [`crate::webhook_tls`],
//! swapped in place on rotation) and a small HTTP/1.1 responder with keep-alive, so the API
//! server reuses its connections instead of paying a handshake per review.
//!
//! Like the probe endpoints, this is not a server framework: one route per mode, bounded
//! requests, and connections kept longer than the API server keeps idle ones (90 s), so
//! it is always the client that closes an idle connection, never a race with its next
//! request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::runtime::reflector::ObjectRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::{AdmissionMode, CACHE_WAIT, pod_patch, pod_service_account, review};
use super::{service_account_patch, until_cached};
use crate::context::Stores;
use crate::webhook_tls::CertResolver;

/// A request head larger than this is refused.
const MAX_HEAD: usize = 16 * 1024;
/// The API server sends at most 3 MiB objects; a review carries one (two for updates).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// An idle connection is closed after this long (longer than the API server's 90 s).
const IDLE: Duration = Duration::from_secs(120);
/// A request must arrive whole within this once it has begun, and a handshake too.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What answers reviews.
pub(crate) struct Webhook {
    pub(crate) stores: Stores,
    pub(crate) mode: AdmissionMode,
}

impl Webhook {
    /// Answers one review body: `Ok` is an AdmissionReview, `Err` a 400's text.
    pub(crate) async fn review(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let start = Instant::now();
        let request = review::parse(body)?;
        let (patch, note) = self.decide(&request).await;
        let elapsed = start.elapsed();
        debug!(
            uid = %request.uid,
            kind = %request.kind.kind,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            mutated = patch.is_some(),
            note,
            elapsed_us = elapsed.as_micros() as u64,
            "admission review"
        );
        Ok(review::allow(&request.uid, patch.as_deref(), note))
    }

    async fn decide(&self, request: &review::Request) -> (Option<Vec<super::Op>>, &'static str) {
        if request.operation != "CREATE" || request.sub_resource.is_some() {
            return (None, "not a create");
        }
        if !*self.stores.ready.borrow() {
            return (None, "caches not yet listed");
        }
        let (Some(namespace), Some(object)) = (&request.namespace, &request.object) else {
            return (None, "no namespace or object");
        };
        let deadline = Instant::now() + CACHE_WAIT;
        let stores = &self.stores;
        let namespace_known = || stores.namespaces.is_live(namespace);
        match (
            self.mode,
            request.kind.group.as_str(),
            request.kind.kind.as_str(),
        ) {
            (AdmissionMode::ServiceAccounts, "", "ServiceAccount") => {
                let Ok(sa) = serde_json::from_value::<ServiceAccount>(object.clone()) else {
                    return (None, "unreadable ServiceAccount");
                };
                if !until_cached(deadline, namespace_known).await {
                    return (None, "namespace not yet cached");
                }
                match service_account_patch(stores, namespace, &sa) {
                    Some(ops) => (Some(ops), "imagePullSecrets added"),
                    None => (None, "nothing to add"),
                }
            }
            (AdmissionMode::Pods, "", "Pod") => {
                let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
                    return (None, "unreadable Pod");
                };
                let account = ObjectRef::new(pod_service_account(&pod)).within(namespace);
                let known = || namespace_known() && stores.service_accounts.get(&account).is_some();
                if !until_cached(deadline, known).await {
                    return (None, "namespace or ServiceAccount not yet cached");
                }
                match pod_patch(stores, namespace, &pod) {
                    Some(ops) => (Some(ops), "imagePullSecrets added"),
                    None => (None, "nothing to add"),
                }
            }
            _ => (None, "not a kind this mode mutates"),
        }
    }
}

/// Binds the webhook's port now, so a taken port fails the start.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(address = %listener.local_addr()?, "serving the admission webhook (HTTPS)");
    Ok(listener)
}

/// The rustls configuration: TLS 1.2 and 1.3, HTTP/1.1 only, the certificate of the moment.
pub(crate) fn tls_config(resolver: Arc<CertResolver>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions are supported")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves reviews on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    webhook: Arc<Webhook>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let webhook = webhook.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // A port check (a TCP connect and close), not a TLS client.
                    debug!(%peer, error = %e, "connection closed before a TLS handshake");
                    return;
                }
                Ok(Err(e)) => {
                    // No certificate yet, or a client that does not trust it.
                    warn!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            if let Err(e) = connection(tls, &webhook).await {
                debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

/// Answers requests on one connection until the client closes it or it idles out.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    webhook: &Webhook,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        // Wait for the next request's first bytes for as long as an idle connection lives.
        if buf.is_empty() {
            let mut chunk = [0u8; 16 * 1024];
            let n = match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
                Ok(read) => read?,
                Err(_) => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream, &mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request"))?;
        let (response, close) = match request {
            Ok(request) => {
                let close = request.close;
                (route(webhook, request).await, close)
            }
            Err(RequestError::Io(e)) => return Err(e),
            Err(RequestError::Bad(status, why)) => ((status, "text/plain", why.into_bytes()), true),
        };
        let (status, content_type, body) = response;
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        stream.write_all(&out).await?;
        stream.flush().await?;
        if close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

enum RequestError {
    Io(std::io::Error),
    Bad(u16, String),
}

impl From<std::io::Error> for RequestError {
    fn from(e: std::io::Error) -> Self {
        RequestError::Io(e)
    }
}

/// Reads one request (head and `Content-Length` body) from `buf` and then `stream`; bytes
/// after it stay in `buf`.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Request, RequestError> {
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(RequestError::Bad(431, "request head too large\n".into()));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(RequestError::Bad(400, "bad request line\n".into()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(RequestError::Bad(505, "HTTP/1.1 only\n".into()));
    }
    let mut length = 0usize;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| RequestError::Bad(400, "bad Content-Length\n".into()))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::Bad(411, "Content-Length required\n".into()));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if length > MAX_BODY {
        return Err(RequestError::Bad(413, "request too large\n".into()));
    }
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    let path = target.split(['?', '#']).next().unwrap_or(target).to_owned();
    Ok(Request {
        method: method.to_owned(),
        path,
        body,
        close,
    })
}

async fn route(webhook: &Webhook, request: Request) -> (u16, &'static str, Vec<u8>) {
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", path) if path == webhook.mode.path() => {
            match webhook.review(&request.body).await {
                Ok(answer) => (200, "application/json", answer),
                Err(why) => (400, "text/plain", format!("{why}\n").into_bytes()),
            }
        }
        ("POST", _) => (404, "text/plain", b"no such webhook\n".to_vec()),
        _ => (405, "text/plain", b"method not allowed\n".to_vec()),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_split_on_content_length_and_kept_alive() {
        let two = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\ncontent-length: 0\r\nConnection: close\r\n\r\n";
        let mut stream: &[u8] = b"";
        let mut buf = two.to_vec();
        let Ok(first) = read_request(&mut stream, &mut buf).await else {
            panic!("first request")
        };
        assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/a"));
        assert_eq!(first.body, b"abc");
        assert!(!first.close);
        let Ok(second) = read_request(&mut stream, &mut buf).await else {
            panic!("second request")
        };
        assert_eq!(second.path, "/b");
        assert!(second.close && second.body.is_empty() && buf.is_empty());
    }

    #[tokio::test]
    async fn a_body_is_read_across_chunks_and_limits_hold() {
        let mut rest: &[u8] = b"lo";
        let mut buf = b"POST /x?timeout=2s HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel".to_vec();
        let Ok(r) = read_request(&mut rest, &mut buf).await else {
            panic!("request")
        };
        assert_eq!((r.path.as_str(), r.body.as_slice()), ("/x", &b"hello"[..]));
        let mut none: &[u8] = b"";
        let mut chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        assert!(matches!(
            read_request(&mut none, &mut chunked).await,
            Err(RequestError::Bad(411, _))
        ));
        let mut huge = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        )
        .into_bytes();
        assert!(matches!(
            read_request(&mut none, &mut huge).await,
            Err(RequestError::Bad(413, _))
        ));
    }
}
