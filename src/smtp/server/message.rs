//! Header fix-ups before storing: `Received:` trace, and `Date`/`Message-ID` when missing
//! (RFC 6409 §8.2, §8.3: a submission server may complete what a legacy client left out).

use std::net::IpAddr;

use chrono::{DateTime, FixedOffset};

/// What the `Received:` header says about the submission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trace<'a> {
    pub helo: &'a str,
    pub peer: IpAddr,
    pub hostname: &'a str,
    /// RFC 3848: `ESMTP`, `ESMTPA`, `ESMTPS`, `ESMTPSA` or `SMTP`.
    pub protocol: &'static str,
    /// The relay user, when the client authenticated.
    pub user: Option<&'a str>,
    pub session_id: &'a str,
}

/// Returns the message as it will be stored. The additions are spliced into `content` in
/// place: a 35 MB message is not copied into a second buffer of its size.
pub(crate) fn complete(
    mut content: Vec<u8>,
    hostname: &str,
    trace: Option<&Trace<'_>>,
    now: DateTime<FixedOffset>,
) -> Vec<u8> {
    let scan = scan_headers(&content);
    let (headers, body) = content.split_at(scan.end);
    // What goes between the header section and the body (or its blank line).
    let mut middle = Vec::new();
    if !headers.is_empty() && !headers.ends_with(b"\r\n") {
        middle.extend_from_slice(b"\r\n");
    }
    if !scan.has_date {
        middle.extend_from_slice(format!("Date: {}\r\n", now.to_rfc2822()).as_bytes());
    }
    if !scan.has_message_id {
        let id = uuid::Uuid::new_v4().simple();
        middle.extend_from_slice(format!("Message-ID: <{id}@{hostname}>\r\n").as_bytes());
    }
    // The first line was not a header: what follows is the body, so it needs its blank line.
    if !scan.has_separator && !body.is_empty() {
        middle.extend_from_slice(b"\r\n");
    }
    let received = trace.map(|t| received(t, now)).unwrap_or_default();
    content.reserve_exact(middle.len() + received.len());
    content.splice(scan.end..scan.end, middle);
    content.splice(0..0, received.into_bytes());
    content
}

fn received(t: &Trace<'_>, now: DateTime<FixedOffset>) -> String {
    let literal = match t.peer.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let user = match t.user {
        Some(user) => format!("\r\n\t(authenticated as {})", comment_text(user)),
        None => String::new(),
    };
    // No `for <recipient>` clause: it would reveal Bcc recipients to everyone.
    format!(
        "Received: from {} ({literal})\r\n\tby {} (Postern) with {} id {}{user};\r\n\t{}\r\n",
        comment_text(t.helo).replace(' ', "_"),
        t.hostname,
        t.protocol,
        t.session_id,
        now.to_rfc2822()
    )
}

/// Client-chosen text inside a header: printable ASCII only, no comment delimiters, bounded.
fn comment_text(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() && !"()\\".contains(c) || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

struct HeaderScan {
    /// Where the header section ends (the blank line, or the first non-header line).
    end: usize,
    has_separator: bool,
    has_date: bool,
    has_message_id: bool,
}

fn scan_headers(msg: &[u8]) -> HeaderScan {
    let mut scan = HeaderScan {
        end: msg.len(),
        has_separator: false,
        has_date: false,
        has_message_id: false,
    };
    let mut pos = 0;
    let mut in_field = false;
    while pos < msg.len() {
        let rest = &msg[pos..];
        let (line, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(p) => (&rest[..p], pos + p + 2),
            None => (rest, msg.len()),
        };
        if line.is_empty() {
            scan.end = pos;
            scan.has_separator = true;
            return scan;
        }
        let folded = in_field && matches!(line[0], b' ' | b'\t');
        if !folded {
            let Some(name) = field_name(line) else {
                scan.end = pos;
                return scan;
            };
            in_field = true;
            scan.has_date |= name.eq_ignore_ascii_case(b"date");
            scan.has_message_id |= name.eq_ignore_ascii_case(b"message-id");
        }
        pos = next;
    }
    scan
}

/// RFC 5322 field name (printable ASCII up to the colon; obsolete trailing blanks allowed).
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc2822("Tue, 1 Jul 2025 10:52:37 +0200").unwrap()
    }

    fn run(content: &str) -> String {
        String::from_utf8(complete(
            content.as_bytes().to_vec(),
            "relay.example",
            None,
            now(),
        ))
        .unwrap()
    }

    #[test]
    fn adds_missing_date_and_message_id_at_end_of_headers() {
        let out = run("Subject: hi\r\n\r\nbody\r\n");
        let (headers, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            headers.starts_with(
                "Subject: hi\r\nDate: Tue, 1 Jul 2025 10:52:37 +0200\r\nMessage-ID: <"
            ),
            "{out}"
        );
        assert!(headers.ends_with("@relay.example>"), "{out}");
        assert_eq!(body, "body\r\n");
    }

    #[test]
    fn keeps_existing_headers_in_any_case_and_folding() {
        let msg = "DATE: Mon, 30 Jun 2025 08:00:00 +0000\r\nmessage-id:\r\n <x@y>\r\n\r\nb\r\n";
        assert_eq!(run(msg), msg);
    }

    #[test]
    fn message_without_headers_gets_a_blank_line_before_its_body() {
        let out = run("hello world\r\n");
        assert!(out.starts_with("Date: "), "{out}");
        assert!(out.ends_with(">\r\n\r\nhello world\r\n"), "{out}");
        assert!(run("").starts_with("Date: "));
        // A Date inside the body does not count.
        assert!(run("Subject: x\r\n\r\nDate: no\r\n").contains("\r\nDate: Tue"));
    }

    #[test]
    fn received_names_relay_and_user_and_cannot_be_injected() {
        let trace = Trace {
            helo: "app(1)\\",
            peer: "::ffff:192.0.2.7".parse().unwrap(),
            hostname: "relay.example",
            protocol: "ESMTPSA",
            user: Some("billing (app)\u{7f}"),
            session_id: "abc",
        };
        let out = complete(
            b"Date: x\r\nMessage-ID: <a@b>\r\n\r\n".to_vec(),
            "relay.example",
            Some(&trace),
            now(),
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(concat!(
            "Received: from app?1?? ([192.0.2.7])\r\n\tby relay.example (Postern) with ESMTPSA id abc",
            "\r\n\t(authenticated as billing ?app??);\r\n\tTue, 1 Jul 2025 10:52:37 +0200\r\nDate: x\r\n"
        )), "{out}");
    }
}
