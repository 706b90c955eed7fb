//! What the relay does with a sender a relay user may not use, and the display name a
//! rewritten `From:` gets.

use std::fmt;
use std::str::FromStr;

/// A relay user's From policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FromPolicy {
    /// A sender the user may not use gets `550 5.7.1` (the default).
    #[default]
    Refuse,
    /// Any sender is accepted; the message goes out as the connection's mailbox, the original
    /// address in `Reply-To:`.
    Rewrite,
    /// Only the connection's mailbox and the user's `--allow-from` (refused otherwise), said
    /// explicitly.
    AllowListed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a From policy: use `refuse`, `rewrite` or `allow-listed`")]
pub struct FromPolicyError(String);

impl FromPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FromPolicy::Refuse => "refuse",
            FromPolicy::Rewrite => "rewrite",
            FromPolicy::AllowListed => "allow-listed",
        }
    }
}

impl FromStr for FromPolicy {
    type Err = FromPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(FromPolicy::Refuse),
            "rewrite" => Ok(FromPolicy::Rewrite),
            "allow-listed" | "allow_listed" | "allowlisted" => Ok(FromPolicy::AllowListed),
            _ => Err(FromPolicyError(s.to_string())),
        }
    }
}

impl fmt::Display for FromPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The display name of a rewritten `From:` (`"Scanner" <mailbox>`): 1 to 64 characters, no
/// control characters (so no CR/LF can reach a header), trimmed. Quoted or encoded when written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    #[error("a display name cannot be empty")]
    Empty,
    #[error("a display name is at most {MAX_DISPLAY_NAME} characters, not {0}")]
    TooLong(usize),
    #[error("a display name cannot contain control characters (line breaks, tabs, …)")]
    Control,
}

impl DisplayName {
    pub fn parse(s: &str) -> Result<Self, DisplayNameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(DisplayNameError::Empty);
        }
        if s.chars().any(char::is_control) {
            return Err(DisplayNameError::Control);
        }
        let n = s.chars().count();
        if n > MAX_DISPLAY_NAME {
            return Err(DisplayNameError::TooLong(n));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DisplayName {
    type Err = DisplayNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_in_any_case_and_print_back() {
        for p in [
            FromPolicy::Refuse,
            FromPolicy::Rewrite,
            FromPolicy::AllowListed,
        ] {
            assert_eq!(p.as_str().parse::<FromPolicy>().unwrap(), p);
            assert_eq!(p.as_str().to_uppercase().parse::<FromPolicy>().unwrap(), p);
        }
        let err = "accept".parse::<FromPolicy>().unwrap_err();
        assert!(err.to_string().contains("refuse"), "{err}");
        assert_eq!(FromPolicy::default(), FromPolicy::Refuse);
    }

    #[test]
    fn display_names_refuse_control_characters_and_long_text() {
        assert_eq!(DisplayName::parse(" Scanner ").unwrap().as_str(), "Scanner");
        assert_eq!(
            DisplayName::parse("Drucker Büro 2").unwrap().as_str(),
            "Drucker Büro 2"
        );
        assert_eq!(DisplayName::parse("  "), Err(DisplayNameError::Empty));
        assert_eq!(
            DisplayName::parse("a\r\nBcc: x@y"),
            Err(DisplayNameError::Control)
        );
        assert_eq!(DisplayName::parse("a\0b"), Err(DisplayNameError::Control));
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(
            DisplayName::parse(&"x".repeat(65)),
            Err(DisplayNameError::TooLong(65))
        );
    }
}
