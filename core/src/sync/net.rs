//! The I/O edge's plumbing: the server address, and a minimal HTTP/1.1 client on hyper for blobs
//! and the outbox (one kept-alive connection, reopened when the server closes it).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Largest response body read (a blob is one compressed chunk: well under this).
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A parsed server address: plain `http`/`ws` only in this build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerAddr {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" at the root).
    pub prefix: String,
}

impl ServerAddr {
    /// `http://host[:port][/prefix]` or `ws://...`. `https`/`wss` are refused: this build has no
    /// TLS (see ADR 0010); the caller gets a configuration error, never a silent downgrade.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("not a URL: {url:?}"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => {}
            "https" | "wss" => {
                return Err(format!(
                    "{scheme}:// needs TLS, which this build does not include (ADR 0010)"
                ))
            }
            other => return Err(format!("unsupported scheme {other:?}")),
        }
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
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("bad host in {url:?}"));
        }
        Ok(ServerAddr {
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{}/api/v1/sync", self.authority(), self.prefix)
    }

    /// The key sync state and uploaded blobs are kept under.
    pub fn key(&self) -> String {
        format!("{}{}", self.authority(), self.prefix)
    }
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
    addr: ServerAddr,
    token: String,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    pub fn new(addr: ServerAddr, token: String, timeout: Duration) -> Self {
        Http {
            addr,
            token,
            timeout,
            conn: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(self.addr.authority())
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr.authority()))?;
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
            .uri(format!("{}{path}", self.addr.prefix))
            .header("host", self.addr.authority())
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
        assert_eq!(ServerAddr::parse("ws://h").unwrap().port, 80);
        assert!(ServerAddr::parse("wss://h").unwrap_err().contains("TLS"));
        for bad in [
            "h:80",
            "ftp://h",
            "http://",
            "http://u@h",
            "http://h:99999",
            "http://h x",
        ] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
