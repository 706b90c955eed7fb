//! How busy a listener is: its session slots (`max_connections`), and Postfix-style stress mode.
//! Past 80 % of the slots in use, the sessions then open and those opened while it lasts get
//! short timeouts for the rest of their life, so the slots held by idle and slow clients free
//! up for clients with mail to send; once below 70 %, new sessions get the normal timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Stress mode starts when more than this share of the slots (in percent) is in use ...
const STRESS_ON: usize = 80;
/// ... and ends when fewer than this share is.
const STRESS_OFF: usize = 70;

#[derive(Debug)]
pub(crate) struct Load {
    slots: Arc<Semaphore>,
    max: usize,
    stressed: watch::Sender<bool>,
}

/// One session's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    load: Arc<Load>,
}

impl Load {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            stressed: watch::channel(false).0,
        })
    }

    /// A slot, or `None` when all are in use.
    pub fn try_enter(self: &Arc<Self>) -> Option<Slot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        self.update();
        Some(Slot {
            permit: Some(permit),
            load: Arc::clone(self),
        })
    }

    pub fn in_use(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Whether the listener is in stress mode now; a session watches it change.
    pub fn stress(&self) -> watch::Receiver<bool> {
        self.stressed.subscribe()
    }

    pub fn is_stressed(&self) -> bool {
        *self.stressed.borrow()
    }

    /// Waits (at most `limit`) until every slot is free; false if some are still in use.
    pub async fn all_free(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.slots.acquire_many(all))
            .await
            .is_ok()
    }

    fn update(&self) {
        let percent = self.in_use() * 100 / self.max.max(1);
        self.stressed.send_if_modified(|stressed| {
            let now = if *stressed {
                percent >= STRESS_OFF
            } else {
                percent > STRESS_ON
            };
            if now != *stressed {
                tracing::warn!(
                    in_use = self.in_use(),
                    max = self.max,
                    stress = now,
                    "relay stress mode {}",
                    if now {
                        "on: short timeouts for idle and slow clients"
                    } else {
                        "off"
                    }
                );
            }
            std::mem::replace(stressed, now) != now
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.load.update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_starts_past_80_percent_and_ends_below_70() {
        let load = Load::new(10);
        let stress = load.stress();
        let mut slots: Vec<Slot> = (0..8).map(|_| load.try_enter().unwrap()).collect();
        assert!(!*stress.borrow(), "80 % is not yet stress");
        slots.push(load.try_enter().unwrap());
        assert!(*stress.borrow(), "90 %");
        slots.push(load.try_enter().unwrap());
        assert!(load.try_enter().is_none(), "all 10 in use");
        slots.truncate(7);
        assert!(*stress.borrow(), "70 % still stressed");
        slots.pop();
        assert!(!*stress.borrow(), "60 %");
        assert_eq!(load.in_use(), 6);
    }
}
