//! The Microsoft Entra tenant a connection signs in against.

use std::fmt;
use std::str::FromStr;

/// `common`, `organizations`, `consumers`, a directory GUID, or a verified domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    Common,
    Organizations,
    Consumers,
    /// A directory (tenant) ID, stored lowercase.
    Id(String),
    /// A verified domain such as `contoso.onmicrosoft.com`, stored lowercase.
    Domain(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error(
        "a tenant cannot be empty: use `organizations`, `common`, `consumers`, the Directory (tenant) ID or a verified domain"
    )]
    Empty,
    #[error(
        "tenant `{0}` is neither `common`, `organizations`, `consumers`, a Directory (tenant) ID \
         (a GUID like 8a3f...-....) nor a domain name: copy it from Azure portal > Microsoft Entra ID > Overview"
    )]
    Invalid(String),
}

impl Tenant {
    pub fn parse(s: &str) -> Result<Self, TenantError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(TenantError::Empty);
        }
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "common" => return Ok(Tenant::Common),
            "organizations" => return Ok(Tenant::Organizations),
            "consumers" => return Ok(Tenant::Consumers),
            _ => {}
        }
        if is_guid(&lower) {
            return Ok(Tenant::Id(lower));
        }
        if lower.contains('.')
            && super::host::Host::parse(&lower).is_ok()
            && lower.parse::<std::net::IpAddr>().is_err()
        {
            return Ok(Tenant::Domain(lower));
        }
        Err(TenantError::Invalid(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Tenant::Common => "common",
            Tenant::Organizations => "organizations",
            Tenant::Consumers => "consumers",
            Tenant::Id(s) | Tenant::Domain(s) => s,
        }
    }

    /// App-only (client credentials) tokens must name one directory.
    pub fn is_specific(&self) -> bool {
        matches!(self, Tenant::Id(_) | Tenant::Domain(_))
    }
}

/// 8-4-4-4-12 hex digits.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl FromStr for Tenant {
    type Err = TenantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Application (client) ID of the app registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    #[error(
        "a client id cannot be empty: copy the Application (client) ID from Azure portal > App registrations > your app > Overview"
    )]
    Empty,
    #[error("client id `{0}` contains spaces or control characters")]
    Invalid(String),
    #[error(
        "client id `{0}` is not a GUID: Microsoft's Application (client) ID looks like \
         1b2c3d4e-0000-1111-2222-333344445555 (App registrations > your app > Overview); \
         did you paste the client secret or its Secret ID instead?"
    )]
    NotGuid(String),
}

impl ClientId {
    /// Any provider: a non-empty token without spaces (Google's ids end in `.apps.googleusercontent.com`).
    pub fn parse(s: &str) -> Result<Self, ClientIdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ClientIdError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) || s.len() > 256 {
            return Err(ClientIdError::Invalid(s.escape_debug().to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// Microsoft: must be a GUID.
    pub fn parse_microsoft(s: &str) -> Result<Self, ClientIdError> {
        let id = Self::parse(s)?;
        if !is_guid(&id.0.to_ascii_lowercase()) {
            return Err(ClientIdError::NotGuid(id.0));
        }
        Ok(Self(id.0.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        assert_eq!(
            Tenant::parse("Organizations").unwrap(),
            Tenant::Organizations
        );
        assert_eq!(Tenant::parse("COMMON").unwrap().as_str(), "common");
        assert_eq!(Tenant::parse("consumers").unwrap(), Tenant::Consumers);
        let guid = "8A3F0C1E-1234-4BCD-9ABC-0123456789AB";
        assert_eq!(
            Tenant::parse(guid).unwrap(),
            Tenant::Id(guid.to_ascii_lowercase())
        );
        assert_eq!(
            Tenant::parse("Contoso.onmicrosoft.com").unwrap(),
            Tenant::Domain("contoso.onmicrosoft.com".into())
        );
        assert!(Tenant::parse("contoso.com").unwrap().is_specific());
        assert!(!Tenant::Organizations.is_specific());
        for bad in [
            "",
            "contoso",
            "8a3f0c1e-1234",
            "https://login.microsoftonline.com/x",
            "10.0.0.1",
        ] {
            assert!(Tenant::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Tenant::parse("contoso")
                .unwrap_err()
                .to_string()
                .contains("Directory (tenant) ID")
        );
    }

    #[test]
    fn client_ids() {
        let g = "1B2C3D4E-0000-1111-2222-333344445555";
        assert_eq!(
            ClientId::parse_microsoft(g).unwrap().as_str(),
            g.to_ascii_lowercase()
        );
        let err = ClientId::parse_microsoft("Abc8Q~secretvalue")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a GUID") && err.contains("client secret"),
            "{err}"
        );
        assert!(ClientId::parse("123.apps.googleusercontent.com").is_ok());
        assert!(matches!(ClientId::parse(" "), Err(ClientIdError::Empty)));
        assert!(matches!(
            ClientId::parse("a b"),
            Err(ClientIdError::Invalid(_))
        ));
    }
}
