//! Paste mode: the admin copies the address the browser was sent to (or just the code) and
//! pastes it back, for servers without a browser or a reachable loopback redirect.

use secrecy::SecretString;
use tokio::sync::mpsc;

use super::authorize::{AuthorizeError, Callback};

/// What was pasted, as a callback; `state` is `None` when only a bare code was pasted.
pub fn parse_pasted(input: &str) -> Result<Callback, AuthorizeError> {
    let input = input.trim().trim_matches(|c| c == '"' || c == '\'');
    if input.is_empty() {
        return Err(AuthorizeError::Input("nothing was pasted".into()));
    }
    if let Ok(url) = url::Url::parse(input) {
        // `response_mode=fragment` puts the answer after `#`; accept both.
        for part in [url.query(), url.fragment()].into_iter().flatten() {
            let cb = Callback::from_query(part);
            if !cb.is_empty() {
                return Ok(cb);
            }
        }
        return Err(AuthorizeError::Input(
            "the pasted address carries no `code` (nor `error`): paste the full address the browser \
             was sent to after signing in"
                .into(),
        ));
    }
    if input.contains("code=") || input.contains("error=") {
        let query = input.split_once('?').map_or(input, |(_, q)| q);
        let cb = Callback::from_query(query.split('#').next().unwrap_or(query));
        if !cb.is_empty() {
            return Ok(cb);
        }
    }
    if input
        .chars()
        .any(|c| c.is_whitespace() || c == '?' || c == '&')
    {
        return Err(AuthorizeError::Input(
            "that is neither the redirected address nor a code: paste the full address from the \
             browser's address bar"
                .into(),
        ));
    }
    Ok(Callback {
        code: Some(SecretString::from(input.to_string())),
        ..Callback::default()
    })
}

/// Lines typed on standard input, read by a plain thread: a blocked read must never keep the
/// process (or the async runtime's shutdown) waiting once the flow is over. The channel closes
/// at end of input.
pub fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("postern-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.blocking_send(line.clone()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot read standard input");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn accepted_forms() {
        let cb =
            parse_pasted("http://localhost/?code=1.AXabc&state=xyz&session_state=s\n").unwrap();
        assert_eq!(cb.code.unwrap().expose_secret(), "1.AXabc");
        assert_eq!(cb.state.as_deref(), Some("xyz"));
        let cb = parse_pasted("https://app.example/cb#code=c1&state=s1").unwrap();
        assert_eq!(cb.code.unwrap().expose_secret(), "c1");
        let cb = parse_pasted("?code=c2&state=s2").unwrap();
        assert_eq!(cb.state.as_deref(), Some("s2"));
        let cb = parse_pasted("  1.AXfake.abc-DEF_ghi  ").unwrap();
        assert_eq!(cb.code.unwrap().expose_secret(), "1.AXfake.abc-DEF_ghi");
        assert!(cb.state.is_none());
        let cb = parse_pasted("http://localhost/?error=access_denied&error_description=no&state=s")
            .unwrap();
        assert_eq!(cb.error.as_deref(), Some("access_denied"));
    }

    #[test]
    fn rejected_forms() {
        assert!(parse_pasted("").is_err());
        assert!(parse_pasted("http://localhost/?foo=bar").is_err());
        assert!(parse_pasted("two words").is_err());
    }
}
