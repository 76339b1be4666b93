//! Caps on upstream narinfo lookups: so many at once per client IP address, and so many
//! upstream fetches at once overall. Without them one client asking for thousands of distinct
//! missing hashes makes subserve send as many upstream requests.
//!
//! Over a cap a request waits in line (tokio's semaphores are fair, first come first served)
//! until its deadline, then gives up: the proxy answers "absent for now" without asking an
//! upstream and without remembering a miss.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The per-client semaphores, by address; an entry lives while someone holds or awaits it.
type Clients = Mutex<HashMap<IpAddr, Arc<Semaphore>>>;

/// Both caps.
pub(crate) struct Caps {
    global: Arc<Semaphore>,
    per_client: usize,
    clients: Arc<Clients>,
}

/// A place taken under a cap, given back on drop.
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    /// The client's entry, to forget it once no one uses it.
    client: Option<(IpAddr, Arc<Semaphore>, Arc<Clients>)>,
}

impl Caps {
    /// `global` upstream fetches at once, `per_client` lookups at once per client address
    /// (each at least 1).
    pub(crate) fn new(global: usize, per_client: usize) -> Self {
        Self { global: Arc::new(Semaphore::new(global.max(1))), per_client: per_client.max(1), clients: Arc::default() }
    }

    /// A place among `client`'s lookups, waiting in line until `deadline` at most; `None` if
    /// none came free in time. A request without a known client is under no per-client cap.
    pub(crate) async fn client(&self, client: Option<IpAddr>, deadline: Instant) -> Option<Slot> {
        let Some(ip) = client else { return Some(Slot { permit: None, client: None }) };
        // An IPv4 client of a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let semaphore = {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(clients.entry(ip).or_insert_with(|| Arc::new(Semaphore::new(self.per_client))))
        };
        // The slot owns its share of the entry from here on, so a timed-out wait cleans up too.
        let mut slot = Slot { permit: None, client: Some((ip, Arc::clone(&semaphore), Arc::clone(&self.clients))) };
        slot.permit = acquire(semaphore, deadline).await;
        slot.permit.is_some().then_some(slot)
    }

    /// A place among the upstream fetches in progress, waiting until `deadline` at most.
    pub(crate) async fn fetch(&self, deadline: Instant) -> Option<Slot> {
        let permit = acquire(Arc::clone(&self.global), deadline).await?;
        Some(Slot { permit: Some(permit), client: None })
    }
}

async fn acquire(semaphore: Arc<Semaphore>, deadline: Instant) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout_at(deadline, semaphore.acquire_owned()).await.ok()?.ok()
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let Some((ip, semaphore, clients)) = self.client.take() else { return };
        let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: no one else holds or awaits this client's semaphore.
        if Arc::strong_count(&semaphore) == 2 && clients.get(&ip).is_some_and(|s| Arc::ptr_eq(s, &semaphore)) {
            clients.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn each_client_has_its_own_cap_and_entries_go_when_unused() {
        let caps = Caps::new(100, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let soon = || Instant::now() + Duration::from_millis(50);
        let a1 = caps.client(Some(a), soon()).await.unwrap();
        let a2 = caps.client(Some(a), soon()).await.unwrap();
        assert!(caps.client(Some(a), soon()).await.is_none(), "a third lookup of one client waits, then fails");
        // The same client through a dual-stack socket.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(caps.client(Some(mapped), soon()).await.is_none());
        assert!(caps.client(Some(b), soon()).await.is_some(), "another client is not held up");
        assert!(caps.client(None, soon()).await.is_some());
        drop(a1);
        assert!(caps.client(Some(a), soon()).await.is_some());
        drop(a2);
        assert!(caps.clients.lock().unwrap().is_empty(), "unused entries are forgotten");
    }

    #[tokio::test]
    async fn the_global_cap_is_first_come_first_served() {
        let caps = Arc::new(Caps::new(1, 10));
        let first = caps.fetch(Instant::now()).await.unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let waiting = {
            let caps = Arc::clone(&caps);
            tokio::spawn(async move { caps.fetch(far).await.is_some() })
        };
        assert!(caps.fetch(Instant::now() + Duration::from_millis(50)).await.is_none(), "the cap is full");
        drop(first);
        assert!(waiting.await.unwrap(), "the waiter got the freed place");
    }
}
