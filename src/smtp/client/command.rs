//! The commands the client sends: each type's `Display` is its exact wire text, CRLF included.
//!
//! The SASL response line is not a command here on purpose: it carries a secret, and a `Display`
//! that prints secrets would sooner or later reach a log.

use std::fmt;

/// ESMTP parameters of `MAIL FROM`, chosen from the message and what the server offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// RFC 1870 `SIZE=`: sent whenever the server announced SIZE.
    pub size: Option<u64>,
    /// RFC 6152 `BODY=8BITMIME`: the message has bytes above 127.
    pub eight_bit: bool,
    /// RFC 6531 `SMTPUTF8`: an envelope address is not ASCII.
    pub smtputf8: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Ehlo(&'a str),
    StartTls,
    /// `AUTH <mechanism>` without an initial response: the response follows the `334` on its own
    /// line, because a Microsoft token makes a command longer than 512 octets.
    Auth(&'a str),
    Mail(&'a str, MailParams),
    Rcpt(&'a str),
    Data,
    /// `BDAT <size> LAST`: the whole message in one chunk (RFC 3030).
    BdatLast(usize),
    Rset,
    Quit,
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(name) => write!(f, "EHLO {name}\r\n"),
            Command::StartTls => f.write_str("STARTTLS\r\n"),
            Command::Auth(mechanism) => write!(f, "AUTH {mechanism}\r\n"),
            Command::Mail(from, params) => {
                write!(f, "MAIL FROM:<{from}>")?;
                if let Some(size) = params.size {
                    write!(f, " SIZE={size}")?;
                }
                if params.eight_bit {
                    f.write_str(" BODY=8BITMIME")?;
                }
                if params.smtputf8 {
                    f.write_str(" SMTPUTF8")?;
                }
                f.write_str("\r\n")
            }
            Command::Rcpt(to) => write!(f, "RCPT TO:<{to}>\r\n"),
            Command::Data => f.write_str("DATA\r\n"),
            Command::BdatLast(size) => write!(f, "BDAT {size} LAST\r\n"),
            Command::Rset => f.write_str("RSET\r\n"),
            Command::Quit => f.write_str("QUIT\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text() {
        assert_eq!(
            Command::Ehlo("relay.example.org").to_string(),
            "EHLO relay.example.org\r\n"
        );
        assert_eq!(Command::Auth("XOAUTH2").to_string(), "AUTH XOAUTH2\r\n");
        assert_eq!(
            Command::Mail("a@example.com", MailParams::default()).to_string(),
            "MAIL FROM:<a@example.com>\r\n"
        );
        let all = MailParams {
            size: Some(2048),
            eight_bit: true,
            smtputf8: true,
        };
        assert_eq!(
            Command::Mail("ü@example.com", all).to_string(),
            "MAIL FROM:<ü@example.com> SIZE=2048 BODY=8BITMIME SMTPUTF8\r\n"
        );
        assert_eq!(
            Command::Mail("", MailParams::default()).to_string(),
            "MAIL FROM:<>\r\n"
        );
        assert_eq!(
            Command::Rcpt("b@example.com").to_string(),
            "RCPT TO:<b@example.com>\r\n"
        );
        assert_eq!(Command::Data.to_string(), "DATA\r\n");
    }
}
