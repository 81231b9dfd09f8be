//! The versions a bearer token's holder must still have, read from the
//! database for every request that presents a token, with concurrent
//! requests of one holder sharing reads.
//!
//! A request never takes the answer of a read that began before it
//! arrived: it waits for the next one, which begins after, so every answer
//! reflects every change committed before the request came in, through any
//! replica. While one read of a holder is under way, every request of that
//! holder that arrives waits for the one read that follows it: a client
//! sending many requests at once costs one read per round trip to the
//! database instead of one per request, and the answer is as exact as a
//! read of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::metadata::{Db, PrincipalRef, TokenHolder};

/// The last answer of a holder's reads: the read's number, and what it found
/// (`Err` if it failed; then each waiter reads for itself).
type Answer = (u64, Option<Result<Option<TokenHolder>, ()>>);

/// One holder's reads.
struct Slot {
    /// Number of the last read begun.
    begun: u64,
    /// A read is under way.
    running: bool,
    /// The highest read number a waiter needs.
    wanted: u64,
    answers: watch::Sender<Answer>,
}

/// Coalesced reads of token holders' versions.
#[derive(Clone, Default)]
pub struct HolderReads {
    slots: Arc<Mutex<HashMap<PrincipalRef, Slot>>>,
}

impl HolderReads {
    /// The holder's state as the database has it, read after this call began.
    pub async fn read(&self, db: &Db, who: PrincipalRef) -> Result<Option<TokenHolder>, sqlx::Error> {
        let (need, mut answers, start) = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(who).or_insert_with(|| Slot {
                begun: 0,
                running: false,
                wanted: 0,
                answers: watch::channel((0, None)).0,
            });
            // A read under way began before this request: it needs the next one.
            let need = slot.begun + 1;
            slot.wanted = slot.wanted.max(need);
            let start = !slot.running;
            if start {
                slot.running = true;
                slot.begun = need;
            }
            (need, slot.answers.subscribe(), start)
        };
        if start {
            tokio::spawn(run(self.slots.clone(), db.clone(), who, need));
        }
        loop {
            {
                let (number, found) = &*answers.borrow_and_update();
                if *number >= need {
                    if let Some(Ok(found)) = found {
                        return Ok(*found);
                    }
                    break;
                }
            }
            if answers.changed().await.is_err() {
                break;
            }
        }
        // The shared read failed: read alone, which also begins after this call did.
        db.accounts().token_holder(who).await
    }
}

/// Reads `who` as read number `n`, and again as long as waiters need a later one.
async fn run(slots: Arc<Mutex<HashMap<PrincipalRef, Slot>>>, db: Db, who: PrincipalRef, mut n: u64) {
    loop {
        let found = db.accounts().token_holder(who).await.map_err(|_| ());
        let mut map = slots.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = map.get_mut(&who) else { return };
        slot.answers.send_replace((n, Some(found)));
        if slot.wanted > n {
            // Waiters arrived while this read was under way: the next read begins now, after them.
            n += 1;
            slot.begun = n;
            continue;
        }
        // Every waiter has its answer; a later request starts afresh.
        map.remove(&who);
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/metadata.db", dir.path().display());
        let db = Db::open(&url, 4).await.expect("database");
        (dir, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_reads_and_see_every_change_made_before_they_came() {
        let (_dir, db) = db().await;
        let id = db.accounts().create_user("dana", "hash", false).await.expect("user");
        let who = PrincipalRef::User(id);
        let reads = HolderReads::default();
        let many = (0..64).map(|_| {
            let (reads, db) = (reads.clone(), db.clone());
            tokio::spawn(async move { reads.read(&db, who).await })
        });
        for handle in many.collect::<Vec<_>>() {
            let found = handle.await.expect("task").expect("read").expect("the user");
            assert_eq!((found.credentials_version, found.grants_version), (1, 0));
        }
        for round in 1..=20 {
            // A change committed before the request: the request sees it, whatever reads run meanwhile.
            let busy: Vec<_> = (0..8)
                .map(|_| {
                    let (reads, db) = (reads.clone(), db.clone());
                    tokio::spawn(async move { reads.read(&db, who).await })
                })
                .collect();
            db.accounts().set_password(id, "hash").await.expect("password");
            let found = reads.read(&db, who).await.expect("read").expect("the user");
            assert_eq!(found.credentials_version, 1 + round, "round {round}");
            for handle in busy {
                handle.await.expect("task").expect("read");
            }
        }
        assert!(reads.slots.lock().unwrap_or_else(|p| p.into_inner()).is_empty(), "nothing is kept between reads");
        assert_eq!(reads.read(&db, PrincipalRef::Robot(404)).await.expect("read"), None, "no such robot");
    }
}
