//! Plain HTTP/1.1 over TCP for tests, with no client or server crate: [`request`] (a minimal
//! client, e.g. for an agent's /metrics and webhook endpoints) and [`hostile_server`] (a peer
//! that records what it was sent, for the redirect and credential-leak attacks on git fetches).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 request over TCP; returns (status, body), status 0 when the answer could
/// not be read as HTTP.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    // The server may answer (413) before reading a large body; ignore write errors then.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What a hostile HTTP peer saw: one entry per request, `(path, Authorization header)`.
pub type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A tiny HTTP/1.1 server (the hostile peer) bound to `ip` on a free port: records every
/// request's path and Authorization header and answers with `respond(path, has_authorization)`
/// (see [`unauthorized`] and [`redirect`]). Returns the port and the record. It serves until
/// the test's runtime stops.
pub async fn hostile_server(
    ip: [u8; 4],
    respond: impl Fn(&str, bool) -> String + Send + Sync + 'static,
) -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::from(ip), 0))
        .await
        .expect("bind hostile server");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let auth = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(str::to_string);
                let reply = respond(&path, auth.is_some());
                record.lock().expect("lock").push((path, auth));
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, seen)
}

/// A 401 asking for basic credentials (what tempts a git client to send them).
pub fn unauthorized() -> String {
    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
}

/// A 302 to `to`.
pub fn redirect(to: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// Whether any request `seen` records carried an Authorization header.
pub fn saw_credentials(seen: &Seen) -> bool {
    seen.lock().expect("lock").iter().any(|(_, a)| a.is_some())
}
