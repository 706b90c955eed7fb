//! Provider presets and OAuth flows.

use std::fmt;
use std::str::FromStr;

use super::{Limits, TlsMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Microsoft 365 work or school accounts.
    Microsoft,
    /// Outlook.com personal accounts.
    Outlook,
    /// Microsoft 365 GCC High and DoD (the US Government cloud: `login.microsoftonline.us`).
    MicrosoftUsGov,
    /// Microsoft 365 operated by 21Vianet (China: `login.chinacloudapi.cn`).
    MicrosoftChina,
    Google,
    /// Everything explicit.
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "provider `{0}` is not known: use microsoft (Microsoft 365, also GCC), microsoft-us-gov (Microsoft 365 GCC High \
     or DoD), microsoft-china (Microsoft 365 operated by 21Vianet), outlook (Outlook.com personal), google or custom"
)]
pub struct ProviderError(String);

/// The defaults a preset fills in.
#[derive(Debug, Clone)]
pub struct Preset {
    pub host: Option<&'static str>,
    pub port: u16,
    pub tls: TlsMode,
    pub tenant: Option<&'static str>,
    pub delegated_scope: Option<&'static str>,
    pub app_only_scope: Option<&'static str>,
    /// `{tenant}` is replaced by the connection's tenant.
    pub authorize_url: Option<&'static str>,
    pub token_url: Option<&'static str>,
    pub device_url: Option<&'static str>,
    /// Upstream connections per mailbox the provider tolerates.
    pub max_concurrent: u32,
    /// What the provider enforces per mailbox (0: nothing known).
    pub limits: Limits,
}

const MS_AUTHORIZE: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize";
const MS_TOKEN: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
const MS_DEVICE: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode";
// National clouds have their own sign-in service: a tenant exists in exactly one cloud.
const MS_US_GOV_AUTHORIZE: &str = "https://login.microsoftonline.us/{tenant}/oauth2/v2.0/authorize";
const MS_US_GOV_TOKEN: &str = "https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token";
const MS_US_GOV_DEVICE: &str = "https://login.microsoftonline.us/{tenant}/oauth2/v2.0/devicecode";
const MS_CHINA_AUTHORIZE: &str = "https://login.chinacloudapi.cn/{tenant}/oauth2/v2.0/authorize";
const MS_CHINA_TOKEN: &str = "https://login.chinacloudapi.cn/{tenant}/oauth2/v2.0/token";
const MS_CHINA_DEVICE: &str = "https://login.chinacloudapi.cn/{tenant}/oauth2/v2.0/devicecode";

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Microsoft => "microsoft",
            Provider::Outlook => "outlook",
            Provider::MicrosoftUsGov => "microsoft-us-gov",
            Provider::MicrosoftChina => "microsoft-china",
            Provider::Google => "google",
            Provider::Custom => "custom",
        }
    }

    pub fn is_microsoft(self) -> bool {
        matches!(
            self,
            Provider::Microsoft
                | Provider::Outlook
                | Provider::MicrosoftUsGov
                | Provider::MicrosoftChina
        )
    }

    /// The SMTP.Send scope of this provider's Microsoft cloud (none outside Microsoft).
    pub fn smtp_scope(self) -> Option<&'static str> {
        match self {
            Provider::Microsoft | Provider::Outlook => Some(super::scope::MS_SMTP_SCOPE),
            Provider::MicrosoftUsGov => Some(super::scope::MS_US_GOV_SMTP_SCOPE),
            Provider::MicrosoftChina => Some(super::scope::MS_CHINA_SMTP_SCOPE),
            Provider::Google | Provider::Custom => None,
        }
    }

    /// The Microsoft Graph resource of this provider's cloud (none outside Microsoft): the base
    /// URL of its Graph endpoint and the resource of its Graph scopes.
    pub fn graph_resource(self) -> Option<&'static str> {
        match self {
            Provider::Microsoft | Provider::Outlook => Some("https://graph.microsoft.com"),
            Provider::MicrosoftUsGov => Some("https://graph.microsoft.us"),
            Provider::MicrosoftChina => Some("https://microsoftgraph.chinacloudapi.cn"),
            Provider::Google | Provider::Custom => None,
        }
    }

    /// The default Graph scopes of this cloud: (delegated, app-only).
    pub fn graph_scopes(self) -> Option<(&'static str, &'static str)> {
        match self {
            Provider::Microsoft | Provider::Outlook => Some((
                super::scope::GRAPH_DELEGATED_SCOPE,
                super::scope::GRAPH_APP_ONLY_SCOPE,
            )),
            Provider::MicrosoftUsGov => Some((
                "https://graph.microsoft.us/Mail.Send offline_access",
                "https://graph.microsoft.us/.default",
            )),
            Provider::MicrosoftChina => Some((
                "https://microsoftgraph.chinacloudapi.cn/Mail.Send offline_access",
                "https://microsoftgraph.chinacloudapi.cn/.default",
            )),
            Provider::Google | Provider::Custom => None,
        }
    }

    pub fn graph_app_only_scope(self) -> Option<&'static str> {
        self.graph_scopes().map(|(_, a)| a)
    }

    /// The Exchange Online resources whose tokens this provider's sign-in service issues.
    pub(crate) fn outlook_resources(self) -> &'static [&'static str] {
        match self {
            Provider::Microsoft | Provider::Outlook => &[
                "https://outlook.office.com",
                "https://outlook.office365.com",
            ],
            // DoD tenants may name the resource `outlook-dod.office365.us`.
            Provider::MicrosoftUsGov => &[
                "https://outlook.office365.us",
                "https://outlook-dod.office365.us",
            ],
            Provider::MicrosoftChina => &["https://partner.outlook.cn"],
            Provider::Google | Provider::Custom => &[],
        }
    }

    pub fn preset(self) -> Preset {
        match self {
            Provider::Microsoft => Preset {
                host: Some("smtp.office365.com"),
                port: 587,
                tls: TlsMode::Starttls,
                tenant: Some("organizations"),
                delegated_scope: Some("https://outlook.office.com/SMTP.Send offline_access"),
                app_only_scope: Some(super::scope::MS_APP_ONLY_SCOPE),
                authorize_url: Some(MS_AUTHORIZE),
                token_url: Some(MS_TOKEN),
                device_url: Some(MS_DEVICE),
                max_concurrent: 3,
                // Exchange Online's sending limits: 30 messages a minute, 10,000 recipients a
                // day (past it the mailbox is blocked for 24 h: `554 5.2.0 …
                // SubmissionQuotaExceeded`), 500 recipients per message.
                limits: Limits {
                    messages_per_minute: 30,
                    messages_per_day: 0,
                    recipients_per_day: 10_000,
                    recipients_per_message: 500,
                },
            },
            Provider::Outlook => Preset {
                host: Some("smtp-mail.outlook.com"),
                tenant: Some("consumers"),
                app_only_scope: None,
                ..Provider::Microsoft.preset()
            },
            Provider::MicrosoftUsGov => Preset {
                host: Some("smtp.office365.us"),
                delegated_scope: Some("https://outlook.office365.us/SMTP.Send offline_access"),
                app_only_scope: Some(super::scope::MS_US_GOV_APP_ONLY_SCOPE),
                authorize_url: Some(MS_US_GOV_AUTHORIZE),
                token_url: Some(MS_US_GOV_TOKEN),
                device_url: Some(MS_US_GOV_DEVICE),
                ..Provider::Microsoft.preset()
            },
            Provider::MicrosoftChina => Preset {
                host: Some("smtp.partner.outlook.cn"),
                delegated_scope: Some("https://partner.outlook.cn/SMTP.Send offline_access"),
                app_only_scope: Some(super::scope::MS_CHINA_APP_ONLY_SCOPE),
                authorize_url: Some(MS_CHINA_AUTHORIZE),
                token_url: Some(MS_CHINA_TOKEN),
                device_url: Some(MS_CHINA_DEVICE),
                ..Provider::Microsoft.preset()
            },
            Provider::Google => Preset {
                host: Some("smtp.gmail.com"),
                port: 587,
                tls: TlsMode::Starttls,
                tenant: None,
                delegated_scope: Some(super::scope::GOOGLE_SCOPE),
                app_only_scope: None,
                authorize_url: Some("https://accounts.google.com/o/oauth2/v2/auth"),
                token_url: Some("https://oauth2.googleapis.com/token"),
                device_url: Some("https://oauth2.googleapis.com/device/code"),
                max_concurrent: 3,
                // Google Workspace: 2,000 messages a day per user, 100 recipients per message
                // sent over SMTP.
                limits: Limits {
                    messages_per_minute: 0,
                    messages_per_day: 2_000,
                    recipients_per_day: 0,
                    recipients_per_message: 100,
                },
            },
            Provider::Custom => Preset {
                host: None,
                port: 587,
                tls: TlsMode::Starttls,
                tenant: None,
                delegated_scope: None,
                app_only_scope: None,
                authorize_url: None,
                token_url: None,
                device_url: None,
                max_concurrent: 3,
                limits: Limits::default(),
            },
        }
    }
}

impl FromStr for Provider {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "microsoft" | "m365" | "office365" | "microsoft365" => Ok(Provider::Microsoft),
            "outlook" | "outlook.com" => Ok(Provider::Outlook),
            "microsoft-us-gov" | "us-gov" | "usgov" | "gcc-high" | "gcchigh" | "dod" => {
                Ok(Provider::MicrosoftUsGov)
            }
            "microsoft-china" | "china" | "21vianet" => Ok(Provider::MicrosoftChina),
            "google" | "gmail" => Ok(Provider::Google),
            "custom" => Ok(Provider::Custom),
            _ => Err(ProviderError(s.to_string())),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the connection obtains tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthFlow {
    /// Delegated: an admin consents once, Postern keeps the refresh token.
    AuthorizationCode,
    /// App-only: the app's own credentials, no consent and no refresh token.
    ClientCredentials,
    /// Google Workspace app-only: a service account with domain-wide delegation signs a JWT
    /// impersonating the mailbox (RFC 7523); its JSON key is stored sealed, like a secret.
    ServiceAccount,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "flow `{0}` is not known: use authorization-code (delegated, with consent), client-credentials \
     (app-only, Microsoft) or service-account (app-only, Google Workspace)"
)]
pub struct FlowError(String);

impl OAuthFlow {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthFlow::AuthorizationCode => "authorization-code",
            OAuthFlow::ClientCredentials => "client-credentials",
            OAuthFlow::ServiceAccount => "service-account",
        }
    }

    /// App-only flows: no sign-in and no refresh token; a token is requested whenever one is due.
    pub fn is_app_only(self) -> bool {
        matches!(
            self,
            OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount
        )
    }
}

impl FromStr for OAuthFlow {
    type Err = FlowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "authorization-code" | "auth-code" | "delegated" => Ok(OAuthFlow::AuthorizationCode),
            "client-credentials" | "app-only" => Ok(OAuthFlow::ClientCredentials),
            "service-account" | "jwt-bearer" => Ok(OAuthFlow::ServiceAccount),
            _ => Err(FlowError(s.to_string())),
        }
    }
}

impl fmt::Display for OAuthFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        assert_eq!("Microsoft".parse::<Provider>(), Ok(Provider::Microsoft));
        assert_eq!("gmail".parse::<Provider>(), Ok(Provider::Google));
        assert!(
            "yahoo"
                .parse::<Provider>()
                .unwrap_err()
                .to_string()
                .contains("microsoft")
        );
        assert_eq!(
            "client_credentials".parse::<OAuthFlow>(),
            Ok(OAuthFlow::ClientCredentials)
        );
        assert_eq!(
            "service_account".parse::<OAuthFlow>(),
            Ok(OAuthFlow::ServiceAccount)
        );
        assert!(OAuthFlow::ServiceAccount.is_app_only());
        assert!("implicit".parse::<OAuthFlow>().is_err());
        assert_eq!(
            Provider::Outlook.preset().host,
            Some("smtp-mail.outlook.com")
        );
        assert_eq!(Provider::Outlook.preset().tenant, Some("consumers"));
    }

    const ALL: [Provider; 6] = [
        Provider::Microsoft,
        Provider::Outlook,
        Provider::MicrosoftUsGov,
        Provider::MicrosoftChina,
        Provider::Google,
        Provider::Custom,
    ];

    #[test]
    fn display_parses_back_and_the_error_lists_every_provider() {
        let err = "yahoo".parse::<Provider>().unwrap_err().to_string();
        for p in ALL {
            assert_eq!(p.to_string().parse::<Provider>(), Ok(p));
            assert!(err.contains(p.as_str()), "{err} lacks {p}");
        }
        assert_eq!("GCC-High".parse(), Ok(Provider::MicrosoftUsGov));
        assert_eq!("dod".parse(), Ok(Provider::MicrosoftUsGov));
        assert_eq!("21Vianet".parse(), Ok(Provider::MicrosoftChina));
    }

    #[test]
    fn national_cloud_presets_use_their_own_hosts() {
        let us = Provider::MicrosoftUsGov.preset();
        assert!(Provider::MicrosoftUsGov.is_microsoft());
        assert_eq!(us.host, Some("smtp.office365.us"));
        assert_eq!((us.port, us.tls), (587, TlsMode::Starttls));
        assert_eq!(
            us.delegated_scope,
            Some("https://outlook.office365.us/SMTP.Send offline_access")
        );
        assert_eq!(
            us.app_only_scope,
            Some("https://outlook.office365.us/.default")
        );
        assert_eq!(
            us.token_url,
            Some("https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token")
        );
        assert!(
            us.authorize_url
                .unwrap()
                .starts_with("https://login.microsoftonline.us/")
        );
        assert!(
            us.device_url
                .unwrap()
                .starts_with("https://login.microsoftonline.us/")
        );

        let cn = Provider::MicrosoftChina.preset();
        assert!(Provider::MicrosoftChina.is_microsoft());
        assert_eq!(cn.host, Some("smtp.partner.outlook.cn"));
        assert_eq!(
            cn.delegated_scope,
            Some("https://partner.outlook.cn/SMTP.Send offline_access")
        );
        assert_eq!(
            cn.app_only_scope,
            Some("https://partner.outlook.cn/.default")
        );
        assert_eq!(
            cn.token_url,
            Some("https://login.chinacloudapi.cn/{tenant}/oauth2/v2.0/token")
        );
        assert!(
            cn.authorize_url
                .unwrap()
                .starts_with("https://login.chinacloudapi.cn/")
        );
        assert!(
            cn.device_url
                .unwrap()
                .starts_with("https://login.chinacloudapi.cn/")
        );

        // The delegated preset is the cloud's SMTP scope plus offline_access.
        for p in ALL.into_iter().filter(|p| p.is_microsoft()) {
            let preset = p.preset();
            assert_eq!(
                preset.delegated_scope.unwrap(),
                format!("{} offline_access", p.smtp_scope().unwrap())
            );
        }
    }
}
