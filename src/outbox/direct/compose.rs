//! The message a direct send hands over: built from parts with `mail-builder` (Date, Message-ID,
//! MIME), or a ready RFC 5322 message whose envelope is read from its headers. No I/O.

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;

use crate::domain::{EmailAddress, EmailError};

/// Why a message could not be put together. All are the caller's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the {what} contains a line break or control character")]
    ControlCharacter { what: &'static str },
    #[error("the message has no recipient: give --to (or To/Cc/Bcc headers in the message)")]
    NoRecipients,
    #[error("the message has no body: give --text, --html or --attach")]
    NoBody,
    #[error("the message is empty")]
    Empty,
    #[error("the message has no header block (it must start with headers like `From:`)")]
    NoHeaders,
    #[error("the {header} header holds `{value}`: {source}")]
    BadHeaderAddress {
        header: &'static str,
        value: String,
        #[source]
        source: EmailError,
    },
    #[error("cannot build the message: {0}")]
    Build(#[from] std::io::Error),
}

/// A file attached to a built message.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Attachment {
    /// The content type guessed from the file name's extension (the common ones; anything else
    /// is `application/octet-stream`, which every client can still save).
    pub fn new(filename: impl Into<String>, data: Vec<u8>) -> Self {
        let filename = filename.into();
        let ext = filename
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let content_type = match ext.as_str() {
            "txt" | "log" => "text/plain",
            "csv" => "text/csv",
            "htm" | "html" => "text/html",
            "pdf" => "application/pdf",
            "json" => "application/json",
            "xml" => "application/xml",
            "zip" => "application/zip",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "eml" => "message/rfc822",
            _ => "application/octet-stream",
        };
        Self {
            filename,
            content_type: content_type.to_string(),
            data,
        }
    }
}

/// A message to build from parts.
#[derive(Debug, Clone)]
pub struct Draft {
    pub from: EmailAddress,
    /// Shown with the From address (the connection's display name, say).
    pub from_name: Option<String>,
    pub to: Vec<EmailAddress>,
    pub cc: Vec<EmailAddress>,
    /// Envelope only: never written into the message.
    pub bcc: Vec<EmailAddress>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

/// A message ready to go: its bytes and the envelope to send them with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub from: EmailAddress,
    /// To, Cc and Bcc, each address once, in that order.
    pub recipients: Vec<EmailAddress>,
    pub bytes: Vec<u8>,
}

fn no_controls(what: &'static str, value: &str) -> Result<(), ComposeError> {
    // mail-builder would encode them, but a line break in a subject is never what anyone meant.
    if value.chars().any(char::is_control) {
        return Err(ComposeError::ControlCharacter { what });
    }
    Ok(())
}

fn address_list(list: &[EmailAddress]) -> Address<'_> {
    Address::new_list(
        list.iter()
            .map(|a| Address::new_address(None::<&str>, a.as_str()))
            .collect(),
    )
}

/// Each address once (case-insensitively), first occurrence kept.
fn unique(lists: &[&[EmailAddress]]) -> Vec<EmailAddress> {
    let mut out: Vec<EmailAddress> = Vec::new();
    for a in lists.iter().flat_map(|l| l.iter()) {
        if !out
            .iter()
            .any(|b| b.as_str().eq_ignore_ascii_case(a.as_str()))
        {
            out.push(a.clone());
        }
    }
    out
}

/// A Message-ID under the sender's domain: unique without revealing the host name.
pub fn new_message_id(from: &EmailAddress) -> String {
    format!("{}@{}", uuid::Uuid::new_v4().simple(), from.domain())
}

impl Draft {
    pub fn compose(&self) -> Result<Composed, ComposeError> {
        no_controls("subject", &self.subject)?;
        if let Some(name) = &self.from_name {
            no_controls("sender name", name)?;
        }
        let recipients = unique(&[&self.to, &self.cc, &self.bcc]);
        if recipients.is_empty() {
            return Err(ComposeError::NoRecipients);
        }
        if self.text.is_none() && self.html.is_none() && self.attachments.is_empty() {
            return Err(ComposeError::NoBody);
        }
        let from = Address::new_address(self.from_name.as_deref(), self.from.as_str());
        let mut b = MessageBuilder::new()
            .from(from)
            .subject(self.subject.as_str())
            .message_id(new_message_id(&self.from))
            .date(chrono::Utc::now().timestamp());
        if !self.to.is_empty() {
            b = b.to(address_list(&self.to));
        }
        if !self.cc.is_empty() {
            b = b.cc(address_list(&self.cc));
        }
        if let Some(text) = &self.text {
            b = b.text_body(text.as_str());
        }
        if let Some(html) = &self.html {
            b = b.html_body(html.as_str());
        }
        for a in &self.attachments {
            b = b.attachment(
                a.content_type.as_str(),
                a.filename.as_str(),
                a.data.as_slice(),
            );
        }
        Ok(Composed {
            from: self.from.clone(),
            recipients,
            bytes: b.write_to_vec()?,
        })
    }
}

/// The addresses a ready message names in its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderAddresses {
    pub from: Option<EmailAddress>,
    pub to: Vec<EmailAddress>,
    pub cc: Vec<EmailAddress>,
    pub bcc: Vec<EmailAddress>,
}

impl HeaderAddresses {
    /// To, Cc and Bcc, each once.
    pub fn recipients(&self) -> Vec<EmailAddress> {
        unique(&[&self.to, &self.cc, &self.bcc])
    }
}

/// Reads From, To, Cc and Bcc of a ready message; every address must parse.
pub fn header_addresses(raw: &[u8]) -> Result<HeaderAddresses, ComposeError> {
    if raw.is_empty() {
        return Err(ComposeError::Empty);
    }
    let parsed = mail_parser::MessageParser::default()
        .parse_headers(raw)
        .ok_or(ComposeError::NoHeaders)?;
    let list = |header: &'static str,
                addr: Option<&mail_parser::Address<'_>>|
     -> Result<Vec<EmailAddress>, ComposeError> {
        addr.into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address())
            .map(|value| {
                EmailAddress::parse(value).map_err(|source| ComposeError::BadHeaderAddress {
                    header,
                    value: value.escape_debug().to_string(),
                    source,
                })
            })
            .collect()
    };
    Ok(HeaderAddresses {
        from: list("From", parsed.from())?.into_iter().next(),
        to: list("To", parsed.to())?,
        cc: list("Cc", parsed.cc())?,
        bcc: list("Bcc", parsed.bcc())?,
    })
}

/// The message without its Bcc header(s), byte for byte otherwise: Bcc recipients get the
/// message through the envelope, and the other recipients must not see them.
pub fn strip_bcc(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut in_bcc = false;
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break; // end of the header block
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            in_bcc = is_bcc_field(line);
        }
        if in_bcc {
            out.get_or_insert_with(|| raw[..pos].to_vec());
        } else if let Some(o) = out.as_mut() {
            o.extend_from_slice(line);
        }
        pos = end;
    }
    match out {
        Some(mut o) => {
            o.extend_from_slice(&raw[pos..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(raw),
    }
}

/// `Bcc:` (any case, with the obsolete spaces before the colon that RFC 5322 §4.5 allows).
fn is_bcc_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &line[..colon];
    let trimmed = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(&name[..0], |i| &name[..=i]);
    trimmed.eq_ignore_ascii_case(b"bcc")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn draft() -> Draft {
        Draft {
            from: addr("ops@contoso.com"),
            from_name: Some("Ops Team".into()),
            to: vec![addr("a@example.org"), addr("b@example.org")],
            cc: vec![addr("A@example.org"), addr("c@example.org")],
            bcc: vec![addr("hidden@example.org")],
            subject: "Grüße".into(),
            text: Some("Hallo Welt\n".into()),
            html: None,
            attachments: vec![],
        }
    }

    #[test]
    fn builds_headers_and_keeps_bcc_out_of_the_message() {
        let c = draft().compose().unwrap();
        let text = String::from_utf8(c.bytes.clone()).unwrap();
        for header in [
            "From: \"Ops Team\" <ops@contoso.com>\r\n",
            "Date: ",
            "Message-ID: <",
            "@contoso.com>\r\n",
            "MIME-Version: 1.0\r\n",
            "Subject: =?utf-8?",
            "To: <a@example.org>, <b@example.org>\r\n",
        ] {
            assert!(text.contains(header), "{header:?} missing in\n{text}");
        }
        assert!(!text.to_ascii_lowercase().contains("hidden@"), "{text}");
        let rcpts: Vec<&str> = c.recipients.iter().map(EmailAddress::as_str).collect();
        assert_eq!(
            rcpts,
            [
                "a@example.org",
                "b@example.org",
                "c@example.org",
                "hidden@example.org"
            ]
        );
        // Built messages are 7-bit: mail-builder encodes non-ASCII text.
        assert!(c.bytes.is_ascii());
        let back = header_addresses(&c.bytes).unwrap();
        assert_eq!(back.from, Some(addr("ops@contoso.com")));
        assert_eq!(back.cc.len(), 2);
    }

    #[test]
    fn attachments_get_a_type_and_a_name() {
        let mut d = draft();
        d.attachments
            .push(Attachment::new("report.PDF", b"%PDF-1.4 x".to_vec()));
        d.attachments.push(Attachment::new("blob", vec![0, 1, 2]));
        let text = String::from_utf8(d.compose().unwrap().bytes).unwrap();
        assert!(text.contains("multipart/mixed"), "{text}");
        assert!(text.contains("application/pdf"), "{text}");
        assert!(text.contains("report.PDF"), "{text}");
        assert!(text.contains("application/octet-stream"), "{text}");
    }

    #[test]
    fn refuses_injection_and_empty_messages() {
        let mut d = draft();
        d.subject = "hi\r\nBcc: victim@example.org".into();
        assert!(matches!(
            d.compose(),
            Err(ComposeError::ControlCharacter { what: "subject" })
        ));
        let mut d = draft();
        (d.to, d.cc, d.bcc) = (vec![], vec![], vec![]);
        assert!(matches!(d.compose(), Err(ComposeError::NoRecipients)));
        let mut d = draft();
        d.text = None;
        assert!(matches!(d.compose(), Err(ComposeError::NoBody)));
    }

    #[test]
    fn reads_the_envelope_from_headers() {
        let raw = b"From: \"Ops\" <ops@contoso.com>\r\nTo: a@example.org, B <b@example.org>\r\n\
                    Cc: undisclosed: c@example.org;\r\nBcc: d@example.org\r\nSubject: x\r\n\r\nbody\r\n";
        let h = header_addresses(raw).unwrap();
        assert_eq!(h.from, Some(addr("ops@contoso.com")));
        let all: Vec<String> = h.recipients().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            all,
            [
                "a@example.org",
                "b@example.org",
                "c@example.org",
                "d@example.org"
            ]
        );
        let bad = b"From: ops@contoso.com\r\nTo: \"x\" <not an address>\r\n\r\nb";
        assert!(matches!(
            header_addresses(bad),
            Err(ComposeError::BadHeaderAddress { header: "To", .. })
        ));
        assert!(matches!(header_addresses(b""), Err(ComposeError::Empty)));
    }

    #[test]
    fn strips_only_bcc_and_leaves_every_other_byte() {
        let raw: &[u8] = b"From: a@b.c\r\nBCC : x@y.z,\r\n  w@y.z\r\nTo: t@b.c\r\nbcc: v@y.z\r\n\r\nBcc: in body\r\n";
        assert_eq!(
            &*strip_bcc(raw),
            b"From: a@b.c\r\nTo: t@b.c\r\n\r\nBcc: in body\r\n"
        );
        let plain: &[u8] = b"From: a@b.c\nTo: t@b.c\n\nbody\n";
        assert!(matches!(strip_bcc(plain), Cow::Borrowed(_)));
        let lf: &[u8] = b"From: a@b.c\nBcc: x@y.z\n\nbody\n";
        assert_eq!(&*strip_bcc(lf), b"From: a@b.c\n\nbody\n");
        assert!(!is_bcc_field(b"Bccx: y"));
        assert!(!is_bcc_field(b"X-Bcc: y"));
    }
}
