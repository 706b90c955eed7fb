//! `postern connection authorize NAME` (consent: loopback, paste, device, or the app's own
//! credentials) and `postern connection token NAME` (a token's expiry, scopes and audience).

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::SecretString;

use super::{CliError, CliResult, Ctx};
use crate::domain::{Connection, OAuthFlow, RedirectUri};
use crate::oauth::diagnose::{HintContext, hint};
use crate::oauth::paste::{parse_pasted, stdin_lines};
use crate::oauth::{
    AccessToken, AuthorizationRequest, AuthorizeError, Authorized, Claims, DevicePolling,
    LoopbackListener, PollEvent, ProviderError, TokenError, TokenManager, TokenOrigin,
};

/// `postern connection authorize` flags.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  postern connection authorize contoso             # opens the browser\n  \
                        postern connection authorize contoso --paste     # on a server without a browser\n  \
                        postern connection authorize contoso --device    # sign in on another device"
)]
pub struct AuthorizeArgs {
    pub name: String,
    /// Print the sign-in address, then read the redirected address (or just the code) from
    /// standard input. Implied when the redirect URI is not a loopback address.
    #[arg(long, conflicts_with = "device")]
    pub paste: bool,
    /// Device-code flow: sign in on any device with a short code.
    #[arg(long)]
    pub device: bool,
    /// Do not open a browser; print the address only.
    #[arg(long)]
    pub no_browser: bool,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

fn failed(msg: String) -> CliError {
    CliError::Failed(anyhow::anyhow!(msg))
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    let mins = (t - chrono::Utc::now()).num_minutes();
    let left = if mins >= 120 {
        format!("in {} h", mins / 60)
    } else {
        format!("in {mins} min")
    };
    format!("{} ({left})", t.format("%Y-%m-%d %H:%M:%S UTC"))
}

/// An authorization error as the admin needs it: what the provider said, its code, the fix.
fn explain(conn: &Connection, redirect_uri: Option<&str>, e: AuthorizeError) -> CliError {
    let name = conn.name().as_str();
    match e {
        AuthorizeError::Provider(p) => {
            let mut msg = format!(
                "authorization of `{name}` failed: {p}\n  error: {}",
                p.error
            );
            if let Some(d) = p.short_description() {
                msg.push_str(&format!("\n  error_description: {d}"));
            }
            if let Some(code) = p.aadsts() {
                msg.push_str(&format!("\n  AADSTS code: {code}"));
            }
            let diagnosed = crate::explain::diagnose_refusal(
                conn.settings.provider,
                conn.settings.flow,
                &p.error,
                None,
            );
            let cx = HintContext {
                connection: name,
                redirect_uri,
            };
            let h = match &diagnosed {
                Some(note) => crate::explain::lookup(note).map(|e| {
                    e.explain(crate::explain::Context {
                        connection: Some(name),
                        redirect_uri,
                    })
                }),
                None => hint(&p, cx),
            };
            if let Some(h) = h {
                msg.push_str(&format!("\nhint: {h}"));
            }
            failed(msg)
        }
        AuthorizeError::Listener(m) | AuthorizeError::Config(m) => CliError::Usage(m),
        other => failed(format!("authorization of `{name}` failed: {other}")),
    }
}

/// A spinner on stderr (invisible when stderr is not a terminal).
fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Ctrl-C, or never if the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub async fn authorize(ctx: &Ctx, args: AuthorizeArgs) -> CliResult {
    let store = ctx.store().await?;
    let conn = store.connection(&args.name).await?;
    let manager =
        TokenManager::new(store, ctx.settings.tokens.clone()).map_err(|e| failed(e.to_string()))?;
    if !conn.settings.enabled {
        eprintln!(
            "note: `{}` is disabled; it will not send until `postern connection enable {}`.",
            args.name, args.name
        );
    }
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (result, redirect_uri) = match conn.settings.flow {
        flow @ (OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount) => {
            if args.paste || args.device {
                eprintln!(
                    "note: app-only ({flow}) connections need no sign-in; checking the app's credentials."
                );
            }
            (manager.authorize_client_credentials(&conn).await, None)
        }
        OAuthFlow::AuthorizationCode if args.device => {
            (device_flow(&manager, &conn, timeout).await, None)
        }
        OAuthFlow::AuthorizationCode => {
            if let Some(w) =
                crate::explain::consent_warning(conn.settings.provider, conn.settings.flow)
            {
                eprintln!("warning: {w}");
            }
            let redirect = conn.settings.redirect_uri.clone().ok_or_else(|| {
                CliError::Usage(format!(
                    "connection `{}` has no redirect URI: set the one registered on the app with \
                     `postern connection edit {} --redirect-uri http://localhost`, or use --device",
                    args.name, args.name
                ))
            })?;
            code_flow(&manager, &conn, &redirect, &args, timeout).await
        }
    };
    let done = result.map_err(|e| explain(&conn, redirect_uri.as_deref(), e))?;
    report(&conn, &done);
    Ok(())
}

fn report(conn: &Connection, done: &Authorized) {
    let name = conn.name();
    if done.refresh_token_stored {
        println!(
            "authorized `{name}`: refresh token stored (sealed); access token valid until {}.",
            when(done.access_expires_at)
        );
    } else {
        println!(
            "authorized `{name}` (app-only): the app's credentials work; access token valid until {}.",
            when(done.access_expires_at)
        );
    }
    if let Some(scope) = &done.scope {
        println!("granted scope: {scope}");
    }
}

/// The browser flow: loopback listener when the redirect URI allows it, paste mode otherwise.
async fn code_flow(
    manager: &TokenManager,
    conn: &Connection,
    redirect: &RedirectUri,
    args: &AuthorizeArgs,
    timeout: Duration,
) -> (Result<Authorized, AuthorizeError>, Option<String>) {
    let listener = if args.paste || !redirect.is_loopback() {
        if !args.paste {
            eprintln!(
                "note: the redirect URI {redirect} is not a loopback address, so Postern cannot catch the redirect itself: paste mode."
            );
        }
        None
    } else {
        match LoopbackListener::bind(redirect).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("note: {e}\nnote: switching to paste mode.");
                None
            }
        }
    };
    let redirect_uri = listener
        .as_ref()
        .map_or(redirect.as_str(), |l| l.redirect_uri())
        .to_string();
    let request = match AuthorizationRequest::new(&conn.settings, &redirect_uri) {
        Ok(r) => r,
        Err(e) => return (Err(e), Some(redirect_uri)),
    };
    println!(
        "Sign in as {} at this address:\n\n  {}\n",
        conn.settings.user,
        request.url()
    );
    let code = match listener {
        Some(l) => wait_loopback(l, &request, args.no_browser, timeout).await,
        None => wait_paste(&request, timeout).await,
    };
    let result = match code {
        Ok(code) => manager.redeem_code(conn, &request, &code).await,
        Err(e) => Err(e),
    };
    (result, Some(redirect_uri))
}

async fn wait_loopback(
    listener: LoopbackListener,
    request: &AuthorizationRequest,
    no_browser: bool,
    timeout: Duration,
) -> Result<SecretString, AuthorizeError> {
    if !no_browser && let Err(e) = open::that_detached(request.url().as_str()) {
        eprintln!("note: could not open a browser ({e}): open the address above yourself.");
    }
    // Someone at a terminal may also paste the redirected address (a browser on another machine).
    let interactive = std::io::stdin().is_terminal();
    let mut pasted = if interactive {
        Some(stdin_lines())
    } else {
        None
    };
    let hint = if interactive {
        " (or paste the redirected address here)"
    } else {
        ""
    };
    let pb = spinner(&format!(
        "Waiting for the sign-in in the browser{hint}; Ctrl-C cancels"
    ));
    let wait = listener.wait(request.state());
    tokio::pin!(wait);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            cb = &mut wait => break request.code_from(cb, false),
            line = async { match pasted.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match line {
                    None => pasted = None,
                    Some(l) if l.trim().is_empty() => {}
                    Some(l) => match parse_pasted(&l).and_then(|cb| request.code_from(cb, true)) {
                        Ok(code) => break Ok(code),
                        Err(e) => pb.suspend(|| eprintln!("{e}")),
                    },
                }
            }
            _ = ctrl_c() => break Err(AuthorizeError::Cancelled),
            _ = &mut deadline => break Err(AuthorizeError::Timeout(timeout.as_secs())),
        }
    };
    pb.finish_and_clear();
    result
}

/// Paste mode: tries again on a bad paste, until the timeout or the end of input.
async fn wait_paste(
    request: &AuthorizationRequest,
    timeout: Duration,
) -> Result<SecretString, AuthorizeError> {
    println!(
        "After signing in, the browser is sent to {} (the page may fail to load: that is fine).\n\
         Copy the full address from the browser's address bar (or just the `code` value), paste it here \
         and press Enter:",
        request.redirect_uri()
    );
    let mut lines = stdin_lines();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                None => return Err(AuthorizeError::Input("standard input ended before an address or code was pasted".into())),
                Some(l) if l.trim().is_empty() => {}
                Some(l) => match parse_pasted(&l).and_then(|cb| request.code_from(cb, true)) {
                    Ok(code) => return Ok(code),
                    Err(e @ AuthorizeError::Provider(_)) => return Err(e),
                    Err(e) => eprintln!("{e}\nTry again:"),
                },
            },
            _ = ctrl_c() => return Err(AuthorizeError::Cancelled),
            _ = &mut deadline => return Err(AuthorizeError::Timeout(timeout.as_secs())),
        }
    }
}

async fn device_flow(
    manager: &TokenManager,
    conn: &Connection,
    timeout: Duration,
) -> Result<Authorized, AuthorizeError> {
    let auth = manager.start_device(conn).await?;
    match &auth.verification_uri_complete {
        Some(complete) => println!(
            "To sign in, open {complete}\n(or open {} and enter the code {})",
            auth.verification_uri, auth.user_code
        ),
        None => println!(
            "To sign in, open {} and enter the code {}",
            auth.verification_uri, auth.user_code
        ),
    }
    println!(
        "Sign in as {}. The code expires in {} min.",
        conn.settings.user,
        auth.expires_in / 60
    );
    let pb = spinner("Waiting for the sign-in on the other device; Ctrl-C cancels");
    let progress = pb.clone();
    let on_event = move |ev: PollEvent| match ev {
        PollEvent::Pending => {}
        PollEvent::SlowDown { interval } => progress.set_message(format!(
            "Waiting for the sign-in (the provider asked to poll every {} s)",
            interval.as_secs()
        )),
        PollEvent::Transient(m) => {
            progress.set_message(format!("Waiting for the sign-in (last poll failed: {m})"))
        }
    };
    let polling = DevicePolling::default();
    let result = tokio::select! {
        r = manager.finish_device(conn, &auth, &polling, on_event) => r,
        _ = ctrl_c() => Err(AuthorizeError::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(AuthorizeError::Timeout(timeout.as_secs())),
    };
    pb.finish_and_clear();
    result
}

/// `postern connection token NAME`: obtain a token; show what it is for, never the token.
pub async fn token(ctx: &Ctx, name: &str) -> CliResult {
    let store = ctx.store().await?;
    let conn = store.connection(name).await?;
    let manager =
        TokenManager::new(store, ctx.settings.tokens.clone()).map_err(|e| failed(e.to_string()))?;
    let t = manager
        .access_token(&conn)
        .await
        .map_err(|e| token_failed(&conn, e))?;
    show_token(&conn, &t);
    Ok(())
}

fn token_failed(conn: &Connection, e: TokenError) -> CliError {
    let name = conn.name().as_str();
    let mut msg = format!("no token for `{name}`: {e}");
    if let TokenError::NeedsReauthorization { reason } = &e {
        let p = ProviderError::from_reason(reason);
        match hint(
            &p,
            HintContext {
                connection: name,
                redirect_uri: conn.settings.redirect_uri.as_ref().map(RedirectUri::as_str),
            },
        ) {
            Some(h) => msg.push_str(&format!("\nhint: {h}")),
            None => msg.push_str(&format!(
                "\nhint: run `postern connection authorize {name}`"
            )),
        }
    }
    failed(msg)
}

fn show_token(conn: &Connection, t: &AccessToken) {
    let origin = match t.origin {
        TokenOrigin::Memory | TokenOrigin::Store => "cached (sealed in the store)",
        TokenOrigin::Provider => "just obtained from the token endpoint",
    };
    println!("connection:  {}", conn.name());
    println!("token:       {origin}; the token itself is never shown");
    println!("expires:     {}", when(t.expires_at));
    println!(
        "scope:       {}",
        t.scope
            .clone()
            .unwrap_or_else(|| format!("{} (requested)", conn.settings.scopes))
    );
    let Some(claims) = Claims::decode(&t.value) else {
        println!("claims:      none (an opaque token, not a JWT)");
        return;
    };
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "audience:    {}",
        if claims.audience.is_empty() {
            "-".into()
        } else {
            claims.audience.join(", ")
        }
    );
    println!("scp:         {}", or_dash(claims.scp.clone()));
    println!(
        "roles:       {}",
        if claims.roles.is_empty() {
            "-".into()
        } else {
            claims.roles.join(", ")
        }
    );
    println!("user:        {}", or_dash(claims.user.clone()));
    println!("app id:      {}", or_dash(claims.app_id.clone()));
    if conn.settings.transport == crate::domain::Transport::Graph {
        let perms: Vec<&str> = claims
            .scp
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .chain(claims.roles.iter().map(String::as_str))
            .collect();
        if !claims.is_graph() {
            eprintln!(
                "warning: this connection sends through Microsoft Graph, but the token is not for Graph: \
                 Graph refuses it with 401. Use the scope `https://graph.microsoft.com/Mail.Send offline_access`, \
                 then `postern connection authorize {}`.",
                conn.name()
            );
        } else if !perms.iter().any(|p| p.starts_with("Mail.Send")) {
            eprintln!(
                "warning: the token lacks Mail.Send: Graph answers 403 ErrorAccessDenied; grant Microsoft Graph \
                 Mail.Send (and admin consent), then authorize again."
            );
        }
    } else if claims.is_graph() {
        eprintln!(
            "warning: this token is for Microsoft Graph, not Outlook: SMTP rejects \
             it with `535 5.7.3 Authentication unsuccessful`. Use the scope `{} \
             offline_access`, then `postern connection authorize {}`.",
            conn.settings
                .provider
                .smtp_scope()
                .unwrap_or(crate::domain::scope::MS_SMTP_SCOPE),
            conn.name()
        );
    } else if conn.settings.provider.is_microsoft()
        && conn.settings.flow == OAuthFlow::AuthorizationCode
        && !claims
            .scp
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x.eq_ignore_ascii_case("SMTP.Send")))
    {
        eprintln!(
            "warning: the token's scopes (scp) lack SMTP.Send: SMTP AUTH will be refused; grant the delegated SMTP.Send permission and authorize again."
        );
    }
}
