//! The I/O edge's plumbing: the server address, the connections (TCP, with TLS over it for
//! `https://` and `wss://` when the cargo feature `net-tls` is on), and a minimal HTTP/1.1
//! client on hyper for blobs and the outbox (one kept-alive connection, reopened when the server
//! closes it).
//!
//! TLS (ADR 0010) is rustls on ring with Mozilla's root certificates compiled in
//! (`webpki-roots`) plus, optionally, trust anchors the caller supplies as PEM (a self-hosted
//! server with a private CA). Certificates are always verified; there is no way to turn that
//! off. Without `net-tls`, `https://` and `wss://` are refused with a configuration error, never
//! downgraded to plain text. The WebSocket and the HTTP connection share one TLS code path:
//! [`Connector::connect`] hands both the same kind of [`Stream`].

use std::pin::Pin;
#[cfg(feature = "net-tls")]
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest response body read (a blob is one compressed chunk: well under this).
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A parsed server address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerAddr {
    /// A DNS name, an IPv4 address, or an IPv6 address in brackets (`[::1]`).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" at the root).
    pub prefix: String,
    /// `https://` or `wss://`: every connection is TLS, verified against the host.
    pub tls: bool,
}

impl ServerAddr {
    /// `http://host[:port][/prefix]` or `ws://...` (port 80 by default), and with the feature
    /// `net-tls` `https://` or `wss://` (port 443 by default). Without the feature `https` and
    /// `wss` are refused (see ADR 0010): the caller gets a configuration error, never a silent
    /// downgrade to plain text.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("not a URL: {url:?}"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => false,
            "https" | "wss" if cfg!(feature = "net-tls") => true,
            "https" | "wss" => {
                return Err(format!(
                    "{scheme}:// needs TLS, which this build does not include \
                     (the cargo feature net-tls of fitedge-core; ADR 0010)"
                ))
            }
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("bad host in {url:?}"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((h, p)) if !authority.ends_with(']') => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in {url:?}"))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("bad host in {url:?}"));
        }
        Ok(ServerAddr {
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
            tls,
        })
    }

    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}/api/v1/sync", self.authority(), self.prefix)
    }

    /// The key sync state and uploaded blobs are kept under (the scheme is not part of it: the
    /// default ports already tell `https://h` from `http://h`).
    pub fn key(&self) -> String {
        format!("{}{}", self.authority(), self.prefix)
    }

    /// The name the server's certificate must be valid for (and the SNI sent): the host, or
    /// the IP address it spells (IPv6 without its brackets).
    #[cfg(feature = "net-tls")]
    pub fn server_name(&self) -> Result<rustls::pki_types::ServerName<'static>, String> {
        let host = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host);
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            format!(
                "{:?} cannot be checked against a certificate: {e}",
                self.host
            )
        })
    }
}

/// One connection to the server: plain TCP, or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "net-tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref().0).finish(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "net-tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens connections to one server: TCP, with a verified TLS session over it when the address
/// is `https://` or `wss://`.
#[derive(Clone)]
pub(crate) struct Connector {
    addr: ServerAddr,
    #[cfg(feature = "net-tls")]
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `addr`. `extra_root_pem` holds one or more PEM `CERTIFICATE` blocks
    /// trusted besides Mozilla's roots (a private CA); it is refused (`Err`, a configuration
    /// problem) when it holds no certificate or one that cannot serve as a trust anchor, even
    /// for a plain `http://` address. Without the feature `net-tls` no TLS address parses and
    /// the extra root is not used.
    pub fn new(addr: ServerAddr, extra_root_pem: Option<&str>) -> Result<Self, String> {
        #[cfg(feature = "net-tls")]
        {
            if addr.tls {
                addr.server_name()?;
            }
            let tls = if addr.tls || extra_root_pem.is_some() {
                Some(tls_connector(extra_root_pem)?)
            } else {
                None
            };
            Ok(Connector { addr, tls })
        }
        #[cfg(not(feature = "net-tls"))]
        {
            // Refused like `check_extra_root` refuses it: a setting this build cannot honour.
            match extra_root_pem {
                Some(pem) => check_extra_root(pem).map(|()| Connector { addr }),
                None => Ok(Connector { addr }),
            }
        }
    }

    pub fn addr(&self) -> &ServerAddr {
        &self.addr
    }

    /// A new connection: TCP, then the TLS handshake when the address asks for it.
    pub async fn connect(&self) -> Result<Stream, String> {
        let authority = self.addr.authority();
        let tcp = TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        if !self.addr.tls {
            return Ok(Stream::Plain(tcp));
        }
        #[cfg(feature = "net-tls")]
        {
            let connector = self
                .tls
                .as_ref()
                .ok_or_else(|| format!("no TLS set up for {authority}"))?;
            let tls = connector
                .connect(self.addr.server_name()?, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {authority} failed: {e}"))?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        #[cfg(not(feature = "net-tls"))]
        Err(format!(
            "{authority} needs TLS, which this build does not include"
        ))
    }
}

/// Reads extra trust anchors the way a round would (see `SyncConfig::extra_root_pem`).
pub(crate) fn check_extra_root(pem: &str) -> Result<(), String> {
    #[cfg(feature = "net-tls")]
    {
        tls_connector(Some(pem)).map(|_| ())
    }
    #[cfg(not(feature = "net-tls"))]
    {
        let _ = pem;
        Err("trust anchors need TLS, which this build does not include (feature net-tls)".into())
    }
}

/// The client side of TLS: rustls on ring (TLS 1.3 and 1.2), Mozilla's roots plus the extra
/// ones, ALPN `http/1.1` (the WebSocket upgrade and the blob requests are both HTTP/1.1).
#[cfg(feature = "net-tls")]
fn tls_connector(extra_root_pem: Option<&str>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_root_pem {
        let mut added = 0;
        for (n, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let cert = cert.map_err(|e| {
                format!(
                    "extra_root_pem is not valid PEM (certificate {}): {e}",
                    n + 1
                )
            })?;
            roots.add(cert).map_err(|e| {
                format!(
                    "extra_root_pem: certificate {} cannot be used as a trust anchor: {e}",
                    n + 1
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(
                "extra_root_pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            );
        }
    }
    // The provider is named rather than taken from the process default: another crate in the
    // same app may have installed a different one. rustls deprecates ring's provider because it
    // has no post-quantum key exchange (X25519MLKEM768 is aws-lc-rs only); ADR 0010 keeps ring
    // to stay clear of aws-lc-sys, and records that trade-off.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A response: status, `Retry-After` in seconds when given as such, body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 connection to the server, opened on first use and reopened when it closes.
#[derive(Debug)]
pub(crate) struct Http {
    connector: Connector,
    token: String,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    pub fn new(connector: Connector, token: String, timeout: Duration) -> Self {
        Http {
            connector,
            token,
            timeout,
            conn: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = self.connector.connect().await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        // The connection task ends when the server closes or `send` is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends one request; `path` is absolute (`/api/v1/...`) and goes after the prefix.
    /// Network problems (including a timeout) are `Err`; any HTTP status is `Ok`.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, String> {
        tokio::time::timeout(
            self.timeout,
            self.request_inner(method, path, headers, body),
        )
        .await
        .map_err(|_| format!("{method} {path}: no answer within {:?}", self.timeout))?
    }

    async fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let mut send = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        send.ready()
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.connector.addr().prefix))
            .header("host", self.connector.addr().authority())
            .header("authorization", format!("Bearer {}", self.token));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request {method} {path}: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let retry_after_s = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?
            .to_bytes()
            .to_vec();
        self.conn = Some(send);
        Ok(Response {
            status,
            retry_after_s,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = ServerAddr::parse("http://sync.local:8080/fitedge/").unwrap();
        assert_eq!(a.ws_url(), "ws://sync.local:8080/fitedge/api/v1/sync");
        assert_eq!(a.key(), "sync.local:8080/fitedge");
        assert!(!a.tls);
        assert_eq!(ServerAddr::parse("ws://h").unwrap().port, 80);
        assert_eq!(ServerAddr::parse("HTTP://h").unwrap().port, 80);
        let v6 = ServerAddr::parse("http://[::1]").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 80));
        for bad in [
            "h:80",
            "ftp://h",
            "http://",
            "http://u@h",
            "http://h:99999",
            "http://h x",
            "https://",
            "wss://u@h",
        ] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    /// Without the feature, TLS addresses are a configuration error naming what is missing,
    /// never a plain-text connection.
    #[cfg(not(feature = "net-tls"))]
    #[test]
    fn tls_addresses_are_refused_without_the_feature() {
        for url in [
            "https://h",
            "wss://h",
            "HTTPS://h:8443/p",
            "wss://127.0.0.1:443",
        ] {
            let e = ServerAddr::parse(url).unwrap_err();
            assert!(e.contains("TLS") && e.contains("net-tls"), "{url}: {e}");
        }
    }

    #[cfg(feature = "net-tls")]
    #[test]
    fn tls_addresses() {
        let a = ServerAddr::parse("https://h").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("h", 443, true));
        assert_eq!(a.ws_url(), "wss://h:443/api/v1/sync");
        assert_eq!(a.key(), "h:443");
        let b = ServerAddr::parse("wss://h:8443/p/").unwrap();
        assert_eq!((b.port, b.prefix.as_str(), b.tls), (8443, "/p", true));
        assert_eq!(b.ws_url(), "wss://h:8443/p/api/v1/sync");
        assert_eq!(ServerAddr::parse("WSS://h").unwrap().port, 443);
        // Plain addresses stay plain (local development).
        let c = ServerAddr::parse("http://h").unwrap();
        assert_eq!((c.port, c.tls), (80, false));
        assert_eq!(c.ws_url(), "ws://h:80/api/v1/sync");
        let d = ServerAddr::parse("ws://h:8080").unwrap();
        assert_eq!((d.port, d.tls), (8080, false));
    }

    #[cfg(feature = "net-tls")]
    #[test]
    fn server_names_are_hosts_or_ip_addresses() {
        use rustls::pki_types::ServerName;
        let name = |url: &str| ServerAddr::parse(url).unwrap().server_name().unwrap();
        let dns = name("https://sync.example.com");
        assert!(
            matches!(&dns, ServerName::DnsName(d) if d.as_ref() == "sync.example.com"),
            "{dns:?}"
        );
        assert_eq!(
            name("wss://127.0.0.1:8443"),
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
        );
        assert_eq!(
            name("https://[::1]"),
            ServerName::IpAddress(std::net::Ipv6Addr::LOCALHOST.into())
        );
        let a = ServerAddr::parse("https://[::1]").unwrap();
        assert_eq!((a.port, a.authority().as_str()), (443, "[::1]:443"));
        // Not a DNS name nor an address: refused when the connector is made.
        let bad = ServerAddr::parse("https://a_b..c").unwrap();
        assert!(bad.server_name().is_err());
        assert!(Connector::new(bad, None).is_err());
    }

    #[cfg(feature = "net-tls")]
    #[test]
    fn extra_roots_must_be_certificates() {
        let addr = ServerAddr::parse("https://h").unwrap();
        assert!(Connector::new(addr.clone(), None).is_ok());
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let not_der = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        let unterminated = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n";
        let only_a_key = "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";
        for (pem, says) in [
            ("", "no PEM certificate"),
            ("hello", "no PEM certificate"),
            (only_a_key, "no PEM certificate"),
            (not_base64, "not valid PEM"),
            (unterminated, "not valid PEM"),
            (not_der, "cannot be used as a trust anchor"),
        ] {
            let e = Connector::new(addr.clone(), Some(pem)).unwrap_err();
            assert!(e.contains(says), "{pem:?}: {e}");
            // Refused for a plain address too: the configuration is wrong either way.
            let plain = ServerAddr::parse("http://h").unwrap();
            assert!(Connector::new(plain, Some(pem)).is_err(), "{pem:?}");
        }
    }
}
