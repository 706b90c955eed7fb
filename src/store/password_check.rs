//! argon2id password checks as a bounded resource.
//!
//! One argon2id check takes 19 MiB and tens of milliseconds of a core. Run on Tokio's blocking
//! pool, 64 wrong passwords at once took 64 threads and 2 GB that the allocator kept. Here:
//! - at most `parallel` checks run at once (by default one per two cores), on that many
//!   dedicated threads;
//! - a check that cannot start within a short wait is refused with [`Busy`] (the relay answers
//!   `454 4.7.0`, the login form `503` with `Retry-After`): no unbounded queue;
//! - one client address (an IPv6 /64) may start at most [`PER_CLIENT`] checks at a time;
//! - who waits, and in which order: addresses that logged in successfully before (30 days)
//!   wait first; an address never seen gets one place in the second queue; an address whose
//!   password was wrong in the last minutes gets a check only if a thread is free at once. So
//!   during a flood the owner of a password waits behind few others, and a guesser's retries
//!   never queue;
//! - the same password against the same stored hash is checked once: concurrent attempts share
//!   the running check, and a recent failure answers again without running argon2 (keyed to the
//!   stored hash, so a password reset is seen at once).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

mod turns;
use turns::{Lane, Turn, Turns};

/// How long a check may wait for a free thread before it is refused.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);
/// Checks one client address may have started and not finished.
pub const PER_CLIENT: u32 = 2;
/// How long a wrong password for a stored hash is remembered.
const FAILURE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long an address that logged in successfully keeps its place ahead of the others.
const KNOWN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Remembered failures (and addresses) at most, per map.
const FAILURE_CAPACITY: usize = 10_000;
/// A storm is logged once per this interval, with the number refused, not once per attempt.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Hashing a new password is an admin's action: it may wait longer than a login.
const HASH_WAIT: Duration = Duration::from_secs(30);

/// Too many password checks are running or waiting: try again in a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once; try again in a moment")]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;
type Flight = Shared<BoxFuture<'static, Result<bool, Busy>>>;

/// The bounded pool of password checks; cheap to clone.
#[derive(Clone)]
pub struct PasswordChecks {
    inner: Arc<Inner>,
}

struct Inner {
    parallel: usize,
    wait: Duration,
    /// A turn per thread: held from before a job is queued until it has run, so the job
    /// queue never holds more than `parallel` jobs.
    turns: Arc<Turns>,
    /// Started on the first check: a CLI command that checks nothing starts no thread.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// Per-process key for the flight and failure maps: no password is kept in memory.
    salt: [u8; 32],
    flights: Mutex<HashMap<[u8; 32], Flight>>,
    failures: Mutex<HashMap<[u8; 32], Instant>>,
    clients: Mutex<HashMap<IpAddr, u32>>,
    /// Addresses whose last check failed, and when.
    suspects: Mutex<HashMap<IpAddr, Instant>>,
    /// Addresses that logged in successfully, and when: they wait ahead of the others.
    known: Mutex<HashMap<IpAddr, Instant>>,
    /// argon2id runs, and checks refused with [`Busy`], for `/metrics`.
    runs: AtomicU64,
    refused: AtomicU64,
    /// When refusals were last logged, and how many since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl std::fmt::Debug for PasswordChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChecks")
            .field("parallel", &self.inner.parallel)
            .field("wait", &self.inner.wait)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordChecks {
    fn default() -> Self {
        Self::new(default_parallel(), DEFAULT_WAIT)
    }
}

/// One check per two cores (at least one): each check keeps a core busy, so a storm of
/// guesses can take at most half the machine's CPU and the relay keeps the rest for mail. It
/// also bounds memory: 19 MiB per check.
pub fn default_parallel() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The address block one client controls: an IPv4 address, or an IPv6 /64.
pub fn client_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a client's running checks; gives its turn back when dropped.
struct ClientTurn {
    inner: Arc<Inner>,
    client: Option<IpAddr>,
}

impl Drop for ClientTurn {
    fn drop(&mut self) {
        let Some(client) = self.client else { return };
        let mut clients = lock(&self.inner.clients);
        if let Some(n) = clients.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&client);
            }
        }
    }
}

impl PasswordChecks {
    /// At most `parallel` checks at once (at least 1); a check waits at most `wait` to start.
    pub fn new(parallel: usize, wait: Duration) -> Self {
        let parallel = parallel.max(1);
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self {
            inner: Arc::new(Inner {
                parallel,
                wait,
                turns: Turns::new(parallel),
                jobs: Mutex::new(None),
                salt,
                flights: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                suspects: Mutex::new(HashMap::new()),
                known: Mutex::new(HashMap::new()),
                runs: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                warned: Mutex::new((None, 0)),
            }),
        }
    }

    pub fn parallel(&self) -> usize {
        self.inner.parallel
    }

    /// Counters for `/metrics`: argon2id checks run, and checks refused as busy.
    pub fn counters(&self) -> [(&'static str, u64); 2] {
        [
            (
                "password_checks_total",
                self.inner.runs.load(Ordering::Relaxed),
            ),
            (
                "password_checks_refused_total",
                self.inner.refused.load(Ordering::Relaxed),
            ),
        ]
    }

    /// Is `password` the one hashed in `phc` (a PHC string)? `client` is the address the
    /// attempt came from, when there is one (the CLI has none).
    pub async fn verify(
        &self,
        client: Option<IpAddr>,
        phc: &str,
        password: &SecretString,
    ) -> Result<bool, Busy> {
        let key = self.key(phc, password);
        let client = client.map(client_block);
        if recent(&self.inner.failures, &key) {
            return Ok(false);
        }
        let flight = {
            let mut flights = lock(&self.inner.flights);
            match flights.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let (turn, alone) = self.client_turn(client).inspect_err(|_| self.refused())?;
                    let lane = self.lane(client, alone);
                    let f = self
                        .clone()
                        .check(turn, lane, phc.to_string(), password.clone())
                        .boxed()
                        .shared();
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        let result = flight.clone().await;
        {
            let mut flights = lock(&self.inner.flights);
            if flights.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
                flights.remove(&key);
            }
        }
        match result {
            Ok(false) => {
                remember(&self.inner.failures, key);
                if let Some(ip) = client {
                    remember(&self.inner.suspects, ip);
                }
            }
            Ok(true) => {
                if let Some(ip) = client {
                    lock(&self.inner.suspects).remove(&ip);
                    remember(&self.inner.known, ip);
                }
            }
            Err(Busy) => self.refused(),
        }
        result
    }

    /// Counts a refusal; warns at most every [`WARN_EVERY`], so a storm cannot flood the log.
    fn refused(&self) {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        let mut warned = lock(&self.inner.warned);
        warned.1 += 1;
        if warned.0.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                refused = warned.1,
                parallel = self.inner.parallel,
                "password checks refused: too many at once (a password-guessing storm?); \
                 clients were told to try again later"
            );
            *warned = (Some(Instant::now()), 0);
        }
    }

    /// An argon2id PHC string for a new password, computed on the pool.
    pub async fn hash(&self, password: &SecretString) -> Result<String, Busy> {
        let turn = self
            .inner
            .turns
            .take(Lane::Known, HASH_WAIT)
            .await
            .ok_or(Busy)?;
        let password = password.clone();
        self.run(turn, move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2::Argon2::default()
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .ok()
        })
        .await
        .flatten()
        .ok_or(Busy)
    }

    /// Where a new check from `client` may wait: clients that logged in before wait first;
    /// others get one place per address (`alone`); a recent guesser gets none.
    fn lane(&self, client: Option<IpAddr>, alone: bool) -> Option<Lane> {
        let Some(ip) = client else {
            return Some(Lane::Known);
        };
        if recent_within(&self.inner.known, &ip, KNOWN_TTL) {
            Some(Lane::Known)
        } else if alone && !recent(&self.inner.suspects, &ip) {
            Some(Lane::New)
        } else {
            None
        }
    }

    /// Checks on a pool thread, after waiting in `lane` (or only if a thread is free now).
    async fn check(
        self,
        _client: ClientTurn,
        lane: Option<Lane>,
        phc: String,
        password: SecretString,
    ) -> Result<bool, Busy> {
        let turns = &self.inner.turns;
        let turn = match lane {
            Some(lane) => turns.take(lane, self.inner.wait).await,
            None => turns.try_take(),
        }
        .ok_or(Busy)?;
        self.run(turn, move || {
            PasswordHash::new(&phc).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.expose_secret().as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .ok_or(Busy)
    }

    /// Runs `f` on a pool thread; the turn goes back when it has run, even if the caller
    /// stopped waiting. `None`: the pool could not run it.
    async fn run<T: Send + 'static>(
        &self,
        turn: Turn,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.inner.runs.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move || {
            let out = f();
            drop(turn);
            let _ = tx.send(out);
        });
        self.submit(job)?;
        rx.await.ok()
    }

    fn submit(&self, job: Job) -> Option<()> {
        let mut jobs = lock(&self.inner.jobs);
        if jobs.is_none() {
            *jobs = Some(self.start_threads()?);
        }
        jobs.as_ref()?.send(job).ok()
    }

    fn start_threads(&self) -> Option<mpsc::Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.inner.parallel {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("postern-pwcheck-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = lock(&rx).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                })
                .ok()?;
        }
        Some(tx)
    }

    fn key(&self, phc: &str, password: &SecretString) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.inner.salt);
        h.update(phc.as_bytes());
        h.update([0]);
        h.update(password.expose_secret().as_bytes());
        h.finalize().into()
    }

    /// A turn for `client`, and whether it is the client's only check in progress.
    fn client_turn(&self, client: Option<IpAddr>) -> Result<(ClientTurn, bool), Busy> {
        let mut alone = true;
        if let Some(ip) = client {
            let mut clients = lock(&self.inner.clients);
            let n = clients.entry(ip).or_insert(0);
            if *n >= PER_CLIENT {
                return Err(Busy);
            }
            alone = *n == 0;
            *n += 1;
        }
        let turn = ClientTurn {
            inner: Arc::clone(&self.inner),
            client,
        };
        Ok((turn, alone))
    }
}

/// Was `key` remembered within [`FAILURE_TTL`]?
fn recent<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Instant>>, key: &K) -> bool {
    recent_within(map, key, FAILURE_TTL)
}

fn recent_within<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Instant>>,
    key: &K,
    ttl: Duration,
) -> bool {
    lock(map).get(key).is_some_and(|at| at.elapsed() < ttl)
}

/// Remembers `key` now; at [`FAILURE_CAPACITY`] expired entries go, then (under a flood of
/// very many keys) all of them, so memory stays bounded.
fn remember<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Instant>>, key: K) {
    let mut map = lock(map);
    if map.len() >= FAILURE_CAPACITY {
        // Known addresses live longer, but a full map of them is a flood all the same.
        map.retain(|_, at| at.elapsed() < FAILURE_TTL);
        if map.len() >= FAILURE_CAPACITY {
            map.clear();
        }
    }
    map.insert(key, Instant::now());
}

#[cfg(test)]
mod tests;
