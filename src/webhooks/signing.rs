//! Standard Webhooks signatures: HMAC-SHA256 over `id.timestamp.body`, keyed
//! by the secret's decoded bytes, sent as `v1,<base64>`.
//!
//! Every attempt is signed afresh with the time it is sent, so a receiver
//! that rejects old timestamps (replays) still accepts a late retry.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The Standard Webhooks bounds on a key's length.
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;

/// The signing key from `ORDERFLOW_WEBHOOK_SECRET`. Its `Debug` hides it,
/// so it never reaches a log.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a secret was refused; the message never repeats the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the webhook secret must start with `whsec_` followed by base64")]
    NoPrefix,
    #[error("the part of the webhook secret after `whsec_` is not valid base64")]
    NotBase64,
    #[error("the webhook secret's key is {0} bytes; it must be {MIN_KEY} to {MAX_KEY}")]
    BadLength(usize),
}

impl Secret {
    /// Parses `whsec_<base64>`; the key is the decoded bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.trim().strip_prefix("whsec_").ok_or(SecretError::NoPrefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header's value for this id, time (unix
    /// seconds) and body.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vector of the Standard Webhooks libraries (svix-webhooks'
    /// `TestWebhookSign`), also checked with Python's `hmac`.
    #[test]
    fn signs_the_reference_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn each_part_of_the_signed_content_counts() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = secret.sign("msg_1", 1614265330, b"{}");
        assert_ne!(base, secret.sign("msg_2", 1614265330, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 1614265331, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 1614265330, b"{ }"));
        let other = Secret::parse("whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==").unwrap();
        assert_ne!(base, other.sign("msg_1", 1614265330, b"{}"));
    }

    #[test]
    fn a_bad_secret_is_refused_without_being_repeated() {
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), SecretError::NoPrefix);
        assert_eq!(Secret::parse("whsec_not base64!").unwrap_err(), SecretError::NotBase64);
        assert_eq!(Secret::parse("whsec_c2hvcnQ=").unwrap_err(), SecretError::BadLength(5));
        assert_eq!(Secret::parse("whsec_").unwrap_err(), SecretError::BadLength(0));
        let shown = format!("{:?}", Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        assert!(!shown.contains("MfKQ"), "{shown}");
    }
}
