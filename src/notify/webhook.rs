//! The webhook channel: a signed JSON POST, retried with backoff.
//!
//! `Postern-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the shared
//! secret: the receiver recomputes it and refuses old timestamps, so a captured call cannot be
//! replayed later.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "Postern-Signature";

/// The header value for `body` sent at unix time `t`.
pub fn signature(secret: &SecretString, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// One signed POST of `body`: whether the receiver answered 2xx, and what it answered.
pub async fn post_once(
    client: &reqwest::Client,
    url: &str,
    secret: &SecretString,
    body: &[u8],
) -> (bool, String) {
    let t = chrono::Utc::now().timestamp();
    let res = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, t, body))
        .body(body.to_vec())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => (true, format!("HTTP {}", r.status().as_u16())),
        Ok(r) => (false, format!("HTTP {}", r.status().as_u16())),
        // Without the URL: it may carry a token in its query.
        Err(e) => (false, format!("{}", e.without_url())),
    }
}

/// The wait after failed attempt `n` (1-based): 1 s, 2 s, 4 s... at most a minute.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn known_answer() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let s = signature(&SecretString::from("s3cret"), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}
