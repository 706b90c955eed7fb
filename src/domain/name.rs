//! A connection's name: a short slug used on the command line, in URLs and in relay-user bindings.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ConnectionName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("name `{0}` is longer than 64 characters")]
    TooLong(String),
    #[error(
        "name `{0}` may hold only lowercase letters, digits, `-` and `_`, and must start with a \
         letter or digit (for example `contoso-mail`)"
    )]
    BadCharacters(String),
}

impl ConnectionName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.chars().count() > 64 {
            return Err(NameError::TooLong(s.to_string()));
        }
        let first_ok = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !first_ok || !rest_ok {
            return Err(NameError::BadCharacters(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConnectionName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ConnectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ConnectionName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let good = ["contoso", "contoso-mail", "a", "m365_2", "9lives"];
        for g in good {
            assert_eq!(ConnectionName::parse(g).unwrap().as_str(), g);
        }
        let bad = [
            ("", "empty"),
            ("Contoso", "lowercase"),
            ("-lead", "start with"),
            ("has space", "lowercase letters"),
            ("a/b", "lowercase letters"),
        ];
        for (b, msg) in bad {
            let err = ConnectionName::parse(b).unwrap_err().to_string();
            assert!(err.contains(msg), "{b:?}: {err}");
        }
        assert!(matches!(
            ConnectionName::parse(&"x".repeat(65)),
            Err(NameError::TooLong(_))
        ));
    }
}
