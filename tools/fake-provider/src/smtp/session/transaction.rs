//! The mail transaction: MAIL FROM, RCPT TO, DATA (dot-unstuffing) and BDAT.

use super::{Flow, Session, Tx, code_of};
use crate::smtp::conn::ConnError;
use crate::smtp::{ReceivedMessage, Stage};
use crate::util::random_b64;

/// `FROM:<addr> PARAM...` → (addr, params). Case-insensitive keyword, optional space after colon.
fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(String, Vec<&'a str>)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let params = rest[end + 1..].split_whitespace().collect();
    Some((rest[..end].to_owned(), params))
}

impl Session {
    pub(super) fn mail(&mut self, arg: &str) -> Flow {
        if !self.ehlo {
            return self.send("503 5.5.2 Send hello first");
        }
        if self.user.is_none() {
            return self.send(&format!(
                "530 5.7.57 Client not authenticated to send mail. [{}]",
                self.shared.config.hostname
            ));
        }
        if self.tx.is_some() {
            return self.send("503 5.5.2 Sender already specified");
        }
        let Some((from, params)) = parse_path(arg, "FROM:") else {
            return self.send("501 5.5.4 Invalid arguments");
        };
        for p in &params {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) if n > self.shared.config.max_size => {
                        return self
                            .send("552 5.3.4 Message size exceeds fixed maximum message size");
                    }
                    Ok(_) => {}
                    Err(_) => return self.send("501 5.5.4 Invalid SIZE parameter"),
                },
                "BODY"
                    if ["7BIT", "8BITMIME", "BINARYMIME"]
                        .iter()
                        .any(|b| b.eq_ignore_ascii_case(value)) => {}
                "SMTPUTF8" | "RET" | "ENVID" | "AUTH" => {}
                _ => return self.send(&format!("555 5.5.4 Unsupported parameter {key}")),
            }
        }
        if let Some(reply) = self.shared.take_injection(&Stage::MailFrom)
            && code_of(&reply) / 100 != 2
        {
            return self.send(&reply);
        }
        let params = params.into_iter().map(str::to_owned).collect();
        self.tx = Some(Tx {
            from,
            params,
            ..Tx::default()
        });
        self.send("250 2.1.0 Sender OK")
    }

    pub(super) fn rcpt(&mut self, arg: &str) -> Flow {
        if self.tx.is_none() {
            return self.send("503 5.5.2 Need mail command");
        }
        let Some((to, _params)) = parse_path(arg, "TO:") else {
            return self.send("501 5.5.4 Invalid arguments");
        };
        if let Some(reply) = self.shared.take_injection(&Stage::Rcpt(Some(to.clone())))
            && code_of(&reply) / 100 != 2
        {
            return self.send(&reply);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpts.push(to);
        }
        self.send("250 2.1.5 Recipient OK")
    }

    /// The transaction is ready for content, or the reply explaining why not.
    fn ready_for_content(&self) -> Result<(), &'static str> {
        match &self.tx {
            None => Err("503 5.5.2 Need mail command"),
            Some(tx) if tx.rcpts.is_empty() => Err("503 5.5.2 Need rcpt command"),
            Some(_) => Ok(()),
        }
    }

    pub(super) async fn data(&mut self) -> Result<Flow, ConnError> {
        if let Err(reply) = self.ready_for_content() {
            return Ok(self.send(reply));
        }
        if let Some(reply) = self.shared.take_injection(&Stage::Data)
            && code_of(&reply) != 354
        {
            return Ok(self.send(&reply));
        }
        self.conn
            .reply("354 Start mail input; end with <CRLF>.<CRLF>");
        let max = usize::try_from(self.shared.config.max_size).unwrap_or(usize::MAX);
        let keep = self.shared.wants_bodies();
        let mut data = Vec::new();
        let size = self.conn.data(&mut data, keep, max).await?;
        if size > max {
            self.tx = None;
            return Ok(self.send("552 5.3.4 Message size exceeds fixed maximum message size"));
        }
        Ok(self.finish(data, false))
    }

    /// RFC 3030 CHUNKING: `BDAT <size> [LAST]`, then exactly `size` octets.
    pub(super) async fn bdat(&mut self, arg: &str) -> Result<Flow, ConnError> {
        let mut parts = arg.split_whitespace();
        let size = parts.next().and_then(|s| s.parse::<usize>().ok());
        let last = parts.next().is_some_and(|p| p.eq_ignore_ascii_case("LAST"));
        let Some(size) = size else {
            return Ok(self.send("501 5.5.4 Invalid BDAT arguments"));
        };
        if size as u64 > self.shared.config.max_size {
            // The chunk cannot be skipped cheaply; refuse and hang up, as real servers do.
            self.conn
                .reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(Flow::Close);
        }
        let mut chunk = Vec::with_capacity(size.min(1 << 20));
        self.conn.exact(size, &mut chunk).await?;
        if let Err(reply) = self.ready_for_content() {
            return Ok(self.send(reply));
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(Flow::Continue);
        };
        let buf = tx.bdat.get_or_insert_with(Vec::new);
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > self.shared.config.max_size {
            self.tx = None;
            return Ok(self.send("552 5.3.4 Message size exceeds fixed maximum message size"));
        }
        if !last {
            return Ok(self.send(&format!("250 2.0.0 {size} bytes received")));
        }
        let data = tx.bdat.take().unwrap_or_default();
        let data = if self.shared.wants_bodies() {
            data
        } else {
            Vec::new()
        };
        Ok(self.finish(data, true))
    }

    /// End of content: apply a `DataEnd` injection, else record the message and answer 250.
    fn finish(&mut self, data: Vec<u8>, chunked: bool) -> Flow {
        let Some(tx) = self.tx.take() else {
            return self.send("503 5.5.2 Need mail command");
        };
        if let Some(reply) = self.shared.take_injection(&Stage::DataEnd)
            && code_of(&reply) / 100 != 2
        {
            return self.send(&reply);
        }
        self.shared.record(ReceivedMessage {
            mail_from: tx.from,
            rcpt_to: tx.rcpts,
            data,
            auth_user: self.user.clone(),
            tls: self.conn.is_tls(),
            mail_params: tx.params,
            chunked,
        });
        let host = self.shared.config.hostname.clone();
        self.send(&format!(
            "250 2.6.0 <{}@{host}> [InternalId=1, Hostname={host}] Queued mail for delivery",
            random_b64(12)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_path;

    #[test]
    fn paths_and_params() {
        let (a, p) = parse_path("FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "FROM:").unwrap();
        assert_eq!(a, "a@b.example");
        assert_eq!(p, vec!["SIZE=10", "BODY=8BITMIME"]);
        let (a, p) = parse_path("from: <>", "FROM:").unwrap();
        assert_eq!(a, "");
        assert!(p.is_empty());
        assert!(parse_path("TO:a@b", "TO:").is_none());
    }
}
