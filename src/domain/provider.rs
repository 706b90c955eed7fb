//! Provider presets and OAuth flows.

use std::fmt;
use std::str::FromStr;

use super::TlsMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Microsoft 365 work or school accounts.
    Microsoft,
    /// Outlook.com personal accounts.
    Outlook,
    Google,
    /// Everything explicit.
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "provider `{0}` is not known: use microsoft (Microsoft 365), outlook (Outlook.com personal), google or custom"
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
}

const MS_AUTHORIZE: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize";
const MS_TOKEN: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
const MS_DEVICE: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode";

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Microsoft => "microsoft",
            Provider::Outlook => "outlook",
            Provider::Google => "google",
            Provider::Custom => "custom",
        }
    }

    pub fn is_microsoft(self) -> bool {
        matches!(self, Provider::Microsoft | Provider::Outlook)
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
            },
            Provider::Outlook => Preset {
                host: Some("smtp-mail.outlook.com"),
                tenant: Some("consumers"),
                app_only_scope: None,
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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "flow `{0}` is not known: use authorization-code (delegated, with consent) or client-credentials (app-only)"
)]
pub struct FlowError(String);

impl OAuthFlow {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthFlow::AuthorizationCode => "authorization-code",
            OAuthFlow::ClientCredentials => "client-credentials",
        }
    }
}

impl FromStr for OAuthFlow {
    type Err = FlowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "authorization-code" | "auth-code" | "delegated" => Ok(OAuthFlow::AuthorizationCode),
            "client-credentials" | "app-only" => Ok(OAuthFlow::ClientCredentials),
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
        assert!("implicit".parse::<OAuthFlow>().is_err());
        assert_eq!(
            Provider::Outlook.preset().host,
            Some("smtp-mail.outlook.com")
        );
        assert_eq!(Provider::Outlook.preset().tenant, Some("consumers"));
    }
}
