//! What a server offers, read from its EHLO reply (RFC 5321 §4.1.1.1), tolerantly.

use std::fmt;

use super::reply::Reply;

/// The extensions a server announced. Keywords are kept upper-cased, in the order received,
/// so `connection test` can print them all, known or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The greeting domain from the first line.
    pub server_name: String,
    /// Every `KEYWORD [params]` line after the first.
    pub extensions: Vec<(String, Vec<String>)>,
    /// SASL mechanisms, upper-cased, from `AUTH x y` and the legacy `AUTH=x y` form merged.
    pub auth: Vec<String>,
    /// `SIZE n`: `Some(0)` when announced without a limit (or with 0).
    pub size: Option<u64>,
    pub starttls: bool,
    pub pipelining: bool,
    /// RFC 3030 `CHUNKING` (BDAT).
    pub chunking: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// Reads a positive EHLO reply. Lines that make no sense are kept as extensions, never fatal:
    /// a server's odd capability line must not stop delivery.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities {
            server_name: reply
                .lines
                .first()
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_string(),
            ..Default::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(first) = words.next() else { continue };
            // `AUTH=LOGIN PLAIN` (old Microsoft/Netscape clients' form) splits at the `=`.
            let (keyword, inline_param) = match first.split_once('=') {
                Some((k, p)) => (k.to_ascii_uppercase(), Some(p)),
                None => (first.to_ascii_uppercase(), None),
            };
            let params: Vec<String> = inline_param
                .into_iter()
                .filter(|p| !p.is_empty())
                .chain(words)
                .map(str::to_string)
                .collect();
            caps.apply(&keyword, &params);
            caps.extensions.push((keyword, params));
        }
        caps
    }

    fn apply(&mut self, keyword: &str, params: &[String]) {
        match keyword {
            "AUTH" => {
                for mech in params {
                    let mech = mech.to_ascii_uppercase();
                    if !self.auth.contains(&mech) {
                        self.auth.push(mech);
                    }
                }
            }
            "SIZE" => {
                // An unparsable value is treated as "no announced limit" rather than an error.
                let limit = params.first().and_then(|p| p.parse().ok()).unwrap_or(0);
                self.size = Some(limit);
            }
            "STARTTLS" => self.starttls = true,
            "PIPELINING" => self.pipelining = true,
            "CHUNKING" => self.chunking = true,
            "8BITMIME" => self.eight_bit_mime = true,
            "SMTPUTF8" => self.smtputf8 = true,
            "ENHANCEDSTATUSCODES" => self.enhanced_status_codes = true,
            _ => {}
        }
    }

    pub fn supports_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }

    /// The announced size limit, if the server gave a non-zero one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

/// One line per capability, as `connection test` prints them: `SIZE 35882577, PIPELINING, ...`.
impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (keyword, params)) in self.extensions.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(keyword)?;
            for p in params {
                write!(f, " {p}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::client::reply::parse_reply;

    fn caps(wire: &str) -> Capabilities {
        let (reply, _) = parse_reply(wire.as_bytes()).unwrap().unwrap();
        Capabilities::from_ehlo(&reply)
    }

    #[test]
    fn office365_after_starttls() {
        let c = caps(
            "250-AM0PR01CA0001.outlook.office365.com Hello [203.0.113.9]\r\n\
             250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n\
             250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        );
        assert_eq!(c.server_name, "AM0PR01CA0001.outlook.office365.com");
        assert_eq!(c.size_limit(), Some(157_286_400));
        assert!(c.pipelining && c.eight_bit_mime && c.smtputf8 && c.enhanced_status_codes);
        assert!(!c.starttls);
        assert_eq!(c.auth, ["LOGIN", "XOAUTH2"]);
        assert!(c.supports_auth("xoauth2"));
        assert!(!c.supports_auth("OAUTHBEARER"));
    }

    #[test]
    fn both_auth_forms_are_merged() {
        let c = caps("250-mx\r\n250-AUTH=LOGIN PLAIN\r\n250 AUTH LOGIN XOAUTH2 oauthbearer\r\n");
        assert_eq!(c.auth, ["LOGIN", "PLAIN", "XOAUTH2", "OAUTHBEARER"]);
        let c = caps("250-mx\r\n250 auth=XOAUTH2\r\n");
        assert_eq!(c.auth, ["XOAUTH2"]);
    }

    #[test]
    fn size_with_and_without_value() {
        assert_eq!(caps("250-mx\r\n250 SIZE\r\n").size, Some(0));
        assert_eq!(caps("250-mx\r\n250 SIZE\r\n").size_limit(), None);
        assert_eq!(caps("250-mx\r\n250 SIZE 0\r\n").size_limit(), None);
        assert_eq!(caps("250-mx\r\n250 SIZE 1000\r\n").size_limit(), Some(1000));
        assert_eq!(caps("250-mx\r\n250 SIZE lots\r\n").size_limit(), None);
        assert_eq!(caps("250-mx\r\n250 8BITMIME\r\n").size, None);
    }

    #[test]
    fn unknown_extensions_are_kept_and_printed() {
        let c =
            caps("250-mx greets you\r\n250-X-EXPS GSSAPI NTLM\r\n250-STARTTLS\r\n250 XRDST\r\n");
        assert!(c.starttls);
        assert_eq!(c.to_string(), "X-EXPS GSSAPI NTLM, STARTTLS, XRDST");
        assert_eq!(c.extensions.len(), 3);
    }

    #[test]
    fn single_line_ehlo_has_no_extensions() {
        let c = caps("250 mx.example.com\r\n");
        assert_eq!(c.server_name, "mx.example.com");
        assert!(c.extensions.is_empty() && c.auth.is_empty());
    }

    #[test]
    fn blank_capability_lines_are_ignored() {
        let c = caps("250-mx\r\n250-\r\n250 PIPELINING\r\n");
        assert!(c.pipelining);
        assert_eq!(c.extensions.len(), 1);
    }
}
