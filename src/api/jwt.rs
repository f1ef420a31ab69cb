//! Customers' tokens (`--auth jwt`): a JSON Web Token per request, whose
//! `sub` names the customer.
//!
//! The key in `ORDERFLOW_JWT_KEY` fixes the one algorithm a token may use:
//! an RSA public key in PEM means RS256, a P-256 EC public key in PEM means
//! ES256, anything else is an HS256 secret (at least 32 bytes, the size of
//! the hash, as RFC 7518 asks). A token whose header names any other
//! algorithm, `none` included, is refused before its signature is looked
//! at, so a public key can never be used as an HMAC secret. `exp` and `sub`
//! are required; `exp` and `nbf` are checked with a minute's leeway for
//! clocks that disagree. A key that cannot verify anything stops the process
//! at start rather than refusing every request later.

use crate::domain::CustomerId;
use anyhow::{bail, Context};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The variable that holds the key.
pub const KEY_VARIABLE: &str = "ORDERFLOW_JWT_KEY";
/// Shortest HS256 secret, in bytes.
const MIN_SECRET: usize = 32;

/// The key customers' tokens are verified with.
#[derive(Clone)]
pub struct JwtKey {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
}

/// Why a token was refused (each is a `401`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this route needs a customer's token: send Authorization: Bearer TOKEN")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl JwtKey {
    /// The key from `ORDERFLOW_JWT_KEY`.
    pub fn from_env() -> anyhow::Result<Self> {
        let raw = std::env::var(KEY_VARIABLE).ok().filter(|k| !k.trim().is_empty()).with_context(|| {
            format!("--auth jwt needs {KEY_VARIABLE}: an HS256 secret, or an RS256 or ES256 public key in PEM")
        })?;
        Self::parse(&raw).with_context(|| format!("{KEY_VARIABLE} is not a usable key"))
    }

    /// A key from its text: a PEM public key (RSA or P-256), else a secret.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let raw = raw.trim();
        let (key, algorithm) = if raw.starts_with("-----BEGIN") {
            // A PEM passed through a variable often arrives with `\n` written out.
            let pem = raw.replace("\\n", "\n");
            public_key(pem.as_bytes())?
        } else {
            if raw.len() < MIN_SECRET {
                bail!("an HS256 secret must be at least {MIN_SECRET} bytes, this one has {}", raw.len());
            }
            (DecodingKey::from_secret(raw.as_bytes())?, Algorithm::HS256)
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        // No audience is configured, so none is asked for.
        validation.validate_aud = false;
        Ok(Self { key, algorithm, validation })
    }

    /// The one algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The customer a token names, if it is valid.
    pub(super) fn verify(&self, token: &str) -> Result<CustomerId, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| self.refusal(e))?;
        CustomerId::parse(data.claims.sub).map_err(|e| TokenError::Invalid(format!("its sub is no customer id: {e}")))
    }

    fn refusal(&self, e: jsonwebtoken::errors::Error) -> TokenError {
        let why = match e.kind() {
            ErrorKind::ExpiredSignature => return TokenError::Expired,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                format!("it must be signed with {:?}", self.algorithm)
            }
            ErrorKind::InvalidSignature => "its signature does not verify".to_owned(),
            ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim}"),
            ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
            ErrorKind::InvalidClaimFormat(claim) => format!("its {claim} is malformed"),
            // Bad base64, bad JSON, a header naming an algorithm this library
            // does not know (`none`): not a token signed as it must be.
            _ => format!("it is not a JWT signed with {:?}", self.algorithm),
        };
        TokenError::Invalid(why)
    }
}

/// The key and algorithm of a public key in PEM.
fn public_key(pem: &[u8]) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let label = std::str::from_utf8(pem).unwrap_or("").lines().next().unwrap_or("");
    if label.contains("PRIVATE") {
        bail!("this is a private key: give its public key (`openssl pkey -pubout`)");
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // Reading the key as a P-256 point fails for any other curve (ES384's
        // P-384, say); a bad signature on a good key is `Ok(false)`.
        jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256)
            .map_err(|_| anyhow::anyhow!("this EC key is not on the P-256 curve that ES256 uses"))?;
        return Ok((key, Algorithm::ES256));
    }
    bail!("this PEM holds neither an RSA nor an EC public key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        crate::domain::now_millis() / 1000
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn a_valid_token_names_its_customer() {
        let key = JwtKey::parse(SECRET).unwrap();
        assert_eq!(key.algorithm(), Algorithm::HS256);
        let token = hs256(json!({"sub": "alice", "exp": now() + 300}));
        assert_eq!(key.verify(&token).unwrap().as_str(), "alice");
    }

    #[test]
    fn bad_tokens_are_refused() {
        let key = JwtKey::parse(SECRET).unwrap();
        let expired = hs256(json!({"sub": "alice", "exp": now() - 3600}));
        assert_eq!(key.verify(&expired), Err(TokenError::Expired));
        let refused = |token: &str| assert!(matches!(key.verify(token), Err(TokenError::Invalid(_))), "{token}");
        refused(&hs256(json!({"sub": "alice"})));
        refused(&hs256(json!({"exp": now() + 300})));
        refused(&hs256(json!({"sub": "", "exp": now() + 300})));
        refused(&hs256(json!({"sub": "alice", "exp": now() + 300, "nbf": now() + 3600})));
        refused("not.a.token");
        refused("");
        // Signed with another secret.
        let other = EncodingKey::from_secret(b"another secret, also 32 bytes long").unwrap();
        refused(&encode(&Header::new(Algorithm::HS256), &json!({"sub": "a", "exp": now() + 300}), &other).unwrap());
        // Another HMAC algorithm with the right secret: the key fixes HS256.
        let hs512 = Header::new(Algorithm::HS512);
        let secret = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        refused(&encode(&hs512, &json!({"sub": "a", "exp": now() + 300}), &secret).unwrap());
        // `alg: none`, with no signature.
        let b64 = |v: serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none =
            format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(json!({"sub": "a", "exp": now() + 300})));
        refused(&none);
    }

    #[test]
    fn unusable_keys_are_refused_at_start() {
        assert!(JwtKey::parse("short").is_err());
        assert!(JwtKey::parse("-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----").is_err());
        assert!(
            JwtKey::parse("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----").is_err()
        );
    }
}
