//! A fuzzing entry point for what the provider (or anyone posing as it) sends back: replies
//! and EHLO capabilities, with invariants checked.

use super::ehlo::Capabilities;
use super::reply::{MAX_REPLY_BYTES, parse_reply};

/// Parses `input` as a stream of pipelined replies, as the client's read loop does, and reads
/// every positive reply as an EHLO answer. The first byte sets how much arrives at a time, so
/// replies split across reads are explored too.
///
/// Panics if an invariant breaks: the parser consumes at least one and at most the available
/// bytes, never accepts more than [`MAX_REPLY_BYTES`], gives the same reply whether the bytes
/// arrived at once or in pieces, and codes stay within 200..=599.
pub fn fuzz_reply(input: &[u8]) {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let whole = parse_stream(data, data.len().max(1));
    let split = parse_stream(data, usize::from(first % 32) + 1);
    assert_eq!(whole, split, "replies depend on how the bytes were split");
}

/// What a read loop saw: each reply's code and lines, and how the stream ended.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    replies: Vec<(u16, Vec<String>)>,
    ended_in_error: bool,
}

/// Feeds `data` `chunk` bytes at a time into a buffer and takes replies off its front, like
/// `wire` does with socket reads.
fn parse_stream(data: &[u8], chunk: usize) -> Seen {
    let mut seen = Seen {
        replies: Vec::new(),
        ended_in_error: false,
    };
    let mut buf = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse_reply(&buf) {
                Ok(Some((reply, used))) => {
                    assert!(
                        used > 0 && used <= buf.len(),
                        "used {used} of {}",
                        buf.len()
                    );
                    assert!(used <= MAX_REPLY_BYTES, "a reply longer than the limit");
                    assert!((200..=599).contains(&reply.code), "code {}", reply.code);
                    check_reply(&reply);
                    seen.replies.push((reply.code, reply.lines));
                    buf.drain(..used);
                }
                Ok(None) => {
                    assert!(buf.len() <= MAX_REPLY_BYTES, "waiting on an endless reply");
                    break;
                }
                Err(_) => {
                    // The client gives up on the connection here; so does the stream.
                    seen.ended_in_error = true;
                    return seen;
                }
            }
        }
    }
    seen
}

fn check_reply(reply: &super::reply::Reply) {
    // Whatever arrived must be printable in errors and `connection test` output.
    let _ = reply.to_string();
    let _ = reply.text();
    let _ = (
        reply.is_positive(),
        reply.is_transient(),
        reply.is_permanent(),
    );
    if let Some(code) = reply.enhanced {
        assert!(matches!(code.class, 2 | 4 | 5), "enhanced class {code}");
        assert!(code.subject <= 999 && code.detail <= 999, "enhanced {code}");
    }
    let caps = Capabilities::from_ehlo(reply);
    let _ = caps.to_string();
    for mech in &caps.auth {
        assert!(!mech.is_empty(), "an empty SASL mechanism");
        assert_eq!(
            mech,
            &mech.to_ascii_uppercase(),
            "mechanism not upper-cased"
        );
        assert!(caps.supports_auth(mech));
    }
    if let Some(limit) = caps.size_limit() {
        assert!(limit > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_inputs_do_not_panic() {
        for input in [
            &b"\x00250-mx\r\n250-AUTH=LOGIN PLAIN\r\n250 SIZE 10\r\n"[..],
            b"\x05220 hi\r\n250 ok\n535 5.7.3 no\r\n",
            b"\x1f250-a\r\n251 b\r\n",
            b"\x01",
            b"",
        ] {
            fuzz_reply(input);
        }
    }

    #[test]
    fn split_reads_give_the_same_replies() {
        let data = b"250-mx\r\n250 PIPELINING\r\n354 go\n";
        assert_eq!(parse_stream(data, 1), parse_stream(data, data.len()));
        assert_eq!(parse_stream(data, 1).replies.len(), 2);
    }
}
