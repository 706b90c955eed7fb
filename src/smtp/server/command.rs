//! One command line (without its line ending) parsed into a typed relay command.
//!
//! A small strict parser rather than `smtp-proto`'s: that one is built for a general MTA and
//! is lenient where a submission port should not be (it skips CRs inside commands, unquotes
//! quoted local parts, replaces invalid UTF-8, and silently accepts extensions we do not
//! announce such as `HOLDFOR`, `BY` or `REQUIRETLS`). Here anything we do not announce is
//! refused with the reply RFC 5321 asks for. Two common tolerances of legacy clients are kept:
//! a space after `FROM:`/`TO:` and an address without angle brackets.

use secrecy::SecretString;

use super::envelope::{BodyType, ReversePath};
use super::reply::Reply;
use crate::domain::EmailAddress;

/// The longest HELO/EHLO argument (a domain name or address literal).
const MAX_HELO_LEN: usize = 255;

#[derive(Debug)]
pub(crate) enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: EmailAddress,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Bdat,
    Auth {
        mechanism: Mechanism,
        initial_response: Option<SecretString>,
    },
    /// `GET`, `POST`... : a browser or proxy pointed at the SMTP port (cross-protocol attack).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MailParams {
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    Plain,
    Login,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandError {
    Unknown,
    BadCharacters,
    Syntax(&'static str),
    BadSender,
    BadRecipient,
    UnsupportedParameter(String),
    InvalidParameter(&'static str),
}

impl CommandError {
    pub(crate) fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::status(500, "5.5.1", "Command unrecognized"),
            CommandError::BadCharacters => {
                Reply::status(500, "5.5.2", "Syntax error: invalid characters in command")
            }
            CommandError::Syntax(usage) => Reply::status(501, "5.5.4", format!("Syntax: {usage}")),
            CommandError::BadSender => Reply::status(553, "5.1.7", "Bad sender address syntax"),
            CommandError::BadRecipient => {
                Reply::status(553, "5.1.3", "Bad recipient address syntax")
            }
            CommandError::UnsupportedParameter(p) => {
                Reply::status(555, "5.5.4", format!("Unsupported parameter {p}"))
            }
            CommandError::InvalidParameter(p) => {
                Reply::status(501, "5.5.4", format!("Invalid value for parameter {p}"))
            }
        }
    }
}

/// Parses one line; `line` excludes the CRLF (or bare LF) that ended it.
pub(crate) fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadCharacters)?;
    if line.chars().any(char::is_control) {
        return Err(CommandError::BadCharacters);
    }
    let line = line.trim_end_matches(' ');
    let (verb, rest) = match line.split_once(' ') {
        Some((verb, rest)) => (verb, rest.trim_start_matches(' ')),
        None => (line, ""),
    };
    let no_args = |cmd: Command, usage: &'static str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(usage))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => helo_arg(rest, "EHLO hostname").map(Command::Ehlo),
        "HELO" => helo_arg(rest, "HELO hostname").map(Command::Helo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_args(Command::Data, "DATA"),
        "RSET" => no_args(Command::Rset, "RSET"),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "BDAT" => Ok(Command::Bdat),
        "AUTH" => parse_auth(rest),
        "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "OPTIONS" => Ok(Command::Http),
        _ => Err(CommandError::Unknown),
    }
}

fn helo_arg(rest: &str, usage: &'static str) -> Result<String, CommandError> {
    if rest.is_empty() || rest.contains(' ') || rest.len() > MAX_HELO_LEN {
        return Err(CommandError::Syntax(usage));
    }
    Ok(rest.to_string())
}

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]";
    let (path, tail) = split_path(rest, "FROM:").ok_or(CommandError::Syntax(USAGE))?;
    let from = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Address(mailbox(path).ok_or(CommandError::BadSender)?)
    };
    let mut params = MailParams::default();
    let mut seen = Vec::new();
    for param in tail.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (param.to_ascii_uppercase(), None),
        };
        if seen.contains(&key) {
            return Err(CommandError::Syntax(USAGE));
        }
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                let valid = !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
                let size = v.parse().ok().filter(|_| valid);
                params.size = Some(size.ok_or(CommandError::InvalidParameter("SIZE"))?);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => params.body = BodyType::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                params.body = BodyType::EightBitMime;
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("BINARYMIME") => {
                return Err(CommandError::UnsupportedParameter("BODY=BINARYMIME".into()));
            }
            ("BODY", _) => return Err(CommandError::InvalidParameter("BODY")),
            ("SMTPUTF8", None) => params.smtputf8 = true,
            ("SIZE" | "SMTPUTF8", _) => return Err(CommandError::Syntax(USAGE)),
            _ => return Err(CommandError::UnsupportedParameter(key)),
        }
        seen.push(key);
    }
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "RCPT TO:<address>";
    let (path, tail) = split_path(rest, "TO:").ok_or(CommandError::Syntax(USAGE))?;
    // No DSN, no other RCPT extension is announced, so no parameter is valid.
    if let Some(param) = tail.split(' ').find(|p| !p.is_empty()) {
        let key = param
            .split('=')
            .next()
            .unwrap_or(param)
            .to_ascii_uppercase();
        return Err(CommandError::UnsupportedParameter(key));
    }
    let to = mailbox(path).ok_or(CommandError::BadRecipient)?;
    Ok(Command::Rcpt { to })
}

fn parse_auth(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "AUTH mechanism [initial-response]";
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let mechanism = match words.next().ok_or(CommandError::Syntax(USAGE))? {
        m if m.eq_ignore_ascii_case("PLAIN") => Mechanism::Plain,
        m if m.eq_ignore_ascii_case("LOGIN") => Mechanism::Login,
        _ => Mechanism::Other,
    };
    let initial_response = words.next().map(|w| SecretString::from(w.to_string()));
    if words.next().is_some() {
        return Err(CommandError::Syntax(USAGE));
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

/// Splits `FROM:<path> params` into the path content and the parameters.
fn split_path<'a>(rest: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest[keyword.len()..].trim_start_matches(' ');
    let (path, tail) = if let Some(inner) = after.strip_prefix('<') {
        let end = inner.find('>')?;
        (&inner[..end], &inner[end + 1..])
    } else {
        // Tolerated: `MAIL FROM:app@contoso.com` without angle brackets.
        let end = after.find(' ').unwrap_or(after.len());
        if end == 0 {
            return None;
        }
        (&after[..end], &after[end..])
    };
    if !tail.is_empty() && !tail.starts_with(' ') {
        return None;
    }
    Some((path, tail))
}

/// An address inside a path; an RFC 5321 source route (`@a,@b:user@c`) is dropped, as the RFC says.
fn mailbox(path: &str) -> Option<EmailAddress> {
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    EmailAddress::parse(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn err(line: &str) -> CommandError {
        match parse(line.as_bytes()) {
            Ok(cmd) => panic!("{line:?} parsed as {cmd:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn mail_from_variants() {
        let cases = [
            ("MAIL FROM:<a@b.com>", "a@b.com", MailParams::default()),
            ("mail from: <a@b.com>", "a@b.com", MailParams::default()),
            ("MAIL FROM:a@b.com", "a@b.com", MailParams::default()),
            (
                "MAIL FROM:<@relay.example:a@b.com>",
                "a@b.com",
                MailParams::default(),
            ),
            (
                "MAIL FROM:<a@b.com> size=1000 BODY=8bitmime SMTPUTF8",
                "a@b.com",
                MailParams {
                    size: Some(1000),
                    body: BodyType::EightBitMime,
                    smtputf8: true,
                },
            ),
            (
                "MAIL FROM:<jürgen@exämple.de> SMTPUTF8 BODY=7BIT",
                "jürgen@exämple.de",
                MailParams {
                    size: None,
                    body: BodyType::SevenBit,
                    smtputf8: true,
                },
            ),
        ];
        for (line, addr, expected) in cases {
            match ok(line) {
                Command::Mail {
                    from: ReversePath::Address(a),
                    params,
                } => {
                    assert_eq!(a.as_str(), addr, "{line}");
                    assert_eq!(params, expected, "{line}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(matches!(
            ok("MAIL FROM:<>"),
            Command::Mail {
                from: ReversePath::Null,
                ..
            }
        ));
    }

    #[test]
    fn mail_from_errors() {
        let cases = [
            ("MAIL", CommandError::Syntax("")),
            ("MAIL TO:<a@b.com>", CommandError::Syntax("")),
            ("MAIL FROM:<a@b.com", CommandError::Syntax("")),
            ("MAIL FROM:<a@b.com>x", CommandError::Syntax("")),
            ("MAIL FROM:<a b@c.com>", CommandError::BadSender),
            ("MAIL FROM:<\"a b\"@c.com>", CommandError::BadSender),
            ("MAIL FROM:<nobody>", CommandError::BadSender),
            (
                "MAIL FROM:<a@b.com> SIZE=ten",
                CommandError::InvalidParameter("SIZE"),
            ),
            (
                "MAIL FROM:<a@b.com> SIZE=99999999999999999999999",
                CommandError::InvalidParameter("SIZE"),
            ),
            (
                "MAIL FROM:<a@b.com> BODY=BINARYMIME",
                CommandError::UnsupportedParameter("BODY=BINARYMIME".into()),
            ),
            (
                "MAIL FROM:<a@b.com> BODY=9BIT",
                CommandError::InvalidParameter("BODY"),
            ),
            (
                "MAIL FROM:<a@b.com> HOLDFOR=10",
                CommandError::UnsupportedParameter("HOLDFOR".into()),
            ),
            (
                "MAIL FROM:<a@b.com> REQUIRETLS",
                CommandError::UnsupportedParameter("REQUIRETLS".into()),
            ),
            (
                "MAIL FROM:<a@b.com> SIZE=1 SIZE=2",
                CommandError::Syntax(""),
            ),
            (
                "MAIL FROM:<a@b.com>\rRCPT TO:<x@y.com>",
                CommandError::BadCharacters,
            ),
        ];
        for (line, expected) in cases {
            let got = err(line);
            match (&got, &expected) {
                (CommandError::Syntax(_), CommandError::Syntax(_)) => {}
                _ => assert_eq!(got, expected, "{line}"),
            }
        }
    }

    #[test]
    fn rcpt_and_others() {
        assert!(
            matches!(ok("RCPT TO:<x@y.com>"), Command::Rcpt { to } if to.as_str() == "x@y.com")
        );
        assert!(matches!(ok("rcpt to: x@y.com"), Command::Rcpt { .. }));
        assert_eq!(err("RCPT TO:<>"), CommandError::BadRecipient);
        assert_eq!(err("RCPT TO:<postmaster>"), CommandError::BadRecipient);
        assert_eq!(
            err("RCPT TO:<x@y.com> NOTIFY=NEVER"),
            CommandError::UnsupportedParameter("NOTIFY".into())
        );
        assert!(matches!(ok("EHLO client.example"), Command::Ehlo(h) if h == "client.example"));
        assert!(matches!(ok("helo [192.0.2.1]"), Command::Helo(_)));
        assert!(matches!(err("EHLO"), CommandError::Syntax(_)));
        assert!(matches!(err("EHLO two words"), CommandError::Syntax(_)));
        assert!(matches!(ok("DATA"), Command::Data));
        assert!(matches!(err("DATA now"), CommandError::Syntax(_)));
        assert!(matches!(ok("STARTTLS"), Command::StartTls));
        assert!(matches!(ok("NOOP anything"), Command::Noop));
        assert!(matches!(ok("GET / HTTP/1.1"), Command::Http));
        assert_eq!(err("XYZZY"), CommandError::Unknown);
        assert_eq!(err("MAIL\0FROM"), CommandError::BadCharacters);
        assert_eq!(
            parse(b"NOOP \xff").unwrap_err(),
            CommandError::BadCharacters
        );
    }

    #[test]
    fn auth_forms() {
        assert!(matches!(
            ok("AUTH PLAIN"),
            Command::Auth {
                mechanism: Mechanism::Plain,
                initial_response: None
            }
        ));
        assert!(matches!(
            ok("auth login dXNlcg=="),
            Command::Auth {
                mechanism: Mechanism::Login,
                initial_response: Some(_)
            }
        ));
        assert!(matches!(
            ok("AUTH CRAM-MD5"),
            Command::Auth {
                mechanism: Mechanism::Other,
                ..
            }
        ));
        assert!(matches!(err("AUTH"), CommandError::Syntax(_)));
        assert!(matches!(err("AUTH PLAIN a b"), CommandError::Syntax(_)));
        // The initial response never shows up in debug output.
        let shown = format!("{:?}", ok("AUTH PLAIN c2VjcmV0"));
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
