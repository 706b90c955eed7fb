//! What a relay session needs to know: its policy knobs and who is on the other end.

use std::net::SocketAddr;
use std::time::Duration;

use crate::domain::Host;

/// Default maximum message size: 35 MiB, Exchange Online's own submission limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 35 * 1024 * 1024;
/// Default maximum number of recipients of one message.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;

/// The policy of one relay session. Built once per listener and shared by its sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Name in the greeting, the EHLO reply, `Received:` and generated `Message-ID`s.
    pub hostname: Host,
    /// Largest message accepted, in octets as received (announced as `SIZE`).
    pub max_message_size: usize,
    /// Recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Allow AUTH over an unencrypted, non-loopback connection. Passwords then cross the
    /// network in clear text: only for networks where that is acceptable.
    pub allow_cleartext_auth: bool,
    /// Loopback clients count as local and may AUTH without TLS. Off when a proxy or tunnel
    /// on this host forwards remote clients, which would otherwise all look local.
    pub cleartext_auth_on_loopback: bool,
    /// Clients in these networks may AUTH without TLS (the LAN-only cleartext listener).
    pub cleartext_auth_networks: Vec<super::network::IpNetwork>,
    /// A TLS acceptor is configured, so STARTTLS can be offered.
    pub starttls_available: bool,
    /// Prepend a `Received:` trace header to each accepted message.
    pub received_header: bool,
    /// What to do with a bare LF in message content.
    pub bare_lf: BareLfPolicy,
    /// Syntax and sequence errors tolerated before the session is closed with `421`.
    pub max_errors: u32,
    /// Slowing down and cutting off password guessing.
    pub auth_throttle: AuthThrottle,
}

impl SessionConfig {
    /// Safe defaults: no cleartext AUTH, no STARTTLS until an acceptor is configured.
    pub fn new(hostname: Host) -> Self {
        Self {
            hostname,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            allow_cleartext_auth: false,
            cleartext_auth_on_loopback: true,
            cleartext_auth_networks: Vec::new(),
            starttls_available: false,
            received_header: true,
            bare_lf: BareLfPolicy::default(),
            max_errors: 10,
            auth_throttle: AuthThrottle::default(),
        }
    }
}

/// A bare LF (LF not preceded by CR) in message content.
///
/// Either way a message only ends at `CRLF.CRLF`: `LF.LF`, `LF.CRLF` and `CR.CR` never end or
/// split a message (SMTP smuggling), and a bare CR always rejects the message, since no
/// reading of it is safe. The exception is a client the admin named ([`PeerInfo::lenient`]),
/// whose `LF.LF` ends the message and whose next bytes are commands of its own session. The stored message only ever contains CRLF line endings, so it
/// cannot smuggle anything past the provider either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLfPolicy {
    /// Treat a bare LF as a line ending and store CRLF (Postfix's `normalize`). Many legacy
    /// applications write LF-only messages; this keeps them working.
    #[default]
    Normalize,
    /// Reject the message with `550 5.6.11` after its final dot.
    Reject,
}

/// After `free_failures` failed AUTHs, each further failure reply waits `step` more (at most
/// `max_delay`); at `max_failures` the session is closed with `421 4.7.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottle {
    pub free_failures: u32,
    pub step: Duration,
    pub max_delay: Duration,
    pub max_failures: u32,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self {
            free_failures: 3,
            step: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            max_failures: 10,
        }
    }
}

impl AuthThrottle {
    /// How long to hold back the reply to the `failures`-th failed AUTH.
    pub fn delay_for(&self, failures: u32) -> Duration {
        let over = failures.saturating_sub(self.free_failures);
        self.step.saturating_mul(over).min(self.max_delay)
    }
}

/// The client as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The connection is encrypted (implicit TLS, or after STARTTLS).
    pub tls_active: bool,
    /// The client is in a configured trusted network: it may send without AUTH.
    pub trusted: bool,
    /// The admin allowed this client bare line feeds (a device bound to its network, or
    /// `server.bare_lf_networks`): `LF.LF` ends its messages, and it may AUTH after HELO.
    pub lenient: bool,
}

impl PeerInfo {
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().to_canonical().is_loopback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_grows_after_free_failures_and_caps() {
        let t = AuthThrottle::default();
        let secs: Vec<u64> = (1..=10).map(|n| t.delay_for(n).as_secs()).collect();
        assert_eq!(secs, [0, 0, 0, 1, 2, 3, 4, 5, 5, 5]);
    }

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        let peer = |a: &str| PeerInfo {
            addr: a.parse().unwrap(),
            tls_active: false,
            trusted: false,
            lenient: false,
        };
        assert!(peer("[::ffff:127.0.0.1]:25").is_loopback());
        assert!(peer("[::1]:25").is_loopback());
        assert!(!peer("10.0.0.1:25").is_loopback());
    }
}
