//! A minimal HTTP/1.1 client for the three Engine API calls that carry registry
//! credentials: push (`POST /images/{name}/push`), pull (`POST /images/create`) and login
//! (`POST /auth`).
//!
//! Why not bollard for these: its typed push progress drops each message's layer `id`
//! (so per-layer progress is impossible), it has no `/auth` call, and it encodes
//! `X-Registry-Auth` with the standard base64 alphabet while the engine decodes the URL-safe
//! one (a credential whose encoding holds `+` or `/` would silently become anonymous). The
//! calls here are one request per connection (`Connection: close`), with a JSON body
//! or none, and a response read as `Content-Length`, chunked, or until EOF.

use std::io;
use std::path::PathBuf;

use serde_json::Value;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `host:port` over plain TCP.
    Tcp(String),
}

/// Most bytes of a response head.
const HEAD_MAX: usize = 64 << 10;
/// Most bytes of one JSON line (a progress message is far smaller).
const LINE_MAX: usize = 4 << 20;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A response whose body has not been read yet.
pub(crate) struct Response {
    /// The HTTP status code.
    pub status: u16,
    body: Body<BufReader<Box<dyn Io>>>,
}

impl Response {
    /// The body as JSON lines.
    pub fn json_lines(self) -> JsonLines<BufReader<Box<dyn Io>>> {
        JsonLines {
            body: self.body,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The whole body (at most `limit` bytes are kept).
    pub async fn text(mut self, limit: usize) -> io::Result<String> {
        let mut out = Vec::new();
        while let Some(chunk) = self.body.chunk().await? {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The engine's error message of a non-2xx response (`{"message": …}`), or the body.
    pub async fn error_message(self) -> String {
        let status = self.status;
        let text = self.text(64 << 10).await.unwrap_or_default();
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => match v.get("message").and_then(Value::as_str) {
                Some(m) => m.to_owned(),
                None => text,
            },
            Err(_) if text.trim().is_empty() => format!("HTTP {status}"),
            Err(_) => text.trim().to_owned(),
        }
    }
}

/// Send one request: `target` is the path and query (already encoded), `headers` extra
/// headers, `body` a JSON body or nothing.
pub(crate) async fn request(
    endpoint: &Endpoint,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut stream: Box<dyn Io> = match endpoint {
        Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        Endpoint::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr.as_str()).await?),
    };
    let host = match endpoint {
        Endpoint::Unix(_) => "docker",
        Endpoint::Tcp(a) => a.as_str(),
    };
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ckflow/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Some(b) => head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            b.len()
        )),
        None => head.push_str("Content-Length: 0\r\n\r\n"),
    }
    stream.write_all(head.as_bytes()).await?;
    if let Some(b) = body {
        stream.write_all(b).await?;
    }
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let (status, framing) = read_head(&mut reader).await?;
    Ok(Response {
        status,
        body: Body {
            reader,
            framing,
            done: false,
        },
    })
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    Eof,
}

/// Read the status line and headers.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<(u16, Framing)> {
    let mut total = 0;
    let mut line = String::new();
    total += head_line(r, &mut line).await?;
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("not an HTTP response: {:?}", line.trim_end())))?;
    let mut framing = Framing::Eof;
    loop {
        total += head_line(r, &mut line).await?;
        if total > HEAD_MAX {
            return Err(bad("the response head is too large".into()));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(
                value
                    .parse()
                    .map_err(|_| bad(format!("bad Content-Length {value:?}")))?,
            );
        }
    }
    // 1xx, 204 and 304 have no body.
    if status < 200 || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok((status, framing))
}

/// One line of the response head; EOF before the blank line is an error.
async fn head_line<R: AsyncBufRead + Unpin>(r: &mut R, line: &mut String) -> io::Result<usize> {
    line.clear();
    let n = r.read_line(line).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the engine closed the connection before answering",
        ));
    }
    Ok(n)
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A response body being read.
struct Body<R> {
    reader: R,
    framing: Framing,
    done: bool,
}

impl<R: AsyncBufRead + Unpin> Body<R> {
    /// The next piece of the body, `None` at its end.
    async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            Framing::Length(0) => {
                self.done = true;
                Ok(None)
            }
            Framing::Length(n) => {
                let want = n.min(64 << 10) as usize;
                let mut buf = vec![0; want];
                let got = self.reader.read(&mut buf).await?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the engine closed the connection mid-response",
                    ));
                }
                buf.truncate(got);
                self.framing = Framing::Length(n - got as u64);
                Ok(Some(buf))
            }
            Framing::Eof => {
                let mut buf = vec![0; 64 << 10];
                let got = self.reader.read(&mut buf).await?;
                if got == 0 {
                    self.done = true;
                    return Ok(None);
                }
                buf.truncate(got);
                Ok(Some(buf))
            }
            Framing::Chunked => {
                let mut line = String::new();
                if self.reader.read_line(&mut line).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the engine closed the connection mid-response",
                    ));
                }
                let size_text = line.trim().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line (or EOF).
                    loop {
                        line.clear();
                        let n = self.reader.read_line(&mut line).await?;
                        if n == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    self.done = true;
                    return Ok(None);
                }
                if size > LINE_MAX {
                    return Err(bad(format!("a chunk of {size} bytes is too large")));
                }
                let mut buf = vec![0; size];
                self.reader.read_exact(&mut buf).await?;
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf).await?;
                Ok(Some(buf))
            }
        }
    }
}

/// A body of newline-separated JSON values (Docker's progress stream).
pub(crate) struct JsonLines<R> {
    body: Body<R>,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: AsyncBufRead + Unpin> JsonLines<R> {
    /// The next JSON value; `None` at the end. A line that is not JSON is an error.
    pub async fn next(&mut self) -> io::Result<Option<Value>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_line(&line).map(Some);
            }
            if self.eof {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return parse_line(&line).map(Some);
            }
            match self.body.chunk().await? {
                Some(c) => {
                    self.buf.extend_from_slice(&c);
                    if self.buf.len() > LINE_MAX {
                        return Err(bad("a progress message is too large".into()));
                    }
                }
                None => self.eof = true,
            }
        }
    }
}

fn parse_line(line: &[u8]) -> io::Result<Value> {
    serde_json::from_slice(line)
        .map_err(|e| bad(format!("the engine sent something that is not JSON ({e})")))
}

/// Percent-encode a query value (everything but unreserved characters).
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(raw: &'static [u8]) -> io::Result<(u16, Vec<Value>)> {
        let mut r = BufReader::new(raw);
        let (status, framing) = read_head(&mut r).await?;
        let mut jl = JsonLines {
            body: Body {
                reader: r,
                framing,
                done: false,
            },
            buf: Vec::new(),
            eof: false,
        };
        let mut out = Vec::new();
        while let Some(v) = jl.next().await? {
            out.push(v);
        }
        Ok((status, out))
    }

    #[tokio::test]
    async fn chunked_json_lines_split_anywhere() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\n{\"a\":\r\n6;ext=1\r\n1}\n{\"b\r\n8\r\n\":2}\n\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (status, vals) = lines_of(raw).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            vals,
            vec![
                serde_json::json!({"a": 1}),
                serde_json::json!({"b": 2}),
                serde_json::json!({})
            ]
        );
    }

    #[tokio::test]
    async fn content_length_and_eof_bodies() {
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n{\"message\":\"nope\"}\n\nignored";
        let (status, vals) = lines_of(raw).await.unwrap();
        assert_eq!(status, 404);
        assert_eq!(vals, vec![serde_json::json!({"message": "nope"})]);
        let raw = b"HTTP/1.0 200 OK\r\n\r\n{\"x\":1}";
        let (_, vals) = lines_of(raw).await.unwrap();
        assert_eq!(vals, vec![serde_json::json!({"x": 1})]);
    }

    #[tokio::test]
    async fn malformed_responses_are_errors() {
        assert!(lines_of(b"").await.is_err());
        assert!(lines_of(b"SSH-2.0-OpenSSH\r\n\r\n").await.is_err());
        assert!(
            lines_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .await
                .is_err()
        );
        assert!(
            lines_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\"")
                .await
                .is_err()
        );
        assert!(
            lines_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope\n")
                .await
                .is_err()
        );
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("127.0.0.1:5000/app"), "127.0.0.1%3A5000%2Fapp");
        assert_eq!(encode_query("linux/amd64"), "linux%2Famd64");
        assert_eq!(encode_query("v1.0_x-y~"), "v1.0_x-y~");
    }
}
