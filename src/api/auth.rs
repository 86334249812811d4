//! Who may call the API: the `Host` a request names (against DNS rebinding), the site a
//! browser says it comes from (against cross-site requests) and the bearer token.
//! `/healthz` is open to all.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};
use tiny_http::Request;

use super::{ApiError, header};
use crate::config::{ApiTokens, Config};

/// Checks a request before it is routed.
pub(super) fn check(cfg: &Config, bound: SocketAddr, req: &Request, path: &str) -> Result<(), ApiError> {
    if path == "/healthz" {
        return Ok(());
    }
    let host = header(req, "Host").ok_or_else(|| ApiError::BadRequest("a Host header is required".into()))?;
    if !host_allowed(cfg, bound, &host) {
        return Err(ApiError::MisdirectedRequest(format!(
            "this server does not answer to host {host:?}; add it to allowed_hosts"
        )));
    }
    check_site(cfg, &host, header(req, "Origin").as_deref(), header(req, "Sec-Fetch-Site").as_deref())?;
    if !cfg.api_token.is_empty() {
        let given = header(req, "Authorization");
        if !given.as_deref().and_then(bearer).is_some_and(|t| token_matches(&cfg.api_token, t)) {
            return Err(ApiError::Unauthorized(
                "missing or invalid token: send Authorization: Bearer <api_token>".into(),
            ));
        }
    }
    Ok(())
}

/// Splits `name[:port]` (`[v6]:port` too) into a lower-case name and the port.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(host[i + 1..].parse().ok()?)),
        _ => (host, None),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some((name, port))
}

/// An IP address literal (`[…]` for IPv6), the only names DNS rebinding cannot use.
fn ip_literal(name: &str) -> Option<IpAddr> {
    name.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// `Host` must be the bound address, `localhost` or a loopback address with the bound port
/// (any IP address with it when bound to all interfaces), or listed in `allowed_hosts`.
fn host_allowed(cfg: &Config, bound: SocketAddr, host: &str) -> bool {
    let Some((name, port)) = split_host(host) else { return false };
    let port = port.unwrap_or(80);
    let listed = cfg
        .allowed_hosts
        .iter()
        .filter_map(|a| split_host(a))
        .any(|(n, p)| n == name && p.is_none_or(|p| p == port));
    if listed {
        return true;
    }
    if port != bound.port() {
        return false;
    }
    match ip_literal(&name) {
        Some(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
        None => name == "localhost",
    }
}

/// Refuses a browser request from another site: an `Origin` other than this server's, or
/// `Sec-Fetch-Site: cross-site | same-site` without one, unless listed in `allowed_origins`.
fn check_site(
    cfg: &Config,
    host: &str,
    origin: Option<&str>,
    fetch_site: Option<&str>,
) -> Result<(), ApiError> {
    let refuse = |from: &str| {
        Err(ApiError::Forbidden(format!(
            "cross-site request refused: {from} is not this server; add it to allowed_origins"
        )))
    };
    match origin.map(|o| o.trim().trim_end_matches('/')) {
        Some(o) => {
            let own = ["http://", "https://"].iter().any(|s| o.eq_ignore_ascii_case(&format!("{s}{host}")));
            let listed = cfg.allowed_origins.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o));
            if own || listed { Ok(()) } else { refuse(&format!("origin {o:?}")) }
        }
        None => match fetch_site.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some(site @ ("cross-site" | "same-site")) => refuse(&format!("a {site} page")),
            _ => Ok(()),
        },
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Compares SHA-256 digests in constant time, so timing tells nothing of a token.
fn token_matches(tokens: &ApiTokens, given: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    tokens.0.iter().fold(false, |found, t| {
        let diff =
            Sha256::digest(t.as_bytes()).iter().zip(given.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        found | (std::hint::black_box(diff) == 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            allowed_hosts: vec!["transcribe.example".into(), "box.lan:8080".into()],
            allowed_origins: vec!["https://app.example".into()],
            ..Config::default()
        }
    }

    #[test]
    fn hosts() {
        let (c, b): (Config, SocketAddr) = (cfg(), "127.0.0.1:5000".parse().unwrap());
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "LOCALHOST.:5000",
            "[::1]:5000",
            "transcribe.example",
            "box.lan:8080",
        ] {
            assert!(host_allowed(&c, b, ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5000",
            "localhost:5001",
            "localhost",
            "127.0.0.1",
            "box.lan:80",
            "10.0.0.1:5000",
            "",
            ":5000",
            "localhost:x",
        ] {
            assert!(!host_allowed(&c, b, bad), "{bad}");
        }
        let any: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        assert!(host_allowed(&c, any, "192.168.1.5:5000") && !host_allowed(&c, any, "nas.local:5000"));
        let v6: SocketAddr = "[fe80::1]:80".parse().unwrap();
        assert!(host_allowed(&c, v6, "[fe80::1]") && !host_allowed(&c, v6, "[fe80::2]"));
    }

    #[test]
    fn sites() {
        let c = cfg();
        let h = "127.0.0.1:5000";
        assert!(check_site(&c, h, None, None).is_ok());
        assert!(check_site(&c, h, Some("http://127.0.0.1:5000"), Some("same-origin")).is_ok());
        assert!(check_site(&c, h, Some("https://app.example/"), Some("cross-site")).is_ok());
        assert!(check_site(&c, h, None, Some("none")).is_ok());
        for (origin, site) in [
            (Some("http://evil.example"), None),
            (Some("null"), None),
            (Some("http://127.0.0.1:5001"), None),
            (None, Some("cross-site")),
            (None, Some("Same-Site")),
        ] {
            let e = check_site(&c, h, origin, site).unwrap_err();
            assert_eq!(e.status(), 403, "{origin:?} {site:?}");
        }
    }

    #[test]
    fn tokens() {
        let t = ApiTokens::parse("first-token-0123456789, second-token-0123456789");
        assert!(token_matches(&t, "first-token-0123456789") && token_matches(&t, "second-token-0123456789"));
        assert!(!token_matches(&t, "first-token-012345678") && !token_matches(&t, ""));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
