//! The loopback redirect listener (RFC 8252 §7.3): a tiny HTTP server on the redirect URI's
//! host and path that catches the browser's redirect, answers with a "you can close this tab"
//! page and hands the `code` over. A redirect URI without a port gets a free one, used in the
//! `redirect_uri` sent (Entra and RFC 8252 ignore the port of a loopback redirect).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::authorize::{AuthorizeError, Callback};
use crate::domain::RedirectUri;

/// A browser gets this long to send its request line and headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads beyond this are not a redirect from an authorize endpoint.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Listening sockets for one authorization attempt.
#[derive(Debug)]
pub struct LoopbackListener {
    listeners: Vec<TcpListener>,
    path: String,
    redirect_uri: String,
}

/// The port written in the redirect URI, if any (`Url` drops an explicit `:80`, so read the text).
fn explicit_port(raw: &str) -> Option<u16> {
    let rest = raw.split_once("://").map_or(raw, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
}

/// `raw` with `:port` inserted after the host, keeping everything else as typed.
fn with_port(raw: &str, port: u16) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    format!("{scheme}://{}:{port}{}", &rest[..end], &rest[end..])
}

impl LoopbackListener {
    /// Binds the redirect URI's loopback address (both 127.0.0.1 and ::1 for `localhost`).
    pub async fn bind(redirect: &RedirectUri) -> Result<Self, AuthorizeError> {
        if !redirect.is_loopback() {
            return Err(AuthorizeError::Listener(format!(
                "redirect URI `{redirect}` is not a loopback address: use paste mode"
            )));
        }
        let url = redirect.url();
        let fixed = explicit_port(redirect.as_str());
        let (primary, secondary): (IpAddr, Option<IpAddr>) = match url.host_str() {
            Some("[::1]") => (Ipv6Addr::LOCALHOST.into(), None),
            Some("127.0.0.1") => (Ipv4Addr::LOCALHOST.into(), None),
            // Browsers may resolve `localhost` to either address.
            _ => (Ipv4Addr::LOCALHOST.into(), Some(Ipv6Addr::LOCALHOST.into())),
        };
        let first = TcpListener::bind(SocketAddr::new(primary, fixed.unwrap_or(0))).await.map_err(|e| {
            AuthorizeError::Listener(match fixed {
                Some(p) => format!(
                    "cannot listen on port {p} of the redirect URI `{redirect}` ({e}); free the port, \
                     register `http://localhost` (any port) instead, or use --paste"
                ),
                None => format!("cannot listen on the loopback interface ({e}); use --paste"),
            })
        })?;
        let port = first
            .local_addr()
            .map_err(|e| AuthorizeError::Listener(e.to_string()))?
            .port();
        let mut listeners = vec![first];
        if let Some(ip) = secondary {
            match TcpListener::bind(SocketAddr::new(ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    tracing::debug!(%ip, port, error = %e, "second loopback address not bound")
                }
            }
        }
        let redirect_uri = match fixed {
            Some(_) => redirect.as_str().to_string(),
            None => with_port(redirect.as_str(), port),
        };
        Ok(Self {
            listeners,
            path: url.path().to_string(),
            redirect_uri,
        })
    }

    /// The redirect URI to send (with the port picked, when the registered one has none).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Serves until a redirect with `expected_state` (carrying a code or an error) arrives.
    /// Redirects with another state are answered and ignored (an old tab, or a forgery).
    /// Cancel by dropping the future (the caller races it against a timeout and Ctrl-C).
    pub async fn wait(self, expected_state: &str) -> Callback {
        let (tx, mut rx) = mpsc::channel::<Callback>(8);
        let mut accepts = JoinSet::new();
        for listener in self.listeners {
            let (tx, path, state) = (tx.clone(), self.path.clone(), expected_state.to_string());
            accepts.spawn(async move {
                loop {
                    let Ok((stream, _peer)) = listener.accept().await else {
                        // Out of descriptors, say: breathe instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let (tx, path, state) = (tx.clone(), path.clone(), state.clone());
                    // A browser may open idle speculative connections: never serve one at a time.
                    tokio::spawn(async move {
                        if let Some(cb) = serve_one(stream, &path, &state).await {
                            let _ = tx.send(cb).await;
                        }
                    });
                }
            });
        }
        drop(tx);
        loop {
            // The accept loops never end, so the channel stays open until this future is dropped.
            let Some(cb) = rx.recv().await else {
                return std::future::pending().await;
            };
            if cb.state.as_deref() == Some(expected_state) {
                return cb;
            }
            tracing::warn!("ignored a sign-in redirect whose state does not match this request");
        }
    }
}

/// Reads one request, answers it, and returns the callback if it was for our path.
async fn serve_one(mut stream: TcpStream, path: &str, expected_state: &str) -> Option<Callback> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .ok()??;
    let target = head.lines().next()?.split_whitespace().nth(1)?.to_string();
    let (req_path, query) = target.split_once('?').unwrap_or((&target, ""));
    let same_path = req_path == path
        || (req_path.trim_end_matches('/').is_empty() && path.trim_end_matches('/').is_empty());
    let cb = same_path
        .then(|| Callback::from_query(query))
        .filter(|cb| !cb.is_empty());
    let (status, title, text) = match &cb {
        None => ("404 Not Found", "Not found", "This address is only for the sign-in redirect.".to_string()),
        Some(cb) if cb.state.as_deref() != Some(expected_state) => (
            "400 Bad Request",
            "Sign-in response not recognised",
            "This response does not belong to the sign-in Postern is waiting for. Close this tab and use the \
             newest sign-in link."
                .to_string(),
        ),
        Some(Callback { error: Some(error), error_description, .. }) => (
            "200 OK",
            "Sign-in failed",
            format!(
                "The provider answered {}: {}. Postern shows what to do in the terminal. You can close this tab.",
                error,
                error_description.as_deref().unwrap_or("no description")
            ),
        ),
        Some(_) => (
            "200 OK",
            "Sign-in received",
            "Postern received the sign-in and is finishing in the terminal. You can close this tab.".to_string(),
        ),
    };
    let body = page(title, &text);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Answer before handing the code over, so the page shows even if the process ends soon after.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    cb
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Postern: {t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}</style>\
         </head><body><h1>{t}</h1><p>{x}</p></body></html>",
        t = escape(title),
        x = escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_redirect_uris() {
        assert_eq!(explicit_port("http://localhost"), None);
        assert_eq!(explicit_port("http://localhost/cb"), None);
        assert_eq!(explicit_port("http://localhost:80/cb"), Some(80));
        assert_eq!(explicit_port("http://[::1]:8400"), Some(8400));
        assert_eq!(explicit_port("http://[::1]/x"), None);
        assert_eq!(
            with_port("http://localhost", 53123),
            "http://localhost:53123"
        );
        assert_eq!(
            with_port("http://localhost/cb?x=1", 5),
            "http://localhost:5/cb?x=1"
        );
        assert_eq!(with_port("http://[::1]/", 7), "http://[::1]:7/");
    }

    async fn get(addr: &str, target: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn catches_the_redirect_on_its_path() {
        let redirect = RedirectUri::parse("http://127.0.0.1/callback").unwrap();
        let listener = LoopbackListener::bind(&redirect).await.unwrap();
        let uri = listener.redirect_uri().to_string();
        assert!(
            uri.starts_with("http://127.0.0.1:") && uri.ends_with("/callback"),
            "{uri}"
        );
        let addr = uri
            .trim_start_matches("http://")
            .trim_end_matches("/callback")
            .to_string();
        let waiting = tokio::spawn(async move { listener.wait("good").await });
        assert!(get(&addr, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(
            get(&addr, "/callback?code=x&state=bad")
                .await
                .starts_with("HTTP/1.1 400")
        );
        let page = get(&addr, "/callback?code=c0de&state=good").await;
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("close this tab"),
            "{page}"
        );
        assert!(!page.contains("c0de"));
        let cb = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cb.state.as_deref(), Some("good"));
    }

    #[tokio::test]
    async fn fixed_port_in_use_is_explained() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let redirect = RedirectUri::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = LoopbackListener::bind(&redirect).await.unwrap_err();
        assert!(err.to_string().contains(&format!("port {port}")), "{err}");
    }
}
