//! Splits a MIME message too big for one Graph request into a smaller message and the attachments
//! to upload separately (the `draft` way of `--graph-large`). Sans-IO.
//!
//! Only the top-level `multipart/*` is split: its parts that carry a file name (an attachment) are
//! taken out, largest first, until the rest fits in one request. Their bodies are decoded from base64
//! (or taken as they are for 7bit/8bit/binary) so the upload carries the file's own bytes.

use base64::Engine as _;

/// One attachment taken out of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The message without the attachments taken out, and those attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub mime: Vec<u8>,
    pub attachments: Vec<Attachment>,
}

/// Why a message cannot be split into requests Graph takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("the message is not multipart: it has no attachment to upload separately")]
    NotMultipart,
    #[error(
        "without its attachments the message is still {0} bytes in base64, over Graph's 4 MB limit"
    )]
    StillTooBig(usize),
}

/// Takes attachments out of `mime` until its base64 is at most `limit` bytes.
pub fn split(mime: &[u8], limit: usize) -> Result<Split, SplitError> {
    let body_at = header_end(mime);
    let headers = &mime[..body_at];
    let boundary = header_value(headers, "content-type")
        .filter(|ct| {
            ct.to_ascii_lowercase()
                .trim_start()
                .starts_with("multipart/")
        })
        .and_then(|ct| param(&ct, "boundary"))
        .ok_or(SplitError::NotMultipart)?;
    let delim = format!("--{boundary}");
    let body = &mime[body_at..];
    // Byte ranges of each part (after its delimiter line, before the CRLF of the next one).
    let starts: Vec<usize> = find_lines(body, delim.as_bytes());
    if starts.len() < 2 {
        return Err(SplitError::NotMultipart);
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let from = line_after(body, w[0]);
        let to = trim_crlf_before(body, w[1]);
        parts.push((from, to.max(from)));
    }
    // Attachments, largest first.
    let mut candidates: Vec<(usize, Attachment)> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, &(a, b))| attachment(&body[a..b]).map(|att| (i, att)))
        .collect();
    candidates.sort_by_key(|(i, _)| std::cmp::Reverse(parts[*i].1 - parts[*i].0));
    let mut removed = vec![false; parts.len()];
    let mut attachments = Vec::new();
    let mut size = mime.len();
    for (i, att) in candidates {
        if size.div_ceil(3) * 4 <= limit {
            break;
        }
        // The part and its delimiter line go.
        size -= parts[i].1 - parts[i].0 + delim.len() + 2;
        removed[i] = true;
        attachments.push(att);
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&mime[..body_at]);
    out.extend_from_slice(&body[..starts[0]]);
    for (i, &(a, b)) in parts.iter().enumerate() {
        if removed[i] {
            continue;
        }
        out.extend_from_slice(delim.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body[a..b]);
        out.extend_from_slice(b"\r\n");
    }
    // The closing delimiter and whatever follows it.
    out.extend_from_slice(&body[*starts.last().expect("two or more")..]);
    let encoded = out.len().div_ceil(3) * 4;
    if encoded > limit {
        return Err(SplitError::StillTooBig(encoded));
    }
    Ok(Split {
        mime: out,
        attachments,
    })
}

/// Where the body starts (after the empty line), or the end.
fn header_end(m: &[u8]) -> usize {
    if m.starts_with(b"\r\n") {
        return 2;
    }
    if let Some(i) = m.windows(4).position(|w| w == b"\r\n\r\n") {
        return i + 4;
    }
    m.windows(2)
        .position(|w| w == b"\n\n")
        .map_or(m.len(), |i| i + 2)
}

/// A header's value, unfolded.
fn header_value(headers: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_string());
        }
    }
    value
}

/// A parameter of a structured header (`boundary`, `name`, `filename`), quotes removed.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The offsets of the lines that start with `delim` (a boundary line, closing one included).
fn find_lines(body: &[u8], delim: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(delim) {
            out.push(i);
            // The closing delimiter ends the multipart.
            if body[i + delim.len()..].starts_with(b"--") {
                break;
            }
        }
        match body[i..].iter().position(|&b| b == b'\n') {
            Some(n) => i += n + 1,
            None => break,
        }
    }
    out
}

fn line_after(body: &[u8], at: usize) -> usize {
    body[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(body.len(), |n| at + n + 1)
}

fn trim_crlf_before(body: &[u8], at: usize) -> usize {
    let mut end = at;
    if end > 0 && body[end - 1] == b'\n' {
        end -= 1;
    }
    if end > 0 && body[end - 1] == b'\r' {
        end -= 1;
    }
    end
}

/// The part as an attachment, if it names a file and is not itself multipart.
fn attachment(part: &[u8]) -> Option<Attachment> {
    let at = header_end(part);
    let headers = &part[..at];
    let ct = header_value(headers, "content-type").unwrap_or_else(|| "text/plain".into());
    if ct.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    let name = header_value(headers, "content-disposition")
        .and_then(|d| param(&d, "filename"))
        .or_else(|| param(&ct, "name"))?;
    let content_type = ct.split(';').next().unwrap_or("").trim().to_string();
    let encoding = header_value(headers, "content-transfer-encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let raw = &part[at..];
    let bytes = match encoding.as_str() {
        "base64" => {
            let clean: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .ok()?
        }
        "" | "7bit" | "8bit" | "binary" => raw.to_vec(),
        // quoted-printable and others: kept in the message rather than decoded wrongly.
        _ => return None,
    };
    Some(Attachment {
        name,
        content_type,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(file: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(file);
        let mut lines = String::new();
        for c in b64.as_bytes().chunks(76) {
            lines.push_str(std::str::from_utf8(c).unwrap());
            lines.push_str("\r\n");
        }
        format!(
            "From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\npreamble\r\n--XYZ\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nHello, the report is attached.\r\n\
             --XYZ\r\nContent-Type: application/octet-stream; name=\"r.bin\"\r\n\
             Content-Disposition: attachment; filename=\"r.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{lines}--XYZ--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_large_attachment_leaves_and_the_text_stays() {
        let file: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let s = split(&message(&file), 100_000).unwrap();
        assert_eq!(s.attachments.len(), 1);
        assert_eq!(s.attachments[0].name, "r.bin");
        assert_eq!(s.attachments[0].content_type, "application/octet-stream");
        assert_eq!(s.attachments[0].bytes, file);
        let text = String::from_utf8(s.mime).unwrap();
        assert!(
            text.contains("Hello, the report is attached.\r\n--XYZ--\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Subject: big") && !text.contains("r.bin"),
            "{text}"
        );
    }

    #[test]
    fn a_message_that_fits_keeps_its_attachment_and_one_that_cannot_is_refused() {
        let m = message(b"small");
        assert_eq!(split(&m, 1_000_000).unwrap().attachments, vec![]);
        assert_eq!(
            split(b"Subject: x\r\n\r\nplain text", 4),
            Err(SplitError::NotMultipart)
        );
        assert!(matches!(split(&m, 10), Err(SplitError::StillTooBig(_))));
    }
}
