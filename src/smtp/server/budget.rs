//! The memory that message bodies in flight share. A session reserves budget as its message
//! grows and gives it back once the message is stored or dropped; when none is left it waits a
//! little, then the message is refused with `452 4.3.1` (after its final dot). Without this,
//! 200 clients sending 35 MB each at once would make the relay hold 7 GB.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes.
pub(crate) const UNIT: usize = 64 * 1024;
/// A session grows its reservation this much at a time at least (fewer semaphore trips).
const STEP: usize = 4 * UNIT;

/// The relay-wide budget: one per listener configuration.
#[derive(Debug)]
pub(crate) struct Budget {
    units: Arc<Semaphore>,
    total: u32,
}

/// What one session holds of the budget; dropping it gives it back.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Grows `r` to cover `bytes`, waiting (in line behind earlier sessions) at most `wait`.
    /// False: the budget stayed exhausted, or `bytes` exceeds all of it.
    pub async fn reserve(&self, r: &mut Reservation, bytes: usize, wait: Duration) -> bool {
        let need = units_for(bytes.next_multiple_of(STEP));
        let held = r.units();
        if need <= held {
            return true;
        }
        if need > self.total {
            return false;
        }
        let more = Arc::clone(&self.units).acquire_many_owned(need - held);
        match tokio::time::timeout(wait, more).await {
            Ok(Ok(permit)) => {
                match r.permit.as_mut() {
                    Some(p) => p.merge(permit),
                    None => r.permit = Some(permit),
                }
                true
            }
            _ => false,
        }
    }

    /// Budget not reserved by any session, in bytes.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

impl Reservation {
    /// Does it already cover `bytes`?
    pub fn covers(&self, bytes: usize) -> bool {
        units_for(bytes) <= self.units()
    }

    /// Gives back what is not needed to cover `bytes` (all of it for 0).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units_for(bytes.next_multiple_of(STEP));
        let held = self.units();
        if keep == 0 {
            self.permit = None;
        } else if keep < held
            && let Some(permit) = self.permit.as_mut()
        {
            drop(permit.split((held - keep) as usize));
        }
    }

    fn units(&self) -> u32 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u32)
    }
}

fn units_for(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_grow_shrink_and_run_out() {
        let budget = Budget::new(4 * STEP);
        let wait = Duration::from_millis(50);
        let mut a = Reservation::default();
        assert!(budget.reserve(&mut a, 1, wait).await);
        assert_eq!(budget.available(), 3 * STEP);
        assert!(budget.reserve(&mut a, 3 * STEP, wait).await);
        assert!(a.covers(3 * STEP));
        let mut b = Reservation::default();
        assert!(budget.reserve(&mut b, STEP, wait).await);
        assert!(!budget.reserve(&mut b, 2 * STEP, wait).await, "exhausted");
        assert!(
            !budget.reserve(&mut b, 5 * STEP, wait).await,
            "more than all of it"
        );
        a.shrink_to(STEP);
        assert_eq!(budget.available(), 2 * STEP);
        assert!(budget.reserve(&mut b, 2 * STEP, wait).await);
        drop(b);
        a.shrink_to(0);
        assert_eq!(budget.available(), 4 * STEP);
    }

    #[tokio::test]
    async fn a_waiting_session_gets_what_another_gives_back() {
        let budget = Arc::new(Budget::new(2 * STEP));
        let wait = Duration::from_secs(5);
        let mut a = Reservation::default();
        assert!(budget.reserve(&mut a, 2 * STEP, wait).await);
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let mut b = Reservation::default();
                budget.reserve(&mut b, STEP, wait).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(waiter.await.unwrap());
    }
}
