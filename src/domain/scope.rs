//! OAuth scopes, and the scope mistakes that vendor guides teach.

use std::fmt;

use super::provider::{OAuthFlow, Provider};

pub const MS_SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
pub const MS_APP_ONLY_SCOPE: &str = "https://outlook.office365.com/.default";
/// Microsoft 365 GCC High and DoD (US Government cloud).
pub const MS_US_GOV_SMTP_SCOPE: &str = "https://outlook.office365.us/SMTP.Send";
pub const MS_US_GOV_APP_ONLY_SCOPE: &str = "https://outlook.office365.us/.default";
/// Microsoft 365 operated by 21Vianet (China).
pub const MS_CHINA_SMTP_SCOPE: &str = "https://partner.outlook.cn/SMTP.Send";
pub const MS_CHINA_APP_ONLY_SCOPE: &str = "https://partner.outlook.cn/.default";

/// Microsoft Graph in every cloud: SMTP refuses a token for any of them.
const GRAPH_RESOURCES: [&str; 4] = [
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

/// The Exchange Online (Outlook) resource of every cloud, to tell a scope of another cloud.
const OUTLOOK_RESOURCES: [&str; 5] = [
    "https://outlook.office.com",
    "https://outlook.office365.com",
    "https://outlook.office365.us",
    "https://outlook-dod.office365.us",
    "https://partner.outlook.cn",
];
/// Microsoft Graph, delegated: send as the signed-in mailbox (add `Mail.Send.Shared` for a shared one).
pub const GRAPH_DELEGATED_SCOPE: &str = "https://graph.microsoft.com/Mail.Send offline_access";
/// Microsoft Graph, app-only: the application permissions granted to the app (Mail.Send).
pub const GRAPH_APP_ONLY_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";
/// The prefix of Gmail API scopes (`gmail.send`, `gmail.compose`, …): Gmail's SMTP server
/// refuses their tokens, only [`GOOGLE_SCOPE`] opens SMTP.
const GMAIL_API_SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/gmail.";
pub const OFFLINE_ACCESS: &str = "offline_access";

/// A space-separated list of scopes, deduplicated, order kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeList(Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("the scope list is empty: for Microsoft 365 use `{MS_SMTP_SCOPE} {OFFLINE_ACCESS}`")]
    Empty,
    #[error(
        "scope `{scope}` is a Microsoft Graph scope: SMTP only accepts tokens for the Outlook resource, \
         and a Graph token is rejected with `535 5.7.3 Authentication unsuccessful`. \
         Use `{fix} {OFFLINE_ACCESS}` (and grant the delegated SMTP.Send permission of \
         Office 365 Exchange Online)"
    )]
    Graph { scope: String, fix: &'static str },
    #[error(
        "scope `{scope}` has no resource, so Microsoft reads it as a Graph scope and SMTP rejects the token: \
         write it in full as `{fix}`"
    )]
    BareSmtpSend { scope: String, fix: &'static str },
    #[error(
        "scope `{scope}` belongs to another Microsoft cloud than the provider `{provider}`: its sign-in \
         service issues no token for that resource. Use `{fix}`, or pick the provider of the cloud \
         the tenant lives in"
    )]
    WrongCloud {
        scope: String,
        provider: &'static str,
        fix: &'static str,
    },
    #[error(
        "scope `{0}` looks like a misspelling of `offline_access`: without the exact spelling no refresh token is issued"
    )]
    OfflineAccessTypo(String),
    #[error(
        "client-credentials (app-only) connections use the scope `{fix}`, not `{scope}`: \
         app-only tokens carry the permissions granted to the app, and have no refresh token"
    )]
    AppOnlyScope { scope: String, fix: &'static str },
    #[error(
        "Google does not know the scope `{0}`: use `{GOOGLE_SCOPE}` (Postern asks for offline access itself)"
    )]
    GoogleScope(String),
    #[error(
        "scope `{0}` is a Gmail API scope: Google rejects its tokens for SMTP (the AUTH fails with \
         `535 5.7.8`). SMTP needs the full-mailbox scope `{GOOGLE_SCOPE}`: use `--scope {GOOGLE_SCOPE}` \
         and add that scope to the OAuth consent screen (Google Cloud console > OAuth consent screen > \
         Data access)"
    )]
    GmailApiScope(String),
    #[error(
        "scope `{scope}` is an SMTP (Outlook resource) scope, but this connection sends through \
         Microsoft Graph, which refuses an Outlook token with 401. Use `{fix}` (and grant the \
         Microsoft Graph Mail.Send permission), or keep `--transport smtp`"
    )]
    SmtpScopeOnGraph { scope: String, fix: String },
    #[error(
        "scope `{scope}` is not a Microsoft Graph scope: a Graph connection asks for \
         `{fix}` (delegated), or `{graph}/.default` (app-only)"
    )]
    NotGraph {
        scope: String,
        fix: String,
        graph: &'static str,
    },
    #[error(
        "the Graph transport is Microsoft's: provider `{0}` has no Microsoft Graph; use `--transport smtp`"
    )]
    GraphNotOffered(&'static str),
    #[error("scope `{0}` contains a control character or quote")]
    BadCharacter(String),
}

/// Something Postern changed on the admin's behalf, to be shown to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeNotice(pub String);

impl ScopeList {
    /// Splits on spaces and commas; no provider rules (see [`ScopeList::check`]).
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let mut out: Vec<String> = Vec::new();
        for part in s.split([' ', ',', '\t']).filter(|p| !p.is_empty()) {
            if part
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                return Err(ScopeError::BadCharacter(part.escape_debug().to_string()));
            }
            if !out.iter().any(|o| o == part) {
                out.push(part.to_string());
            }
        }
        if out.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == scope)
    }

    /// Applies the provider's rules; may add `offline_access` (returned as a notice).
    pub fn check(
        mut self,
        provider: Provider,
        flow: OAuthFlow,
    ) -> Result<(Self, Vec<ScopeNotice>), ScopeError> {
        let mut notices = Vec::new();
        match provider {
            Provider::Microsoft
            | Provider::Outlook
            | Provider::MicrosoftUsGov
            | Provider::MicrosoftChina => {
                let smtp_scope = provider.smtp_scope().unwrap_or(MS_SMTP_SCOPE);
                let own = provider.outlook_resources();
                for s in &self.0 {
                    let lower = s.to_ascii_lowercase();
                    if GRAPH_RESOURCES.iter().any(|g| lower.starts_with(g)) || lower == "mail.send"
                    {
                        return Err(ScopeError::Graph {
                            scope: s.clone(),
                            fix: smtp_scope,
                        });
                    }
                    if lower == "smtp.send" {
                        return Err(ScopeError::BareSmtpSend {
                            scope: s.clone(),
                            fix: smtp_scope,
                        });
                    }
                    let resource = OUTLOOK_RESOURCES.iter().find(|r| {
                        lower
                            .strip_prefix(*r)
                            .is_some_and(|rest| rest.starts_with('/'))
                    });
                    if resource.is_some_and(|r| !own.contains(r)) {
                        let fix = match flow {
                            OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount => provider
                                .preset()
                                .app_only_scope
                                .unwrap_or(MS_APP_ONLY_SCOPE),
                            OAuthFlow::AuthorizationCode => smtp_scope,
                        };
                        return Err(ScopeError::WrongCloud {
                            scope: s.clone(),
                            provider: provider.as_str(),
                            fix,
                        });
                    }
                }
                reject_offline_access_typos(&self)?;
                match flow {
                    OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount => {
                        if let Some(bad) = self
                            .0
                            .iter()
                            .find(|s| !s.to_ascii_lowercase().ends_with("/.default"))
                        {
                            return Err(ScopeError::AppOnlyScope {
                                scope: bad.clone(),
                                fix: provider
                                    .preset()
                                    .app_only_scope
                                    .unwrap_or(MS_APP_ONLY_SCOPE),
                            });
                        }
                    }
                    OAuthFlow::AuthorizationCode => {
                        if !self.contains(OFFLINE_ACCESS) {
                            self.0.push(OFFLINE_ACCESS.to_string());
                            notices.push(ScopeNotice(format!(
                                "added `{OFFLINE_ACCESS}` to the scope: without it Microsoft issues no refresh token"
                            )));
                        }
                    }
                }
            }
            Provider::Google => {
                reject_offline_access_typos(&self)?;
                if let Some(bad) = self.0.iter().find(|s| s.as_str() != GOOGLE_SCOPE) {
                    if is_gmail_api_scope(bad) {
                        return Err(ScopeError::GmailApiScope(bad.clone()));
                    }
                    return Err(ScopeError::GoogleScope(bad.clone()));
                }
            }
            Provider::Custom => reject_offline_access_typos(&self)?,
        }
        Ok((self, notices))
    }
}

/// `gmail.send`, `https://www.googleapis.com/auth/gmail.send` and their siblings (any case).
pub fn is_gmail_api_scope(scope: &str) -> bool {
    let lower = scope.to_ascii_lowercase();
    lower.starts_with(GMAIL_API_SCOPE_PREFIX)
        || lower.strip_prefix("gmail.").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        })
}

/// Whether a scope list asks for Gmail (SMTP or API): Google's device flow refuses these.
pub fn has_gmail_scope(scopes: &ScopeList) -> Option<&str> {
    scopes.iter().find(|s| {
        s.eq_ignore_ascii_case(GOOGLE_SCOPE)
            || s.eq_ignore_ascii_case(GOOGLE_SCOPE.trim_end_matches('/'))
            || is_gmail_api_scope(s)
    })
}

/// Scopes Graph connections ask for besides their resource's: refresh and sign-in.
const GRAPH_EXTRA_SCOPES: [&str; 4] = [OFFLINE_ACCESS, "openid", "profile", "email"];

impl ScopeList {
    /// The rules for a connection that sends through Microsoft Graph: only Graph scopes (any
    /// cloud's resource is refused when it is not the provider's), `{graph}/.default` for app-only,
    /// and `offline_access` added for delegated connections.
    pub fn check_graph(
        mut self,
        provider: Provider,
        flow: OAuthFlow,
    ) -> Result<(Self, Vec<ScopeNotice>), ScopeError> {
        let Some(graph) = provider.graph_resource() else {
            return Err(ScopeError::GraphNotOffered(provider.as_str()));
        };
        reject_offline_access_typos(&self)?;
        let fix = format!("{graph}/Mail.Send {OFFLINE_ACCESS}");
        let own = format!("{graph}/").to_ascii_lowercase();
        for s in &self.0 {
            let lower = s.to_ascii_lowercase();
            if GRAPH_EXTRA_SCOPES.contains(&s.as_str()) {
                continue;
            }
            if OUTLOOK_RESOURCES.iter().any(|r| lower.starts_with(r)) || lower == "smtp.send" {
                return Err(ScopeError::SmtpScopeOnGraph {
                    scope: s.clone(),
                    fix,
                });
            }
            if !lower.starts_with(&own) {
                return Err(ScopeError::NotGraph {
                    scope: s.clone(),
                    fix,
                    graph,
                });
            }
        }
        let mut notices = Vec::new();
        match flow {
            OAuthFlow::ClientCredentials => {
                let app_only = format!("{graph}/.default");
                if let Some(bad) = self.0.iter().find(|s| !s.eq_ignore_ascii_case(&app_only)) {
                    return Err(ScopeError::AppOnlyScope {
                        scope: bad.clone(),
                        fix: provider
                            .graph_app_only_scope()
                            .unwrap_or(GRAPH_APP_ONLY_SCOPE),
                    });
                }
            }
            OAuthFlow::AuthorizationCode => {
                if !self.contains(OFFLINE_ACCESS) {
                    self.0.push(OFFLINE_ACCESS.to_string());
                    notices.push(ScopeNotice(format!(
                        "added `{OFFLINE_ACCESS}` to the scope: without it Microsoft issues no refresh token"
                    )));
                }
            }
            // Service accounts are Google's, which has no Graph: refused above.
            OAuthFlow::ServiceAccount => {}
        }
        Ok((self, notices))
    }
}

fn reject_offline_access_typos(list: &ScopeList) -> Result<(), ScopeError> {
    match list
        .0
        .iter()
        .find(|s| s.as_str() != OFFLINE_ACCESS && is_offline_access_typo(s))
    {
        Some(typo) => Err(ScopeError::OfflineAccessTypo(typo.clone())),
        None => Ok(()),
    }
}

/// Within two edits of `offline_access` once case, `-` and spaces are ignored.
fn is_offline_access_typo(s: &str) -> bool {
    let norm: String = s
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .collect();
    norm != "offlineaccess" && edit_distance(&norm, "offlineaccess") <= 2
        || (norm == "offlineaccess" && s != OFFLINE_ACCESS)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl fmt::Display for ScopeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        s: &str,
        p: Provider,
        f: OAuthFlow,
    ) -> Result<(ScopeList, Vec<ScopeNotice>), ScopeError> {
        ScopeList::parse(s)?.check(p, f)
    }

    #[test]
    fn microsoft_delegated() {
        let (s, n) = check(
            MS_SMTP_SCOPE,
            Provider::Microsoft,
            OAuthFlow::AuthorizationCode,
        )
        .unwrap();
        assert_eq!(s.to_string(), format!("{MS_SMTP_SCOPE} offline_access"));
        assert!(n[0].0.contains("refresh token"));
        let (s, n) = check(
            "https://outlook.office.com/SMTP.Send offline_access",
            Provider::Microsoft,
            OAuthFlow::AuthorizationCode,
        )
        .unwrap();
        assert_eq!(s.iter().count(), 2);
        assert!(n.is_empty());
    }

    #[test]
    fn the_vendor_guide_mistakes_are_rejected_with_the_fix() {
        let cases = [
            (
                "https://graph.microsoft.com/SMTP.Send offline_access",
                "Graph",
            ),
            (
                "https://graph.microsoft.com/mail.send offline_access",
                "Graph",
            ),
            ("SMTP.Send offline_access", "no resource"),
            (
                "https://outlook.office.com/SMTP.Send offiline_access",
                "misspelling",
            ),
            (
                "https://outlook.office.com/SMTP.Send offline-access",
                "misspelling",
            ),
            (
                "https://outlook.office.com/SMTP.Send Offline_Access",
                "misspelling",
            ),
        ];
        for (input, msg) in cases {
            let err = check(input, Provider::Microsoft, OAuthFlow::AuthorizationCode)
                .unwrap_err()
                .to_string();
            assert!(err.contains(msg), "{input}: {err}");
            if msg == "Graph" {
                assert!(
                    err.contains(MS_SMTP_SCOPE) && err.contains("535 5.7.3"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn app_only_and_google() {
        assert!(
            check(
                MS_APP_ONLY_SCOPE,
                Provider::Microsoft,
                OAuthFlow::ClientCredentials
            )
            .is_ok()
        );
        let err = check(
            MS_SMTP_SCOPE,
            Provider::Microsoft,
            OAuthFlow::ClientCredentials,
        )
        .unwrap_err();
        assert!(matches!(err, ScopeError::AppOnlyScope { .. }));
        assert!(check(GOOGLE_SCOPE, Provider::Google, OAuthFlow::AuthorizationCode).is_ok());
        assert!(matches!(
            check(
                "https://mail.google.com/ offline_access",
                Provider::Google,
                OAuthFlow::AuthorizationCode
            ),
            Err(ScopeError::GoogleScope(_))
        ));
        assert!(matches!(ScopeList::parse("  "), Err(ScopeError::Empty)));
    }

    #[test]
    fn gmail_api_scopes_are_refused_for_smtp_with_the_right_scope_named() {
        for bad in [
            "https://www.googleapis.com/auth/gmail.send",
            "https://www.googleapis.com/auth/gmail.compose",
            "https://www.googleapis.com/auth/GMAIL.MODIFY",
            "gmail.send",
        ] {
            let err = check(bad, Provider::Google, OAuthFlow::AuthorizationCode).unwrap_err();
            assert_eq!(err, ScopeError::GmailApiScope(bad.into()));
            let msg = err.to_string();
            assert!(msg.contains("rejects its tokens for SMTP"), "{msg}");
            assert!(msg.contains("--scope https://mail.google.com/"), "{msg}");
        }
        // Other mistakes keep the general message.
        assert!(matches!(
            check("email", Provider::Google, OAuthFlow::AuthorizationCode),
            Err(ScopeError::GoogleScope(_))
        ));
        let gmail = ScopeList::parse("openid https://mail.google.com/").unwrap();
        assert_eq!(has_gmail_scope(&gmail), Some(GOOGLE_SCOPE));
        let send = ScopeList::parse("https://www.googleapis.com/auth/gmail.send").unwrap();
        assert!(has_gmail_scope(&send).is_some());
        assert!(has_gmail_scope(&ScopeList::parse(MS_SMTP_SCOPE).unwrap()).is_none());
        assert_eq!(ScopeList::parse("a,b a").unwrap().to_string(), "a b");
    }

    #[test]
    fn national_clouds_get_the_same_checks_with_their_own_scopes() {
        let clouds = [
            (
                Provider::MicrosoftUsGov,
                MS_US_GOV_SMTP_SCOPE,
                MS_US_GOV_APP_ONLY_SCOPE,
                "https://graph.microsoft.us/Mail.Send",
            ),
            (
                Provider::MicrosoftChina,
                MS_CHINA_SMTP_SCOPE,
                MS_CHINA_APP_ONLY_SCOPE,
                "https://microsoftgraph.chinacloudapi.cn/Mail.Send",
            ),
        ];
        for (p, smtp, app_only, own_graph) in clouds {
            // offline_access is added, as for Microsoft 365.
            let (s, n) = check(smtp, p, OAuthFlow::AuthorizationCode).unwrap();
            assert_eq!(s.to_string(), format!("{smtp} offline_access"));
            assert!(n[0].0.contains("refresh token"));
            assert!(check(app_only, p, OAuthFlow::ClientCredentials).is_ok());

            // A Graph scope of any cloud is refused, with this cloud's SMTP scope as the fix.
            for graph in [own_graph, "https://graph.microsoft.com/SMTP.Send"] {
                let err = check(graph, p, OAuthFlow::AuthorizationCode).unwrap_err();
                assert!(matches!(err, ScopeError::Graph { .. }), "{p}: {err}");
                let text = err.to_string();
                assert!(text.contains(smtp) && text.contains("535 5.7.3"), "{text}");
                assert!(!text.contains(MS_SMTP_SCOPE), "{text}");
            }
            let err = check("SMTP.Send", p, OAuthFlow::AuthorizationCode).unwrap_err();
            assert!(err.to_string().contains(smtp), "{err}");
            let err = check(smtp, p, OAuthFlow::ClientCredentials).unwrap_err();
            assert!(err.to_string().contains(app_only), "{err}");
            let err = check(
                &format!("{smtp} offline-access"),
                p,
                OAuthFlow::AuthorizationCode,
            )
            .unwrap_err();
            assert!(matches!(err, ScopeError::OfflineAccessTypo(_)));

            // The worldwide scope does not work in a national cloud, and the reverse.
            let err = check(MS_SMTP_SCOPE, p, OAuthFlow::AuthorizationCode).unwrap_err();
            assert!(matches!(err, ScopeError::WrongCloud { .. }), "{err}");
            assert!(err.to_string().contains(smtp), "{err}");
            let err = check(MS_APP_ONLY_SCOPE, p, OAuthFlow::ClientCredentials).unwrap_err();
            assert!(err.to_string().contains(app_only), "{err}");
            let err = check(smtp, Provider::Microsoft, OAuthFlow::AuthorizationCode).unwrap_err();
            assert!(err.to_string().contains(MS_SMTP_SCOPE), "{err}");
        }
        // A DoD tenant may name its own Exchange resource.
        assert!(
            check(
                "https://outlook-dod.office365.us/.default",
                Provider::MicrosoftUsGov,
                OAuthFlow::ClientCredentials
            )
            .is_ok()
        );
    }
}
