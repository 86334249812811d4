//! The bounded front. tiny_http reads request heads without any size or count limit and sets
//! no socket timeouts, and it cannot be handed an accepted socket; so it listens on a private
//! Unix socket and this front owns the TCP socket, relaying each client connection to it:
//!
//! - one request per connection (`Connection: close` both ways), so every head tiny_http
//!   parses is one the front has checked;
//! - request line ≤ 8 KiB (414), head ≤ 16 KiB and ≤ 100 header lines (431), a declared
//!   body ≤ the upload limit (413), all before anything reaches tiny_http;
//! - `http_timeout_s` of silence while a client sends its request, or of a stalled read of
//!   the response, drops the connection (tiny_http's reader then sees the body end early, so
//!   the upload fails and its temp file goes);
//! - when the answer starts before the body was read (a refusal), the body is cut off from
//!   tiny_http (which would otherwise read and discard it on a request thread);
//! - at most `max_connections` open connections (503).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ApiError;
use crate::config::{Config, ConfigHandle};

/// Longest request line.
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Longest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a request.
const MAX_HEADERS: usize = 100;
/// Room for multipart framing on top of `max_content_length`.
const BODY_SLACK: u64 = 1 << 20;
/// How long a refused request is still read (and discarded) so the client sees the answer.
const LINGER: Duration = Duration::from_secs(2);
/// Silence after which a client still owing a refused body gets its answer anyway.
const QUIET: Duration = Duration::from_secs(1);
/// Stack of a relay thread; it only copies bytes.
const RELAY_STACK: usize = 256 * 1024;

/// The API's listening side: the front on TCP and tiny_http behind it.
pub struct HttpServer {
    /// The tiny_http server the request threads take requests from.
    pub server: Arc<tiny_http::Server>,
    /// The TCP address clients connect to.
    pub addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    dir: PathBuf,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `bind` and starts the front.
    pub fn bind(config: Arc<ConfigHandle>) -> io::Result<Self> {
        let cfg = config.get();
        let listener = listen(&cfg.bind)?;
        let addr = listener.local_addr()?;
        let dir = private_dir()?;
        let socket = dir.join("http.sock");
        let inner = UnixListener::bind(&socket)?;
        let server = Arc::new(tiny_http::Server::from_listener(inner, None).map_err(io::Error::other)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (stopping, open) = (Arc::clone(&stopping), Arc::clone(&open));
            std::thread::Builder::new()
                .name("http-front".into())
                .spawn(move || accept_loop(&listener, &socket, &config, &stopping, &open))?
        };
        Ok(Self { server, addr, stopping, open, dir, accept: Some(accept) })
    }

    /// Stops taking new connections; open ones go on.
    pub fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }

    /// Waits until every open connection is closed, at most `timeout`; true if all were.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.open.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Binds the API socket with TCP_NODELAY, which accepted connections inherit: responses are
/// written in pieces, and Nagle's algorithm with delayed ACKs would add ~40 ms to each.
fn listen(bind: &str) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr: SocketAddr = bind.parse().map_err(io::Error::other)?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// A fresh directory only we can enter, for the Unix socket (`$RUNTIME_DIRECTORY` under systemd).
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("diarized-http-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn accept_loop(
    listener: &TcpListener,
    socket: &Path,
    config: &ConfigHandle,
    stopping: &AtomicBool,
    open: &Arc<AtomicUsize>,
) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let mut client = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let cfg = config.get();
        if open.load(Ordering::SeqCst) >= cfg.max_connections {
            let _ = client.set_write_timeout(Some(Duration::from_secs(1)));
            let e = ApiError::Unavailable {
                message: format!(
                    "{} connections open already (MAX_CONNECTIONS); retry later",
                    cfg.max_connections
                ),
                retry_after_s: 5,
            };
            let _ = client.write_all(&error_response(&e));
            continue;
        }
        let guard = Open::new(open);
        let socket = socket.to_owned();
        let spawned =
            std::thread::Builder::new().name("http-relay".into()).stack_size(RELAY_STACK).spawn(move || {
                let _open = guard;
                if let Err(e) = relay(client, &socket, &cfg) {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a relay thread");
        }
    }
}

/// Counts an open connection while alive.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Open(Arc::clone(n))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A complete HTTP/1.1 response for an error, closing the connection.
fn error_response(e: &ApiError) -> Vec<u8> {
    let body = e.body().to_string();
    let status = tiny_http::StatusCode(e.status());
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.0,
        status.default_reason_phrase(),
        body.len()
    );
    for (k, v) in e.headers() {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    [head.into_bytes(), body.into_bytes()].concat()
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    None,
    Length(u64),
    Chunked,
}

/// A checked request head, rewritten for tiny_http.
#[derive(Debug)]
struct Head {
    forward: Vec<u8>,
    body: Body,
    expects_continue: bool,
}

/// Reads a request head within the limits and `timeout` in all. Returns the head's length in
/// `buf` (which may hold body bytes after it), or `None` when the client sent nothing.
fn read_head(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Option<usize>, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        let line_end = find(buf, b"\r\n").unwrap_or(buf.len());
        if line_end > MAX_REQUEST_LINE {
            return Err(ApiError::UriTooLong(format!("request line longer than {MAX_REQUEST_LINE} bytes")));
        }
        if buf.len() > MAX_HEAD {
            return Err(ApiError::HeadersTooLarge(format!("request headers longer than {MAX_HEAD} bytes")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = || ApiError::Timeout(format!("request not received within {} s", timeout.as_secs()));
        if left.is_zero() {
            return Err(timed_out());
        }
        let _ = client.set_read_timeout(Some(left));
        match client.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(ApiError::BadRequest("connection closed inside the request head".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) && buf.is_empty() => return Ok(None),
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(ApiError::BadRequest(format!("cannot read the request: {e}"))),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks a head (ending in an empty line) and rewrites it: hop-by-hop headers go,
/// `Connection: close` comes, `Expect` is answered by the front.
fn parse_head(head: &[u8], max_body: u64) -> Result<Head, ApiError> {
    let text = &head[..head.len().saturating_sub(4)];
    let mut lines = text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut forward = Vec::with_capacity(head.len() + 20);
    forward.extend_from_slice(request_line);
    forward.extend_from_slice(b"\r\n");
    let (mut length, mut chunked, mut expects_continue, mut count) = (None::<u64>, false, false, 0);
    for line in lines {
        count += 1;
        if count > MAX_HEADERS {
            return Err(ApiError::HeadersTooLarge(format!("more than {MAX_HEADERS} request headers")));
        }
        let line_text = String::from_utf8_lossy(line);
        let (name, value) = line_text.split_once(':').unwrap_or((&*line_text, ""));
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "connection" | "keep-alive" | "proxy-connection" | "upgrade" | "te" => continue,
            "expect" => {
                expects_continue = value.eq_ignore_ascii_case("100-continue");
                continue;
            }
            "content-length" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| ApiError::BadRequest("Content-Length is not a whole number".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ApiError::BadRequest("conflicting Content-Length headers".into()));
                }
                length = Some(n);
            }
            "transfer-encoding" => chunked = true,
            _ => {}
        }
        forward.extend_from_slice(line);
        forward.extend_from_slice(b"\r\n");
    }
    forward.extend_from_slice(b"Connection: close\r\n\r\n");
    let body = match (length, chunked) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest("both Content-Length and Transfer-Encoding given".into()));
        }
        (Some(n), false) if n > max_body => {
            return Err(ApiError::TooLarge(format!(
                "request body of {n} bytes is over the limit ({max_body} bytes)"
            )));
        }
        (Some(0) | None, false) => Body::None,
        (Some(n), false) => Body::Length(n),
        (None, true) => Body::Chunked,
    };
    Ok(Head { forward, body, expects_continue })
}

/// Finds where a chunked body ends, fed the body as it arrives.
#[derive(Debug, Default)]
struct ChunkedEnd {
    state: Chunk,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digits, whether extensions began, length.
    Size {
        n: u64,
        digits: u8,
        ext: bool,
        len: u16,
    },
    Data(u64),
    DataEnd,
    /// In the trailer; `true` at the start of a line.
    Trailer(bool, usize),
    Done,
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk::Size { n: 0, digits: 0, ext: false, len: 0 }
    }
}

impl ChunkedEnd {
    /// Consumes `bytes`; returns how many belong to the body if it ended inside them.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ApiError> {
        let bad = || ApiError::BadRequest("malformed chunked body".into());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                Chunk::Done => return Ok(Some(i)),
                Chunk::Size { n, digits, .. } if b == b'\n' => match (digits, n) {
                    (0, _) => return Err(bad()),
                    (_, 0) => Chunk::Trailer(true, 0),
                    (_, n) => Chunk::Data(n),
                },
                Chunk::Size { n, digits, ext, len } => {
                    if len >= 1024 {
                        return Err(bad());
                    }
                    match (b as char).to_digit(16) {
                        Some(d) if !ext && digits < 16 => {
                            Chunk::Size { n: n * 16 + u64::from(d), digits: digits + 1, ext, len: len + 1 }
                        }
                        // Extensions, spaces and the CR before the LF.
                        None if digits > 0 => Chunk::Size { n, digits, ext: true, len: len + 1 },
                        Some(_) if ext => Chunk::Size { n, digits, ext, len: len + 1 },
                        _ => return Err(bad()),
                    }
                }
                Chunk::Data(n) => {
                    let take = (n as usize).min(bytes.len() - i);
                    i += take;
                    self.state = if take as u64 == n { Chunk::DataEnd } else { Chunk::Data(n - take as u64) };
                    continue;
                }
                Chunk::DataEnd if b == b'\r' => Chunk::DataEnd,
                Chunk::DataEnd if b == b'\n' => Chunk::default(),
                Chunk::DataEnd => return Err(bad()),
                Chunk::Trailer(true, _) if b == b'\n' => Chunk::Done,
                Chunk::Trailer(start, len) if b == b'\r' => Chunk::Trailer(start, len),
                Chunk::Trailer(_, len) if len >= MAX_HEAD => return Err(bad()),
                Chunk::Trailer(_, len) => Chunk::Trailer(b == b'\n', len + 1),
            };
            i += 1;
        }
        Ok((self.state == Chunk::Done).then_some(bytes.len()))
    }
}

/// Tracks how much of the body is still to come.
struct BodyLeft {
    body: Body,
    chunked: ChunkedEnd,
}

impl BodyLeft {
    /// How many of `bytes` belong to the body, and whether the body is complete after them.
    fn take(&mut self, bytes: &[u8]) -> Result<(usize, bool), ApiError> {
        match self.body {
            Body::None => Ok((0, true)),
            Body::Length(n) => {
                let take = (n.min(bytes.len() as u64)) as usize;
                self.body = if take as u64 == n { Body::None } else { Body::Length(n - take as u64) };
                Ok((take, self.body == Body::None))
            }
            Body::Chunked => match self.chunked.feed(bytes)? {
                Some(end) => {
                    self.body = Body::None;
                    Ok((end, true))
                }
                None => Ok((bytes.len(), false)),
            },
        }
    }
}

/// Relays one client connection (one request) to tiny_http.
fn relay(mut client: TcpStream, socket: &Path, cfg: &Config) -> io::Result<()> {
    let timeout = Duration::from_secs(cfg.http_timeout_s);
    client.set_write_timeout(Some(timeout))?;
    let mut buf = Vec::with_capacity(4096);
    let head = read_head(&mut client, &mut buf, timeout).and_then(|end| {
        end.map(|end| {
            parse_head(&buf[..end], cfg.max_content_length.saturating_add(BODY_SLACK)).map(|h| (end, h))
        })
        .transpose()
    });
    let (end, head) = match head {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::debug!(error = %e, "request refused by the front");
            client.write_all(&error_response(&e))?;
            return linger(&mut client);
        }
    };
    let mut inner = UnixStream::connect(socket)?;
    inner.write_all(&head.forward)?;
    let mut left = BodyLeft { body: head.body, chunked: ChunkedEnd::default() };
    let (take, done) = match left.take(&buf[end..]) {
        Ok(t) => t,
        Err(e) => {
            client.write_all(&error_response(&e))?;
            return Ok(());
        }
    };
    inner.write_all(&buf[end..end + take])?;
    if head.expects_continue && !done {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if done {
        // Nothing more to read from the client; tiny_http sees the end of the request.
        let _ = inner.shutdown(Shutdown::Write);
    }
    let answered = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let sender = if done {
        None
    } else {
        let (client, inner) = (client.try_clone()?, inner.try_clone()?);
        let (answered, received) = (Arc::clone(&answered), Arc::clone(&received));
        Some(
            std::thread::Builder::new()
                .name("http-body".into())
                .stack_size(RELAY_STACK)
                .spawn(move || send_body(client, inner, left, &answered, &received, timeout))?,
        )
    };
    let request_side = inner.try_clone()?;
    copy_response(&mut inner, &mut client, || {
        let Some(sender) = sender.as_ref().filter(|_| !done) else { return };
        // Answered before the body was read (a refusal): tiny_http would read the rest on a
        // request thread to discard it, so its side ends here and the front discards the rest.
        answered.store(true, Ordering::SeqCst);
        let _ = request_side.shutdown(Shutdown::Write);
        // HTTP clients (hyper) read no answer while sending: hold it until the body is in,
        // or until the client has gone quiet.
        let (mut seen, mut since) = (received.load(Ordering::SeqCst), Instant::now());
        while !sender.is_finished() && since.elapsed() < QUIET {
            std::thread::sleep(Duration::from_millis(10));
            let now = received.load(Ordering::SeqCst);
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
    })?;
    if let Some(s) = sender {
        let _ = s.join();
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// Copies the rest of the body to tiny_http, or after an early answer reads and drops it. A
/// client silent for `timeout` is dropped.
fn send_body(
    mut client: TcpStream,
    mut inner: UnixStream,
    mut left: BodyLeft,
    answered: &AtomicBool,
    received: &AtomicU64,
    timeout: Duration,
) {
    let mut buf = vec![0u8; 64 * 1024];
    if client.set_read_timeout(Some(timeout)).is_err() {
        return;
    }
    loop {
        match client.read(&mut buf) {
            Ok(0) => {
                // The client stopped inside the body: tiny_http sees the body end early.
                let _ = inner.shutdown(Shutdown::Both);
                return;
            }
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::SeqCst);
                // A malformed chunked body ends here; tiny_http reports it.
                let (take, done) = left.take(&buf[..n]).unwrap_or((0, true));
                if !answered.load(Ordering::SeqCst) && inner.write_all(&buf[..take]).is_err() {
                    answered.store(true, Ordering::SeqCst);
                }
                if done {
                    let _ = inner.shutdown(Shutdown::Write);
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {
                tracing::info!(
                    secs = timeout.as_secs(),
                    "client stalled while sending a body; connection dropped"
                );
                let _ = client.shutdown(Shutdown::Both);
                let _ = inner.shutdown(Shutdown::Both);
                return;
            }
            Err(_) => {
                let _ = inner.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Copies tiny_http's answer to the client with `Connection: close` added after the status
/// line; `on_answer` runs when the first bytes arrive, before any is passed on.
fn copy_response(inner: &mut UnixStream, client: &mut TcpStream, on_answer: impl FnOnce()) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut on_answer = Some(on_answer);
    let mut status_line: Option<Vec<u8>> = Some(Vec::new());
    loop {
        let n = match inner.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(f) = on_answer.take() {
            f();
        }
        let mut bytes = &buf[..n];
        if let Some(line) = status_line.as_mut() {
            line.extend_from_slice(bytes);
            bytes = &[];
            match find(line, b"\r\n") {
                Some(i) => {
                    let mut out = line[..i + 2].to_vec();
                    out.extend_from_slice(b"Connection: close\r\n");
                    out.extend_from_slice(&line[i + 2..]);
                    status_line = None;
                    write_or_drop(client, inner, &out)?;
                }
                None if line.len() > 1024 => {
                    let out = status_line.take().unwrap_or_default();
                    write_or_drop(client, inner, &out)?;
                }
                None => {}
            }
        }
        write_or_drop(client, inner, bytes)?;
    }
    Ok(())
}

/// Writes to the client; a client that stalls past the write timeout is dropped.
fn write_or_drop(client: &mut TcpStream, inner: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    client.write_all(bytes).inspect_err(|_| {
        let _ = inner.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    })
}

/// After refusing a request, reads what the client still sends for a moment, so closing
/// with unread data (a reset) does not destroy the answer before the client reads it.
fn linger(client: &mut TcpStream) -> io::Result<()> {
    client.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        client.set_read_timeout(Some(left))?;
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, ApiError> {
        parse_head(text.as_bytes(), 1000)
    }

    #[test]
    fn heads_are_checked_and_rewritten() {
        let h = head("POST /api/jobs HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n").unwrap();
        assert_eq!(
            String::from_utf8(h.forward).unwrap(),
            "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(h.body, Body::Length(10));
        assert!(h.expects_continue);
        assert_eq!(head("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().body, Body::Chunked);
        assert_eq!(head("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap().body, Body::None);
        assert_eq!(head("GET / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n").unwrap_err().status(), 413);
        assert_eq!(
            head("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").unwrap_err().status(),
            400
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").unwrap_err().status(),
            400
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(head(&many).unwrap_err().status(), 431);
    }

    #[test]
    fn chunked_end_is_found_across_pieces() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = ChunkedEnd::default();
            let first = c.feed(&body[..split]).unwrap();
            let found = match first {
                Some(i) => i,
                None => split + c.feed(&body[split..]).unwrap().expect("end found"),
            };
            assert_eq!(found, end, "split at {split}");
        }
        let mut c = ChunkedEnd::default();
        assert_eq!(c.feed(b"0\r\n\r\n").unwrap(), Some(5));
        assert!(ChunkedEnd::default().feed(b"zz\r\n").is_err());
        assert!(ChunkedEnd::default().feed(b"4\r\nwikiXX").is_err());
        assert!(ChunkedEnd::default().feed(&[b'1'; 40]).is_err());
    }

    #[test]
    fn error_responses_are_complete() {
        let e = ApiError::Unavailable { message: "busy".into(), retry_after_s: 5 };
        let text = String::from_utf8(error_response(&e)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
        assert!(text.contains("Retry-After: 5\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"busy\"}"), "{text}");
    }
}
