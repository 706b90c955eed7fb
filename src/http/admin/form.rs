//! The connection form's fields, in the order admins know from the vendor guides, each with one
//! line of help saying where the value comes from.

use crate::domain::{ConnectionInput, Provider, ValidationErrors};

/// One input of a form, rendered by `_field.html`.
#[derive(Debug, Clone)]
pub struct FormField {
    pub name: &'static str,
    pub label: &'static str,
    /// `text`, `email`, `number`, `password`, `url`, `checkbox` or `select`.
    pub kind: &'static str,
    pub value: String,
    pub help: String,
    pub error: Option<String>,
    pub required: bool,
    pub placeholder: String,
    pub autocomplete: &'static str,
    /// For `select`: (value, label).
    pub options: Vec<(String, String)>,
}

impl FormField {
    fn new(
        name: &'static str,
        label: &'static str,
        kind: &'static str,
        value: Option<&str>,
    ) -> Self {
        FormField {
            name,
            label,
            kind,
            value: value.unwrap_or_default().to_string(),
            help: String::new(),
            error: None,
            required: false,
            placeholder: String::new(),
            autocomplete: "off",
            options: Vec::new(),
        }
    }

    fn help(mut self, h: impl Into<String>) -> Self {
        self.help = h.into();
        self
    }

    fn required(mut self) -> Self {
        self.required = true;
        self
    }

    fn placeholder(mut self, p: impl Into<String>) -> Self {
        self.placeholder = p.into();
        self
    }

    fn options(mut self, o: &[(&str, &str)]) -> Self {
        self.options = o
            .iter()
            .map(|(v, l)| (v.to_string(), l.to_string()))
            .collect();
        self
    }
}

/// The providers, as the selector shows them.
pub const PROVIDERS: &[(&str, &str)] = &[
    ("microsoft", "Microsoft 365 (work or school)"),
    (
        "microsoft-us-gov",
        "Microsoft 365 GCC High / DoD (US Government)",
    ),
    (
        "microsoft-china",
        "Microsoft 365 operated by 21Vianet (China)",
    ),
    ("outlook", "Outlook.com (personal)"),
    ("google", "Google Workspace / Gmail"),
    ("custom", "Other (custom endpoints)"),
];

pub fn provider_label(p: &str) -> &'static str {
    PROVIDERS
        .iter()
        .find(|(v, _)| *v == p)
        .map(|(_, l)| *l)
        .unwrap_or("Other (custom endpoints)")
}

/// A new connection's values: the provider's preset, and the redirect URI Connect will use.
pub fn preset_input(provider: Provider, callback_uri: &str) -> ConnectionInput {
    let p = provider.preset();
    ConnectionInput {
        provider: Some(provider.to_string()),
        host: p.host.map(str::to_string),
        port: Some(p.port.to_string()),
        tls: Some(p.tls.to_string()),
        tenant: p.tenant.map(str::to_string),
        scope: p.delegated_scope.map(str::to_string),
        redirect_uri: Some(callback_uri.to_string()),
        enabled: Some(true),
        ..Default::default()
    }
}

/// Which secrets are already stored (for the placeholders of an edit form).
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretsSet {
    pub client_secret: bool,
    pub refresh_token: bool,
}

/// The client secret's expiry date, kept beside the connection rather than in its settings.
pub fn secret_expires_field(value: Option<&str>, errors: Option<&ValidationErrors>) -> FormField {
    let mut f = FormField::new("secret_expires", "Secret expires on", "date", value).help(
        "The date Azure shows beside the secret (Certificates & secrets › Expires): Postern warns 30, 7 and 1 days before. Empty to clear.",
    );
    f.error = errors.and_then(|e| {
        e.0.iter()
            .find(|x| x.field == "secret_expires")
            .map(|x| x.message.clone())
    });
    f
}

/// The main fields and the advanced ones, with `errors` placed on their fields.
pub fn fields(
    v: &ConnectionInput,
    errors: Option<&ValidationErrors>,
    secrets: SecretsSet,
) -> (Vec<FormField>, Vec<FormField>) {
    let provider: Provider = v
        .provider
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Provider::Microsoft);
    let ms = provider.is_microsoft();
    let google = provider == Provider::Google;
    let secret_placeholder = |set: bool| {
        if set {
            "stored: leave empty to keep it"
        } else {
            ""
        }
    };
    let mut main = vec![
        FormField::new("name", "Name", "text", v.name.as_deref())
            .required()
            .help("A short name for this connection: lowercase letters, digits and `-` (used in URLs and by relay users)."),
        FormField::new("display_name", "Display Name", "text", v.display_name.as_deref())
            .help("Optional: how the connection is shown in lists."),
        FormField::new("host", "Address", "text", v.host.as_deref())
            .help("The provider's SMTP server: smtp.office365.com (Microsoft 365), smtp-mail.outlook.com (Outlook.com), smtp.gmail.com (Gmail)."),
        FormField::new("port", "Port", "number", v.port.as_deref())
            .help("587 with STARTTLS (normal); 465 needs TLS mode `implicit` under Advanced."),
        FormField::new("domain", "Domain", "text", v.domain.as_deref())
            .help("The name Postern gives in EHLO; leave empty to use the mailbox's domain."),
        {
            let mut f = FormField::new("user", "User Name (e-mail)", "email", v.user.as_deref())
                .required()
                .help(if ms {
                    "The mailbox that sends, e.g. ops@contoso.com. It must have SMTP AUTH enabled (Exchange admin center › the mailbox › Email apps › Authenticated SMTP)."
                } else {
                    "The mailbox that sends, e.g. ops@example.com; you sign in as this user when you press Connect."
                });
            f.autocomplete = "email";
            f
        },
        FormField::new("tenant", "Tenant", "text", v.tenant.as_deref()).help(if google {
            "Not used by Google: leave empty."
        } else if ms {
            "Azure portal › App registrations › your app › Overview › Directory (tenant) ID; or `organizations` (any work account), `consumers` (Outlook.com)."
        } else {
            "Only if your provider's endpoints contain {tenant}."
        }),
        FormField::new("client_id", "Application (client) ID", "text", v.client_id.as_deref())
            .required()
            .help(if google {
                "Google Cloud console › APIs & Services › Credentials › your OAuth client › Client ID."
            } else {
                "Azure portal › App registrations › your app › Overview › Application (client) ID (a GUID)."
            }),
        FormField::new("client_secret", "Client Secret", "password", None)
            .placeholder(secret_placeholder(secrets.client_secret))
            .help(if google {
                "Google Cloud console › Google Auth Platform › Clients › your OAuth client › Client secret. For the flow 'Service account': paste the service account's whole JSON key file here."
            } else {
                "Azure portal › your app › Certificates & secrets › Client secrets › the Value column (not the Secret ID); Azure shows it only once."
            }),
        FormField::new("scope", "Scope", "text", v.scope.as_deref()).help(if google {
            "https://mail.google.com/ (the only scope Gmail SMTP accepts)."
        } else {
            "https://outlook.office.com/SMTP.Send offline_access — not a graph.microsoft.com scope: Graph tokens are rejected by SMTP."
        }),
        FormField::new("redirect_uri", "Redirect URI", "url", v.redirect_uri.as_deref())
            .help("Must match one registered on the app exactly (Authentication › Web › Redirect URIs). Connect uses the URI shown below."),
        FormField::new("refresh_token", "Refresh Token", "password", None)
            .placeholder(secret_placeholder(secrets.refresh_token))
            .help("Optional: leave empty, Connect obtains it. Paste one only when moving an existing connection."),
        FormField::new(
            "enabled",
            "Enabled",
            "checkbox",
            Some(if v.enabled.unwrap_or(true) { "true" } else { "false" }),
        )
        .help("When off, mail for this connection waits in the queue."),
    ];
    let mut advanced = vec![
        FormField::new("flow", "OAuth flow", "select", v.flow.as_deref().or(Some("authorization-code")))
            .options(&[
                ("authorization-code", "Authorization code (delegated: sign in as the mailbox)"),
                ("client-credentials", "Client credentials (app-only, Microsoft 365)"),
                ("service-account", "Service account (app-only, Google Workspace: paste the JSON key as the client secret)"),
            ])
            .help("Delegated (normal) needs SMTP.Send and offline_access; app-only needs the Exchange service principal set up by your admin."),
        FormField::new("transport", "Transport", "select", v.transport.as_deref().or(Some("smtp")))
            .options(&[
                ("smtp", "SMTP (AUTH XOAUTH2 to the SMTP server above)"),
                ("graph", "Microsoft Graph (sendMail over HTTPS, when SMTP AUTH is off)"),
            ])
            .help("Graph is for Microsoft 365 tenants that refuse SMTP AUTH (535 5.7.139). It needs the Microsoft Graph Mail.Send permission and Graph scopes: https://graph.microsoft.com/Mail.Send offline_access (delegated) or https://graph.microsoft.com/.default (app-only); leave Scope empty for these."),
        FormField::new("fallback", "Fallback", "select", v.fallback.as_deref().or(Some("none")))
            .options(&[
                ("none", "None"),
                ("graph", "Microsoft Graph when SMTP AUTH is off (535 5.7.139)"),
            ])
            .help("SMTP connections to Microsoft 365: when SMTP AUTH answers 535 5.7.139, deliver through Microsoft Graph with a Graph token from the same sign-in (add Microsoft Graph Mail.Send to the app registration and grant consent). Later messages go straight to Graph for an hour."),
        FormField::new("graph_large", "Graph: messages over 4 MB", "select", v.graph_large.as_deref().or(Some("fail")))
            .options(&[
                ("fail", "Fail with the reason (default)"),
                ("draft", "Send as a draft plus attachment uploads (needs Mail.ReadWrite)"),
            ])
            .help("Graph refuses requests over 4 MB. Draft creates the message as a draft, uploads its large attachments in chunks, then sends it; it needs the Microsoft Graph Mail.ReadWrite permission as well as Mail.Send. Never truncated either way."),
        FormField::new("graph_url", "Graph endpoint", "url", v.graph_url.as_deref())
            .help("Leave empty for the provider's Graph (https://graph.microsoft.com; national clouds have their own); set for tests."),
        FormField::new("tls", "TLS mode", "select", v.tls.as_deref().or(Some("starttls")))
            .options(&[("starttls", "STARTTLS (port 587)"), ("implicit", "Implicit TLS (port 465)")])
            .help("How Postern secures the SMTP connection; it never falls back to cleartext."),
        FormField::new("authorize_url", "Authorize endpoint", "url", v.authorize_url.as_deref())
            .help("Leave empty for the provider's default; set for sovereign clouds or tests."),
        FormField::new("token_url", "Token endpoint", "url", v.token_url.as_deref())
            .help("Leave empty for the provider's default; required for a custom provider."),
        FormField::new("device_url", "Device-code endpoint", "url", v.device_url.as_deref())
            .help("Leave empty for the provider's default."),
        FormField::new("ca_file", "CA file", "text", v.ca_file.as_deref())
            .help("A PEM file on the server to trust for this SMTP server (private CAs); normally empty."),
        FormField::new("max_concurrent", "Connections at once", "number", v.max_concurrent.as_deref())
            .help("Upstream SMTP connections for this mailbox; Microsoft allows 3."),
        FormField::new("limits", "Sending limits", "text", v.limits.as_deref())
            .help("Empty: the provider's limits (Microsoft 365: 30 messages/min, 10,000 recipients/day, 500 per message; Google: 2,000 messages/day, 100 recipients per message). Override as messages-per-minute=N, messages-per-day=N, recipients-per-day=N, recipients-per-message=N (0: none)."),
    ];
    if let Some(errors) = errors {
        for e in &errors.0 {
            if let Some(f) = main
                .iter_mut()
                .chain(advanced.iter_mut())
                .find(|f| f.name == e.field)
            {
                f.error = Some(e.message.clone());
            }
        }
    }
    (main, advanced)
}
