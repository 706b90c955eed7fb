//! The outbox: where accepted mail waits (durably) and the workers that deliver it.
//!
//! - [`queue`]: [`Outbox::enqueue`] returns once the message is committed; concurrent callers share
//!   one transaction (group commit), so durability does not serialise throughput. Delivery
//!   records go through the same writer.
//! - [`arrivals`]: messages whose bodies are arriving, which a commit waits for a moment.
//! - [`lanes`]: new relay mail handed to its connection's senders in memory, already claimed.
//! - [`owners`]: which connections this instance runs senders for (PostgreSQL, several instances).
//! - [`retry`]: when to try again after a temporary failure, and when to give up.
//! - [`deliver`]: one message through the SMTP client, and what its outcome means per recipient.
//! - [`fallback`]: an SMTP connection's Graph fallback when SMTP AUTH is off (`535 5.7.139`).
//! - [`transport`]: the delivery seam: SMTP or Microsoft Graph, outcomes classified the same way.
//! - [`from_rewrite`]: the `rewrite` From policy, sending a device's mail as the mailbox.
//! - [`direct`]: deliver one message now (CLI `send`, `connection test`), recorded in the log.
//! - [`worker`]: per connection, a few reused upstream sessions draining the queue.

pub mod arrivals;
pub mod deliver;
pub mod direct;
pub mod fallback;
mod from_rewrite;
pub mod intake;
pub mod lanes;
mod owners;
mod pacing;
pub mod queue;
pub mod retry;
pub mod schedule;
pub mod transport;
pub mod usage;
pub mod worker;

pub use deliver::{TokenFactory, client_config};
pub use intake::RelayIntake;
pub use queue::{Outbox, QueueError, Wakers};
pub use retry::RetryPolicy;
pub use transport::MailTransport;
pub use worker::{Delivery, Outcome};
