//! The catalogue of provider errors: every AADSTS code, SMTP reply, Google OAuth error and Graph
//! error code Postern can explain, each with its cause and its remedy, in one place so that
//! `connection test`, the log, notifications, `doctor` and the UI explain an error the same way.
//!
//! It works on plain values (codes and raw text), not on the OAuth or SMTP client's types, so every
//! layer can use it without the catalogue depending on any of them.

mod entries;
#[cfg(test)]
mod tests;

pub use entries::ENTRIES;

use crate::domain::{OAuthFlow, Provider};

/// An RFC 3463 enhanced status code: class, subject, detail.
pub type Enhanced = (u8, u16, u16);

/// What an entry is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A Microsoft Entra code (`AADSTS7000222`); several codes can share one entry.
    Aadsts(&'static [u32]),
    /// An SMTP reply: basic code (0 = any) and enhanced status code `class.subject.detail`.
    Smtp(u16, Enhanced),
    /// A word Exchange puts in the reply text under several codes (`SubmissionQuotaExceeded`).
    SmtpText(&'static str),
    /// An OAuth 2.0 `error` value (Google, generic providers, Microsoft without a code).
    OAuth(&'static str),
    /// A Microsoft Graph error `code` (`ErrorSendAsDenied`).
    Graph(&'static str),
    /// A cause Postern diagnosed itself from what it knows beside the provider's answer (a
    /// refresh token's age, the flow), found by this phrase in the status reason; see
    /// [`diagnose_refusal`].
    Postern(&'static str),
}

/// One known error: why it happens and what the admin does about it.
#[derive(Debug)]
pub struct Entry {
    pub key: Key,
    /// What happened, in the admin's terms.
    pub cause: &'static str,
    /// What to do. `{connection}` becomes the connection's name, `{redirect_uri}` the redirect URI.
    pub remedy: &'static str,
    /// Only an admin can fix it: the connection needs re-authorization or new settings, and
    /// retrying or refreshing the token will not help.
    pub needs_admin: bool,
}

/// What a remedy may name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The connection's name, for the commands to run.
    pub connection: Option<&'a str>,
    /// The redirect URI that was sent, exactly (the value to register).
    pub redirect_uri: Option<&'a str>,
}

impl Entry {
    /// The remedy with the context filled in.
    pub fn remedy(&self, cx: Context<'_>) -> String {
        let name = cx.connection.unwrap_or("NAME");
        let uri = match cx.redirect_uri {
            Some(u) => format!("`{u}`"),
            None => format!("the connection's redirect URI (`postern connection show {name}`)"),
        };
        self.remedy
            .replace("{connection}", name)
            .replace("{redirect_uri}", &uri)
    }

    /// Cause and remedy in one sentence pair, as the log, the CLI and notifications show them.
    pub fn explain(&self, cx: Context<'_>) -> String {
        format!("{} {}", self.cause, self.remedy(cx))
    }

    /// A short label for the entry: `AADSTS7000222`, `535 5.7.139`, `invalid_grant`...
    pub fn label(&self) -> String {
        match self.key {
            Key::Aadsts(codes) => format!("AADSTS{}", codes[0]),
            Key::Smtp(0, (c, s, d)) => format!("{c}.{s}.{d}"),
            Key::Smtp(code, (c, s, d)) => format!("{code} {c}.{s}.{d}"),
            Key::SmtpText(t) | Key::OAuth(t) | Key::Graph(t) | Key::Postern(t) => t.to_string(),
        }
    }
}

/// Google's 'Testing' publishing status, said at every Google sign-in: Postern cannot see the
/// app's status, and the 7-day death of the refresh token otherwise comes as a surprise a week
/// later.
pub const GOOGLE_TESTING_STATUS_WARNING: &str = "if the Google app's publishing status is \
'Testing' (Google Cloud console > Google Auth Platform > Audience; older consoles: OAuth consent \
screen), Google lets its refresh tokens expire after 7 days and the connection then stops. Press \
'Publish app' there (Testing > In production) before signing in, or sign in again each week.";

/// Phrases [`diagnose_refusal`] puts in a status reason, and its entries are found by.
pub const GOOGLE_TESTING_PHRASE: &str = "the Google app is probably in 'Testing' publishing status";
pub const DELEGATION_PHRASE: &str = "domain-wide delegation is not granted";

/// Google's 'Testing' apps get refresh tokens that die after 7 days: a refusal of one that old
/// (give or take half a day) is most likely that, not a revocation.
const TESTING_TOKEN_AGE: std::ops::RangeInclusive<i64> = (13 * 86_400 / 2)..=(15 * 86_400 / 2);

/// What Postern can tell about a refused grant beyond the provider's words: a sentence to add to
/// the status reason (it carries the phrase of a catalogue entry), or `None`.
/// `refresh_token_age_secs`: how long ago the refused refresh token was obtained.
pub fn diagnose_refusal(
    provider: Provider,
    flow: OAuthFlow,
    error: &str,
    refresh_token_age_secs: Option<i64>,
) -> Option<String> {
    match (provider, flow, error) {
        (Provider::Google, OAuthFlow::AuthorizationCode, "invalid_grant") => {
            let age = refresh_token_age_secs.filter(|a| TESTING_TOKEN_AGE.contains(a))?;
            Some(format!(
                "The refresh token was {:.1} days old: {GOOGLE_TESTING_PHRASE}.",
                age as f64 / 86_400.0
            ))
        }
        (Provider::Google, OAuthFlow::ServiceAccount, "unauthorized_client") => Some(format!(
            "For a service account this means {DELEGATION_PHRASE} for its client id and scope."
        )),
        _ => None,
    }
}

/// What to say before a sign-in, for a provider and flow.
pub fn consent_warning(provider: Provider, flow: OAuthFlow) -> Option<&'static str> {
    (provider == Provider::Google && flow == OAuthFlow::AuthorizationCode)
        .then_some(GOOGLE_TESTING_STATUS_WARNING)
}

/// What to do about a connection that needs re-authorization, from its status reason: the
/// catalogue's explanation when it knows the error, else the generic step.
pub fn reauthorization_fix(connection: &str, reason: &str) -> String {
    let cx = Context {
        connection: Some(connection),
        redirect_uri: None,
    };
    match lookup(reason) {
        Some(entry) => entry.explain(cx),
        None => format!("Run `postern connection authorize {connection}` to sign in again."),
    }
}

/// The entry for a Microsoft Entra (AADSTS) code.
pub fn aadsts(code: u32) -> Option<&'static Entry> {
    ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::Aadsts(codes) if codes.contains(&code)))
}

/// The entry for an OAuth `error` value.
pub fn oauth_error(error: &str) -> Option<&'static Entry> {
    ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::OAuth(k) if k == error))
}

/// The entry for a Graph error code.
pub fn graph(code: &str) -> Option<&'static Entry> {
    ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::Graph(k) if k.eq_ignore_ascii_case(code)))
}

/// The entry for an SMTP reply: its basic code, enhanced code and text. The text is checked
/// first because Exchange sends SendAsDenied and quota errors under several enhanced codes.
pub fn smtp(code: u16, enhanced: Option<Enhanced>, text: &str) -> Option<&'static Entry> {
    let lower = text.to_ascii_lowercase();
    let by_text = ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::SmtpText(t) if lower.contains(&t.to_ascii_lowercase())));
    by_text.or_else(|| {
        let enhanced = enhanced?;
        ENTRIES.iter().find(
            |e| matches!(e.key, Key::Smtp(c, x) if (c == code || c == 0 || code == 0) && x == enhanced),
        )
    })
}

/// The entry for an error as it appears in a log line, a status reason or a provider's answer:
/// an AADSTS code, a Graph code, an SMTP reply (`535 5.7.139 ...`) or an OAuth `error` word.
pub fn lookup(raw: &str) -> Option<&'static Entry> {
    // Postern's own diagnosis says more than the provider's error word beside it.
    if let Some(e) = ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::Postern(p) if raw.contains(p)))
    {
        return Some(e);
    }
    // The error words that say more than the AADSTS code that comes with them.
    for word in ["access_denied", "authorization_declined", "expired_token"] {
        if starts_with_word(raw, word) {
            return oauth_error(word);
        }
    }
    if let Some(e) = aadsts_in(raw).and_then(aadsts) {
        return Some(e);
    }
    let graph_hit = ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::Graph(k) if contains_word(raw, k)));
    if graph_hit.is_some() {
        return graph_hit;
    }
    if let Some((code, enhanced)) = smtp_codes(raw)
        && let Some(e) = smtp(code, enhanced, raw)
    {
        return Some(e);
    }
    ENTRIES
        .iter()
        .find(|e| matches!(e.key, Key::OAuth(k) if contains_word(raw, k)))
}

/// The number after the first `AADSTS` in `text`.
pub fn aadsts_in(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The first SMTP reply in `text`: a three-digit code, then (optionally) an enhanced code.
fn smtp_codes(text: &str) -> Option<(u16, Option<Enhanced>)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_end_matches([':', ',']);
        let (code_part, rest) = match w.split_once('-') {
            Some((c, r)) => (c, Some(r)),
            None => (w, None),
        };
        let Ok(code) = code_part.parse::<u16>() else {
            continue;
        };
        if code_part.len() != 3 || !(200..600).contains(&code) {
            continue;
        }
        let next = rest.or_else(|| words.get(i + 1).copied());
        return Some((code, next.and_then(enhanced)));
    }
    // A bare enhanced code (`5.7.139` in a sentence).
    let bare = words.iter().find_map(|w| enhanced(w))?;
    Some((0, Some(bare)))
}

fn enhanced(word: &str) -> Option<Enhanced> {
    let word = word.trim_end_matches(|c: char| !c.is_ascii_digit());
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some((class, subject, detail))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.trim_start()
        .strip_prefix(word)
        .is_some_and(|rest| !rest.starts_with(is_word_char))
}

/// `word` appears in `text` not as part of a longer identifier.
fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
    })
}
