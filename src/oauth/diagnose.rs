//! What an admin should do about a provider's OAuth error: the catalogue's entry
//! ([`crate::explain`]) for its AADSTS code or `error` value, worded for this connection.

use super::error::ProviderError;
use crate::explain::{self, Context, Entry};

/// What the hint may mention.
#[derive(Debug, Clone, Copy)]
pub struct HintContext<'a> {
    /// The connection's name, for commands to run.
    pub connection: &'a str,
    /// The redirect URI that was sent, exactly (50011: the value to register).
    pub redirect_uri: Option<&'a str>,
}

/// The catalogue entry for `err`: its AADSTS code when known, else its `error` value. A few
/// `error` values say more than the AADSTS code that comes with them (a declined sign-in).
pub fn entry(err: &ProviderError) -> Option<&'static Entry> {
    let declined = matches!(
        err.error.as_str(),
        "access_denied" | "authorization_declined" | "expired_token"
    );
    let by_code = err.aadsts().and_then(explain::aadsts).filter(|_| !declined);
    by_code.or_else(|| explain::oauth_error(&err.error))
}

/// A sentence or two on the cause of `err` and how to fix it, if Postern knows the case.
pub fn hint(err: &ProviderError, cx: HintContext<'_>) -> Option<String> {
    entry(err).map(|e| {
        e.explain(Context {
            connection: Some(cx.connection),
            redirect_uri: cx.redirect_uri,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(error: &str, code: u32) -> ProviderError {
        ProviderError::new(400, error, Some(format!("AADSTS{code}: something")), vec![])
    }

    #[test]
    fn catalogue() {
        let cx = HintContext {
            connection: "contoso",
            redirect_uri: Some("http://localhost:53123"),
        };
        let h = hint(&ms("invalid_request", 50011), cx).unwrap();
        assert!(h.contains("`http://localhost:53123`"), "{h}");
        assert!(
            hint(&ms("invalid_client", 7000215), cx)
                .unwrap()
                .contains("Value")
        );
        assert!(
            hint(&ms("invalid_client", 7000222), cx)
                .unwrap()
                .contains("expired")
        );
        assert!(
            hint(&ms("invalid_grant", 65001), cx)
                .unwrap()
                .contains("consent")
        );
        assert!(
            hint(&ms("invalid_grant", 50076), cx)
                .unwrap()
                .contains("ulti-factor")
        );
        for code in [70000, 70008, 700082, 50173] {
            assert!(
                hint(&ms("invalid_grant", code), cx)
                    .unwrap()
                    .contains("authorize contoso"),
                "{code}"
            );
        }
        let declined = ProviderError::new(
            400,
            "access_denied",
            Some("AADSTS70000: declined".into()),
            vec![],
        );
        assert!(hint(&declined, cx).unwrap().contains("declined"));
        // Unknown AADSTS code: falls back to the `error` field.
        assert!(
            hint(&ms("invalid_grant", 1), cx)
                .unwrap()
                .contains("authorize contoso")
        );
        let google = ProviderError::new(
            400,
            "invalid_grant",
            Some("Token has been expired or revoked.".into()),
            vec![],
        );
        assert!(hint(&google, cx).is_some());
        assert!(hint(&ProviderError::new(400, "weird", None, vec![]), cx).is_none());
    }
}
