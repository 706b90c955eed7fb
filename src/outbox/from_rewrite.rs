//! The `rewrite` From policy: a message from a sender the relay user may not use goes out as
//! the connection's mailbox, the original address in `Reply-To:` so replies still reach it.
//!
//! Only the top-level header block is touched (up to the first blank line, or the first line
//! that is not a header field); the body is never read or copied twice. The envelope sender and
//! the `From:` field are judged separately: whichever the user may not use is replaced.
//! - One `From:` field is replaced in place; with several, the first is replaced and the others
//!   are removed (RFC 5322 allows one); with none, one is added at the end of the header block.
//! - `Reply-To:` is added after the new `From:` (with the original address) unless the message
//!   has one already.
//! - The display name is the configured one, else the message's own (its phrase, or the comment
//!   of an old-style `addr (Name)`), re-quoted: text taken from a header never ends up outside
//!   a quoted string or an encoded word, and control characters (folding included) are dropped.
//!
//! A DKIM signature over the original `From:` no longer verifies; the provider signs what it
//! sends anyway.

use base64::Engine;

use crate::domain::{EmailAddress, MAX_DISPLAY_NAME};
use crate::smtp::server::{AllowedFrom, RewriteFrom};

/// What [`rewrite`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rewritten {
    /// The envelope sender the client gave, when it was replaced by the mailbox (`<>` as "").
    pub envelope: Option<String>,
    /// The `From:` address the message had, when its `From:` was replaced ("" when it had none
    /// or it could not be read).
    pub header: Option<String>,
}

impl Rewritten {
    pub fn changed(&self) -> bool {
        self.envelope.is_some() || self.header.is_some()
    }
}

/// Rewrites `message` (header block only) and says what changed. `sender` is the envelope's
/// MAIL FROM (`None` for `<>`); the new envelope sender is `policy.mailbox` when
/// [`Rewritten::envelope`] is set.
pub(crate) fn rewrite(
    message: &mut Vec<u8>,
    sender: Option<&EmailAddress>,
    allowed: &AllowedFrom,
    policy: &RewriteFrom,
) -> Rewritten {
    let may_use = |a: &EmailAddress| {
        allowed.allows(a) || a.as_str().eq_ignore_ascii_case(policy.mailbox.as_str())
    };
    let mut out = Rewritten::default();
    if !sender.is_some_and(may_use) {
        out.envelope = Some(sender.map(ToString::to_string).unwrap_or_default());
    }

    let block = scan(message);
    let froms: Vec<&Field> = block.fields.iter().filter(|f| f.is("from")).collect();
    let first = froms
        .first()
        .map(|f| parse_mailbox(&unfold(&message[f.value.clone()])));
    let original = first.as_ref().and_then(|m| m.address.clone());
    let header_ok = froms.len() == 1 && original.as_ref().is_some_and(may_use);
    if header_ok {
        return out;
    }
    let original_text = original
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| sender.map(ToString::to_string));
    out.header = Some(
        original
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );

    let name = match &policy.display_name {
        Some(n) => Some(n.as_str().to_string()),
        None => first.and_then(|m| m.display_name),
    };
    let eol: &[u8] = if block.lf_only { b"\n" } else { b"\r\n" };
    let mut new = Vec::new();
    new.extend_from_slice(b"From: ");
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        new.extend_from_slice(phrase(&name).as_bytes());
        new.push(b' ');
        new.extend_from_slice(format!("<{}>", policy.mailbox).as_bytes());
    } else {
        new.extend_from_slice(policy.mailbox.as_str().as_bytes());
    }
    new.extend_from_slice(eol);
    let has_reply_to = block.fields.iter().any(|f| f.is("reply-to"));
    if let Some(reply_to) = original_text.filter(|_| !has_reply_to) {
        new.extend_from_slice(format!("Reply-To: {reply_to}").as_bytes());
        new.extend_from_slice(eol);
    }

    // Splice from the end so earlier offsets stay valid: drop the extra From fields, then put
    // the new fields where the first From was (or at the end of the header block).
    let mut removals: Vec<std::ops::Range<usize>> =
        froms.iter().skip(1).map(|f| f.whole.clone()).collect();
    let replace = match froms.first() {
        Some(f) => f.whole.clone(),
        None => {
            let end = block.end;
            if end > 0 && message[end - 1] != b'\n' {
                // A header block without its final line ending (a message of headers only).
                let mut with_eol = eol.to_vec();
                with_eol.extend_from_slice(&new);
                new = with_eol;
            }
            end..end
        }
    };
    removals.push(replace.clone());
    removals.sort_by_key(|r| std::cmp::Reverse(r.start));
    for r in removals {
        if r == replace {
            message.splice(r, new.iter().copied());
        } else {
            message.splice(r, std::iter::empty());
        }
    }
    out
}

/// One header field: its name and where it lies (whole field with its line endings; the value
/// after the colon, folding included).
struct Field {
    name: String,
    whole: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

impl Field {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

struct HeaderBlock {
    fields: Vec<Field>,
    /// Where the header block ends (its blank line, or the first line that is not a field).
    end: usize,
    /// The first line ended in a bare LF (the relay normalises to CRLF, so rarely).
    lf_only: bool,
}

/// The top-level header block, as `message::complete` reads it: a field, its folded
/// continuation lines, and so on until a blank line or a line that is not a field.
fn scan(msg: &[u8]) -> HeaderBlock {
    let mut block = HeaderBlock {
        fields: Vec::new(),
        end: msg.len(),
        lf_only: false,
    };
    let mut pos = 0;
    let mut first = true;
    while pos < msg.len() {
        let rest = &msg[pos..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                if first && (p == 0 || rest[p - 1] != b'\r') {
                    block.lf_only = true;
                }
                let line = &rest[..p];
                (line.strip_suffix(b"\r").unwrap_or(line), pos + p + 1)
            }
            None => (rest, msg.len()),
        };
        first = false;
        if line.is_empty() {
            block.end = pos;
            return block;
        }
        if matches!(line[0], b' ' | b'\t') && !block.fields.is_empty() {
            let field = block.fields.last_mut().expect("not empty");
            field.whole.end = next;
            field.value.end = pos + line.len();
        } else {
            let Some(colon) = field_colon(line) else {
                block.end = pos;
                return block;
            };
            let name = String::from_utf8_lossy(line[..colon].trim_ascii_end()).into_owned();
            block.fields.push(Field {
                name,
                whole: pos..next,
                value: pos + colon + 1..pos + line.len(),
            });
        }
        pos = next;
    }
    block
}

/// The colon of a field line: a name of printable ASCII before it (trailing blanks allowed).
fn field_colon(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(colon)
}

/// A field value on one line: folding removed, other control characters made spaces.
fn unfold(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .filter(|&c| c != '\r' && c != '\n')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first mailbox of a `From:` value: its display name (unquoted) and address.
#[derive(Debug, PartialEq, Eq)]
struct Mailbox {
    display_name: Option<String>,
    address: Option<EmailAddress>,
}

fn parse_mailbox(value: &str) -> Mailbox {
    // Walk the value once, outside quotes and comments: the phrase before `<`, the address in
    // `<...>` (or the bare addr-spec), comments kept aside, a comma ends the first mailbox.
    let mut phrase = String::new();
    let mut bare = String::new();
    let mut angle: Option<String> = None;
    let mut comment = String::new();
    let mut comments: Vec<String> = Vec::new();
    let (mut quoted, mut depth, mut escaped, mut in_angle) = (false, 0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth > 0 {
                comment.push(c);
            } else if quoted {
                phrase.push(c);
            }
            continue;
        }
        if depth > 0 {
            match c {
                '\\' => escaped = true,
                '(' => {
                    depth += 1;
                    comment.push(c);
                }
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        comments.push(std::mem::take(&mut comment));
                    } else {
                        comment.push(c);
                    }
                }
                _ => comment.push(c),
            }
            continue;
        }
        if quoted {
            match c {
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => phrase.push(c),
            }
            continue;
        }
        if in_angle {
            match c {
                '>' => in_angle = false,
                _ => angle.get_or_insert_with(String::new).push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '(' => depth = 1,
            '<' => {
                in_angle = true;
                angle.get_or_insert_with(String::new);
            }
            // `Doe, John <jd@x>` (common, invalid): a comma before any address is the name's.
            ',' if angle.is_none() && !bare.contains('@') => {
                phrase.push(c);
                bare.clear();
            }
            ',' | ';' => break,
            _ => {
                phrase.push(c);
                bare.push(c);
            }
        }
    }
    let address_text = match &angle {
        Some(a) => a.rsplit(':').next().unwrap_or_default().trim().to_string(),
        None => bare.trim().to_string(),
    };
    let address = EmailAddress::parse(&address_text).ok();
    let name = if angle.is_some() {
        Some(phrase)
    } else {
        comments.into_iter().next()
    };
    let display_name = name
        .map(|n| n.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(MAX_DISPLAY_NAME).collect());
    Mailbox {
        display_name,
        address,
    }
}

/// `text` as an RFC 5322 phrase: ASCII as a quoted string (`"Scanner"`), anything with
/// non-ASCII as RFC 2047 encoded words (valid with or without SMTPUTF8).
fn phrase(text: &str) -> String {
    if !text.is_ascii() {
        return encoded_words(text);
    }
    let mut q = String::with_capacity(text.len() + 2);
    q.push('"');
    for c in text.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// `=?UTF-8?B?...?=` words of at most 75 characters, split on character boundaries.
fn encoded_words(text: &str) -> String {
    const MAX_BYTES: usize = 45; // 60 base64 characters + 12 of `=?UTF-8?B??=`
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if chunk.len() + c.len_utf8() > MAX_BYTES {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", b64.encode(w)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DisplayName;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn policy(name: Option<&str>) -> RewriteFrom {
        RewriteFrom {
            mailbox: addr("scan@contoso.com"),
            display_name: name.map(|n| DisplayName::parse(n).unwrap()),
        }
    }

    fn allowed() -> AllowedFrom {
        AllowedFrom::parse(["scan@contoso.com", "@ok.example"]).unwrap()
    }

    /// Rewrites `msg` sent with envelope `sender`; returns the message and what changed.
    fn run(msg: &str, sender: Option<&str>, name: Option<&str>) -> (String, Rewritten) {
        let mut bytes = msg.as_bytes().to_vec();
        let sender = sender.map(addr);
        let out = rewrite(&mut bytes, sender.as_ref(), &allowed(), &policy(name));
        (String::from_utf8(bytes).unwrap(), out)
    }

    #[test]
    fn a_simple_from_becomes_the_mailbox_and_the_original_goes_to_reply_to() {
        let (msg, out) = run(
            "Subject: scan\r\nFrom: noreply@erp.local\r\nTo: a@b.com\r\n\r\nbody\r\n",
            Some("noreply@erp.local"),
            None,
        );
        assert_eq!(
            msg,
            "Subject: scan\r\nFrom: scan@contoso.com\r\nReply-To: noreply@erp.local\r\nTo: a@b.com\r\n\r\nbody\r\n"
        );
        assert_eq!(out.envelope.as_deref(), Some("noreply@erp.local"));
        assert_eq!(out.header.as_deref(), Some("noreply@erp.local"));
    }

    #[test]
    fn the_display_name_is_kept_or_replaced_by_the_configured_one() {
        let msg = "From: \"Scanner\" <scanner@lan.local>\r\n\r\nb\r\n";
        let (kept, _) = run(msg, Some("scanner@lan.local"), None);
        assert!(
            kept.starts_with(
                "From: \"Scanner\" <scan@contoso.com>\r\nReply-To: scanner@lan.local\r\n"
            ),
            "{kept}"
        );
        let (named, _) = run(msg, Some("scanner@lan.local"), Some("Floor 2 \"MFP\""));
        assert!(
            named.starts_with("From: \"Floor 2 \\\"MFP\\\"\" <scan@contoso.com>\r\n"),
            "{named}"
        );
    }

    #[test]
    fn names_with_quotes_commas_and_comments_stay_one_quoted_phrase() {
        let (msg, _) = run(
            "From: \"Doe, John \\\"JD\\\"\" <jd@erp.local>\r\n\r\n",
            Some("jd@erp.local"),
            None,
        );
        assert!(
            msg.starts_with(
                "From: \"Doe, John \\\"JD\\\"\" <scan@contoso.com>\r\nReply-To: jd@erp.local\r\n"
            ),
            "{msg}"
        );
        // Unquoted comma (common, invalid): quoted now, so it is not read as two mailboxes.
        let (msg, _) = run("From: Doe, John <jd@erp.local>\r\n\r\n", None, None);
        assert!(
            msg.starts_with("From: \"Doe, John\" <scan@contoso.com>\r\nReply-To: jd@erp.local\r\n"),
            "{msg}"
        );
        // Old style: the comment is the name.
        let (msg, _) = run("From: ops@erp.local (ERP System)\r\n\r\n", None, None);
        assert!(
            msg.starts_with(
                "From: \"ERP System\" <scan@contoso.com>\r\nReply-To: ops@erp.local\r\n"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_folded_from_is_replaced_whole() {
        let (msg, _) = run(
            "To: a@b.com\r\nFrom: \"Very Long\r\n Scanner Name\"\r\n\t<scanner@lan.local>\r\nSubject: x\r\n\r\nFrom: in the body\r\n",
            Some("scanner@lan.local"),
            None,
        );
        assert_eq!(
            msg,
            "To: a@b.com\r\nFrom: \"Very Long Scanner Name\" <scan@contoso.com>\r\nReply-To: scanner@lan.local\r\nSubject: x\r\n\r\nFrom: in the body\r\n"
        );
    }

    #[test]
    fn no_from_gets_one_and_several_become_one() {
        let (msg, out) = run("Subject: x\r\n\r\nb\r\n", Some("dev@lan.local"), None);
        assert_eq!(
            msg,
            "Subject: x\r\nFrom: scan@contoso.com\r\nReply-To: dev@lan.local\r\n\r\nb\r\n"
        );
        assert_eq!(out.header.as_deref(), Some(""));
        let (msg, _) = run(
            "From: a@erp.local\r\nSubject: x\r\nFROM: b@erp.local\r\n\r\nb\r\n",
            None,
            None,
        );
        assert_eq!(
            msg,
            "From: scan@contoso.com\r\nReply-To: a@erp.local\r\nSubject: x\r\n\r\nb\r\n"
        );
        // Headers only, without a final line ending.
        let (msg, _) = run("Subject: x", None, None);
        assert_eq!(msg, "Subject: x\r\nFrom: scan@contoso.com\r\n");
    }

    #[test]
    fn an_existing_reply_to_is_kept() {
        let (msg, _) = run(
            "Reply-To: helpdesk@erp.local\r\nFrom: noreply@erp.local\r\n\r\nb\r\n",
            Some("noreply@erp.local"),
            None,
        );
        assert_eq!(
            msg,
            "Reply-To: helpdesk@erp.local\r\nFrom: scan@contoso.com\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn allowed_senders_are_left_alone_and_judged_separately() {
        let original = "From: \"Ops\" <ops@ok.example>\r\n\r\nb\r\n";
        let (msg, out) = run(original, Some("scan@contoso.com"), None);
        assert_eq!(msg, original);
        assert!(!out.changed());
        // The envelope was not allowed, the header was: only the envelope changes.
        let (msg, out) = run(original, Some("noreply@erp.local"), None);
        assert_eq!(msg, original);
        assert_eq!(out.envelope.as_deref(), Some("noreply@erp.local"));
        assert_eq!(out.header, None);
        // `<>` is replaced too.
        let (_, out) = run(original, None, None);
        assert_eq!(out.envelope.as_deref(), Some(""));
    }

    #[test]
    fn utf8_names_become_encoded_words_and_8bit_bodies_are_untouched() {
        let mut msg = "From: \"Drucker Büro\" <d@lan.local>\r\n\r\n"
            .as_bytes()
            .to_vec();
        msg.extend_from_slice(&[0xff, 0xfe, b'\r', b'\n']);
        let mut bytes = msg.clone();
        rewrite(&mut bytes, None, &allowed(), &policy(None));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("From: =?UTF-8?B?RHJ1Y2tlciBCw7xybw==?= <scan@contoso.com>\r\n"),
            "{text}"
        );
        assert!(bytes.ends_with(&[b'\r', b'\n', 0xff, 0xfe, b'\r', b'\n']));
        // Long names are split into words of at most 75 characters.
        let long = DisplayName::parse(&"é".repeat(64)).unwrap();
        let words = phrase(long.as_str());
        assert!(
            words
                .split(' ')
                .all(|w| w.len() <= 75 && w.starts_with("=?UTF-8?B?")),
            "{words}"
        );
    }

    #[test]
    fn header_text_cannot_inject_fields() {
        // A display name from the message with a control character and angle brackets in quotes.
        let (msg, _) = run(
            "From: \"x\u{7}>\r\n Bcc: evil@x.com <\" <a@erp.local>\r\n\r\n",
            None,
            None,
        );
        let (head, _) = msg.split_once("\r\n\r\n").unwrap();
        assert_eq!(head.lines().count(), 2, "{msg}");
        assert!(
            head.starts_with("From: \"x > Bcc: evil@x.com <\" <scan@contoso.com>"),
            "{msg}"
        );
    }

    #[test]
    fn the_header_block_ends_at_the_blank_line_or_the_first_non_field() {
        // After normalisation, bare LF became CRLF; a first body line without a blank line.
        let (msg, _) = run(
            "Subject: x\r\nnot a header\r\nFrom: b@c.com\r\n",
            None,
            None,
        );
        assert_eq!(
            msg,
            "Subject: x\r\nFrom: scan@contoso.com\r\nnot a header\r\nFrom: b@c.com\r\n"
        );
        // Bare LF throughout (if it ever gets here): the added lines follow it.
        let (msg, _) = run("From: a@erp.local\nSubject: x\n\nb\n", None, None);
        assert_eq!(
            msg,
            "From: scan@contoso.com\nReply-To: a@erp.local\nSubject: x\n\nb\n"
        );
    }
}
