//! Connection pages: the form (new and edit), the connection page, removal.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;

use super::form::{self, FormField, PROVIDERS, SecretsSet};
use super::{Flash, Layout, PageError, render};
use crate::domain::{ConnectionInput, ConnectionView, OAuthFlow, Provider, ValidationErrors};
use crate::http::AppState;
use crate::http::api::connections::save_secrets;
use crate::http::auth::{AdminSession, CsrfForm};
use crate::http::base_url::callback_uri;

#[derive(Template)]
#[template(path = "connection_form.html")]
struct FormPage {
    layout: Layout,
    is_new: bool,
    action: String,
    cancel: String,
    provider: String,
    provider_label: &'static str,
    providers: &'static [(&'static str, &'static str)],
    fields: Vec<FormField>,
    advanced: Vec<FormField>,
    errors: Vec<(String, String)>,
    callback_uri: String,
}

/// One step of a test send, as shown.
#[derive(Debug, Clone)]
pub struct StepView {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "connection.html")]
pub(super) struct ConnectionPage {
    pub layout: Layout,
    pub c: ConnectionView,
    pub status_label: &'static str,
    pub status_help: String,
    pub can_connect: bool,
    pub connect_label: &'static str,
    /// Said before the admin signs in (Google's 'Testing' publishing status).
    pub consent_warning: Option<&'static str>,
    pub callback_uri: String,
    pub test_to: String,
    pub steps: Vec<StepView>,
    /// Declared in postern.toml: shown read-only.
    pub managed_by_file: bool,
}

/// What the admin posted; secrets become `SecretString` before anything else sees them.
#[derive(Deserialize)]
pub struct ConnectionForm {
    name: Option<String>,
    display_name: Option<String>,
    provider: Option<String>,
    flow: Option<String>,
    host: Option<String>,
    port: Option<String>,
    tls: Option<String>,
    domain: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    refresh_token: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    device_url: Option<String>,
    ca_file: Option<String>,
    max_concurrent: Option<String>,
    limits: Option<String>,
    transport: Option<String>,
    graph_url: Option<String>,
    fallback: Option<String>,
    graph_large: Option<String>,
    enabled: Option<String>,
    secret_expires: Option<String>,
}

impl std::fmt::Debug for ConnectionForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionForm")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn non_empty_secret(v: &Option<String>) -> Option<SecretString> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_string()))
}

impl ConnectionForm {
    fn input(&self) -> ConnectionInput {
        ConnectionInput {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            provider: self.provider.clone(),
            flow: self.flow.clone(),
            host: self.host.clone(),
            port: self.port.clone(),
            tls: self.tls.clone(),
            domain: self.domain.clone(),
            user: self.user.clone(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            redirect_uri: self.redirect_uri.clone(),
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            device_url: self.device_url.clone(),
            ca_file: self.ca_file.clone(),
            // An unticked checkbox sends nothing.
            enabled: Some(self.enabled.as_deref() == Some("true")),
            max_concurrent: self.max_concurrent.clone(),
            limits: self.limits.clone(),
            transport: self.transport.clone(),
            graph_url: self.graph_url.clone(),
            fallback: self.fallback.clone(),
            graph_large: self.graph_large.clone(),
        }
    }

    /// The expiry date typed (`Some(None)` when emptied), or the field's error.
    fn secret_expiry(&self) -> Result<Option<Option<chrono::NaiveDate>>, ValidationErrors> {
        self.secret_expires
            .as_deref()
            .map(|t| {
                crate::domain::parse_expiry_date(t)
                    .map_err(|m| ValidationErrors::single("secret_expires", m))
            })
            .transpose()
    }

    /// Secrets given in the form; empty fields keep what is stored.
    fn secrets(&self) -> (Option<SecretString>, Option<SecretString>) {
        (
            non_empty_secret(&self.client_secret),
            non_empty_secret(&self.refresh_token),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    session: &AdminSession,
    parts: &Parts,
    state: &AppState,
    existing: Option<&str>,
    values: &ConnectionInput,
    errors: Option<&ValidationErrors>,
    secrets: SecretsSet,
    secret_expires: Option<&str>,
) -> Result<Response, PageError> {
    let provider = values
        .provider
        .clone()
        .unwrap_or_else(|| "microsoft".into());
    let (mut fields, advanced) = form::fields(values, errors, secrets);
    let at = fields
        .iter()
        .position(|f| f.name == "client_secret")
        .map_or(fields.len(), |i| i + 1);
    fields.insert(at, form::secret_expires_field(secret_expires, errors));
    let title = match existing {
        Some(name) => format!("Edit connection {name}"),
        None => "New connection".to_string(),
    };
    let mut layout = Layout::new(session, title, "dashboard");
    if errors.is_some() {
        layout = layout.flash(Some(Flash::info(
            "Secrets are never sent back to the browser: type the client secret again if you entered one.",
        )));
    }
    let page = FormPage {
        layout,
        is_new: existing.is_none(),
        action: match existing {
            Some(name) => format!("/admin/connections/{name}"),
            None => "/admin/connections".into(),
        },
        cancel: match existing {
            Some(name) => format!("/admin/connections/{name}"),
            None => "/admin".into(),
        },
        provider_label: form::provider_label(&provider),
        provider,
        providers: PROVIDERS,
        fields,
        advanced,
        errors: errors
            .map(|e| {
                e.0.iter()
                    .map(|f| (f.field.to_string(), f.message.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        callback_uri: callback_uri(parts, state, values.redirect_uri.as_deref()),
    };
    let status = if errors.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(status, &page)
}

#[derive(Debug, Deserialize)]
pub struct NewQuery {
    provider: Option<String>,
}

pub async fn new_form(
    session: AdminSession,
    State(state): State<AppState>,
    Query(q): Query<NewQuery>,
    parts: Parts,
) -> Result<Response, PageError> {
    let provider: Provider = q
        .provider
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Provider::Microsoft);
    let callback = callback_uri(&parts, &state, None);
    let values = form::preset_input(provider, &callback);
    form_page(
        &session,
        &parts,
        &state,
        None,
        &values,
        None,
        SecretsSet::default(),
        None,
    )
}

pub async fn create(
    State(state): State<AppState>,
    parts: Parts,
    CsrfForm { session, form }: CsrfForm<ConnectionForm>,
) -> Result<Response, PageError> {
    let input = form.input();
    let (settings, notices) = match form.secret_expiry().and(input.validate()).and_then(|ok| {
        crate::oauth::service_account::check_key_field(ok.0.flow, form.secrets().0.as_ref())?;
        Ok(ok)
    }) {
        Ok(ok) => ok,
        Err(errors) => {
            return form_page(
                &session,
                &parts,
                &state,
                None,
                &input,
                Some(&errors),
                SecretsSet::default(),
                form.secret_expires.as_deref(),
            );
        }
    };
    let store = state.store();
    let conn = match store.insert_connection(&settings).await {
        Ok(c) => c,
        Err(crate::store::StoreError::DuplicateConnection(n)) => {
            return form_page(
                &session,
                &parts,
                &state,
                None,
                &input,
                Some(&name_taken(&n)),
                SecretsSet::default(),
                form.secret_expires.as_deref(),
            );
        }
        Err(e) => return Err(e.into()),
    };
    saved(
        &state,
        &session,
        &form,
        &conn,
        notices.is_empty(),
        "created",
    )
    .await
}

/// The name field's error when another connection has the name.
fn name_taken(name: &str) -> ValidationErrors {
    ValidationErrors::single(
        "name",
        format!("a connection named `{name}` already exists: choose another name"),
    )
}

/// After the record is saved: the secrets typed into the form, a log line, and the connection's
/// page with a note (`created`/`saved`, `-adjusted` when the scopes were corrected).
async fn saved(
    state: &AppState,
    session: &AdminSession,
    form: &ConnectionForm,
    conn: &crate::domain::Connection,
    as_typed: bool,
    done: &str,
) -> Result<Response, PageError> {
    let (secret, refresh) = form.secrets();
    save_secrets(state.store(), conn.id, secret.as_ref(), refresh.as_ref()).await?;
    // Checked before anything was saved.
    if let Ok(Some(date)) = form.secret_expiry() {
        state.store().set_secret_expiry(conn.id, date).await?;
    }
    let what = if done == "created" {
        "created"
    } else {
        "updated"
    };
    tracing::info!(connection = %conn.name(), by = %session.username(), "connection {what}");
    let note = if as_typed {
        done.to_string()
    } else {
        format!("{done}-adjusted")
    };
    Ok(Redirect::to(&format!("/admin/connections/{}?done={note}", conn.name())).into_response())
}

pub async fn edit_form(
    session: AdminSession,
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: Parts,
) -> Result<Response, PageError> {
    let conn = state.store().connection(&name).await?;
    let values = ConnectionInput::from_settings(&conn.settings);
    let expires = conn.expiry.secret_expires.map(|d| d.to_string());
    let secrets = SecretsSet {
        client_secret: conn.client_secret_set,
        refresh_token: conn.refresh_token_set,
    };
    form_page(
        &session,
        &parts,
        &state,
        Some(&name),
        &values,
        None,
        secrets,
        expires.as_deref(),
    )
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: Parts,
    CsrfForm { session, form }: CsrfForm<ConnectionForm>,
) -> Result<Response, PageError> {
    let store = state.store();
    let current = store.connection(&name).await?;
    let secrets = SecretsSet {
        client_secret: current.client_secret_set,
        refresh_token: current.refresh_token_set,
    };
    let input = ConnectionInput::from_settings(&current.settings).overlay(form.input());
    let (settings, notices) = match form.secret_expiry().and(input.validate()).and_then(|ok| {
        crate::oauth::service_account::check_key_field(ok.0.flow, form.secrets().0.as_ref())?;
        Ok(ok)
    }) {
        Ok(ok) => ok,
        Err(errors) => {
            return form_page(
                &session,
                &parts,
                &state,
                Some(&name),
                &input,
                Some(&errors),
                secrets,
                form.secret_expires.as_deref(),
            );
        }
    };
    let conn = match store.update_connection(current.id, &settings).await {
        Ok(c) => c,
        Err(crate::store::StoreError::DuplicateConnection(n)) => {
            return form_page(
                &session,
                &parts,
                &state,
                Some(&name),
                &input,
                Some(&name_taken(&n)),
                secrets,
                form.secret_expires.as_deref(),
            );
        }
        Err(e) => return Err(e.into()),
    };
    saved(&state, &session, &form, &conn, notices.is_empty(), "saved").await
}

#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// The messages a redirect may ask for (fixed texts: nothing from the URL is shown).
fn done_flash(done: Option<&str>) -> Option<Flash> {
    Some(match done? {
        "created" => Flash::ok(
            "Connection created. Next: register the redirect URI below on the app, then press Connect.",
        ),
        "created-adjusted" => Flash::ok(
            "Connection created; Postern added `offline_access` to the scope so a refresh token is issued.",
        ),
        "saved" => Flash::ok("Changes saved."),
        "connected" => Flash::ok(
            "Connected: the provider issued a refresh token. Send a test e-mail to check the whole path.",
        ),
        "saved-adjusted" => Flash::ok(
            "Changes saved; Postern added `offline_access` to the scope so a refresh token is issued.",
        ),
        _ => return None,
    })
}

pub(super) fn status_text(v: &ConnectionView) -> (&'static str, String) {
    match v.status.as_str() {
        "authorized" => (
            "authorized",
            "Postern holds a refresh token and renews access tokens by itself.".into(),
        ),
        "needs-reauthorization" => (
            "needs re-authorization",
            "The provider refused the stored grant (reason above): press Connect to sign in again. Mail waits in the queue meanwhile.".into(),
        ),
        "disabled" => (
            "disabled",
            "Mail for this connection waits in the queue until the connection is enabled again.".into(),
        ),
        _ if v.flow == OAuthFlow::ServiceAccount.as_str() => (
            "new",
            "App-only Google Workspace connection: Postern signs a JWT with the service account's key (domain-wide delegation); no sign-in is needed. Send a test e-mail to check it.".into(),
        ),
        _ if v.flow == OAuthFlow::ClientCredentials.as_str() => (
            "new",
            "App-only connection: Postern asks for tokens with the client secret; no sign-in is needed. Send a test e-mail to check it.".into(),
        ),
        _ => (
            "new",
            format!("Not connected yet: press Connect and sign in as {} to give Postern its consent.", v.user),
        ),
    }
}

pub(super) fn connection_page(
    session: &AdminSession,
    parts: &Parts,
    state: &AppState,
    conn: &crate::domain::Connection,
    flash: Option<Flash>,
    test_to: String,
    steps: Vec<StepView>,
) -> ConnectionPage {
    let c = ConnectionView::from(conn);
    let (status_label, status_help) = status_text(&c);
    let connect_label = match conn.settings.provider {
        Provider::Google => "Connect with Google",
        Provider::Microsoft
        | Provider::Outlook
        | Provider::MicrosoftUsGov
        | Provider::MicrosoftChina
            if c.status == "authorized" =>
        {
            "Connect again with Microsoft"
        }
        Provider::Microsoft
        | Provider::Outlook
        | Provider::MicrosoftUsGov
        | Provider::MicrosoftChina => "Connect with Microsoft",
        Provider::Custom => "Connect",
    };
    ConnectionPage {
        layout: Layout::new(session, format!("Connection {}", c.name), "dashboard").flash(flash),
        status_label,
        status_help,
        can_connect: conn.settings.flow == OAuthFlow::AuthorizationCode,
        connect_label,
        consent_warning: crate::explain::consent_warning(
            conn.settings.provider,
            conn.settings.flow,
        ),
        callback_uri: callback_uri(parts, state, c.redirect_uri.as_deref()),
        test_to: if test_to.is_empty() {
            c.user.clone()
        } else {
            test_to
        },
        steps,
        managed_by_file: conn.managed_by_file,
        c,
    }
}

pub async fn show(
    session: AdminSession,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DoneQuery>,
    parts: Parts,
) -> Result<Response, PageError> {
    let conn = state.store().connection(&name).await?;
    let page = connection_page(
        &session,
        &parts,
        &state,
        &conn,
        done_flash(q.done.as_deref()),
        String::new(),
        Vec::new(),
    );
    let mut resp = render(StatusCode::OK, &page)?;
    super::connect::set_connection_csp(&mut resp, &conn);
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    confirm: Option<String>,
}

pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm { session, form }: CsrfForm<RemoveForm>,
) -> Result<Response, PageError> {
    if form.confirm.as_deref() != Some("yes") {
        return Err(PageError::BadRequest(
            "Tick the box to confirm the removal.".into(),
        ));
    }
    state.store().remove_connection(&name).await?;
    tracing::info!(connection = %name, by = %session.username(), "connection removed");
    Ok(Redirect::to("/admin?done=removed").into_response())
}
