//! Who authenticated, and which senders they may use.

use std::fmt;

use super::envelope::ReversePath;
use crate::domain::{DisplayName, EmailAddress};

/// An authenticated relay user, as returned by the backend after AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The relay user name (never the password).
    pub user: String,
    /// Envelope senders this user may use in MAIL FROM.
    pub allowed_from: AllowedFrom,
    /// Set for a user with the `rewrite` From policy: any sender is accepted, and what it may
    /// not use is replaced by the connection's mailbox when the message is stored.
    pub rewrite_from: Option<RewriteFrom>,
}

/// How a sender is rewritten: the connection's mailbox, and the display name to give it
/// (`None`: keep the message's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteFrom {
    pub mailbox: EmailAddress,
    pub display_name: Option<DisplayName>,
}

impl Identity {
    /// Whether MAIL FROM may name `from`: an allowed sender, or anyone when it is rewritten.
    pub fn may_send_as(&self, from: &ReversePath) -> bool {
        self.rewrite_from.is_some() || from.address().is_some_and(|a| self.allowed_from.allows(a))
    }
}

/// What the backend answered to an AUTH attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// `235 2.7.0`.
    Success(Identity),
    /// Wrong user name or password: `535 5.7.8`, counted for throttling.
    Failure,
    /// The backend could not check (store unavailable): `454 4.7.0`, not counted.
    TemporaryFailure,
}

/// A list of envelope senders: whole addresses (`app@contoso.com`) and domains (`@contoso.com`).
/// Compared without regard to case. Empty means the user may not send at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedFrom {
    addresses: Vec<String>,
    domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an allowed sender: write an address (`app@contoso.com`) or a domain (`@contoso.com`)"
)]
pub struct AllowedFromError(String);

impl AllowedFrom {
    pub fn parse<I, S>(entries: I) -> Result<Self, AllowedFromError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let bad = || AllowedFromError(entry.to_string());
            if let Some(domain) = entry.strip_prefix('@') {
                // Reuse the address rules for the domain part.
                let probe = EmailAddress::parse(&format!("x@{domain}")).map_err(|_| bad())?;
                out.domains.push(probe.domain().to_lowercase());
            } else {
                let addr = EmailAddress::parse(entry).map_err(|_| bad())?;
                out.addresses.push(addr.as_str().to_lowercase());
            }
        }
        Ok(out)
    }

    pub fn allows(&self, sender: &EmailAddress) -> bool {
        let sender_lc = sender.as_str().to_lowercase();
        let domain_lc = sender.domain().to_lowercase();
        self.addresses.contains(&sender_lc) || self.domains.contains(&domain_lc)
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }
}

/// `a@b.c, @d.e` (or `nobody` when empty), as shown in a 550 reply.
impl fmt::Display for AllowedFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nobody");
        }
        let domains = self.domains.iter().map(|d| format!("@{d}"));
        let all: Vec<String> = self.addresses.iter().cloned().chain(domains).collect();
        f.write_str(&all.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    #[test]
    fn matches_addresses_and_domains_ignoring_case() {
        let allowed = AllowedFrom::parse(["App@Contoso.com", "@Fabrikam.com"]).unwrap();
        assert!(allowed.allows(&addr("app@contoso.com")));
        assert!(allowed.allows(&addr("anyone@FABRIKAM.com")));
        assert!(!allowed.allows(&addr("other@contoso.com")));
        assert!(!allowed.allows(&addr("x@sub.fabrikam.com")));
        assert_eq!(allowed.to_string(), "app@contoso.com, @fabrikam.com");
    }

    #[test]
    fn a_rewriting_identity_may_name_any_sender_others_only_allowed_ones() {
        let mut identity = Identity {
            user: "scanner".into(),
            allowed_from: AllowedFrom::parse(["scan@contoso.com"]).unwrap(),
            rewrite_from: None,
        };
        let other = ReversePath::Address(addr("noreply@erp.local"));
        assert!(identity.may_send_as(&ReversePath::Address(addr("SCAN@contoso.com"))));
        assert!(!identity.may_send_as(&other));
        assert!(!identity.may_send_as(&ReversePath::Null));
        identity.rewrite_from = Some(RewriteFrom {
            mailbox: addr("scan@contoso.com"),
            display_name: None,
        });
        assert!(identity.may_send_as(&other));
        assert!(identity.may_send_as(&ReversePath::Null));
    }

    #[test]
    fn refuses_garbage_and_empty_allows_nothing() {
        assert!(AllowedFrom::parse(["@"]).is_err());
        assert!(AllowedFrom::parse(["not an address"]).is_err());
        let none = AllowedFrom::default();
        assert!(!none.allows(&addr("a@b.com")));
        assert_eq!(none.to_string(), "nobody");
    }
}
