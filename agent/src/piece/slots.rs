//! The node's fetch slots: how many piece transfers share its downlink.
//!
//! Peer fetches wait for a free slot. A seed piece never waits (the
//! scheduler handed it to this node, and the seed's uplink is the swarm's
//! scarcest link), but it takes a slot all the same, so that while it runs
//! no new peer fetch starts and the seed's transfer gets its share of the
//! downlink rather than a third or a quarter of it.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The node's fetch slots.
pub struct FetchSlots {
    slots: usize,
    /// Transfers running: peer fetches and seed fetches together.
    running: Mutex<usize>,
    freed: Notify,
}

/// One running transfer's slot, given back when dropped.
pub struct Slot(Arc<FetchSlots>);

impl FetchSlots {
    /// `slots` transfers at once (at least one).
    pub fn new(slots: usize) -> Arc<FetchSlots> {
        Arc::new(FetchSlots { slots: slots.max(1), running: Mutex::new(0), freed: Notify::new() })
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Transfers running now.
    pub fn running(&self) -> u32 {
        *self.count() as u32
    }

    /// Whether a peer fetch could start now.
    pub fn free(&self) -> bool {
        *self.count() < self.slots
    }

    /// A slot for a peer fetch, once one is free.
    pub async fn peer(self: Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut running = self.count();
                if *running < self.slots {
                    *running += 1;
                    return Slot(self.clone());
                }
            }
            freed.await;
        }
    }

    /// A slot for a seed fetch, at once, even if every slot is taken.
    pub fn seed(self: &Arc<Self>) -> Slot {
        *self.count() += 1;
        Slot(self.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.0.count();
        *running = running.saturating_sub(1);
        drop(running);
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_seed_fetch_never_waits_but_holds_back_the_next_peer_fetch() {
        let slots = FetchSlots::new(2);
        let a = slots.clone().peer().await;
        let seed = slots.seed();
        let seed2 = slots.seed();
        let waiting = tokio::spawn(slots.clone().peer());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "three transfers run: a peer fetch must wait");
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "two seed fetches still fill both slots");
        drop(seed);
        let b = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a slot was freed")
            .expect("the waiting task ran");
        drop((b, seed2));
        assert_eq!(slots.running(), 0);
    }
}
