//! systemd's readiness and watchdog protocol (sd_notify(3)): one datagram per state change
//! (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) to the Unix socket named by `$NOTIFY_SOCKET` (a
//! path, or `@name` in the abstract namespace). Without that variable nothing is sent, so the
//! daemon runs the same outside systemd (`Type=notify` in `systemd/diarized.service`).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{self, UnixDatagram};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// Sends state changes to systemd, or nowhere when not started by it.
pub struct Notifier {
    target: Option<(UnixDatagram, net::SocketAddr)>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("NOTIFY_SOCKET").as_deref()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
            Self { target: None }
        })
    }

    /// A notifier sending to `socket` (`None`: a no-op one).
    pub fn new(socket: Option<&OsStr>) -> io::Result<Self> {
        let Some(name) = socket.filter(|s| !s.is_empty()) else { return Ok(Self { target: None }) };
        let bytes = name.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                net::SocketAddr::from_abstract_name(abstract_name)?
            }
            None => net::SocketAddr::from_pathname(name)?,
        };
        Ok(Self { target: Some((UnixDatagram::unbound()?, addr)) })
    }

    /// Whether messages go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `READY=1`); failures are logged, as systemd may be restarting.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }
}

/// How often systemd wants `WATCHDOG=1` at the latest: `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is
/// unset or names this process.
pub fn watchdog_timeout() -> Option<Duration> {
    let var = |k| std::env::var(k).ok();
    watchdog_timeout_from(var("WATCHDOG_USEC").as_deref(), var("WATCHDOG_PID").as_deref(), std::process::id())
}

/// [`watchdog_timeout`] from the variables' values.
pub fn watchdog_timeout_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec))
}

/// Pings the watchdog every half `timeout` while `healthy` (given a time budget) says so,
/// until `stop` is signalled or dropped. A failing check sends nothing, so systemd restarts a
/// service that has stopped working rather than one that merely runs.
pub fn watchdog(
    notifier: &Notifier,
    timeout: Duration,
    stop: &Receiver<()>,
    healthy: impl Fn(Duration) -> Result<(), String>,
) {
    let every = timeout / 2;
    let mut failing = false;
    loop {
        tick(notifier, healthy(every / 2), &mut failing);
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}

/// One watchdog round: a ping if healthy, else a log line when the failure starts.
fn tick(notifier: &Notifier, health: Result<(), String>, failing: &mut bool) {
    match health {
        Ok(()) => {
            if std::mem::take(failing) {
                tracing::info!("healthy again; pinging systemd's watchdog");
            }
            notifier.notify("WATCHDOG=1");
        }
        Err(why) => {
            if !std::mem::replace(failing, true) {
                tracing::error!(%why, "unhealthy; not pinging systemd's watchdog");
            }
        }
    }
}

/// Asks `GET /healthz` of the API at `addr` (a wildcard address is asked on loopback) and
/// returns the status code of the answer, or why none came within `timeout`.
pub fn probe_http(addr: SocketAddr, timeout: Duration) -> Result<u16, String> {
    let mut target = addr;
    if addr.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let fail = |e: io::Error| format!("GET /healthz on {target}: {e}");
    let mut conn = TcpStream::connect_timeout(&target, timeout).map_err(fail)?;
    conn.set_read_timeout(Some(timeout)).map_err(fail)?;
    conn.set_write_timeout(Some(timeout)).map_err(fail)?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).map_err(fail)?;
    // "HTTP/1.1 200 OK": the status code ends at byte 12.
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).map_err(fail)?;
    std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.strip_prefix("HTTP/1.1 ").or_else(|| h.strip_prefix("HTTP/1.0 ")))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!("GET /healthz on {target}: not an HTTP answer: {:?}", String::from_utf8_lossy(&head))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn bound() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let notifier = Notifier::new(Some(path.as_os_str())).unwrap();
        (dir, socket, notifier)
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn sends_datagrams_to_a_path_or_an_abstract_socket() {
        let (_dir, socket, notifier) = bound();
        assert!(notifier.is_active());
        notifier.notify("READY=1");
        assert_eq!(received(&socket), ["READY=1"]);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("diarized-test-{}", std::process::id());
        let abstract_socket =
            UnixDatagram::bind_addr(&net::SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        abstract_socket.set_nonblocking(true).unwrap();
        Notifier::new(Some(OsStr::new(&format!("@{name}")))).unwrap().notify("STOPPING=1");
        assert_eq!(received(&abstract_socket), ["STOPPING=1"]);

        let none = Notifier::new(None).unwrap();
        assert!(!none.is_active());
        none.notify("READY=1");
    }

    #[test]
    fn watchdog_timeout_is_for_this_process_only() {
        assert_eq!(watchdog_timeout_from(Some("30000000"), None, 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_timeout_from(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_timeout_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_timeout_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_timeout_from(None, None, 7), None);
    }

    #[test]
    fn an_unhealthy_round_sends_no_ping() {
        let (_dir, socket, notifier) = bound();
        let mut failing = false;
        tick(&notifier, Err("a worker thread died".into()), &mut failing);
        tick(&notifier, Err("a worker thread died".into()), &mut failing);
        assert!(failing);
        assert_eq!(received(&socket), Vec::<String>::new());
        tick(&notifier, Ok(()), &mut failing);
        assert!(!failing);
        assert_eq!(received(&socket), ["WATCHDOG=1"]);
    }

    #[test]
    fn the_loop_pings_until_stopped() {
        let (_dir, socket, notifier) = bound();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let (calls_tx, calls_rx) = crossbeam_channel::unbounded();
        std::thread::scope(|s| {
            s.spawn(|| {
                watchdog(&notifier, Duration::from_millis(20), &stop_rx, |_| {
                    calls_tx.send(()).unwrap();
                    Ok(())
                })
            });
            for _ in 0..3 {
                calls_rx.recv_timeout(Duration::from_secs(10)).expect("a watchdog round");
            }
            drop(stop_tx);
        });
        assert!(received(&socket).iter().filter(|m| *m == "WATCHDOG=1").count() >= 3);
    }

    #[test]
    fn probe_reads_the_status_or_reports_silence() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for reply in ["HTTP/1.1 503 Service Unavailable\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", ""] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "request cut short: {:?}", String::from_utf8_lossy(&request));
                    request.extend_from_slice(&buf[..n]);
                }
                assert!(request.starts_with(b"GET /healthz HTTP/1.1\r\n"));
                if reply.is_empty() {
                    // Silent: hold the connection until the client gives up.
                    let _ = conn.read(&mut buf);
                } else {
                    conn.write_all(reply.as_bytes()).unwrap();
                }
            }
        });
        let t = Duration::from_millis(500);
        assert_eq!(probe_http(addr, t), Ok(503));
        assert_eq!(probe_http(addr, t), Ok(200));
        let err = probe_http(addr, t).unwrap_err();
        assert!(err.contains("GET /healthz"), "{err}");
        server.join().unwrap();
        // Nobody listening.
        let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(probe_http(free, t).is_err());
    }
}
