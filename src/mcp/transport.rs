//! Putting the [`McpServer`] on a transport: stdio (the default) or streamable HTTP.
//!
//! **stdio.** The protocol owns standard output: before serving, this takes a private copy
//! of the stdout descriptor for the protocol and points descriptor 1 at stderr, so nothing
//! else in the process (a library, a stray `println!`) can write into the protocol stream.
//! Pipes are driven by Tokio's reactor (no thread hand-off per message).
//!
//! **HTTP.** `rmcp`'s streamable HTTP service behind a small front: every request needs
//! `Authorization: Bearer <token>` (401 otherwise, checked in constant time before the body
//! is read), only `/mcp` is served, bodies are capped at [`MAX_BODY_BYTES`], headers must
//! arrive within [`HEADER_TIMEOUT`]. Handshake-era clients get `rmcp`'s sessions
//! (`Mcp-Session-Id`); 2026-07-28 requests are served statelessly. On loopback the `Host`
//! header must be a loopback name (DNS rebinding); on other addresses the token is the
//! guard.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::McpServer;

/// The largest request body accepted over HTTP (4 MiB); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an open response stream gets a keep-alive comment.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(3);
/// The HTTP path of the MCP endpoint.
pub const ENDPOINT: &str = "/mcp";

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Setting up the standard streams or the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The MCP session could not start (the client went away before its first request).
    #[error("the MCP session did not start: {0}")]
    Start(String),
    /// `--http` without a token.
    #[error(
        "`ckflow mcp --http` needs a bearer token: set CKFLOW_MCP_TOKEN (every request must send \
         `Authorization: Bearer <token>`){}",
        if *.non_loopback { "; refusing to listen on a non-loopback address without one" } else { "" }
    )]
    NoToken {
        /// Whether the address is reachable from other hosts.
        non_loopback: bool,
    },
}

/// Serve one client over stdio until it closes stdin or `shutdown` fires.
pub async fn serve_stdio(
    server: McpServer,
    shutdown: CancellationToken,
) -> Result<(), TransportError> {
    let (reader, writer) = protocol_stdio()?;
    let ct = CancellationToken::new();
    let running = tokio::select! {
        r = rmcp::service::serve_server_with_ct(server, (reader, writer), ct.clone()) => {
            r.map_err(|e| TransportError::Start(e.to_string()))?
        }
        _ = shutdown.cancelled() => return Ok(()),
    };
    let stop = running.cancellation_token();
    tokio::select! {
        r = running.waiting() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "the MCP service stopped unexpectedly");
            }
        }
        _ = shutdown.cancelled() => {
            stop.cancel();
        }
    }
    Ok(())
}

/// The protocol's reader and writer over the standard streams; see the module docs.
fn protocol_stdio() -> std::io::Result<(
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only creates a descriptor; 1 is ours to duplicate.
    let out = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if out < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `out` was just created and nothing else owns it.
    let out = unsafe { OwnedFd::from_raw_fd(out) };
    // SAFETY: dup2 replaces descriptor 1 with a copy of 2; the protocol keeps `out`.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let writer: Box<dyn AsyncWrite + Send + Unpin> = match fifo_sender(out.as_raw_fd()) {
        Some(sender) => Box::new(sender),
        None => Box::new(tokio::fs::File::from_std(std::fs::File::from(out))),
    };
    let reader: Box<dyn AsyncRead + Send + Unpin> = match fifo_receiver(0) {
        Some(receiver) => Box::new(receiver),
        None => Box::new(tokio::io::stdin()),
    };
    Ok((reader, writer))
}

fn is_fifo(fd: i32) -> bool {
    // SAFETY: fstat writes into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) }) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
}

/// A pipe end reopened through `/proc/self/fd` (a description of its own, so making it
/// non-blocking does not touch anyone else's), driven by the reactor. Linux only; `None`
/// elsewhere or when `fd` is not a pipe.
fn fifo_sender(fd: i32) -> Option<tokio::net::unix::pipe::Sender> {
    if !cfg!(target_os = "linux") || !is_fifo(fd) {
        return None;
    }
    tokio::net::unix::pipe::OpenOptions::new()
        .open_sender(format!("/proc/self/fd/{fd}"))
        .ok()
}

fn fifo_receiver(fd: i32) -> Option<tokio::net::unix::pipe::Receiver> {
    if !cfg!(target_os = "linux") || !is_fifo(fd) {
        return None;
    }
    tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(format!("/proc/self/fd/{fd}"))
        .ok()
}

/// Check `--http` settings before binding: a token is required.
pub fn check_http(addr: &SocketAddr, token: Option<&str>) -> Result<(), TransportError> {
    match token {
        Some(t) if !t.trim().is_empty() => Ok(()),
        _ => Err(TransportError::NoToken {
            non_loopback: !addr.ip().is_loopback(),
        }),
    }
}

/// A bound HTTP listener, ready to serve.
pub struct HttpListener {
    listener: tokio::net::TcpListener,
    token: Arc<str>,
}

impl HttpListener {
    /// Bind `addr` (port 0 picks a free port); refuses without a token.
    pub async fn bind(
        addr: SocketAddr,
        token: Option<&str>,
    ) -> Result<HttpListener, TransportError> {
        check_http(&addr, token)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(HttpListener {
            listener,
            token: Arc::from(token.unwrap_or_default().trim()),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` fires.
    pub async fn serve(
        self,
        server: McpServer,
        shutdown: CancellationToken,
    ) -> Result<(), TransportError> {
        let addr = self.listener.local_addr()?;
        let mut config = StreamableHttpServerConfig::default()
            .with_max_request_body_bytes(MAX_BODY_BYTES)
            // A ping now and then is how a dropped client is noticed (its request, and the
            // run it waits for, are then cancelled).
            .with_sse_keep_alive(Some(SSE_KEEP_ALIVE))
            .with_cancellation_token(shutdown.child_token());
        if !addr.ip().is_loopback() {
            // Clients reach a non-loopback address by names we cannot know; the bearer
            // token, not the Host header, is what keeps others out.
            config = config.disable_allowed_hosts();
        }
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let front = Front {
            service,
            token: self.token,
        };
        loop {
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait a moment rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let front = front.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let front = front.clone();
                    async move { Ok::<_, Infallible>(front.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                        }
                    }
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    }
                }
            });
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The bearer-token and path check in front of `rmcp`'s service.
#[derive(Clone)]
struct Front {
    service: StreamableHttpService<McpServer, LocalSessionManager>,
    token: Arc<str>,
}

impl Front {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if !authorized(req.headers(), &self.token) {
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: send `Authorization: Bearer <CKFLOW_MCP_TOKEN>`\n",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"ckflow\""),
            );
            return r;
        }
        if req.uri().path() != ENDPOINT {
            return plain(
                StatusCode::NOT_FOUND,
                "404 Not Found: the MCP endpoint is /mcp\n",
            );
        }
        if let Some(len) = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > MAX_BODY_BYTES as u64
        {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Payload Too Large: at most 4 MiB\n",
            );
        }
        let delete = req.method() == hyper::Method::DELETE;
        let mut response = self.service.handle(req).await;
        if delete && response.status() == StatusCode::ACCEPTED {
            // Ending a session: 204 is what clients expect (the Python SDK warns on 202).
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        response
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn authorized(headers: &hyper::HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let mut h = hyper::HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(
            hyper::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        assert!(!authorized(&h, ""));
        h.insert(
            hyper::header::AUTHORIZATION,
            "bearer  s3cret ".parse().unwrap(),
        );
        assert!(authorized(&h, "s3cret"));
        h.insert(
            hyper::header::AUTHORIZATION,
            "Basic s3cret".parse().unwrap(),
        );
        assert!(!authorized(&h, "s3cret"));
    }

    #[test]
    fn http_needs_a_token() {
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8808".parse().unwrap();
        assert!(check_http(&local, Some("t")).is_ok());
        assert!(matches!(
            check_http(&local, None),
            Err(TransportError::NoToken {
                non_loopback: false
            })
        ));
        let e = check_http(&public, Some("  ")).unwrap_err();
        assert!(e.to_string().contains("non-loopback"), "{e}");
    }
}
