//! Leader election on a coordination.k8s.io Lease.
//!
//! The semantics are client-go's (`k8s.io/client-go/tools/leaderelection`), so Pequod replicas
//! behave like every other controller in the cluster:
//!
//! - A candidate creates the Lease if it is missing (a create conflict means another replica was
//!   faster: it retries).
//! - It takes over an existing Lease only if the holder released it (empty `holderIdentity`) or
//!   the Lease expired. Expired means both `renewTime + leaseDurationSeconds < now` and, as in
//!   client-go, that this replica has watched the record stay unchanged for
//!   `leaseDurationSeconds` on its own monotonic clock; the second rule keeps a replica whose wall
//!   clock runs ahead from stealing a live Lease.
//! - Every write is a `replace` carrying the `resourceVersion` that was read, so of two replicas
//!   racing for the same Lease exactly one wins (the other gets 409 Conflict and retries).
//! - A change of holder increments `leaseTransitions` and sets `acquireTime`.
//! - The leader renews every `retry_period`. If it cannot renew for `renew_deadline` (which is
//!   shorter than the lease duration, so it steps down before anybody may take over), or if it
//!   finds another holder in the Lease, leadership is lost.
//! - [`Leadership::release`] clears `holderIdentity` and sets `leaseDurationSeconds` to 1, like
//!   client-go's `ReleaseOnCancel`, so another replica takes over at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

/// Default `leaseDurationSeconds`: how long a Lease stays valid without renewal (client-go: 15 s).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default renew deadline: how long the leader keeps trying to renew before it steps down
/// (client-go: 10 s).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default retry period: how often candidates try to acquire and the leader renews (client-go:
/// 2 s).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Releases retry at most this often on write conflicts before giving up.
const RELEASE_ATTEMPTS: u32 = 5;

/// Where the Lease lives, who this replica is, and the election timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity, written into `holderIdentity`. Must be unique per process (for
    /// example the pod name); two processes with the same identity would both consider
    /// themselves leader.
    pub identity: String,
    /// How long the Lease stays valid without renewal; written as `leaseDurationSeconds`
    /// (rounded up to whole seconds).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership. Must be shorter
    /// than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews. Must be shorter than
    /// `renew_deadline`.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A configuration with client-go's default timings (15 s lease, 10 s renew deadline, 2 s
    /// retry period).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Checks the timings and names; returns `leaseDurationSeconds`.
    fn validate(&self) -> Result<i32, Error> {
        let invalid = |why: &str| Err(Error::InvalidConfig(why.to_owned()));
        if self.namespace.is_empty() || self.name.is_empty() {
            return invalid("the Lease namespace and name must not be empty");
        }
        if self.identity.is_empty() {
            return invalid("the identity must not be empty");
        }
        if self.retry_period.is_zero() {
            return invalid("retry_period must be positive");
        }
        if self.renew_deadline <= self.retry_period {
            return invalid("renew_deadline must be longer than retry_period");
        }
        if self.lease_duration <= self.renew_deadline {
            return invalid("lease_duration must be longer than renew_deadline");
        }
        let whole =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(whole).or_else(|_| invalid("lease_duration is too long"))
    }
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (empty names, timings out of order).
    #[error("invalid leader election configuration: {0}")]
    InvalidConfig(String),
    /// A request about the Lease failed in a way retrying will not fix (forbidden, namespace
    /// missing, invalid), or a release failed.
    #[error("Lease {lease}: {source}")]
    Api {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Releasing the Lease did not finish within the renew deadline, or kept conflicting.
    #[error("releasing Lease {lease} did not finish: {reason}")]
    Release {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What went wrong.
        reason: String,
    },
}

/// A cheap, cloneable view of whether this replica currently leads (for a `pequod_leader`
/// gauge, readiness, or gating work).
#[derive(Clone, Debug)]
pub struct LeaderStatus(Arc<AtomicBool>);

impl LeaderStatus {
    /// True while this replica holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Competes for one Lease on behalf of one replica.
#[derive(Clone)]
pub struct LeaderElector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.shared.config)
            .field("leader", &self.shared.leader.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// What the elector and its renew task share.
struct Shared {
    api: Api<Lease>,
    config: LeaseConfig,
    /// `leaseDurationSeconds` this replica writes.
    lease_seconds: i32,
    leader: Arc<AtomicBool>,
    /// Carries `identity` and `lease` into every log line.
    span: tracing::Span,
}

/// The last version of the Lease this replica saw, and when (on the monotonic clock) it last
/// saw it change.
struct Observed {
    lease: Option<Lease>,
    changed_at: Instant,
}

impl Observed {
    fn new() -> Self {
        Self {
            lease: None,
            changed_at: Instant::now(),
        }
    }

    fn observe(&mut self, lease: Lease) {
        let same = self.lease.as_ref().is_some_and(|seen| {
            seen.metadata.resource_version.is_some()
                && seen.metadata.resource_version == lease.metadata.resource_version
        });
        if !same {
            self.changed_at = Instant::now();
        }
        self.lease = Some(lease);
    }
}

/// The result of one acquire-or-renew attempt.
enum Outcome {
    /// This replica holds the Lease; `transitions` as written.
    Held { transitions: i32, previous: String },
    /// Someone else holds the Lease (the empty string: nobody, it was released). While
    /// acquiring, only returned for a live Lease; while renewing, it means leadership is lost.
    HeldBy(String),
    /// Another replica wrote in between (create or replace conflict): try again later.
    Contended,
}

fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .unwrap_or_default()
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Errors that retrying will not fix.
fn is_permanent(error: &kube::Error) -> bool {
    matches!(
        error,
        kube::Error::Api(status) if matches!(status.code, 400 | 401 | 403 | 404 | 405 | 422)
    )
}

impl Shared {
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            lease: self.lease_ref(),
            source,
        }
    }

    /// Whether `lease` may be taken over: its holder's renewal is overdue by the wall clock and
    /// this replica has seen it unchanged for a whole lease duration.
    fn expired(&self, lease: &Lease, changed_at: Instant) -> bool {
        let spec = lease.spec.as_ref();
        let seconds = spec
            .and_then(|spec| spec.lease_duration_seconds)
            .unwrap_or(self.lease_seconds);
        let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        let overdue = match spec.and_then(|spec| spec.renew_time.as_ref()) {
            Some(MicroTime(renewed)) => renewed
                .checked_add(duration)
                .is_ok_and(|expiry| expiry < Timestamp::now()),
            None => true,
        };
        let unchanged_long_enough = changed_at
            .checked_add(duration)
            .is_some_and(|expiry| expiry <= Instant::now());
        overdue && unchanged_long_enough
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(
        &self,
        observed: &mut Observed,
        renewing: bool,
    ) -> Result<Outcome, kube::Error> {
        let identity = self.config.identity.as_str();
        let now = MicroTime(Timestamp::now());

        // The leader's fast path: renew the copy it wrote last, without reading first. A
        // conflict (someone else wrote) falls through to the full read-check-write.
        if renewing && let Some(mine) = observed.lease.as_ref().filter(|l| holder(l) == identity) {
            let mut next = mine.clone();
            let spec = next.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now.clone());
            spec.lease_duration_seconds = Some(self.lease_seconds);
            let transitions = spec.lease_transitions.unwrap_or(0);
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &next)
                .await
            {
                Ok(written) => {
                    observed.observe(written);
                    return Ok(Outcome::Held {
                        transitions,
                        previous: identity.to_owned(),
                    });
                }
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
                Err(e) => return Err(e),
            }
        }

        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity.to_owned()),
                    lease_duration_seconds: Some(self.lease_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    observed.observe(created);
                    Ok(Outcome::Held {
                        transitions: 0,
                        previous: String::new(),
                    })
                }
                Err(e) if is_status(&e, 409) => Ok(Outcome::Contended),
                Err(e) => Err(e),
            };
        };
        observed.observe(current.clone());

        let previous = holder(&current).to_owned();
        let ours = previous == identity;
        if !ours
            && (renewing || (!previous.is_empty() && !self.expired(&current, observed.changed_at)))
        {
            return Ok(Outcome::HeldBy(previous));
        }

        let mut next = current;
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        let mut transitions = spec.lease_transitions.unwrap_or(0);
        if !ours {
            transitions = transitions.saturating_add(1);
            spec.holder_identity = Some(identity.to_owned());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(transitions);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.lease_seconds);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                observed.observe(written);
                Ok(Outcome::Held {
                    transitions,
                    previous,
                })
            }
            // 404: deleted between read and write; the next round creates it.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(Outcome::Contended),
            Err(e) => Err(e),
        }
    }

    /// Renews every retry period until told to stop (returns what it saw last) or until
    /// leadership is lost.
    async fn renew(
        self: Arc<Self>,
        mut observed: Observed,
        mut renewed_at: Instant,
        mut stop: oneshot::Receiver<()>,
    ) -> TaskEnd {
        let config = &self.config;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return TaskEnd::Stopped(Box::new(observed)),
                () = tokio::time::sleep(config.retry_period) => {}
            }
            let deadline = renewed_at + config.renew_deadline;
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                _ = &mut stop => None,
                attempt = tokio::time::timeout_at(
                    deadline,
                    self.try_acquire_or_renew(&mut observed, true),
                ) => Some(attempt),
            };
            let Some(attempt) = attempt else {
                return TaskEnd::Stopped(Box::new(observed));
            };
            match attempt {
                Ok(Ok(Outcome::Held { .. })) => {
                    renewed_at = started;
                    tracing::trace!("renewed the Lease");
                    continue;
                }
                Ok(Ok(Outcome::HeldBy(other))) => {
                    self.leader.store(false, Ordering::SeqCst);
                    tracing::warn!(holder = %other, "leadership lost: the Lease is taken");
                    return TaskEnd::Lost;
                }
                Ok(Ok(Outcome::Contended)) => {
                    tracing::debug!("renewal conflicted; retrying");
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "renewing the Lease failed; retrying");
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                self.leader.store(false, Ordering::SeqCst);
                tracing::warn!(
                    renew_deadline = ?config.renew_deadline,
                    "leadership lost: could not renew the Lease within the renew deadline"
                );
                return TaskEnd::Lost;
            }
        }
    }

    /// Writes the release (no holder, 1 s duration) over the Lease this replica holds.
    async fn release(&self, observed: Observed) -> Result<(), Error> {
        let Some(mut lease) = observed.lease else {
            return Ok(());
        };
        for _ in 0..RELEASE_ATTEMPTS {
            if holder(&lease) != self.config.identity {
                tracing::info!(
                    holder = %holder(&lease),
                    "not releasing: the Lease already has another holder"
                );
                return Ok(());
            }
            let now = MicroTime(Timestamp::now());
            let mut next = lease.clone();
            let spec = next.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            let transitions = spec.lease_transitions.unwrap_or(0);
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => {
                    tracing::info!(transitions, "released the Lease");
                    return Ok(());
                }
                Err(e) if is_status(&e, 409) => match self.api.get_opt(&self.config.name).await {
                    Ok(Some(fresh)) => lease = fresh,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(self.api_error(e)),
                },
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) => return Err(self.api_error(e)),
            }
        }
        Err(Error::Release {
            lease: self.lease_ref(),
            reason: format!("{RELEASE_ATTEMPTS} write conflicts in a row"),
        })
    }
}

/// How the renew task ended.
enum TaskEnd {
    /// Told to stop by [`Leadership::release`]; the Lease as last seen.
    Stopped(Box<Observed>),
    /// Leadership was lost.
    Lost,
}

impl LeaderElector {
    /// An elector for `config.identity` on the Lease `config.namespace/config.name`. Fails only
    /// if the configuration is unusable.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Self, Error> {
        let lease_seconds = config.validate()?;
        let span = tracing::info_span!(
            "leader_election",
            identity = %config.identity,
            lease = %format_args!("{}/{}", config.namespace, config.name),
        );
        Ok(Self {
            shared: Arc::new(Shared {
                span,
                api: Api::namespaced(client, &config.namespace),
                config,
                lease_seconds,
                leader: Arc::new(AtomicBool::new(false)),
            }),
        })
    }

    /// The configuration this elector runs with.
    pub fn config(&self) -> &LeaseConfig {
        &self.shared.config
    }

    /// Waits (retrying every retry period) until this replica holds the Lease, then keeps
    /// renewing it in a background task owned by the returned [`Leadership`].
    ///
    /// Transient API errors are logged and retried; errors retrying cannot fix (forbidden, the
    /// namespace missing, an invalid Lease) are returned. Call it once at a time per elector.
    /// Cancel-safe: dropping the future leaves at most a Lease that nobody renews, which expires.
    pub async fn acquire(&self) -> Result<Leadership, Error> {
        self.acquire_loop()
            .instrument(self.shared.span.clone())
            .await
    }

    async fn acquire_loop(&self) -> Result<Leadership, Error> {
        let shared = &self.shared;
        let config = &shared.config;
        let mut observed = Observed::new();
        let mut last_holder: Option<String> = None;
        tracing::info!("trying to acquire the Lease");
        loop {
            let started = Instant::now();
            let attempt = tokio::time::timeout(
                config.renew_deadline,
                shared.try_acquire_or_renew(&mut observed, false),
            )
            .await;
            match attempt {
                Ok(Ok(Outcome::Held {
                    transitions,
                    previous,
                })) => {
                    shared.leader.store(true, Ordering::SeqCst);
                    tracing::info!(
                        transitions,
                        previous_holder = %previous,
                        "acquired the Lease: now leading"
                    );
                    let (stop, stopped) = oneshot::channel();
                    let renew = Arc::clone(shared).renew(observed, started, stopped);
                    let task = tokio::spawn(renew.instrument(shared.span.clone()));
                    return Ok(Leadership {
                        shared: Arc::clone(shared),
                        stop: Some(stop),
                        task: Some(task),
                    });
                }
                Ok(Ok(Outcome::HeldBy(other))) => {
                    if last_holder.as_deref() != Some(other.as_str()) {
                        tracing::info!(holder = %other, "another replica holds the Lease; waiting");
                        last_holder = Some(other);
                    }
                }
                Ok(Ok(Outcome::Contended)) => {
                    tracing::debug!("another replica wrote the Lease first; retrying");
                }
                Ok(Err(error)) if is_permanent(&error) => return Err(shared.api_error(error)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "acquiring the Lease failed; retrying");
                }
                Err(_) => {
                    tracing::warn!("acquiring the Lease timed out; retrying");
                }
            }
            tokio::time::sleep(config.retry_period).await;
        }
    }

    /// True while this replica holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::SeqCst)
    }

    /// A shared handle on the same flag as [`Self::is_leader`], for other parts of the process.
    pub fn status(&self) -> LeaderStatus {
        LeaderStatus(Arc::clone(&self.shared.leader))
    }
}

/// This replica's tenure as leader: owns the background task that renews the Lease.
///
/// Dropping it stops renewing without releasing (the Lease then expires, as after a crash);
/// call [`Leadership::release`] for a clean hand-over.
pub struct Leadership {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    /// `None` once the task's end has been observed.
    task: Option<JoinHandle<TaskEnd>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("identity", &self.shared.config.identity)
            .field("leader", &self.shared.leader.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Resolves when leadership is lost: renewal failed for the renew deadline, or another
    /// replica holds the Lease. Resolves at once if that already happened. Cancel-safe.
    pub async fn lost(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let end = task.await;
            self.task = None;
            self.shared.leader.store(false, Ordering::SeqCst);
            if let Err(error) = end {
                self.shared.span.in_scope(|| {
                    tracing::error!(%error, "the Lease renew task failed; leadership lost");
                });
            }
        }
    }

    /// True while this replica holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::SeqCst)
    }

    /// Stops renewing and releases the Lease (no holder, `leaseDurationSeconds: 1`), so another
    /// replica takes over at once. Does nothing if leadership was already lost. This replica
    /// stops counting as leader before the release is written.
    pub async fn release(mut self) -> Result<(), Error> {
        self.shared.leader.store(false, Ordering::SeqCst);
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        if let Some(stop) = self.stop.take() {
            // An error means the task already ended; its result says how.
            let _ = stop.send(());
        }
        let observed = match task.await {
            Ok(TaskEnd::Stopped(observed)) => *observed,
            Ok(TaskEnd::Lost) | Err(_) => return Ok(()),
        };
        let shared = Arc::clone(&self.shared);
        let release = shared.release(observed).instrument(shared.span.clone());
        tokio::time::timeout(shared.config.renew_deadline, release)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Release {
                    lease: shared.lease_ref(),
                    reason: format!(
                        "no answer within the renew deadline ({:?})",
                        shared.config.renew_deadline
                    ),
                })
            })
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.shared.leader.store(false, Ordering::SeqCst);
        }
    }
}
