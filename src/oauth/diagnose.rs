//! What an admin should do about a provider error: a catalogue of the common AADSTS codes and
//! OAuth `error` values, each with the fix in Postern's own terms.

use super::error::ProviderError;

/// What the hint may mention.
#[derive(Debug, Clone, Copy)]
pub struct HintContext<'a> {
    /// The connection's name, for commands to run.
    pub connection: &'a str,
    /// The redirect URI that was sent, exactly (50011: the value to register).
    pub redirect_uri: Option<&'a str>,
}

/// A sentence or two on how to fix `err`, if Postern knows the case.
pub fn hint(err: &ProviderError, cx: HintContext<'_>) -> Option<String> {
    let name = cx.connection;
    let reauthorize = format!("run `postern connection authorize {name}` to sign in again");
    let edit_secret = format!("`postern connection edit {name} --client-secret-file FILE`");
    // These `error` values say more than the AADSTS code that comes with them.
    if matches!(
        err.error.as_str(),
        "access_denied" | "authorization_declined" | "expired_token"
    ) {
        return by_error(err, name, &reauthorize);
    }
    if let Some(code) = err.aadsts() {
        let text = match code {
            50011 | 500112 | 500113 => match cx.redirect_uri {
                Some(uri) => format!(
                    "the redirect URI is not registered on the app. In Entra: App registrations > your app > \
                     Authentication > Add a platform (Mobile and desktop applications), add exactly `{uri}` \
                     (for http://localhost Entra ignores the port)"
                ),
                None => "the redirect URI is not registered on the app: add the connection's redirect URI \
                         under App registrations > Authentication"
                    .to_string(),
            },
            7000215 => format!(
                "the client secret is wrong: use the secret's Value (shown once when created), not its \
                 Secret ID; store it with {edit_secret}"
            ),
            7000222 => format!(
                "the client secret has expired: create a new one under Certificates & secrets, then \
                 {edit_secret}"
            ),
            7000218 => format!(
                "the app is a confidential client and no client secret is stored: {edit_secret}, or enable \
                 'Allow public client flows' on the app"
            ),
            65001 => "consent is missing: in Entra, API permissions > add the delegated permission SMTP.Send \
                      (Office 365 Exchange Online) and offline_access, then 'Grant admin consent'"
                .to_string(),
            65004 => format!("the user declined consent: {reauthorize} and accept"),
            50076 | 50079 => format!(
                "multi-factor authentication is required: {reauthorize} interactively and complete MFA"
            ),
            53003 => "a Conditional Access policy blocked the sign-in: ask the tenant admin to allow it"
                .to_string(),
            70000 | 70008 | 700082 | 50173 | 54005 | 9002313 => {
                format!("the stored refresh token (or code) is no longer valid: {reauthorize}")
            }
            700016 => format!(
                "the application (client) id is not known in this tenant: check --client-id and --tenant \
                 with `postern connection edit {name}`"
            ),
            90002 | 900023 => format!("the tenant is not known: check --tenant with `postern connection edit {name}`"),
            50059 => format!(
                "client credentials need a specific tenant (its GUID or domain), not common/organizations: \
                 `postern connection edit {name} --tenant ...`"
            ),
            1002012 => "app-only (client credentials) tokens need the scope \
                        `https://outlook.office365.com/.default` (GCC High/DoD: \
                        `https://outlook.office365.us/.default`; 21Vianet: \
                        `https://partner.outlook.cn/.default`)"
                .to_string(),
            28000 => "the scope mixes two resources (e.g. Graph and Outlook): use only \
                      `https://outlook.office.com/SMTP.Send offline_access` (GCC High/DoD: \
                      `https://outlook.office365.us/SMTP.Send offline_access`; 21Vianet: \
                      `https://partner.outlook.cn/SMTP.Send offline_access`)"
                .to_string(),
            _ => return by_error(err, name, &reauthorize),
        };
        return Some(text);
    }
    by_error(err, name, &reauthorize)
}

/// Hints by the OAuth `error` code, for providers without AADSTS codes (Google, custom).
fn by_error(err: &ProviderError, name: &str, reauthorize: &str) -> Option<String> {
    let text = match err.error.as_str() {
        "invalid_grant" => format!("the refresh token or code was refused: {reauthorize}"),
        "invalid_client" | "unauthorized_client" => format!(
            "the provider does not accept the client id or secret: check them with \
             `postern connection show {name}` and fix with `postern connection edit {name}`"
        ),
        "access_denied" | "authorization_declined" => {
            format!("the sign-in was declined: {reauthorize} and accept the consent screen")
        }
        "expired_token" => format!("the code expired before the sign-in finished: {reauthorize}"),
        "invalid_scope" => format!(
            "the provider refused the scope: check it with `postern connection show {name}`"
        ),
        "redirect_uri_mismatch" => {
            "the redirect URI is not registered on the app (Google: Credentials > \
                                    OAuth client > Authorized redirect URIs)"
                .to_string()
        }
        _ => return None,
    };
    Some(text)
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
                .contains("multi-factor")
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
