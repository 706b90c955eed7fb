//! How a [`FakeSmtp`](super::FakeSmtp) behaves: flavour (Office 365 or Gmail), TLS offer, limits.

use std::net::SocketAddr;
use std::time::Duration;

/// Which provider the server imitates (banner, capabilities, failure replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Exchange Online: `AUTH LOGIN XOAUTH2`, `535 5.7.3` on a bad token.
    Office365,
    /// Gmail: also OAUTHBEARER; a bad token gets the `334 <base64 JSON>` challenge, then 535.
    Gmail,
}

/// How TLS is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Port 587 style: STARTTLS advertised; AUTH only after it.
    StartTls,
    /// Port 465 style: TLS from the first byte.
    Implicit,
    /// A broken or hostile server: no STARTTLS, and AUTH advertised in cleartext.
    /// A correct client must refuse; `cleartext_auth_attempts` counts those that do not.
    NoStartTls,
}

/// How the AUTH capability is written in the EHLO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAdvert {
    /// `250-AUTH LOGIN XOAUTH2`.
    Standard,
    /// Only the obsolete `250-AUTH=LOGIN XOAUTH2` form.
    EqualsOnly,
    /// Both lines, as some servers send.
    Both,
}

/// Configuration of a [`FakeSmtp`](super::FakeSmtp). `Default` is Office 365 with STARTTLS.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Address to bind; default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Provider imitated.
    pub flavor: Flavor,
    /// TLS offer.
    pub tls: SmtpTls,
    /// AUTH capability spelling.
    pub auth_advert: AuthAdvert,
    /// Advertise and accept OAUTHBEARER (Gmail does, Exchange Online does not).
    pub oauthbearer: bool,
    /// Name in the banner and EHLO greeting.
    pub hostname: String,
    /// Subject alternative names of the server certificate. Default `localhost`, `127.0.0.1`;
    /// set another name to test that a client refuses a certificate for the wrong host.
    pub cert_names: Vec<String>,
    /// SIZE limit announced and enforced.
    pub max_size: u64,
    /// Timeout of every read (and write); on expiry the server sends 421 and closes.
    pub read_timeout: Duration,
    /// Token audiences accepted when validating with a [`FakeIdp`](crate::FakeIdp);
    /// `None`: Outlook audiences for Office 365, `https://mail.google.com` for Gmail.
    pub audiences: Option<Vec<String>>,
    /// Benchmark mode: no per-command logging.
    pub fast: bool,
    /// Keep received messages (with bodies) for [`messages`](super::FakeSmtp::messages);
    /// when false only counters are kept.
    pub keep_bodies: bool,
    /// Advertise CHUNKING (BDAT), as Exchange Online and Gmail do; BDAT is accepted either way.
    pub chunking: bool,
    /// Wait this long before each batch of replies (one per round trip): a provider that
    /// costs what a real one does, so mail piles up in the client's queue.
    pub reply_delay: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            flavor: Flavor::Office365,
            tls: SmtpTls::StartTls,
            auth_advert: AuthAdvert::Standard,
            oauthbearer: false,
            hostname: "fake.outlook.test".to_owned(),
            cert_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            max_size: 157_286_400,
            chunking: true,
            reply_delay: Duration::ZERO,
            read_timeout: Duration::from_secs(60),
            audiences: None,
            fast: false,
            keep_bodies: true,
        }
    }
}

impl SmtpConfig {
    /// Exchange Online imitation (same as `Default`).
    pub fn office365() -> Self {
        Self::default()
    }

    /// Gmail imitation: OAUTHBEARER, Gmail's SIZE and failure challenge.
    pub fn gmail() -> Self {
        Self {
            flavor: Flavor::Gmail,
            oauthbearer: true,
            hostname: "fake.gmail.test".to_owned(),
            max_size: 35_882_577,
            ..Self::default()
        }
    }

    /// Benchmark settings: no logging, no bodies kept.
    pub fn fast(mut self) -> Self {
        self.fast = true;
        self.keep_bodies = false;
        self
    }

    pub(crate) fn accepted_audiences(&self) -> Vec<String> {
        match (&self.audiences, self.flavor) {
            (Some(a), _) => a.clone(),
            (None, Flavor::Office365) => {
                vec![
                    "https://outlook.office.com".to_owned(),
                    "https://outlook.office365.com".to_owned(),
                ]
            }
            (None, Flavor::Gmail) => vec!["https://mail.google.com".to_owned()],
        }
    }
}
