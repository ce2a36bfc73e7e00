//! The local server's front door, pure (no HTTP framework, no cluster): the per-run token, the
//! cookie it becomes, and the Host / Origin / Sec-Fetch-Site checks that keep other web pages
//! out (DNS rebinding, cross-site requests, CSRF on actions).
//!
//! Why each check exists:
//! - **Token.** Anything on this machine can connect to a loopback port, including a web page
//!   in the user's browser. Only someone who saw the URL `ferry ui` printed knows the token.
//!   The first request carries it in the query; the server answers with an HttpOnly,
//!   SameSite=Strict cookie and a redirect to the same URL without it (so it does not stay in
//!   the address bar or history).
//! - **Host.** A page on `evil.example` whose name is re-pointed at 127.0.0.1 (DNS rebinding)
//!   reaches the port as same-origin for the browser; its requests carry `Host: evil.example`,
//!   which is refused before anything else runs.
//! - **Origin and Sec-Fetch-Site on actions.** Actions are POST only, carry the token in a form
//!   field (never in a cookie alone), and their Origin must be this server: a cross-site form
//!   post is refused even if a cookie were sent along.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use rand::RngCore;

/// The per-run secret: 32 random bytes, hex.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A fresh random token from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Token(hex::encode(bytes))
    }

    /// The token as it appears in the URL, the cookie and action forms.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a request presented.
    pub fn matches(&self, presented: &str) -> bool {
        verify_slices_are_equal(self.0.as_bytes(), presented.as_bytes()).is_ok()
    }
}

/// Where the server listens, as browsers will name it in `Host` and `Origin`.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Token,
    port: u16,
    /// Host names (without port) the server answers to: loopback names, plus the bound address.
    hosts: Vec<String>,
}

/// Why a request was turned away (the response says it; the log records it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Host header {0:?} is not this server (DNS rebinding protection): open the URL `ferry ui` printed"
    )]
    Host(String),
    #[error(
        "missing or wrong access token: open the URL `ferry ui` printed (it contains ?token=...)"
    )]
    Token,
    #[error(
        "cross-site request refused: actions must come from this dashboard's own pages (Origin {0:?})"
    )]
    Origin(String),
}

impl Guard {
    /// `bound_host` is the address the server listens on (e.g. `127.0.0.1` or a name given
    /// with `--address`).
    pub fn new(token: Token, bound_host: &str, port: u16) -> Self {
        let mut hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bound = normalise_host(bound_host);
        if !bound.is_empty() && bound != "0.0.0.0" && bound != "[::]" && !hosts.contains(&bound) {
            hosts.push(bound);
        }
        Guard { token, port, hosts }
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The cookie's name; per port, so two `ferry ui` runs on one machine do not clobber
    /// each other (cookies are not separated by port).
    pub fn cookie_name(&self) -> String {
        format!("ferry_ui_{}", self.port)
    }

    /// The `Set-Cookie` value that lets the browser in after it presented the token once.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name(),
            self.token.as_str()
        )
    }

    /// The URL to print: the first host name and the token.
    pub fn login_url(&self, host: &str) -> String {
        let host = normalise_host(host);
        let host = if host == "0.0.0.0" || host == "[::]" {
            "127.0.0.1".to_string()
        } else {
            host
        };
        format!("http://{host}:{}/?token={}", self.port, self.token.as_str())
    }

    /// The Host header must name this server (any of its names) and its port.
    pub fn check_host(&self, host_header: Option<&str>) -> Result<(), Refusal> {
        let raw = host_header.unwrap_or("");
        let lower = raw.to_ascii_lowercase();
        let ok = self
            .hosts
            .iter()
            .any(|h| lower == format!("{h}:{}", self.port));
        if ok {
            Ok(())
        } else {
            Err(Refusal::Host(raw.chars().take(100).collect()))
        }
    }

    /// The request is let in when its cookie or its `token` query parameter holds the token.
    pub fn check_token(
        &self,
        cookie_header: Option<&str>,
        query: Option<&str>,
    ) -> Result<(), Refusal> {
        let name = self.cookie_name();
        let from_cookie = cookie_header
            .into_iter()
            .flat_map(|h| h.split(';'))
            .any(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(k, v)| k == name && self.token.matches(v))
            });
        if from_cookie || self.query_token(query) {
            Ok(())
        } else {
            Err(Refusal::Token)
        }
    }

    /// Whether the query string carries the right `token` (the first visit).
    pub fn query_token(&self, query: Option<&str>) -> bool {
        query.into_iter().flat_map(|q| q.split('&')).any(|pair| {
            pair.split_once('=')
                .is_some_and(|(k, v)| k == "token" && self.token.matches(v))
        })
    }

    /// For state-changing requests: `Origin` must be this server, and `Sec-Fetch-Site`, when
    /// the browser sends it, must say same-origin. A POST without Origin is refused: every
    /// browser that could be abused sends one on POST.
    pub fn check_origin(
        &self,
        origin: Option<&str>,
        fetch_site: Option<&str>,
    ) -> Result<(), Refusal> {
        let origin_raw = origin.unwrap_or("");
        let lower = origin_raw.to_ascii_lowercase();
        let ok = self
            .hosts
            .iter()
            .any(|h| lower == format!("http://{h}:{}", self.port));
        if !ok {
            return Err(Refusal::Origin(origin_raw.chars().take(100).collect()));
        }
        match fetch_site {
            None | Some("same-origin") => Ok(()),
            Some(other) => Err(Refusal::Origin(format!(
                "{origin_raw} (Sec-Fetch-Site {other})"
            ))),
        }
    }
}

fn normalise_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(Token("a".repeat(64)), "127.0.0.1", 7070)
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (Token::generate(), Token::generate());
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
        assert!(!a.matches(""));
        assert!(
            !format!("{a:?}").contains(a.as_str()),
            "Debug must not print the token"
        );
    }

    #[test]
    fn host_header_must_name_this_server() {
        let g = guard();
        assert!(g.check_host(Some("127.0.0.1:7070")).is_ok());
        assert!(g.check_host(Some("localhost:7070")).is_ok());
        assert!(g.check_host(Some("LOCALHOST:7070")).is_ok());
        assert!(g.check_host(Some("[::1]:7070")).is_ok());
        // DNS rebinding: the attacker's name, our address.
        assert!(g.check_host(Some("evil.example:7070")).is_err());
        assert!(g.check_host(Some("127.0.0.1.evil.example:7070")).is_err());
        assert!(g.check_host(Some("127.0.0.1:7071")).is_err());
        assert!(g.check_host(Some("127.0.0.1")).is_err());
        assert!(g.check_host(None).is_err());
    }

    #[test]
    fn token_from_cookie_or_query_only() {
        let g = guard();
        let good = "a".repeat(64);
        assert!(
            g.check_token(Some(&format!("x=1; ferry_ui_7070={good}")), None)
                .is_ok()
        );
        assert!(
            g.check_token(None, Some(&format!("a=b&token={good}")))
                .is_ok()
        );
        assert!(g.check_token(None, None).is_err());
        // Another port's cookie, a wrong value, a prefix.
        assert!(
            g.check_token(Some(&format!("ferry_ui_7071={good}")), None)
                .is_err()
        );
        assert!(g.check_token(Some("ferry_ui_7070=aaaa"), None).is_err());
        assert!(
            g.check_token(None, Some(&format!("token={}", &good[..63])))
                .is_err()
        );
        assert!(
            g.check_token(None, Some(&format!("xtoken={good}")))
                .is_err()
        );
    }

    #[test]
    fn actions_need_same_origin() {
        let g = guard();
        assert!(
            g.check_origin(Some("http://127.0.0.1:7070"), Some("same-origin"))
                .is_ok()
        );
        assert!(g.check_origin(Some("http://localhost:7070"), None).is_ok());
        assert!(g.check_origin(None, None).is_err());
        assert!(g.check_origin(Some("null"), None).is_err());
        assert!(g.check_origin(Some("http://evil.example"), None).is_err());
        assert!(
            g.check_origin(Some("https://127.0.0.1:7070"), None)
                .is_err()
        );
        assert!(
            g.check_origin(Some("http://127.0.0.1:7070"), Some("cross-site"))
                .is_err()
        );
        assert!(
            g.check_origin(Some("http://127.0.0.1:7070"), Some("same-site"))
                .is_err()
        );
    }

    #[test]
    fn bound_address_is_an_allowed_host_and_login_url_never_says_any() {
        let g = Guard::new(Token("b".repeat(64)), "192.0.2.7", 80);
        assert!(g.check_host(Some("192.0.2.7:80")).is_ok());
        let g = Guard::new(Token("b".repeat(64)), "0.0.0.0", 80);
        assert!(g.check_host(Some("0.0.0.0:80")).is_err());
        assert!(
            g.login_url("0.0.0.0")
                .starts_with("http://127.0.0.1:80/?token=")
        );
        let g = Guard::new(Token("b".repeat(64)), "::1", 80);
        assert!(g.check_host(Some("[::1]:80")).is_ok());
    }
}
