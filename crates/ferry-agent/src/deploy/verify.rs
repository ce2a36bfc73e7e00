//! Verification of the OIDC ID tokens that authenticate deploy requests: the token's issuer must
//! be one a DeployPolicy names (checked on the untrusted `iss` BEFORE anything is fetched), its
//! signature must verify against a key of that issuer's JWKS (found through its discovery
//! document), and `exp`, `nbf`, `iat` and `aud` must hold within a bounded clock skew. Tokens are
//! remembered until they expire, so each one deploys at most once ([`ReplayGuard`]).
//!
//! Why it is built this way:
//! - An attacker chooses every byte of the token, so nothing in it picks a URL: only the issuers
//!   (and discovery URLs) that DeployPolicies configure are ever contacted, https only (plain
//!   http only with `--deploy-allow-http-issuers`, for tests), no redirects, bounded size and time.
//! - Only asymmetric algorithms are accepted, and the algorithm must fit the key's type (and the
//!   key's own `alg` when it names one): `alg: none` and HS256 signed with the public key as the
//!   HMAC secret (the classic confusion attack) are refused before any crypto runs.
//! - Keys are cached per issuer for [`KEYS_MAX_AGE`]; an unknown `kid` re-reads the JWKS (key
//!   rotation) at most once per [`REFRESH_MIN_INTERVAL`], so a stream of made-up key ids cannot
//!   turn the agent into a request amplifier against the issuer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Largest token accepted (GitHub's are ~1 KiB; Kubernetes' ~1.5 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest discovery document or JWKS read from an issuer.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Whole-request deadline for one discovery or JWKS fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How far `exp`, `nbf` and `iat` may be off the agent's clock.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long an issuer's keys are used before they are read again.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The least time between two reads of one issuer's keys (unknown `kid`: rotation).
pub const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Tokens remembered for replay detection; past this, the ones expiring first are dropped.
pub const REPLAY_MEMORY: usize = 100_000;

/// The asymmetric algorithms a token may be signed with.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Where an issuer's keys come from, as a DeployPolicy configures it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Where the discovery document is read (default `<issuer>/.well-known/openid-configuration`);
    /// for an issuer whose public name is not reachable from the agent, such as another
    /// cluster's `https://kubernetes.default.svc`.
    pub discovery_url: Option<String>,
    /// Extra PEM CA certificates for the issuer's TLS.
    pub ca_pem: Option<String>,
}

impl IssuerConfig {
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            discovery_url: None,
            ca_pem: None,
        }
    }

    fn discovery(&self) -> String {
        self.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            )
        })
    }
}

/// Why a token was refused. Every message is safe to return to the caller: it names the claim or
/// the issuer, never key material or anything read from the issuer's responses beyond status.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no token: send the CI system's OIDC ID token as `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the token is not a JWT (header.payload.signature, base64url): {0}")]
    Malformed(String),
    #[error(
        "the token's algorithm {0:?} is refused: only RS256/384/512, PS256/384/512, ES256/384 and EdDSA are accepted"
    )]
    Algorithm(String),
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error(
        "issuer {0:?} is not trusted here: no DeployPolicy in the Release's namespace names it (spec.issuer.url must equal the token's `iss` exactly)"
    )]
    UntrustedIssuer(String),
    #[error("cannot read the keys of issuer {issuer}: {source}")]
    Keys {
        issuer: String,
        #[source]
        source: FetchError,
    },
    #[error(
        "the token's key id {kid:?} is not in the JWKS of issuer {issuer} (re-read at most every {refresh:?})"
    )]
    UnknownKey {
        kid: String,
        issuer: String,
        refresh: Duration,
    },
    #[error("the token has no `kid` header and issuer {0} publishes more than one key")]
    MissingKeyId(String),
    #[error("the token's algorithm {alg:?} does not fit key {kid:?} of issuer {issuer}")]
    KeyMismatch {
        alg: String,
        kid: String,
        issuer: String,
    },
    #[error("the token's signature does not verify against key {kid:?} of issuer {issuer}")]
    BadSignature { kid: String, issuer: String },
    #[error(
        "the token expired at {exp} (now {now}, {skew}s of clock skew allowed); request a new one"
    )]
    Expired { exp: u64, now: u64, skew: u64 },
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("the token was issued in the future (iat {iat}, now {now})")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error(
        "the token's audience {got:?} is not accepted: request a token for one of {expected:?} (DeployPolicy spec.audience)"
    )]
    Audience {
        got: Vec<String>,
        expected: Vec<String>,
    },
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    #[error("this token was already used for a deploy; request a new one for each deploy")]
    Replayed,
}

/// Why an issuer's discovery document or JWKS could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{url}: only https:// issuers are contacted (plain http only with --deploy-allow-http-issuers)"
    )]
    Scheme { url: String },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the response is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: not valid JSON of the expected shape: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: the discovery document names issuer {got:?}, not {expected:?}")]
    IssuerMismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("the issuer's CA bundle (spec.issuer.caBundle) is not valid PEM: {0}")]
    CaBundle(String),
}

/// A token whose signature and times were verified.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// Every claim of the token (policies match `repository`, `ref`, `environment`, ...).
    pub claims: Map<String, Value>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// What replay detection remembers: the `jti`, else a hash of the whole token.
    pub replay_key: String,
}

impl VerifiedToken {
    /// A claim as text (strings as they are; numbers and booleans printed), if present.
    pub fn claim_text(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The unverified parts needed to decide whom to ask for keys.
#[derive(Debug, Clone)]
pub struct Peeked {
    pub issuer: String,
    pub algorithm: Algorithm,
    pub kid: Option<String>,
}

/// Read the header and `iss` of a token without trusting them: size, shape and algorithm are
/// checked here, so that a token that can never verify costs no fetch.
pub fn peek(token: &str) -> Result<Peeked, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge {
            limit: MAX_TOKEN_BYTES,
        });
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(TokenError::Malformed(
            "expected three non-empty parts separated by dots".to_string(),
        ));
    }
    let header_json = b64(parts[0])?;
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        kid: Option<String>,
        crit: Option<Value>,
    }
    let raw: RawHeader = serde_json::from_slice(&header_json)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    let alg_name = raw.alg.unwrap_or_default();
    let algorithm: Algorithm = alg_name
        .parse()
        .map_err(|_| TokenError::Algorithm(alg_name.clone()))?;
    if !ACCEPTED.contains(&algorithm) {
        return Err(TokenError::Algorithm(alg_name));
    }
    // Critical header extensions we do not implement must be refused (RFC 7515 4.1.11).
    if raw.crit.is_some() {
        return Err(TokenError::Malformed(
            "the header has `crit` extensions, which are not supported".to_string(),
        ));
    }
    let payload = b64(parts[1])?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
    let issuer = match claims.get("iss") {
        Some(Value::String(iss)) if !iss.is_empty() => iss.clone(),
        _ => return Err(TokenError::MissingClaim("iss")),
    };
    Ok(Peeked {
        issuer,
        algorithm,
        kid: raw.kid,
    })
}

fn b64(part: &str) -> Result<Vec<u8>, TokenError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("base64url: {e}")))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One issuer's keys as last read.
struct CachedKeys {
    jwks: JwkSet,
    fetched: Instant,
}

/// Per-issuer state: the cached keys and when they were last read (successfully or not).
#[derive(Default)]
struct IssuerState {
    keys: Option<CachedKeys>,
    last_attempt: Option<Instant>,
}

/// Verifies tokens; shared by every deploy request of the agent process.
pub struct Verifier {
    allow_http: bool,
    /// Keyed by the whole issuer configuration: two policies that name the same issuer with
    /// different discovery URLs or CAs never share keys.
    issuers: Mutex<HashMap<IssuerConfig, Arc<tokio::sync::Mutex<IssuerState>>>>,
    clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
}

impl Verifier {
    /// `allow_http`: also contact plain-http issuers (`--deploy-allow-http-issuers`, tests only).
    pub fn new(allow_http: bool) -> Self {
        Self {
            allow_http,
            issuers: Mutex::default(),
            clients: Mutex::default(),
        }
    }

    /// Verify `token` against `issuer` (whose `issuer` must equal the token's `iss`; the caller
    /// chose it from the policies, never from the token) and require one of `audiences`.
    pub async fn verify(
        &self,
        token: &str,
        issuer: &IssuerConfig,
        audiences: &BTreeSet<String>,
    ) -> Result<VerifiedToken, TokenError> {
        let peeked = peek(token)?;
        if peeked.issuer != issuer.issuer {
            return Err(TokenError::UntrustedIssuer(peeked.issuer));
        }
        let jwk = self.key_for(issuer, peeked.kid.as_deref()).await?;
        let kid = peeked.kid.clone().unwrap_or_default();
        if !algorithm_fits(&jwk, peeked.algorithm) {
            return Err(TokenError::KeyMismatch {
                alg: format!("{:?}", peeked.algorithm),
                kid,
                issuer: issuer.issuer.clone(),
            });
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| TokenError::KeyMismatch {
            alg: format!("{:?}", peeked.algorithm),
            kid: kid.clone(),
            issuer: issuer.issuer.clone(),
        })?;
        let mut validation = Validation::new(peeked.algorithm);
        validation.algorithms = vec![peeked.algorithm];
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&audiences.iter().collect::<Vec<_>>());
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let now = now_unix();
        let decoded = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation);
        let claims = match decoded {
            Ok(data) => data.claims,
            Err(err) => {
                return Err(explain(err, token, &kid, issuer, audiences, now));
            }
        };
        let number = |name: &str| claims.get(name).and_then(Value::as_u64);
        if let Some(iat) = number("iat")
            && iat > now + CLOCK_SKEW.as_secs()
        {
            return Err(TokenError::IssuedInFuture { iat, now });
        }
        let expires_at = number("exp").ok_or(TokenError::MissingClaim("exp"))?;
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::MissingClaim("sub")),
        };
        let audiences = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let replay_key = match claims.get("jti") {
            Some(Value::String(jti)) if !jti.is_empty() => format!("jti:{}:{jti}", issuer.issuer),
            _ => format!(
                "sha256:{}",
                hex::encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    token.as_bytes()
                ))
            ),
        };
        Ok(VerifiedToken {
            issuer: issuer.issuer.clone(),
            subject,
            audiences,
            claims,
            expires_at,
            replay_key,
        })
    }

    /// The key `kid` of `issuer`: from the cache while it is young, else read again; an unknown
    /// `kid` triggers one re-read per [`REFRESH_MIN_INTERVAL`] (the issuer rotated its keys).
    async fn key_for(&self, issuer: &IssuerConfig, kid: Option<&str>) -> Result<Jwk, TokenError> {
        let state = self
            .issuers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(issuer.clone())
            .or_default()
            .clone();
        // One reader per issuer at a time: concurrent requests wait for the same fetch.
        let mut state = state.lock().await;
        let stale = state
            .keys
            .as_ref()
            .is_none_or(|k| k.fetched.elapsed() >= KEYS_MAX_AGE);
        let may_refresh = state
            .last_attempt
            .is_none_or(|at| at.elapsed() >= REFRESH_MIN_INTERVAL);
        if stale && may_refresh {
            self.refresh(issuer, &mut state).await?;
        }
        if let Some(found) = state.keys.as_ref().and_then(|k| find(&k.jwks, kid, issuer)) {
            return found;
        }
        if state.keys.is_some() && may_refresh && !stale {
            self.refresh(issuer, &mut state).await?;
            if let Some(found) = state.keys.as_ref().and_then(|k| find(&k.jwks, kid, issuer)) {
                return found;
            }
        }
        if state.keys.is_none() {
            // Never read successfully, and the last attempt is too recent to retry.
            return Err(TokenError::Keys {
                issuer: issuer.issuer.clone(),
                source: FetchError::Status {
                    url: issuer.discovery(),
                    status: 0,
                },
            });
        }
        Err(TokenError::UnknownKey {
            kid: kid.unwrap_or_default().to_string(),
            issuer: issuer.issuer.clone(),
            refresh: REFRESH_MIN_INTERVAL,
        })
    }

    async fn refresh(
        &self,
        issuer: &IssuerConfig,
        state: &mut IssuerState,
    ) -> Result<(), TokenError> {
        state.last_attempt = Some(Instant::now());
        let keys = |source| TokenError::Keys {
            issuer: issuer.issuer.clone(),
            source,
        };
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = issuer.discovery();
        let discovery: Discovery = self.get_json(&url, issuer).await.map_err(keys)?;
        if discovery.issuer != issuer.issuer {
            return Err(keys(FetchError::IssuerMismatch {
                url,
                expected: issuer.issuer.clone(),
                got: discovery.issuer,
            }));
        }
        let jwks: JwkSet = self
            .get_json(&discovery.jwks_uri, issuer)
            .await
            .map_err(keys)?;
        tracing::info!(issuer = %issuer.issuer, keys = jwks.keys.len(), "read the issuer's signing keys");
        state.keys = Some(CachedKeys {
            jwks,
            fetched: Instant::now(),
        });
        Ok(())
    }

    fn client(&self, ca_pem: Option<&String>) -> Result<reqwest::Client, FetchError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&ca_pem.cloned()) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ferry-agent/", env!("CARGO_PKG_VERSION")))
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A redirect could lead anywhere; issuers serve their documents directly.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false);
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| FetchError::CaBundle(e.to_string()))?;
            if certs.is_empty() {
                return Err(FetchError::CaBundle("no certificate in it".to_string()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| FetchError::Transport {
            url: String::new(),
            source: e,
        })?;
        clients.insert(ca_pem.cloned(), client.clone());
        Ok(client)
    }

    /// GET a JSON document, https only (unless allowed), no redirects, at most
    /// [`MAX_DOCUMENT_BYTES`], within [`FETCH_TIMEOUT`]. Never sends credentials.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        issuer: &IssuerConfig,
    ) -> Result<T, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::Scheme {
            url: url.to_string(),
        })?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => {
                return Err(FetchError::Scheme {
                    url: url.to_string(),
                });
            }
        }
        let client = self.client(issuer.ca_pem.as_ref())?;
        let transport = |source| FetchError::Transport {
            url: url.to_string(),
            source,
        };
        let mut response = client
            .get(parsed)
            // Kubernetes serves its JWKS only as application/jwk-set+json (406 otherwise).
            .header("accept", "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: MAX_DOCUMENT_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|source| FetchError::Json {
            url: url.to_string(),
            source,
        })
    }
}

/// The signing key `kid` (or the only signing key when the token names none). Symmetric keys
/// and keys marked for encryption are never used for verification.
fn find(
    jwks: &JwkSet,
    kid: Option<&str>,
    issuer: &IssuerConfig,
) -> Option<Result<Jwk, TokenError>> {
    let usable: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
        .filter(|k| {
            !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        })
        .collect();
    match kid {
        Some(kid) => usable
            .into_iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .map(|k| Ok(k.clone())),
        None if usable.len() == 1 => Some(Ok(usable[0].clone())),
        None => Some(Err(TokenError::MissingKeyId(issuer.issuer.clone()))),
    }
}

/// Whether a token signed with `alg` may be verified with `jwk`: the key type must fit, an EC
/// key's curve must be the algorithm's, and a key that names its algorithm allows only that one.
fn algorithm_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(named) = jwk.common.key_algorithm {
        let same = matches!(
            (named, alg),
            (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::RS384, Algorithm::RS384)
                | (KeyAlgorithm::RS512, Algorithm::RS512)
                | (KeyAlgorithm::PS256, Algorithm::PS256)
                | (KeyAlgorithm::PS384, Algorithm::PS384)
                | (KeyAlgorithm::PS512, Algorithm::PS512)
                | (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::ES384, Algorithm::ES384)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !same {
            return false;
        }
    }
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
        _ => false,
    }
}

/// Turn the library's verdict into a message that names the claim and its value.
fn explain(
    err: jsonwebtoken::errors::Error,
    token: &str,
    kid: &str,
    issuer: &IssuerConfig,
    audiences: &BTreeSet<String>,
    now: u64,
) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    // Only for the message: the signature already verified when these errors are reached
    // (the library checks the signature before the claims).
    let claims: Map<String, Value> =
        jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap_or_default();
    let number = |name: &str| claims.get(name).and_then(Value::as_u64).unwrap_or(0);
    match err.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            TokenError::BadSignature {
                kid: kid.to_string(),
                issuer: issuer.issuer.clone(),
            }
        }
        ErrorKind::ExpiredSignature => TokenError::Expired {
            exp: number("exp"),
            now,
            skew: CLOCK_SKEW.as_secs(),
        },
        ErrorKind::ImmatureSignature => TokenError::NotYetValid {
            nbf: number("nbf"),
            now,
        },
        ErrorKind::InvalidAudience => TokenError::Audience {
            got: match claims.get("aud") {
                Some(Value::String(a)) => vec![a.clone()],
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            },
            expected: audiences.iter().cloned().collect(),
        },
        ErrorKind::InvalidIssuer => TokenError::UntrustedIssuer(
            claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        ErrorKind::MissingRequiredClaim(name) => TokenError::MissingClaim(match name.as_str() {
            "exp" => "exp",
            "aud" => "aud",
            "sub" => "sub",
            _ => "iss",
        }),
        ErrorKind::InvalidAlgorithm => TokenError::KeyMismatch {
            alg: String::new(),
            kid: kid.to_string(),
            issuer: issuer.issuer.clone(),
        },
        other => TokenError::Claims(format!("{other:?}")),
    }
}

/// Tokens already used, each kept until it expires (plus the clock skew), so a token captured
/// from a CI log cannot deploy a second time while it is still valid.
#[derive(Default)]
pub struct ReplayGuard {
    inner: Mutex<ReplayState>,
}

#[derive(Default)]
struct ReplayState {
    seen: HashMap<String, u64>,
    by_expiry: VecDeque<(u64, String)>,
}

impl ReplayGuard {
    /// Remember the token; false when it was used before.
    pub fn consume(&self, token: &VerifiedToken) -> bool {
        self.consume_at(&token.replay_key, token.expires_at, now_unix())
    }

    fn consume_at(&self, key: &str, expires_at: u64, now: u64) -> bool {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let horizon = now.saturating_sub(CLOCK_SKEW.as_secs());
        // Forget tokens that can no longer verify anyway.
        state.seen.retain(|_, exp| *exp >= horizon);
        state.by_expiry.retain(|(exp, _)| *exp >= horizon);
        if state.seen.contains_key(key) {
            return false;
        }
        while state.seen.len() >= REPLAY_MEMORY {
            // Oldest expiry first; insertion order approximates it (lifetimes are similar).
            match state.by_expiry.pop_front() {
                Some((_, old)) => {
                    state.seen.remove(&old);
                }
                None => break,
            }
        }
        state.seen.insert(key.to_string(), expires_at);
        state.by_expiry.push_back((expires_at, key.to_string()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn b64url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn raw_token(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes()),
            b64url(b"sig")
        )
    }

    #[test]
    fn peek_refuses_none_symmetric_and_malformed_tokens_before_any_fetch() {
        let claims = r#"{"iss":"https://issuer.example"}"#;
        for alg in ["none", "HS256", "HS512", "", "XX1"] {
            let token = raw_token(&format!(r#"{{"alg":"{alg}"}}"#), claims);
            assert!(
                matches!(peek(&token), Err(TokenError::Algorithm(_))),
                "{alg}: {:?}",
                peek(&token)
            );
        }
        assert!(matches!(peek(""), Err(TokenError::Missing)));
        assert!(matches!(peek("a.b"), Err(TokenError::Malformed(_))));
        assert!(matches!(peek("a..c"), Err(TokenError::Malformed(_))));
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(peek(&big), Err(TokenError::TooLarge { .. })));
        let no_iss = raw_token(r#"{"alg":"RS256"}"#, r#"{"sub":"x"}"#);
        assert!(matches!(
            peek(&no_iss),
            Err(TokenError::MissingClaim("iss"))
        ));
        let crit = raw_token(r#"{"alg":"RS256","crit":["b64"]}"#, claims);
        assert!(matches!(peek(&crit), Err(TokenError::Malformed(_))));
        let ok = raw_token(r#"{"alg":"ES256","kid":"k1"}"#, claims);
        let peeked = peek(&ok).expect("well-formed");
        assert_eq!(peeked.issuer, "https://issuer.example");
        assert_eq!(peeked.kid.as_deref(), Some("k1"));
    }

    fn rsa_jwk(kid: &str) -> (EncodingKey, Jwk) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("rsa key");
        let encoding = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).expect("pem");
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("jwk");
        jwk.common.key_id = Some(kid.to_string());
        (encoding, jwk)
    }

    #[test]
    fn keys_fit_only_their_own_algorithms() {
        let (_, rsa) = rsa_jwk("r");
        assert!(algorithm_fits(&rsa, Algorithm::RS256));
        let mut unnamed = rsa.clone();
        unnamed.common.key_algorithm = None;
        assert!(algorithm_fits(&unnamed, Algorithm::PS256));
        assert!(!algorithm_fits(&unnamed, Algorithm::ES256));
        // A key that names RS256 is not used for RS512.
        assert!(!algorithm_fits(&rsa, Algorithm::RS512));
        let ec_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
        let ec = EncodingKey::from_ec_pem(ec_key.serialize_pem().as_bytes()).expect("ec pem");
        let ec = Jwk::from_encoding_key(&ec, Algorithm::ES256).expect("ec jwk");
        assert!(algorithm_fits(&ec, Algorithm::ES256));
        assert!(!algorithm_fits(&ec, Algorithm::ES384));
        assert!(!algorithm_fits(&ec, Algorithm::RS256));
    }

    #[test]
    fn symmetric_and_encryption_keys_in_a_jwks_are_never_used() {
        let (_, rsa) = rsa_jwk("sig");
        let oct: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "kid": "hmac", "k": "c2VjcmV0"
        }))
        .expect("oct jwk");
        let mut enc = rsa.clone();
        enc.common.key_id = Some("enc".to_string());
        enc.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
        let set = JwkSet {
            keys: vec![rsa, oct, enc],
        };
        let issuer = IssuerConfig::new("https://i");
        assert!(find(&set, Some("hmac"), &issuer).is_none());
        assert!(find(&set, Some("enc"), &issuer).is_none());
        assert!(matches!(find(&set, Some("sig"), &issuer), Some(Ok(_))));
        // No kid: the only signing key.
        assert!(matches!(find(&set, None, &issuer), Some(Ok(_))));
    }

    #[test]
    fn a_token_deploys_once_until_it_expires() {
        let guard = ReplayGuard::default();
        assert!(guard.consume_at("jti:a", 1_000, 900));
        assert!(!guard.consume_at("jti:a", 1_000, 950), "replayed");
        assert!(guard.consume_at("jti:b", 1_000, 950));
        // Long after expiry it is forgotten (it could not verify any more anyway).
        assert!(guard.consume_at("jti:a", 5_000, 4_000));
    }

    #[test]
    fn unknown_issuers_are_refused_without_contacting_anyone() {
        let (encoding, _) = rsa_jwk("k");
        let claims = serde_json::json!({
            "iss": "https://attacker.example", "sub": "x", "aud": "a",
            "exp": now_unix() + 60,
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k".into());
        let token = encode(&header, &claims, &encoding).expect("sign");
        let verifier = Verifier::new(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let result = runtime.block_on(verifier.verify(
            &token,
            &IssuerConfig::new("https://trusted.example"),
            &BTreeSet::from(["a".to_string()]),
        ));
        assert!(
            matches!(&result, Err(TokenError::UntrustedIssuer(i)) if i == "https://attacker.example"),
            "{result:?}"
        );
        assert!(
            verifier
                .issuers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            "no issuer state was created, so nothing was fetched"
        );
    }

    #[test]
    fn plain_http_issuers_are_refused_unless_allowed() {
        let verifier = Verifier::new(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let issuer = IssuerConfig::new("http://127.0.0.1:9");
        let result = runtime.block_on(verifier.get_json::<Value>("http://127.0.0.1:9/x", &issuer));
        assert!(
            matches!(result, Err(FetchError::Scheme { .. })),
            "{result:?}"
        );
        let result = runtime.block_on(verifier.get_json::<Value>("file:///etc/passwd", &issuer));
        assert!(
            matches!(result, Err(FetchError::Scheme { .. })),
            "{result:?}"
        );
    }
}
