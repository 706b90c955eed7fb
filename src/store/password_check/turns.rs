//! Turns on the password threads: a counting semaphore with two queues, so that clients known
//! to log in successfully are served before clients never seen before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Waiters kept before those that gave up are swept out.
const SWEEP_AT: usize = 1024;

/// Which queue a waiter joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Logged in successfully from this address before (and admins creating passwords).
    Known = 0,
    /// Everyone else that may wait at all.
    New = 1,
}

#[derive(Debug)]
pub(super) struct Turns {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    lanes: [VecDeque<oneshot::Sender<()>>; 2],
}

/// One thread's turn; passed to the next waiter when dropped.
#[derive(Debug)]
pub(super) struct Turn {
    turns: Arc<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.release();
    }
}

impl Turns {
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: count,
                lanes: [VecDeque::new(), VecDeque::new()],
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A turn if one is free now.
    pub fn try_take(self: &Arc<Self>) -> Option<Turn> {
        let mut state = self.state();
        if state.free == 0 {
            return None;
        }
        state.free -= 1;
        Some(Turn {
            turns: Arc::clone(self),
        })
    }

    /// A turn within `wait`, queued in `lane`.
    pub async fn take(self: &Arc<Self>, lane: Lane, wait: Duration) -> Option<Turn> {
        let mut rx = {
            let mut state = self.state();
            if state.free > 0 {
                state.free -= 1;
                return Some(Turn {
                    turns: Arc::clone(self),
                });
            }
            let queue = &mut state.lanes[lane as usize];
            if queue.len() >= SWEEP_AT {
                queue.retain(|tx| !tx.is_closed());
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            rx
        };
        let granted = match tokio::time::timeout(wait, &mut rx).await {
            Ok(r) => r.is_ok(),
            // A turn may have been handed over just as the wait ran out: it is ours then.
            Err(_) => {
                rx.close();
                rx.try_recv().is_ok()
            }
        };
        granted.then(|| Turn {
            turns: Arc::clone(self),
        })
    }

    /// Hands the turn to the first waiter still waiting, known clients first.
    fn release(&self) {
        let mut state = self.state();
        loop {
            let next = match state.lanes[0].pop_front() {
                Some(tx) => Some(tx),
                None => state.lanes[1].pop_front(),
            };
            match next {
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    state.free += 1;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_clients_go_first_and_a_turn_is_never_lost() {
        let turns = Turns::new(1);
        let held = turns.try_take().unwrap();
        assert!(turns.try_take().is_none());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (name, lane) in [("new", Lane::New), ("known", Lane::Known)] {
            let (turns, order) = (Arc::clone(&turns), Arc::clone(&order));
            waiters.push(tokio::spawn(async move {
                let turn = turns.take(lane, Duration::from_secs(5)).await;
                order.lock().unwrap().push(name);
                drop(turn);
            }));
            tokio::task::yield_now().await;
        }
        // A waiter that gives up leaves no hole.
        assert!(
            turns
                .take(Lane::New, Duration::from_millis(10))
                .await
                .is_none()
        );
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["known", "new"]);
        assert!(turns.try_take().is_some(), "the turn came back");
    }
}
