//! Turning what an admin typed (CLI flags, a web form, JSON) into [`ConnectionSettings`].
//!
//! Every front end fills a [`ConnectionInput`] with raw strings and calls [`ConnectionInput::validate`],
//! so the CLI, the API and the web form give the same explanations.

use std::fmt;
use std::path::PathBuf;

use super::connection::ConnectionSettings;
use super::scope::ScopeNotice;
use super::{
    ClientId, ConnectionName, EmailAddress, Fallback, GraphLarge, Host, LimitOverrides, OAuthFlow,
    Port, Provider, RedirectUri, ScopeList, Tenant, TlsMode, Transport, parse_graph_url,
};

/// Raw field values; `None` means "not given" (keep the current value, or use the preset).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionInput {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub provider: Option<String>,
    pub flow: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub tls: Option<String>,
    pub domain: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub redirect_uri: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub ca_file: Option<String>,
    pub enabled: Option<bool>,
    pub max_concurrent: Option<String>,
    /// Overrides of the provider's sending limits, `name=N,…` (see [`LimitOverrides::parse`]).
    pub limits: Option<String>,
    /// `smtp` (default) or `graph`.
    pub transport: Option<String>,
    /// The Microsoft Graph base URL (Graph connections; default: the provider cloud's Graph).
    pub graph_url: Option<String>,
    /// `graph` (SMTP connections to Microsoft: deliver through Graph when SMTP AUTH answers
    /// `535 5.7.139`) or `none`.
    pub fallback: Option<String>,
    /// `fail` (default) or `draft`: Graph messages over 4 MB.
    pub graph_large: Option<String>,
}

/// One field that is wrong, named as the admin knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// All the fields that are wrong, so a form can mark each of them at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub fn single(field: &'static str, message: impl Into<String>) -> Self {
        Self(vec![FieldError {
            field,
            message: message.into(),
        }])
    }
}

struct Collector(Vec<FieldError>);

impl Collector {
    fn field<T, E: fmt::Display>(&mut self, field: &'static str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| {
            self.0.push(FieldError {
                field,
                message: e.to_string(),
            })
        })
        .ok()
    }
}

/// Microsoft Graph's concurrency limit: 4 requests in flight per app and mailbox.
pub const GRAPH_MAX_IN_FLIGHT: u32 = 4;

fn blank_to_none(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not an absolute URL ({e})"))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!("`{s}` must be an http or https URL"));
    }
    Ok(u)
}

impl ConnectionInput {
    /// The input that reproduces `s` (used as the base of an edit).
    pub fn from_settings(s: &ConnectionSettings) -> Self {
        Self {
            name: Some(s.name.to_string()),
            display_name: s.display_name.clone(),
            provider: Some(s.provider.to_string()),
            flow: Some(s.flow.to_string()),
            host: Some(s.host.to_string()),
            port: Some(s.port.to_string()),
            tls: Some(s.tls.to_string()),
            domain: Some(s.domain.to_string()),
            user: Some(s.user.to_string()),
            tenant: s.tenant.as_ref().map(ToString::to_string),
            client_id: Some(s.client_id.to_string()),
            scope: Some(s.scopes.to_string()),
            redirect_uri: s.redirect_uri.as_ref().map(ToString::to_string),
            authorize_url: s.authorize_url.as_ref().map(ToString::to_string),
            token_url: s.token_url.as_ref().map(ToString::to_string),
            device_url: s.device_url.as_ref().map(ToString::to_string),
            ca_file: s.ca_file.as_ref().map(|p| p.display().to_string()),
            enabled: Some(s.enabled),
            max_concurrent: Some(s.max_concurrent.to_string()),
            limits: Some(s.limits.to_string()),
            transport: Some(s.transport.to_string()),
            graph_url: s.graph_url.as_ref().map(ToString::to_string),
            fallback: s.fallback.map(|f| f.to_string()),
            graph_large: Some(s.graph_large.to_string()),
        }
    }

    /// Fields set in `changes` replace those here (an empty string clears an optional field).
    pub fn overlay(mut self, changes: ConnectionInput) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if changes.$f.is_some() { self.$f = changes.$f; } )* };
        }
        take!(
            name,
            display_name,
            provider,
            flow,
            host,
            port,
            tls,
            domain,
            user,
            tenant,
            client_id,
            scope,
            redirect_uri,
            authorize_url,
            token_url,
            device_url,
            ca_file,
            enabled,
            max_concurrent,
            limits,
            transport,
            graph_url,
            fallback,
            graph_large
        );
        self
    }

    /// Applies the provider preset and checks every field; reports all errors together.
    pub fn validate(&self) -> Result<(ConnectionSettings, Vec<ScopeNotice>), ValidationErrors> {
        let mut c = Collector(Vec::new());
        let name = match blank_to_none(&self.name) {
            Some(n) => c.field("name", ConnectionName::parse(n)),
            None => c.field("name", Err("a connection needs a name")),
        };
        let provider = match blank_to_none(&self.provider) {
            Some(p) => c.field("provider", p.parse::<Provider>()),
            None => c.field(
                "provider",
                Err("choose a provider: microsoft, outlook, google or custom"),
            ),
        };
        let flow = c
            .field(
                "flow",
                blank_to_none(&self.flow).map_or(Ok(OAuthFlow::AuthorizationCode), str::parse),
            )
            .unwrap_or(OAuthFlow::AuthorizationCode);
        let provider = provider.unwrap_or(Provider::Custom);
        let preset = provider.preset();

        let display_name = blank_to_none(&self.display_name).map(str::to_string);
        if let Some(d) = &display_name
            && (d.chars().any(char::is_control) || d.chars().count() > 100)
        {
            c.0.push(FieldError {
                field: "display_name",
                message: "a display name is at most 100 characters, without line breaks".into(),
            });
        }
        let host = match blank_to_none(&self.host).or(preset.host) {
            Some(h) => c.field("host", Host::parse(h)),
            None => c.field(
                "host",
                Err("the custom provider needs the SMTP server's host (--host)"),
            ),
        };
        let tls = c
            .field(
                "tls",
                blank_to_none(&self.tls).map_or(Ok(preset.tls), str::parse::<TlsMode>),
            )
            .unwrap_or(TlsMode::Starttls);
        let default_port = if tls == TlsMode::Implicit && blank_to_none(&self.tls).is_some() {
            465
        } else {
            preset.port
        };
        let port = c.field(
            "port",
            blank_to_none(&self.port).map_or(Port::new(default_port), str::parse),
        );
        let user = match blank_to_none(&self.user) {
            Some(u) => c.field("user", EmailAddress::parse(u)),
            None => c.field(
                "user",
                Err("the mailbox's e-mail address (User Name) is required"),
            ),
        };
        let domain = match (blank_to_none(&self.domain), &user) {
            (Some(d), _) => c.field("domain", Host::parse(d)),
            (None, Some(u)) => Host::parse(u.domain()).ok(),
            (None, None) => None,
        };
        let tenant = match blank_to_none(&self.tenant).or(preset.tenant) {
            Some(t) if provider.is_microsoft() || provider == Provider::Custom => {
                c.field("tenant", Tenant::parse(t))
            }
            Some(_) => None,
            None => None,
        };
        if flow == OAuthFlow::ClientCredentials {
            if provider.is_microsoft() && !tenant.as_ref().is_some_and(Tenant::is_specific) {
                c.0.push(FieldError {
                    field: "tenant",
                    message: "client-credentials (app-only) connections need the Directory (tenant) ID or a verified domain, not `organizations`/`common`/`consumers`".into(),
                });
            }
            if provider == Provider::Google {
                c.0.push(FieldError { field: "flow", message: "Google has no client-credentials grant: for app-only sending in Google Workspace use --flow service-account with --service-account-key FILE (a service account with domain-wide delegation)".into() });
            } else if provider == Provider::Outlook {
                c.0.push(FieldError { field: "flow", message: format!("{provider} does not offer client-credentials for SMTP: use authorization-code") });
            }
        }
        if flow == OAuthFlow::ServiceAccount && provider != Provider::Google {
            c.0.push(FieldError {
                field: "flow",
                message: format!(
                    "service-account (a Google service account with domain-wide delegation) is for the google provider, not {provider}{}",
                    if provider.is_microsoft() { ": Microsoft's app-only flow is client-credentials" } else { "" }
                ),
            });
        }
        let client_id = match blank_to_none(&self.client_id) {
            Some(id) if provider.is_microsoft() => c.field("client_id", ClientId::parse_microsoft(id)),
            Some(id) => c.field("client_id", ClientId::parse(id)),
            None => c.field("client_id", Err("the Application (client) ID is required (Azure portal > App registrations > your app > Overview)")),
        };
        let transport = c
            .field(
                "transport",
                blank_to_none(&self.transport).map_or(Ok(Transport::Smtp), str::parse),
            )
            .unwrap_or_default();
        if transport == Transport::Graph && provider.graph_resource().is_none() {
            c.0.push(FieldError {
                field: "transport",
                message: super::ScopeError::GraphNotOffered(provider.as_str()).to_string(),
            });
        }
        let graph_url =
            blank_to_none(&self.graph_url).and_then(|u| c.field("graph_url", parse_graph_url(u)));
        let fallback = c
            .field(
                "fallback",
                Fallback::parse_option(self.fallback.as_deref().unwrap_or("")),
            )
            .flatten();
        if fallback == Some(Fallback::Graph) {
            if transport == Transport::Graph {
                c.0.push(FieldError {
                    field: "fallback",
                    message: "a Graph connection already delivers through Microsoft Graph: the Graph \
                              fallback is for SMTP connections (--transport smtp); use --fallback none"
                        .into(),
                });
            } else if provider.graph_resource().is_none() {
                c.0.push(FieldError {
                    field: "fallback",
                    message: format!(
                        "{provider} has no Microsoft Graph to fall back to: the Graph fallback is for \
                         Microsoft 365 SMTP connections (--provider microsoft) whose tenant may switch \
                         SMTP AUTH off (535 5.7.139); use --fallback none"
                    ),
                });
            } else if flow == OAuthFlow::ServiceAccount {
                c.0.push(FieldError {
                    field: "fallback",
                    message:
                        "a Google service account has no Microsoft Graph token: use --fallback none"
                            .into(),
                });
            }
        }
        let graph_large = blank_to_none(&self.graph_large)
            .and_then(|v| c.field("graph_large", v.parse::<GraphLarge>()))
            .unwrap_or_default();
        if graph_large == GraphLarge::Draft
            && transport != Transport::Graph
            && fallback != Some(Fallback::Graph)
        {
            c.0.push(FieldError {
                field: "graph_large",
                message:
                    "`draft` is how Microsoft Graph sends a message over its 4 MB limit; this \
                          connection does not use Graph (neither --transport graph nor --fallback \
                          graph): use --graph-large fail"
                        .into(),
            });
        }
        let default_scope = match (transport, flow) {
            // A service account asks for the same Gmail scope a person consents to.
            (Transport::Smtp, OAuthFlow::AuthorizationCode | OAuthFlow::ServiceAccount) => {
                preset.delegated_scope
            }
            (Transport::Smtp, OAuthFlow::ClientCredentials) => preset.app_only_scope,
            (Transport::Graph, OAuthFlow::AuthorizationCode | OAuthFlow::ServiceAccount) => {
                provider.graph_scopes().map(|(d, _)| d)
            }
            (Transport::Graph, OAuthFlow::ClientCredentials) => {
                provider.graph_scopes().map(|(_, a)| a)
            }
        };
        let mut notices = Vec::new();
        let scopes = match blank_to_none(&self.scope).or(default_scope) {
            Some(s) => c
                .field(
                    "scope",
                    ScopeList::parse(s).and_then(|l| match transport {
                        Transport::Smtp => l.check(provider, flow),
                        Transport::Graph => l.check_graph(provider, flow),
                    }),
                )
                .map(|(l, n)| {
                    notices = n;
                    l
                }),
            None => c.field("scope", Err("the custom provider needs --scope")),
        };
        let redirect_uri = match blank_to_none(&self.redirect_uri) {
            Some(r) => c.field("redirect_uri", RedirectUri::parse(r)),
            None if flow == OAuthFlow::AuthorizationCode => {
                RedirectUri::parse("http://localhost").ok()
            }
            None => None,
        };
        let mut endpoint =
            |field, v: &Option<String>| blank_to_none(v).and_then(|u| c.field(field, parse_url(u)));
        let authorize_url = endpoint("authorize_url", &self.authorize_url);
        let token_url = endpoint("token_url", &self.token_url);
        let device_url = endpoint("device_url", &self.device_url);
        if provider == Provider::Custom && token_url.is_none() {
            c.0.push(FieldError {
                field: "token_url",
                message: "the custom provider needs --token-url".into(),
            });
        }
        let ca_file = blank_to_none(&self.ca_file).map(PathBuf::from);
        if let Some(p) = &ca_file
            && !p.is_file()
        {
            c.0.push(FieldError {
                field: "ca_file",
                message: format!("CA file `{}` does not exist or is not a file", p.display()),
            });
        }
        let max_concurrent = match blank_to_none(&self.max_concurrent) {
            Some(m) => c.field(
                "max_concurrent",
                m.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or("use a number from 1 to 100"),
            ),
            None if transport == Transport::Graph => Some(GRAPH_MAX_IN_FLIGHT),
            None => Some(preset.max_concurrent),
        };
        if transport == Transport::Graph
            && let Some(n) = max_concurrent
            && n > GRAPH_MAX_IN_FLIGHT
        {
            c.0.push(FieldError {
                field: "max_concurrent",
                message: format!(
                    "Microsoft Graph allows {GRAPH_MAX_IN_FLIGHT} requests in flight per app and mailbox \
                     (more are refused with 429): use at most {GRAPH_MAX_IN_FLIGHT}"
                ),
            });
        }
        let limits = c
            .field(
                "limits",
                LimitOverrides::parse(self.limits.as_deref().unwrap_or("")),
            )
            .unwrap_or_default();

        if !c.0.is_empty() {
            return Err(ValidationErrors(c.0));
        }
        // Every `None` below has pushed an error above.
        let (
            Some(name),
            Some(host),
            Some(port),
            Some(user),
            Some(domain),
            Some(client_id),
            Some(scopes),
            Some(max_concurrent),
        ) = (
            name,
            host,
            port,
            user,
            domain,
            client_id,
            scopes,
            max_concurrent,
        )
        else {
            return Err(ValidationErrors::single(
                "connection",
                "incomplete connection",
            ));
        };
        Ok((
            ConnectionSettings {
                name,
                display_name,
                provider,
                flow,
                host,
                port,
                tls,
                domain,
                user,
                tenant,
                client_id,
                scopes,
                redirect_uri,
                authorize_url,
                token_url,
                device_url,
                ca_file,
                enabled: self.enabled.unwrap_or(true),
                max_concurrent,
                limits,
                transport,
                graph_url,
                fallback,
                graph_large,
            },
            notices,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "1b2c3d4e-0000-1111-2222-333344445555";

    fn ms() -> ConnectionInput {
        ConnectionInput {
            name: Some("contoso".into()),
            provider: Some("microsoft".into()),
            user: Some("ops@contoso.com".into()),
            client_id: Some(GUID.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_graph_connection_takes_graph_scopes_and_refuses_the_smtp_one() {
        let graph = |scope: Option<&str>, flow: Option<&str>| ConnectionInput {
            transport: Some("graph".into()),
            scope: scope.map(Into::into),
            flow: flow.map(Into::into),
            tenant: Some(GUID.into()),
            ..ms()
        };
        let (s, _) = graph(None, None).validate().unwrap();
        assert_eq!(s.transport, Transport::Graph);
        assert_eq!(
            s.scopes.to_string(),
            "https://graph.microsoft.com/Mail.Send offline_access"
        );
        assert_eq!(s.graph_base().as_str(), "https://graph.microsoft.com/");
        assert_eq!(s.max_concurrent, GRAPH_MAX_IN_FLIGHT);
        let (s, _) = graph(None, Some("client-credentials")).validate().unwrap();
        assert_eq!(s.scopes.to_string(), "https://graph.microsoft.com/.default");
        let (s, notices) = graph(
            Some("https://graph.microsoft.com/Mail.Send https://graph.microsoft.com/Mail.Send.Shared"),
            None,
        )
        .validate()
        .unwrap();
        assert!(s.scopes.contains("offline_access") && notices.len() == 1);
        // The SMTP scope on a Graph connection: refused, with the Graph scope as the fix.
        let err = graph(
            Some("https://outlook.office.com/SMTP.Send offline_access"),
            None,
        )
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("scope: ")
                && err.contains("https://graph.microsoft.com/Mail.Send offline_access"),
            "{err}"
        );
        // And today's refusal of a Graph scope on an SMTP connection stays.
        let err = ConnectionInput {
            scope: Some("https://graph.microsoft.com/Mail.Send".into()),
            ..ms()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("535 5.7.3"), "{err}");
        // Graph allows 4 requests in flight per app and mailbox.
        let err = ConnectionInput {
            max_concurrent: Some("5".into()),
            ..graph(None, None)
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("max_concurrent") && err.contains("at most 4"),
            "{err}"
        );
        // Google has no Graph.
        let err = ConnectionInput {
            provider: Some("google".into()),
            client_id: Some("42.apps.googleusercontent.com".into()),
            ..graph(None, None)
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--transport smtp"), "{err}");
        let err = ConnectionInput {
            graph_url: Some("http://graph.microsoft.com".into()),
            ..graph(None, None)
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("graph_url") && err.contains("https"), "{err}");
    }

    #[test]
    fn graph_large_draft_is_for_connections_that_use_graph() {
        let graph = || ConnectionInput {
            transport: Some("graph".into()),
            tenant: Some(GUID.into()),
            ..ms()
        };
        let draft = |i: ConnectionInput| ConnectionInput {
            graph_large: Some("draft".into()),
            ..i
        };
        let (s, _) = ms().validate().unwrap();
        assert_eq!(s.graph_large, GraphLarge::Fail, "the default");
        let (s, _) = draft(graph()).validate().unwrap();
        assert_eq!(s.graph_large, GraphLarge::Draft);
        let (s, _) = draft(ConnectionInput {
            fallback: Some("graph".into()),
            ..ms()
        })
        .validate()
        .unwrap();
        assert_eq!(s.graph_large, GraphLarge::Draft);
        let err = draft(ms()).validate().unwrap_err();
        assert_eq!(err.0[0].field, "graph_large");
        assert!(err.to_string().contains("--graph-large fail"), "{err}");
        let err = ConnectionInput {
            graph_large: Some("chunk".into()),
            ..graph()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("graph_large `chunk`"), "{err}");
    }

    #[test]
    fn the_graph_fallback_is_for_microsoft_smtp_connections_only() {
        let with = |i: ConnectionInput| ConnectionInput {
            fallback: Some("graph".into()),
            ..i
        };
        // An SMTP scope list plus the fallback: fine, delegated or app-only.
        let (s, _) = with(ms()).validate().unwrap();
        assert_eq!(s.fallback, Some(Fallback::Graph));
        assert_eq!(
            s.scopes.to_string(),
            "https://outlook.office.com/SMTP.Send offline_access"
        );
        assert!(s.uses_graph());
        let (s, _) = with(ConnectionInput {
            flow: Some("client-credentials".into()),
            tenant: Some(GUID.into()),
            ..ms()
        })
        .validate()
        .unwrap();
        assert_eq!(s.fallback, Some(Fallback::Graph));
        // Refused on a Graph connection, on Google and on custom, each with its reason.
        let err = with(ConnectionInput {
            transport: Some("graph".into()),
            ..ms()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.0[0].field, "fallback");
        assert!(err.0[0].message.contains("SMTP connections"), "{err}");
        let err = with(ConnectionInput {
            provider: Some("google".into()),
            client_id: Some("42.apps.googleusercontent.com".into()),
            ..ms()
        })
        .validate()
        .unwrap_err();
        assert_eq!(err.0[0].field, "fallback");
        assert!(err.0[0].message.contains("no Microsoft Graph"), "{err}");
        let err = with(ConnectionInput {
            provider: Some("custom".into()),
            host: Some("smtp.example.org".into()),
            token_url: Some("https://idp.example.org/token".into()),
            scope: Some("smtp".into()),
            ..ms()
        })
        .validate()
        .unwrap_err();
        assert!(err.0.iter().any(|e| e.field == "fallback"), "{err}");
        let err = ConnectionInput {
            fallback: Some("smtp".into()),
            ..ms()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("fallback `smtp`"), "{err}");
        // An edit turns it off with `none`, and keeps it when not named.
        let (s, _) = with(ms()).validate().unwrap();
        let kept = ConnectionInput::from_settings(&s)
            .overlay(ConnectionInput {
                port: Some("465".into()),
                ..Default::default()
            })
            .validate()
            .unwrap()
            .0;
        assert_eq!(kept.fallback, Some(Fallback::Graph));
        let off = ConnectionInput::from_settings(&s)
            .overlay(ConnectionInput {
                fallback: Some("none".into()),
                ..Default::default()
            })
            .validate()
            .unwrap()
            .0;
        assert_eq!(off.fallback, None);
    }

    #[test]
    fn microsoft_preset_fills_the_vendor_form() {
        let (s, notices) = ms().validate().unwrap();
        assert_eq!(s.host.as_str(), "smtp.office365.com");
        assert_eq!(s.port.get(), 587);
        assert_eq!(s.tls, TlsMode::Starttls);
        assert_eq!(s.tenant, Some(Tenant::Organizations));
        assert_eq!(
            s.scopes.to_string(),
            "https://outlook.office.com/SMTP.Send offline_access"
        );
        assert_eq!(s.domain.as_str(), "contoso.com");
        assert_eq!(
            s.redirect_uri.as_ref().unwrap().as_str(),
            "http://localhost"
        );
        assert_eq!(
            s.token_endpoint().unwrap().as_str(),
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
        );
        assert_eq!(s.max_concurrent, 3);
        assert!(notices.is_empty());
    }

    #[test]
    fn presets_for_outlook_google_and_app_only() {
        let s = ConnectionInput {
            provider: Some("outlook".into()),
            ..ms()
        }
        .validate()
        .unwrap()
        .0;
        assert_eq!(
            (s.host.as_str(), s.tenant.unwrap()),
            ("smtp-mail.outlook.com", Tenant::Consumers)
        );
        let g = ConnectionInput {
            provider: Some("google".into()),
            client_id: Some("42.apps.googleusercontent.com".into()),
            ..ms()
        };
        let s = g.validate().unwrap().0;
        assert_eq!(
            (s.host.as_str(), s.scopes.to_string()),
            ("smtp.gmail.com", "https://mail.google.com/".to_string())
        );
        assert_eq!(
            s.token_endpoint().unwrap().as_str(),
            "https://oauth2.googleapis.com/token"
        );
        let app = ConnectionInput {
            flow: Some("client-credentials".into()),
            tenant: Some("contoso.onmicrosoft.com".into()),
            ..ms()
        };
        let s = app.validate().unwrap().0;
        assert_eq!(
            s.scopes.to_string(),
            "https://outlook.office365.com/.default"
        );
        let err = ConnectionInput {
            flow: Some("client-credentials".into()),
            ..ms()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.0[0].field, "tenant");
    }

    #[test]
    fn every_wrong_field_is_reported_at_once() {
        let bad = ConnectionInput {
            name: Some("Bad Name".into()),
            user: Some("not-an-email".into()),
            client_id: Some("secret~value".into()),
            scope: Some("https://graph.microsoft.com/SMTP.Send offline_access".into()),
            port: Some("99999".into()),
            ..ms()
        };
        let err = bad.validate().unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "port", "user", "client_id", "scope"]);
        assert!(
            err.to_string()
                .contains("https://outlook.office.com/SMTP.Send"),
            "{err}"
        );
    }

    #[test]
    fn missing_offline_access_is_added_and_said() {
        let i = ConnectionInput {
            scope: Some("https://outlook.office.com/SMTP.Send".into()),
            ..ms()
        };
        let (s, n) = i.validate().unwrap();
        assert!(s.scopes.contains("offline_access"));
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn edit_overlays_changes_on_the_stored_values() {
        let (s, _) = ms().validate().unwrap();
        let edited = ConnectionInput::from_settings(&s)
            .overlay(ConnectionInput {
                port: Some("465".into()),
                tls: Some("implicit".into()),
                ..Default::default()
            })
            .validate()
            .unwrap()
            .0;
        assert_eq!((edited.port.get(), edited.tls), (465, TlsMode::Implicit));
        assert_eq!(edited.user, s.user);
    }

    #[test]
    fn custom_needs_host_and_token_url() {
        let i = ConnectionInput {
            provider: Some("custom".into()),
            scope: Some("x".into()),
            ..ms()
        };
        let fields: Vec<_> = i
            .validate()
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["host", "token_url"]);
    }
}
