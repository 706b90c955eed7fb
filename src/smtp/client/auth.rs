//! SASL authentication with an access token: XOAUTH2 or OAUTHBEARER, in two steps.

use secrecy::SecretString;

use super::command::Command;
use super::config::{AuthMechanism, SmtpClientConfig};
use super::connection::SmtpConnection;
use super::error::{SmtpError, Stage};
use super::reply::Reply;
use super::trace::Trace;
use crate::smtp::sasl;

impl SmtpConnection {
    /// `AUTH <mech>`, wait for `334`, then the initial response on its own line: a Microsoft token
    /// makes `AUTH XOAUTH2 <response>` longer than the 512 octets a command line may take.
    ///
    /// Returns [`SmtpError::TokenRejected`] when the server refused the token itself (the caller
    /// may refresh and try again once), [`SmtpError::Rejected`] for any other refusal.
    pub(super) async fn authenticate(
        &mut self,
        config: &SmtpClientConfig,
        token: &SecretString,
        trace: &mut Trace<'_>,
    ) -> Result<(), SmtpError> {
        let mechanism = self.pick_mechanism(config);
        let result = self.exchange(config, mechanism, token, trace).await;
        if let Err(e) = &result {
            // After a plain refusal the server waits for the next command (AUTH may be retried);
            // after a network failure or a timeout the session is unknown.
            self.broken |= !(e.is_token_rejected() || e.leaves_session_usable());
        }
        trace.record("auth", result, |reply| {
            format!("{} as {}: {reply}", mechanism.as_str(), config.username)
        })?;
        Ok(())
    }

    /// The configured mechanism, or its fallback when the server offers only that.
    fn pick_mechanism(&self, config: &SmtpClientConfig) -> AuthMechanism {
        match config.fallback_mechanism {
            Some(fallback)
                if !self.caps.supports_auth(config.mechanism.as_str())
                    && self.caps.supports_auth(fallback.as_str()) =>
            {
                fallback
            }
            _ => config.mechanism,
        }
    }

    async fn exchange(
        &mut self,
        config: &SmtpClientConfig,
        mechanism: AuthMechanism,
        token: &SecretString,
        trace: &mut Trace<'_>,
    ) -> Result<Reply, SmtpError> {
        if !self.caps.supports_auth(mechanism.as_str()) {
            return Err(SmtpError::AuthNotOffered {
                host: config.host.clone(),
                wanted: mechanism.as_str(),
                offered: if self.caps.auth.is_empty() {
                    "no AUTH at all".into()
                } else {
                    self.caps.auth.join(" ")
                },
            });
        }
        let t = self.timeouts.command;
        self.wire.queue(Command::Auth(mechanism.as_str()));
        self.wire.flush(Stage::Auth, t).await?;
        let ready = self.wire.read_reply(Stage::Auth, t).await?;
        if ready.code != 334 {
            return Err(refusal(ready));
        }
        let response = match mechanism {
            AuthMechanism::Xoauth2 => sasl::xoauth2_initial_response(&config.username, token),
            AuthMechanism::OAuthBearer => sasl::oauthbearer_initial_response(
                &config.username,
                &config.host,
                config.port,
                token,
            ),
        };
        self.wire.queue_secret_line(&response);
        self.wire.flush(Stage::Auth, t).await?;
        let reply = self.wire.read_reply(Stage::Auth, t).await?;
        match reply.code {
            235 => Ok(reply),
            334 => self.answer_error_challenge(mechanism, reply, trace).await,
            _ => Err(refusal(reply)),
        }
    }

    /// Gmail (and RFC 7628) answer a bad token with `334 <base64 JSON>`; the client must reply
    /// (an empty line for XOAUTH2, `%x01` for OAUTHBEARER) to get the final `535`.
    async fn answer_error_challenge(
        &mut self,
        mechanism: AuthMechanism,
        challenge: Reply,
        trace: &mut Trace<'_>,
    ) -> Result<Reply, SmtpError> {
        let decoded = challenge
            .lines
            .first()
            .map(|text| sasl::decode_error_challenge(text));
        trace.step("challenge", false, || match &decoded {
            Some(Ok(c)) => format!(
                "server refused the token: status {} scope {}",
                c.status,
                c.scope.as_deref().unwrap_or("-")
            ),
            _ => format!("unexpected challenge: {challenge}"),
        });
        let t = self.timeouts.command;
        self.wire.queue_bytes(match mechanism {
            AuthMechanism::Xoauth2 => b"\r\n",
            AuthMechanism::OAuthBearer => b"AQ==\r\n",
        });
        self.wire.flush(Stage::Auth, t).await?;
        let reply = self.wire.read_reply(Stage::Auth, t).await?;
        let token_rejected = matches!(&decoded, Some(Ok(c)) if c.is_token_rejected());
        if reply.code == 235 {
            // A server that challenges and then accepts is odd, but accepted is accepted.
            return Ok(reply);
        }
        if token_rejected {
            return Err(SmtpError::TokenRejected { reply });
        }
        Err(refusal(reply))
    }
}

/// Classifies a refused AUTH. `535` means bad credentials, which for a token means rejected
/// (Microsoft's 5.7.3, generic servers' 5.7.8) — except 5.7.139, SMTP AUTH switched off, where a
/// fresh token cannot help.
fn refusal(reply: Reply) -> SmtpError {
    if reply.code == 535 && !reply.has_enhanced(5, 7, 139) {
        SmtpError::TokenRejected { reply }
    } else {
        SmtpError::Rejected {
            stage: Stage::Auth,
            reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::client::reply::parse_reply;

    fn reply(wire: &str) -> Reply {
        parse_reply(format!("{wire}\r\n").as_bytes())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn which_refusals_are_token_problems() {
        assert!(refusal(reply("535 5.7.3 Authentication unsuccessful")).is_token_rejected());
        assert!(refusal(reply("535 5.7.8 Username and Password not accepted")).is_token_rejected());
        let disabled = refusal(reply(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
        ));
        assert!(!disabled.is_token_rejected());
        assert!(disabled.explanation().unwrap().contains("Set-CASMailbox"));
        let later = refusal(reply("454 4.7.0 Temporary authentication failure"));
        assert!(!later.is_token_rejected() && later.is_transient());
        let basic = refusal(reply("504 5.7.4 Unrecognized authentication type"));
        assert!(basic.is_permanent() && basic.is_connection_problem());
    }
}
