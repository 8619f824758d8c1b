//! The network side of issuers: one HTTPS GET of a discovery document or a JWKS, with ureq over
//! rustls. Certificates are checked against the system's CA store plus `issuer_ca_file`; plain
//! HTTP only with `issuer_allow_http`; every address a host resolves to is checked before any
//! connection, and the connection goes to a checked address; redirects stay on the same scheme
//! and host; a response is at most 1 MiB and 10 s. Errors are sentences for the `issuers` view
//! (DNS, connect, TLS, HTTP status, size, JSON, JWK) and never carry a response body.
//!
//! Nothing here touches PostgreSQL: the worker calls it outside any transaction.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ureq::http::{StatusCode, Uri};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use token_store_core::jwks_fetch::{self as rules, MAX_BODY_BYTES, MAX_REDIRECTS, TIMEOUT_SECS};

/// What a fetch may reach, from the settings (read by the caller, inside PostgreSQL).
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub allow_http: bool,
    pub allowed_hosts: String,
    pub ca_file: Option<String>,
}

/// A response worth keeping.
pub enum Got {
    /// 200: the body, its ETag and its `Cache-Control: max-age`.
    Body {
        body: Vec<u8>,
        etag: Option<String>,
        max_age: Option<u64>,
    },
    /// 304 to our `If-None-Match`.
    NotModified { max_age: Option<u64> },
}

/// The scheme, host and port of a URL a fetch may use, or why not.
pub fn check_url(url: &str, limits: &Limits) -> Result<Uri, String> {
    if url.len() > rules::MAX_URL_BYTES {
        return Err(format!(
            "the URL is longer than {} bytes",
            rules::MAX_URL_BYTES
        ));
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| "the URL cannot be parsed".to_string())?;
    let authority = uri
        .authority()
        .ok_or("the URL has no host (an absolute https:// URL is needed)")?;
    if authority.as_str().contains('@') {
        return Err("the URL holds credentials (user:password@); they are refused".into());
    }
    if authority.host().is_empty() {
        return Err("the URL has no host".into());
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if limits.allow_http => {}
        Some("http") => {
            return Err(
                "plain http is refused (token_store.issuer_allow_http is off); use https".into(),
            )
        }
        _ => return Err("the URL's scheme is neither https nor http".into()),
    }
    Ok(uri)
}

/// The resolver of one request: the system's, then every address checked (a host with one
/// private address among public ones is refused: DNS rebinding picks the one it likes).
#[derive(Debug)]
struct CheckedResolver {
    host_allowed: bool,
}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        if !self.host_allowed {
            for a in addrs.iter() {
                if let Some(why) = rules::non_public(a.ip()) {
                    return Err(ureq::Error::Io(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "address refused: the host resolves to {}, which is {why}; list the host in token_store.issuer_allowed_hosts to allow it",
                            a.ip()
                        ),
                    )));
                }
            }
        }
        Ok(addrs)
    }
}

fn roots(limits: &Limits) -> Result<RootCerts, String> {
    let mut certs: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Some(path) = limits.ca_file.as_deref().filter(|p| !p.is_empty()) {
        let pem = std::fs::read(path)
            .map_err(|e| format!("TLS: token_store.issuer_ca_file cannot be read: {e}"))?;
        let before = certs.len();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(PemItem::Certificate(c)) = item {
                certs.push(c.to_owned());
            }
        }
        if certs.len() == before {
            return Err("TLS: token_store.issuer_ca_file holds no PEM certificate".into());
        }
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

fn agent(limits: &Limits, host_allowed: bool) -> Result<ureq::Agent, String> {
    let tls = TlsConfig::builder().root_certs(roots(limits)?).build();
    let config = ureq::config::Config::builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .https_only(!limits.allow_http)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(TIMEOUT_SECS)))
        .user_agent(concat!("token_store/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        CheckedResolver { host_allowed },
    ))
}

/// A ureq error in words a person understands.
fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::HostNotFound => "DNS: the host name does not resolve".into(),
        ureq::Error::Timeout(_) => format!("timeout: no complete response within {TIMEOUT_SECS} s"),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => e.to_string(),
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("timeout: no complete response within {TIMEOUT_SECS} s")
        }
        ureq::Error::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => format!("TLS: {tls}"),
            None => format!("connect: {e}"),
        },
        ureq::Error::ConnectionFailed => "connect: the connection failed".into(),
        ureq::Error::Rustls(e) => format!("TLS: {e}"),
        ureq::Error::Tls(e) => format!("TLS: {e}"),
        ureq::Error::BodyExceedsLimit(_) => {
            format!("size: the response is larger than {MAX_BODY_BYTES} bytes")
        }
        ureq::Error::RequireHttpsOnly(_) | ureq::Error::TlsRequired => {
            "plain http is refused (token_store.issuer_allow_http is off)".into()
        }
        ureq::Error::LargeResponseHeader(..) => "HTTP: the response headers are too large".into(),
        ureq::Error::Protocol(e) => format!("HTTP: {e}"),
        other => format!("HTTP: {other}"),
    }
}

/// Where a redirect from `from` to `location` leads, if it stays on the same scheme and host.
fn redirect_target(from: &Uri, location: &str) -> Result<String, String> {
    let scheme = from.scheme_str().unwrap_or("https");
    let authority = from.authority().map(|a| a.as_str()).unwrap_or("");
    if location.starts_with('/') && !location.starts_with("//") {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let to: Uri = location
        .parse()
        .map_err(|_| "redirect: the Location cannot be parsed".to_string())?;
    if to.scheme_str() != Some(scheme) {
        return Err(format!("redirect refused: it leaves the {scheme} scheme"));
    }
    if to.authority().map(|a| a.as_str()) != Some(authority) {
        return Err("redirect refused: it leaves the host".into());
    }
    Ok(location.to_owned())
}

/// GET `url` (following redirects within its scheme and host), with `If-None-Match: etag`.
pub fn get(url: &str, etag: Option<&str>, limits: &Limits) -> Result<Got, String> {
    let mut uri = check_url(url, limits)?;
    let host = uri.host().unwrap_or_default().to_owned();
    let agent = agent(limits, rules::host_allowed(&limits.allowed_hosts, &host))?;
    for _ in 0..=MAX_REDIRECTS {
        let mut req = agent.get(&uri).header("Accept", "application/json");
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        let mut resp = req.call().map_err(describe)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let max_age = header("cache-control").and_then(|c| rules::max_age(&c));
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Got::NotModified { max_age });
        }
        if status.is_redirection() {
            let location = header("location").ok_or("redirect: no Location header")?;
            let next = redirect_target(&uri, &location)?;
            uri = check_url(&next, limits)?;
            continue;
        }
        if status != StatusCode::OK {
            return Err(format!(
                "HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned());
        }
        let etag = header("etag").filter(|t| t.len() <= 256);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(describe)?;
        return Ok(Got::Body {
            body,
            etag,
            max_age,
        });
    }
    Err(format!("redirect: more than {MAX_REDIRECTS} redirects"))
}

/// A fetched body as JSON (`what`: "JWKS", "discovery document").
pub fn json(body: &[u8], what: &str) -> Result<serde_json::Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| format!("JSON: the {what} is not UTF-8"))?;
    token_store_core::claims::check_json(text)
        .map_err(|p| format!("JSON: the {what} cannot be used: it {p}"))?;
    serde_json::from_str(text).map_err(|e| format!("JSON: the {what} is not valid JSON ({e})"))
}
