//! "Prove it": crash, outage, abuse and interoperability tests of the real `postern serve`
//! process, against the fake provider (in this process) and real mail software.
//!
//! Every test runs in CI with small figures; `scripts/*.sh` run the same tests with the
//! figures of the issue (environment variables named in each test). Tests that need root or
//! a Debian/npm package skip with a message outside CI and fail in CI (`CI=true`), where
//! `.ci/run` installs what they need.
//!
//! # Layout
//! - [`world`]: the fake provider behind [`gate::Gate`]s, a Postern home with a connection and
//!   a relay user, and the `serve` process (killable, restartable).
//! - [`client`]: a small SMTP submission client (STARTTLS, AUTH PLAIN, raw bytes).
//! - `abuse`, `secrets`: open-relay probes, smuggling, oversized input, the secrets audit.
//! - `http_flood`: wrong API keys, large and dribbled submissions, OAuth callback floods.
//! - `flood`: slowloris sessions, STARTTLS handshakes and big messages all at once.
//! - `storm`: wrong passwords all at once against the relay and the login form.
//! - `crash`, `outage`, `disk`: kill -9 under load, provider and token endpoint down, disk full.
//! - `interop`: Python's smtplib, swaks, Dovecot submission, oauth2-mock-server.
//! - `package`: the installed Debian package (as its `postern` user) and the container image
//!   deliver a message (ignored; `scripts/package-test.sh`, `scripts/container-test.sh`).

mod abuse;
mod client;
mod crash;
mod disk;
mod flood;
mod gate;
mod http_flood;
mod interop;
mod outage;
mod package;
mod secrets;
mod storm;
mod world;
