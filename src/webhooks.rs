//! Signed webhooks (Standard Webhooks): a job's end, recorded in the store's outbox in the
//! transaction that ends it, becomes a delivery row in the store, which
//! the dispatcher sends with async reqwest, retrying with backoff and jitter until a 2xx, a
//! final answer or the last attempt. A restart resumes pending deliveries; the `webhook-id`
//! (the event id) is the same on every attempt, so receivers can drop repeats.
//!
//! Targets are checked against server-side request forgery: a host that is, or resolves to, a
//! loopback, private, link-local or otherwise non-public address is refused unless it is in
//! `webhook_allow_hosts`, and the client's resolver applies the same check at connect time
//! (no DNS rebinding between check and request). Redirects are not followed.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::Url;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};

use crate::config::{Config, ConfigHandle, WebhookSecret};
use crate::model::{Job, Source, Status};
use crate::store::{Attempt, Delivery, DeliveryState, NewDelivery, Store};

/// Version of the payload's shape, sent as `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts in flight at once.
const CONCURRENCY: usize = 16;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Status changes turned into deliveries per store transaction.
const OUTBOX_BATCH: usize = 100;
/// Longest webhook URL accepted.
const MAX_URL: usize = 2048;

/// Checks a webhook URL's form: http or https with a host, no credentials, ≤ 2 KiB.
pub fn check_url(url: &str) -> Result<Url, String> {
    if url.len() > MAX_URL {
        return Err(format!("webhook URL longer than {MAX_URL} bytes"));
    }
    let parsed = Url::parse(url).map_err(|e| format!("webhook URL {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("webhook URL {url:?} must be http(s)://host/…"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("webhook URL must not carry credentials".into());
    }
    Ok(parsed)
}

/// The HMAC key of a `whsec_<base64>` secret.
pub fn signing_key(secret: &WebhookSecret) -> Result<Vec<u8>, String> {
    let b64 = secret.0.strip_prefix("whsec_").ok_or("expected whsec_<base64 key>")?;
    let key = BASE64.decode(b64).map_err(|e| format!("the key after whsec_ is not base64: {e}"))?;
    if !(16..=128).contains(&key.len()) {
        return Err(format!("the key has {} bytes; use 16 to 128 (e.g. 32 random bytes)", key.len()));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the `webhook-signature` header.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The event type a stored job status is announced as.
pub fn event_type(status: Status) -> Option<&'static str> {
    match status {
        Status::Done => Some("job.done"),
        Status::Error => Some("job.error"),
        Status::Cancelled => Some("job.cancelled"),
        Status::Processing => Some("job.started"),
        Status::Uploaded | Status::Queued => None,
    }
}

/// The body: `{type, schema_version, timestamp, job}`, the job as `GET /api/jobs/<id>` shows it.
pub fn payload(event_type: &str, job: &Job) -> String {
    json!({
        "type": event_type,
        "schema_version": SCHEMA_VERSION,
        "timestamp": crate::store::now(),
        "job": job,
    })
    .to_string()
}

/// Whether an address is on the public internet (not loopback, private, link-local, shared,
/// documentation, multicast, reserved, or an IPv6 form of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// Why a target was refused.
fn refusal(host: &str, ip: IpAddr) -> String {
    format!("refused: {host} is {ip}, not a public address; add {host} to WEBHOOK_ALLOW_HOSTS to allow it")
}

fn host_allowed(cfg: &Config, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    cfg.webhook_allow_hosts
        .iter()
        .any(|h| h.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host))
}

/// Resolves a host for the client, refusing non-public addresses of hosts not allow-listed.
struct GuardedResolver(Arc<ConfigHandle>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allowed = host_allowed(&self.0.get(), &host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allowed && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(refusal(&host, bad.ip()).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a target before an attempt; `Err` is a refusal (final).
async fn check_target(cfg: &Config, url: &str) -> Result<(), String> {
    let url = check_url(url)?;
    let host = url.host_str().unwrap_or_default().to_string();
    if host_allowed(cfg, &host) {
        return Ok(());
    }
    let ips: Vec<IpAddr> = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((host.as_str(), 0)).await {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            // Not resolvable now: a network error, retried.
            Err(_) => return Ok(()),
        },
    };
    match ips.into_iter().find(|ip| !is_public(*ip)) {
        Some(ip) => Err(refusal(&host, ip)),
        None => Ok(()),
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An HTTP answer, with its `Retry-After` in seconds if it gave one.
    Status(u16, Option<u64>),
    /// No answer: connection failure or timeout.
    Network(String),
    /// The target is not allowed.
    Refused(String),
}

/// Where a delivery goes after its `attempts`-th attempt ended in `outcome`: delivered,
/// failed for good, or pending with the delay before the next attempt. `jitter` in [0, 1)
/// spreads the delay by ±20 %.
pub fn next_step(
    outcome: &Outcome,
    attempts: u32,
    delays_s: &[f64],
    jitter: f64,
) -> (DeliveryState, Option<Duration>) {
    let retry_after = match outcome {
        Outcome::Status(200..=299, _) => return (DeliveryState::Delivered, None),
        Outcome::Status(408 | 429 | 500..=599, after) => after.map(Duration::from_secs),
        Outcome::Network(_) => None,
        Outcome::Status(..) | Outcome::Refused(_) => return (DeliveryState::Failed, None),
    };
    let Some(&base) = delays_s.get(attempts as usize - 1) else { return (DeliveryState::Failed, None) };
    let delay = Duration::from_secs_f64(base * (0.8 + 0.4 * jitter));
    let delay = retry_after.map_or(delay, |after| delay.max(after.min(MAX_RETRY_AFTER)));
    (DeliveryState::Pending, Some(delay))
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The delivery side: turns job events into deliveries and sends them.
pub struct Webhooks {
    store: Arc<Store>,
    config: Arc<ConfigHandle>,
    client: reqwest::Client,
    /// Woken when a delivery is added or an attempt ends.
    wake: Notify,
    /// Deliveries with an attempt in flight.
    in_flight: Mutex<HashSet<i64>>,
    slots: Semaphore,
}

impl Webhooks {
    /// A dispatcher with its HTTP client.
    pub fn new(store: Arc<Store>, config: Arc<ConfigHandle>) -> Result<Arc<Self>, reqwest::Error> {
        // reqwest is built without a bundled crypto provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("diarized/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver(Arc::clone(&config))))
            .build()?;
        Ok(Arc::new(Self {
            store,
            config,
            client,
            wake: Notify::new(),
            in_flight: Mutex::default(),
            slots: Semaphore::new(CONCURRENCY),
        }))
    }

    /// Turns every recorded status change into a delivery where the job has a webhook (its own,
    /// or the default for watched-folder jobs) and the event is subscribed; the others are
    /// dropped. Called for each job event and at start, so changes recorded while no daemon was
    /// there to see them (a crash right after a job ended) are delivered too. Blocking: store
    /// access.
    pub fn drain(&self) {
        let cfg = self.config.get();
        let deliver = |job: &Job, status: Status, own_url: Option<&str>| {
            let kind = event_type(status).filter(|k| cfg.webhook_events.iter().any(|e| e == k))?;
            let url = match own_url {
                Some(url) => url.to_string(),
                None if job.source == Source::Watch => cfg.webhook_url.clone()?,
                None => return None,
            };
            // The job as it is now, with the status this event announces.
            let job = Job { status, ..job.clone() };
            Some(NewDelivery {
                job_id: job.id,
                event_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                event_type: kind.into(),
                url,
                payload: payload(kind, &job),
            })
        };
        loop {
            match self.store.drain_outbox(OUTBOX_BATCH, deliver) {
                Ok((taken, stored)) => {
                    if stored > 0 {
                        tracing::debug!(stored, "webhooks queued");
                        self.wake.notify_one();
                    }
                    if taken < OUTBOX_BATCH {
                        return;
                    }
                }
                Err(e) => {
                    return tracing::error!(error = %e, "cannot turn job events into webhook deliveries");
                }
            }
        }
    }

    /// Sends due deliveries until the runtime stops.
    pub async fn run(self: Arc<Self>) {
        // Job ends recorded while no daemon was running (or before it crashed) come first.
        let this = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || this.drain()).await;
        loop {
            let this = Arc::clone(&self);
            let polled = tokio::task::spawn_blocking(move || {
                let due = this.store.due_deliveries(unix_ms(), CONCURRENCY * 4)?;
                Ok::<_, crate::store::StoreError>((due, this.store.next_delivery_ms()?))
            })
            .await;
            let next = match polled {
                Ok(Ok((due, next))) => {
                    for d in due {
                        if self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(d.id) {
                            tokio::spawn(Arc::clone(&self).attempt(d));
                        }
                    }
                    next
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read webhook deliveries");
                    None
                }
                Err(_) => None,
            };
            // Sleep until the next one is due (at most a minute), or until woken.
            let wait = next.map_or(60_000, |at| (at - unix_ms()).clamp(0, 60_000));
            let woken = self.wake.notified();
            if wait > 0 {
                let _ = tokio::time::timeout(Duration::from_millis(wait as u64), woken).await;
            } else {
                // Everything due is in flight: wait for an attempt to end.
                let _ = tokio::time::timeout(Duration::from_millis(200), woken).await;
            }
        }
    }

    /// One attempt at one delivery; records it and schedules what follows.
    async fn attempt(self: Arc<Self>, d: Delivery) {
        let _slot = self.slots.acquire().await;
        let cfg = self.config.get();
        let started = Instant::now();
        let at = crate::store::now();
        let outcome = match check_target(&cfg, &d.url).await {
            Err(refused) => Outcome::Refused(refused),
            Ok(()) => self.send(&cfg, &d).await,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status_code, error) = match &outcome {
            Outcome::Status(code, _) => (Some(*code), None),
            Outcome::Network(e) | Outcome::Refused(e) => (None, Some(e.clone())),
        };
        let attempt = Attempt { n: 0, at, status_code, error, duration_ms };
        let store = Arc::clone(&self.store);
        let delays = cfg.webhook_retry_delays_s.clone();
        let (id, event_id) = (d.id, d.event_id.clone());
        let recorded = tokio::task::spawn_blocking(move || {
            let made = store.attempt_count(id)? + 1;
            let (state, delay) = next_step(&outcome, made, &delays, fastrand::f64());
            let next_ms = delay.map(|d| unix_ms() + d.as_millis() as i64);
            store.record_attempt(id, &attempt, state, next_ms)?;
            Ok::<_, crate::store::StoreError>((made, state, delay, attempt))
        })
        .await;
        match recorded {
            Ok(Ok((n, state, delay, attempt))) => tracing::info!(
                job = d.job_id, event = %d.event_type, id = %event_id, attempt = n, code = ?attempt.status_code,
                error = ?attempt.error, ?state, retry_in_s = ?delay.map(|d| d.as_secs_f32()), "webhook attempt"
            ),
            Ok(Err(e)) => tracing::error!(id = %event_id, error = %e, "cannot record a webhook attempt"),
            Err(e) => tracing::error!(id = %event_id, error = %e, "webhook attempt bookkeeping failed"),
        }
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&d.id);
        self.wake.notify_one();
    }

    async fn send(&self, cfg: &Config, d: &Delivery) -> Outcome {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.as_secs());
        let mut request = self
            .client
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(d.payload.clone());
        if let Some(key) = cfg.webhook_secret.as_ref().and_then(|s| signing_key(s).ok()) {
            request = request.header("webhook-signature", sign(&key, &d.event_id, timestamp, &d.payload));
        }
        match request.send().await {
            Ok(r) => {
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                Outcome::Status(r.status().as_u16(), after)
            }
            Err(e) => {
                // The resolver's refusal surfaces as a connect error; keep its words.
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                if text.contains("refused: ") && text.contains("WEBHOOK_ALLOW_HOSTS") {
                    Outcome::Refused(text)
                } else {
                    Outcome::Network(text)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification (and svix's libraries).
        let secret = WebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let key = signing_key(&secret).unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!", "whsec_c2hvcnQ="] {
            assert!(signing_key(&WebhookSecret(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_addresses() {
        assert!(check_url("https://hooks.example/x?y=1").is_ok());
        for bad in ["ftp://a/b", "http://", "not a url", "http://u:p@a.example/"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn retries_back_off_on_transient_failures_only() {
        let delays = [5.0, 30.0, 120.0];
        let step = |o: &Outcome, n| next_step(o, n, &delays, 0.5);
        assert_eq!(step(&Outcome::Status(204, None), 1), (DeliveryState::Delivered, None));
        assert_eq!(step(&Outcome::Status(400, None), 1), (DeliveryState::Failed, None));
        assert_eq!(step(&Outcome::Status(301, None), 1), (DeliveryState::Failed, None));
        assert_eq!(step(&Outcome::Refused("r".into()), 1), (DeliveryState::Failed, None));
        for transient in
            [Outcome::Status(503, None), Outcome::Status(408, None), Outcome::Network("reset".into())]
        {
            assert_eq!(
                step(&transient, 1),
                (DeliveryState::Pending, Some(Duration::from_secs(5))),
                "{transient:?}"
            );
        }
        assert_eq!(step(&Outcome::Status(500, None), 3).1, Some(Duration::from_secs(120)));
        assert_eq!(step(&Outcome::Status(500, None), 4), (DeliveryState::Failed, None), "out of attempts");
        // Retry-After is honoured when longer than the schedule; jitter spreads ±20 %.
        assert_eq!(step(&Outcome::Status(429, Some(60)), 1).1, Some(Duration::from_secs(60)));
        assert_eq!(step(&Outcome::Status(429, Some(1)), 1).1, Some(Duration::from_secs(5)));
        assert_eq!(next_step(&Outcome::Status(502, None), 1, &delays, 0.0).1, Some(Duration::from_secs(4)));
        // The default schedule: first retry within 10 s, 8 attempts over a few hours.
        let defaults = Config::default().webhook_retry_delays_s;
        assert!(defaults[0] * 1.2 <= 10.0 && defaults.len() + 1 == 8);
        let total_h: f64 = defaults.iter().sum::<f64>() / 3600.0;
        assert!((2.0..6.0).contains(&total_h), "{total_h}");
    }
}
