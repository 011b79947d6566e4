//! The HTTPS servers' plumbing: accept TLS connections, hand each request
//! (with the caller's certificate, if any) to a handler, and the JSON error
//! shape every 4xx/5xx uses: `{"error": {"code": "...", "message": "..."}}`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub type Body = Full<Bytes>;

/// A request as handlers see it: head, whole body, caller certificate.
pub struct HttpRequest {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// DER of the certificate the caller presented in the TLS handshake.
    pub peer_cert: Option<Arc<Vec<u8>>>,
}

impl HttpRequest {
    pub fn query_param(&self, name: &str) -> Option<String> {
        url_query_pairs(&self.query)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Splits `a=1&b=x%20y` into decoded pairs.
pub fn url_query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error_response(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {"code": code, "message": message.into()}}),
    )
}

/// How long a client may take to send a request's headers (also the idle
/// time allowed between requests on a kept-alive connection).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The most connections one server holds open: half of what the process
/// may open (after raising its soft file limit to the hard one), between
/// 64 and 16,384.
pub fn max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 512;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    ((limit.rlim_cur / 2) as usize).clamp(64, 16_384)
}

/// Runs a TLS server until the process ends. Each connection is served on
/// its own task; a bad handshake or a broken connection only ends that
/// connection.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    max_body_bytes: usize,
    handler: H,
) where
    H: Fn(HttpRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections()));
    let mut refused_since_log = 0u64;
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap, new connections are closed at once: the node keeps
        // file descriptors for its peers, its storage and the connections
        // it already serves.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refused_since_log += 1;
            if refused_since_log == 1 || refused_since_log.is_multiple_of(1000) {
                tracing::warn!(%remote, refused = refused_since_log, "too many open connections; refusing new ones");
            }
            drop(tcp);
            continue;
        };
        refused_since_log = 0;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.to_vec()));
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let peer_cert = peer_cert.clone();
                async move {
                    Ok::<_, Infallible>(
                        read_and_handle(req, peer_cert, max_body_bytes, remote, handler).await,
                    )
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                // A client that trickles its headers (or idles between
                // requests) is disconnected instead of holding a slot.
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
}

async fn read_and_handle<H, F>(
    req: Request<Incoming>,
    peer_cert: Option<Arc<Vec<u8>>>,
    max_body_bytes: usize,
    _remote: SocketAddr,
    handler: H,
) -> Response<Body>
where
    H: Fn(HttpRequest) -> F,
    F: Future<Output = Response<Body>>,
{
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!("request body is larger than the limit of {max_body_bytes} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, max_body_bytes).collect(),
    )
    .await;
    let Ok(collected) = collected else {
        return error_response(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
        );
    };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large();
            }
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("reading request body: {e}"),
            );
        }
    };
    let incoming = HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        peer_cert,
    };
    handler(incoming).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        let pairs: Vec<_> = url_query_pairs("id=7&msg=a%20b+c&flag&bad=%zz&end=%4").collect();
        assert_eq!(
            pairs,
            vec![
                ("id".into(), "7".into()),
                ("msg".into(), "a b c".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }
}
