//! Leader election on a coordination.k8s.io/v1 Lease, with client-go's
//! `tools/leaderelection` semantics so pikube daemons and upstream ones can share a lock.
//!
//! A candidate reads the Lease every retry period (jittered). It takes the Lease when it
//! is absent, has no holder, or has not changed for `leaseDurationSeconds` as measured
//! on the candidate's own clock from when it last saw the record change: clocks of
//! different Pis are never compared. Every write is an update on the last read
//! `resourceVersion`, so of two candidates racing for an expired Lease only one wins (the
//! other gets 409 Conflict and keeps waiting). The leader renews every retry period and
//! gives up when it could not renew for `renew_deadline`, which is shorter than the lease
//! duration, so it stops working before anyone else may start.

use crate::options::{LeaderElectionOptions, JITTER_FACTOR};
use crate::shutdown::Shutdown;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// Which Lease to hold, as whom, and the timing (see [`LeaderElectionOptions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    pub lease_name: String,
    pub lease_namespace: String,
    /// Unique per process: `<hostname>_<uuid>`, as upstream's components.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// The configuration the `--leader-elect-*` flags select; the Lease is named
    /// `default_name` (`kube-scheduler`) unless `--leader-elect-resource-name` is given.
    pub fn from_options(opts: &LeaderElectionOptions, default_name: &str) -> Self {
        LeaderElectionConfig {
            lease_name: opts
                .resource_name
                .clone()
                .unwrap_or_else(|| default_name.to_string()),
            lease_namespace: opts.resource_namespace.clone(),
            identity: default_identity(),
            lease_duration: opts.lease_duration,
            renew_deadline: opts.renew_deadline,
            retry_period: opts.retry_period,
        }
    }

    /// `namespace/name`, as upstream's log lines name the lock.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.lease_namespace, self.lease_name)
    }
}

/// `<hostname>_<uuid>`: the hostname tells operators which Pi leads, the UUID keeps two
/// processes on one host (a restart racing its predecessor) apart.
pub fn default_identity() -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// What a Lease's spec says about the election (client-go's `LeaderElectionRecord`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Record {
    holder_identity: String,
    lease_duration_seconds: i32,
    acquire_time: Option<Timestamp>,
    renew_time: Option<Timestamp>,
    leader_transitions: i32,
}

impl Record {
    fn from_lease(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder_identity: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            leader_transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    /// Writes the election fields into `spec`, keeping the others (strategy,
    /// preferredHolder) as they were.
    fn apply_to(&self, spec: &mut LeaseSpec) {
        spec.holder_identity = Some(self.holder_identity.clone());
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        spec.acquire_time = self.acquire_time.map(MicroTime);
        spec.renew_time = self.renew_time.map(MicroTime);
        spec.lease_transitions = Some(self.leader_transitions);
    }
}

/// What to do after reading the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// There is no Lease: create it with this record.
    Create(Record),
    /// Write this record over the Lease just read (take it over, or renew it).
    Update(Record),
    /// Another candidate holds an unexpired Lease.
    Held { holder: String },
}

/// The decisions of client-go's `tryAcquireOrRenew`, without I/O: the caller reads and
/// writes the Lease and passes in both clocks (monotonic `now` for expiry, wall time for
/// the timestamps written).
#[derive(Debug)]
struct Election {
    identity: String,
    lease_duration_seconds: i32,
    /// The record last read or written, and when (on our clock) it last changed.
    observed: Option<(Record, Instant)>,
}

impl Election {
    fn new(config: &LeaderElectionConfig) -> Self {
        Election {
            identity: config.identity.clone(),
            lease_duration_seconds: i32::try_from(config.lease_duration.as_secs())
                .unwrap_or(i32::MAX),
            observed: None,
        }
    }

    fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|(r, _)| r.holder_identity == self.identity)
    }

    /// Whether the observed record is still within its lease duration at `now`.
    fn is_lease_valid(&self, now: Instant) -> bool {
        self.observed.as_ref().is_some_and(|(r, at)| {
            *at + Duration::from_secs(u64::try_from(r.lease_duration_seconds).unwrap_or(0)) > now
        })
    }

    /// The holder of an unexpired Lease other than us, if any.
    fn other_holder(&self, now: Instant) -> Option<&str> {
        let (record, _) = self.observed.as_ref()?;
        (!record.holder_identity.is_empty() && !self.is_leader() && self.is_lease_valid(now))
            .then_some(record.holder_identity.as_str())
    }

    fn record_for_us(&self, wall: Timestamp) -> Record {
        Record {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: 0,
        }
    }

    /// The fast path of a leader whose lease is still valid: renew the record last
    /// written, without reading it first.
    fn renewal(&self, now: Instant, wall: Timestamp) -> Option<Record> {
        if !self.is_leader() || !self.is_lease_valid(now) {
            return None;
        }
        let (observed, _) = self.observed.as_ref()?;
        Some(Record {
            acquire_time: observed.acquire_time,
            leader_transitions: observed.leader_transitions,
            ..self.record_for_us(wall)
        })
    }

    /// Decides from the Lease as read (`None`: it does not exist).
    fn observe(&mut self, current: Option<Record>, now: Instant, wall: Timestamp) -> Step {
        let Some(current) = current else {
            return Step::Create(self.record_for_us(wall));
        };
        if self.observed.as_ref().map(|(r, _)| r) != Some(&current) {
            self.observed = Some((current.clone(), now));
        }
        if let Some(holder) = self.other_holder(now) {
            return Step::Held {
                holder: holder.to_string(),
            };
        }
        let mut record = self.record_for_us(wall);
        if self.is_leader() {
            record.acquire_time = current.acquire_time;
            record.leader_transitions = current.leader_transitions;
        } else {
            record.leader_transitions = current.leader_transitions.saturating_add(1);
        }
        Step::Update(record)
    }

    /// Our write of `record` succeeded at `now`.
    fn written(&mut self, record: Record, now: Instant) {
        self.observed = Some((record, now));
    }

    /// The record that hands the Lease over at once (client-go's `release`): no holder,
    /// a one-second duration, the transitions kept. `None` when we do not hold it.
    fn release(&self, wall: Timestamp) -> Option<Record> {
        let (observed, _) = self.observed.as_ref()?;
        self.is_leader().then(|| Record {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: observed.leader_transitions,
        })
    }
}

/// Wall time in the Lease's microsecond precision, so a record we write reads back equal.
fn now_micros() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}

/// The Lease object through the API, remembering the last version read or written for
/// optimistic concurrency (client-go's `LeaseLock`).
struct LeaseLock {
    api: Api<Lease>,
    name: String,
    namespace: String,
    lease: Option<Lease>,
}

impl LeaseLock {
    async fn get(&mut self) -> Result<Option<Record>, kube::Error> {
        self.lease = self.api.get_opt(&self.name).await?;
        Ok(self.lease.as_ref().map(Record::from_lease))
    }

    async fn create(&mut self, record: &Record) -> Result<(), kube::Error> {
        let mut spec = LeaseSpec::default();
        record.apply_to(&mut spec);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec),
        };
        self.lease = Some(self.api.create(&PostParams::default(), &lease).await?);
        Ok(())
    }

    /// Replaces the Lease last seen; a 409 Conflict means someone wrote it since.
    async fn update(&mut self, record: &Record) -> Result<(), UpdateError> {
        let mut lease = self.lease.clone().ok_or(UpdateError::NotRead)?;
        record.apply_to(lease.spec.get_or_insert_with(Default::default));
        self.lease = Some(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?,
        );
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum UpdateError {
    #[error("lease not read yet")]
    NotRead,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

fn is_conflict(e: &UpdateError) -> bool {
    matches!(e, UpdateError::Api(kube::Error::Api(s)) if s.code == 409)
}

/// One election round trip: client-go's `tryAcquireOrRenew`. True when we hold the
/// Lease afterwards.
async fn try_acquire_or_renew(election: &mut Election, lock: &mut LeaseLock, desc: &str) -> bool {
    // 1. A leader renews optimistically on the version it wrote last.
    if let Some(record) = election.renewal(Instant::now(), now_micros()) {
        match lock.update(&record).await {
            Ok(()) => {
                election.written(record, Instant::now());
                return true;
            }
            Err(e) => tracing::info!(
                error = %e,
                "failed to update lease {desc} optimistically, falling back to slow path"
            ),
        }
    }
    // 2. Read it, then create, take over or renew it.
    let current = match lock.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "error retrieving lease {desc}");
            return false;
        }
    };
    match election.observe(current, Instant::now(), now_micros()) {
        Step::Held { holder } => {
            tracing::debug!("lease {desc} is held by {holder} and has not yet expired");
            false
        }
        Step::Create(record) => match lock.create(&record).await {
            Ok(()) => {
                election.written(record, Instant::now());
                true
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("lease {desc} was created by another candidate first");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "error initially creating lease {desc}");
                false
            }
        },
        Step::Update(record) => match lock.update(&record).await {
            Ok(()) => {
                election.written(record, Instant::now());
                true
            }
            Err(e) if is_conflict(&e) => {
                tracing::debug!("lease {desc} was written by another candidate first");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to update lease {desc}");
                false
            }
        },
    }
}

/// `retry_period` stretched by up to [`JITTER_FACTOR`], so candidates do not poll in step.
fn jittered(retry_period: Duration) -> Duration {
    retry_period + retry_period.mul_f64(rand::random::<f64>() * JITTER_FACTOR)
}

/// Campaigns for one Lease; see the module documentation.
pub struct LeaderElector {
    client: kube::Client,
    config: Arc<LeaderElectionConfig>,
    status: prometheus::IntGauge,
}

impl LeaderElector {
    /// Registers `leader_election_master_status{name="<lease name>"}` in `registry`:
    /// 1 while this process leads, 0 otherwise.
    pub fn new(
        client: kube::Client,
        config: LeaderElectionConfig,
        registry: &prometheus::Registry,
    ) -> Self {
        let status = master_status(registry, &config.lease_name);
        LeaderElector {
            client,
            config: Arc::new(config),
            status,
        }
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    /// Waits until this process holds the Lease, trying every retry period (jittered);
    /// `None` once `shutdown` fires first.
    pub async fn acquire(&self, shutdown: &Shutdown) -> Option<Leadership> {
        let mut shutdown = shutdown.clone();
        let desc = self.config.describe();
        let mut election = Election::new(&self.config);
        let mut lock = LeaseLock {
            api: Api::namespaced(self.client.clone(), &self.config.lease_namespace),
            name: self.config.lease_name.clone(),
            namespace: self.config.lease_namespace.clone(),
            lease: None,
        };
        tracing::info!(identity = %self.config.identity, "attempting to acquire leader lease {desc}...");
        let mut reported_leader = String::new();
        loop {
            let attempt = tokio::time::timeout(
                self.config.renew_deadline,
                try_acquire_or_renew(&mut election, &mut lock, &desc),
            );
            let acquired = tokio::select! {
                biased;
                _ = shutdown.signaled() => return None,
                r = attempt => r.unwrap_or(false),
            };
            if acquired {
                self.status.set(1);
                tracing::info!("successfully acquired lease {desc}");
                return Some(Leadership::start(
                    election,
                    lock,
                    self.config.clone(),
                    self.status.clone(),
                ));
            }
            if let Some(holder) = election.other_holder(Instant::now()) {
                if holder != reported_leader {
                    tracing::info!("new leader elected: {holder}");
                    reported_leader = holder.to_string();
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.signaled() => return None,
                _ = tokio::time::sleep(jittered(self.config.retry_period)) => {}
            }
        }
    }
}

fn master_status(registry: &prometheus::Registry, name: &str) -> prometheus::IntGauge {
    let vec = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
        ),
        &["name"],
    )
    .expect("a valid metric definition");
    if let Err(e) = registry.register(Box::new(vec.clone())) {
        // A second elector in the same registry: its gauge is not exported.
        tracing::warn!(error = %e, "leader_election_master_status not registered");
    }
    let gauge = vec.with_label_values(&[name]);
    gauge.set(0);
    gauge
}

/// Held leadership. While it lives a background task renews the Lease every retry
/// period. Dropping it stops renewing at once, as a crash would (others take over
/// after the lease duration); [`Leadership::release`] hands over at once.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    release: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    status: prometheus::IntGauge,
    renew_deadline: Duration,
}

impl Leadership {
    fn start(
        election: Election,
        lock: LeaseLock,
        config: Arc<LeaderElectionConfig>,
        status: prometheus::IntGauge,
    ) -> Leadership {
        let (lost_tx, lost) = watch::channel(false);
        let (release_tx, release_rx) = oneshot::channel();
        let renew_deadline = config.renew_deadline;
        let span = tracing::info_span!("leader_election", lease = %config.describe());
        let task = tokio::spawn(
            renew(election, lock, config, status.clone(), lost_tx, release_rx).instrument(span),
        );
        Leadership {
            lost,
            release: Some(release_tx),
            task: Some(task),
            status,
            renew_deadline,
        }
    }

    /// Resolves once leadership is gone: the Lease could not be renewed within the renew
    /// deadline, or another candidate holds it. The process must stop leading then.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the renewing task ended, which also ends leadership.
        let _ = lost.wait_for(|l| *l).await;
    }

    /// Whether [`Leadership::lost`] has resolved.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops renewing and hands the Lease over (upstream's `ReleaseOnCancel`): the
    /// holder is cleared with a one-second duration, so the next candidate takes it on
    /// its next try instead of waiting out the lease duration.
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        if let Some(task) = self.task.take() {
            // The task bounds its own write by the renew deadline.
            let _ = tokio::time::timeout(self.renew_deadline + Duration::from_secs(1), task).await;
        }
        self.status.set(0);
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.status.set(0);
        }
    }
}

/// The leader's loop (client-go's `renew`): every retry period, try to renew until it
/// works or the renew deadline passes; on release, hand the Lease over.
async fn renew(
    mut election: Election,
    mut lock: LeaseLock,
    config: Arc<LeaderElectionConfig>,
    status: prometheus::IntGauge,
    lost: watch::Sender<bool>,
    mut release: oneshot::Receiver<()>,
) {
    let desc = config.describe();
    'leading: loop {
        tokio::select! {
            biased;
            _ = &mut release => break 'leading,
            _ = tokio::time::sleep(config.retry_period) => {}
        }
        let deadline = Instant::now() + config.renew_deadline;
        loop {
            let attempt = tokio::time::timeout_at(
                deadline,
                try_acquire_or_renew(&mut election, &mut lock, &desc),
            )
            .await;
            let reason = match attempt {
                Ok(true) => {
                    tracing::trace!("successfully renewed lease {desc}");
                    continue 'leading;
                }
                Ok(false) => election
                    .other_holder(Instant::now())
                    .map(|holder| format!("the lease is held by {holder}")),
                Err(_) => Some("timed out waiting for the condition".to_string()),
            };
            let reason = match reason {
                Some(r) => r,
                None if Instant::now() + config.retry_period < deadline => {
                    tokio::select! {
                        biased;
                        _ = &mut release => break 'leading,
                        _ = tokio::time::sleep(config.retry_period) => continue,
                    }
                }
                None => "timed out waiting for the condition".to_string(),
            };
            status.set(0);
            tracing::info!("failed to renew lease {desc}: {reason}");
            lost.send_replace(true);
            return;
        }
    }
    // Released: give the Lease up if we still hold it.
    match tokio::time::timeout(
        config.renew_deadline,
        release_lease(&mut election, &mut lock, &config.identity),
    )
    .await
    {
        Ok(Ok(true)) => tracing::info!("released lease {desc}"),
        Ok(Ok(false)) => tracing::info!("lease {desc} is no longer ours to release"),
        Ok(Err(e)) => tracing::error!(error = %e, "failed to release lease {desc}"),
        Err(_) => tracing::error!("failed to release lease {desc}: timed out"),
    }
    status.set(0);
    lost.send_replace(true);
}

/// Writes the release record over the Lease if we still hold it. Reads it first, so a
/// renewal whose answer was lost (cancelled at the deadline) does not make the write
/// conflict on a stale resourceVersion.
async fn release_lease(
    election: &mut Election,
    lock: &mut LeaseLock,
    identity: &str,
) -> Result<bool, UpdateError> {
    if !election.is_leader() {
        return Ok(false);
    }
    let current = lock.get().await?;
    if current.is_none_or(|r| r.holder_identity != identity) {
        return Ok(false);
    }
    let Some(record) = election.release(now_micros()) else {
        return Ok(false);
    };
    lock.update(&record).await?;
    election.written(record, Instant::now());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_name: "kube-scheduler".into(),
            lease_namespace: "kube-system".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// A fake clock: monotonic instants and wall times that advance together.
    struct Clock {
        start: Instant,
        wall: Timestamp,
        elapsed: Duration,
    }

    impl Clock {
        fn new() -> Self {
            Clock {
                start: Instant::now(),
                wall: "2025-05-01T10:00:00Z".parse().unwrap(),
                elapsed: Duration::ZERO,
            }
        }
        fn advance(&mut self, d: Duration) {
            self.elapsed += d;
        }
        fn now(&self) -> Instant {
            self.start + self.elapsed
        }
        fn wall(&self) -> Timestamp {
            self.wall + jiff::SignedDuration::try_from(self.elapsed).unwrap()
        }
    }

    fn held_by(holder: &str, renewed: Timestamp, transitions: i32) -> Record {
        Record {
            holder_identity: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(renewed),
            renew_time: Some(renewed),
            leader_transitions: transitions,
        }
    }

    #[test]
    fn an_absent_lease_is_created_with_no_transitions() {
        let clock = Clock::new();
        let mut e = Election::new(&config("a"));
        let step = e.observe(None, clock.now(), clock.wall());
        assert_eq!(
            step,
            Step::Create(Record {
                holder_identity: "a".into(),
                lease_duration_seconds: 15,
                acquire_time: Some(clock.wall()),
                renew_time: Some(clock.wall()),
                leader_transitions: 0,
            })
        );
        assert!(!e.is_leader(), "not before the create succeeded");
    }

    #[test]
    fn a_held_lease_expires_by_our_clock_from_its_last_change() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("b"));
        // The holder's renewTime is far in the past by our wall clock: irrelevant, only
        // how long the record stays unchanged on our clock counts.
        let stale_wall = clock.wall() - jiff::SignedDuration::from_hours(1);
        let record = held_by("a", stale_wall, 3);
        let step = e.observe(Some(record.clone()), clock.now(), clock.wall());
        assert_eq!(step, Step::Held { holder: "a".into() });

        clock.advance(14 * SECOND);
        let step = e.observe(Some(record.clone()), clock.now(), clock.wall());
        assert_eq!(step, Step::Held { holder: "a".into() });

        clock.advance(2 * SECOND);
        let Step::Update(taken) = e.observe(Some(record), clock.now(), clock.wall()) else {
            panic!("expired after 15s unchanged");
        };
        assert_eq!(taken.holder_identity, "b");
        assert_eq!(taken.leader_transitions, 4, "a new holder is a transition");
        assert_eq!(taken.acquire_time, Some(clock.wall()));
        assert_eq!(taken.renew_time, Some(clock.wall()));
        assert_eq!(taken.lease_duration_seconds, 15);
    }

    #[test]
    fn each_renewal_restarts_the_wait() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("b"));
        let first = held_by("a", clock.wall(), 0);
        e.observe(Some(first), clock.now(), clock.wall());
        clock.advance(10 * SECOND);
        let renewed = held_by("a", clock.wall(), 0);
        e.observe(Some(renewed.clone()), clock.now(), clock.wall());
        clock.advance(10 * SECOND);
        assert_eq!(
            e.observe(Some(renewed.clone()), clock.now(), clock.wall()),
            Step::Held { holder: "a".into() },
            "20s after the first sighting but 10s after the renewal"
        );
        clock.advance(6 * SECOND);
        assert!(matches!(
            e.observe(Some(renewed), clock.now(), clock.wall()),
            Step::Update(_)
        ));
    }

    #[test]
    fn the_records_duration_counts_not_ours() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("b"));
        let record = Record {
            lease_duration_seconds: 60,
            ..held_by("a", clock.wall(), 0)
        };
        e.observe(Some(record.clone()), clock.now(), clock.wall());
        clock.advance(30 * SECOND);
        assert_eq!(
            e.observe(Some(record), clock.now(), clock.wall()),
            Step::Held { holder: "a".into() }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let clock = Clock::new();
        let mut e = Election::new(&config("b"));
        let released = Record {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            ..held_by("", clock.wall(), 5)
        };
        let Step::Update(taken) = e.observe(Some(released), clock.now(), clock.wall()) else {
            panic!("no holder: free to take");
        };
        assert_eq!(taken.holder_identity, "b");
        assert_eq!(taken.leader_transitions, 6);
    }

    #[test]
    fn the_leader_renews_keeping_acquire_time_and_transitions() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("a"));
        let acquired_at = clock.wall();
        let Step::Create(created) = e.observe(None, clock.now(), clock.wall()) else {
            panic!("no lease yet");
        };
        e.written(created.clone(), clock.now());
        assert!(e.is_leader());

        clock.advance(2 * SECOND);
        let fast = e.renewal(clock.now(), clock.wall()).expect("fast path");
        assert_eq!(fast.acquire_time, Some(acquired_at));
        assert_eq!(fast.renew_time, Some(clock.wall()));
        assert_eq!(fast.leader_transitions, 0);
        e.written(fast.clone(), clock.now());

        // The slow path (after a failed fast write) keeps them too.
        clock.advance(2 * SECOND);
        let Step::Update(slow) = e.observe(Some(fast), clock.now(), clock.wall()) else {
            panic!("our own lease");
        };
        assert_eq!(slow.acquire_time, Some(acquired_at));
        assert_eq!(slow.leader_transitions, 0);
        assert_eq!(slow.renew_time, Some(clock.wall()));
    }

    #[test]
    fn no_fast_path_once_our_lease_may_have_expired() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("a"));
        e.written(held_by("a", clock.wall(), 0), clock.now());
        clock.advance(16 * SECOND);
        assert!(!e.is_lease_valid(clock.now()));
        assert_eq!(e.renewal(clock.now(), clock.wall()), None);
    }

    #[test]
    fn a_leader_sees_another_holder_take_over() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("a"));
        e.written(held_by("a", clock.wall(), 0), clock.now());
        clock.advance(3 * SECOND);
        let step = e.observe(
            Some(held_by("b", clock.wall(), 1)),
            clock.now(),
            clock.wall(),
        );
        assert_eq!(step, Step::Held { holder: "b".into() });
        assert!(!e.is_leader());
        assert_eq!(e.other_holder(clock.now()), Some("b"));
        assert_eq!(e.release(clock.wall()), None, "nothing to release");
    }

    #[test]
    fn release_clears_the_holder_for_one_second() {
        let mut clock = Clock::new();
        let mut e = Election::new(&config("a"));
        e.written(held_by("a", clock.wall(), 7), clock.now());
        clock.advance(SECOND);
        let released = e.release(clock.wall()).expect("we hold it");
        assert_eq!(
            released,
            Record {
                holder_identity: String::new(),
                lease_duration_seconds: 1,
                acquire_time: Some(clock.wall()),
                renew_time: Some(clock.wall()),
                leader_transitions: 7,
            }
        );
    }

    #[test]
    fn records_round_trip_through_a_lease() {
        let record = held_by("a", now_micros(), 2);
        let mut spec = LeaseSpec {
            strategy: Some("OldestEmulationVersion".into()),
            ..Default::default()
        };
        record.apply_to(&mut spec);
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        let lease = Lease {
            metadata: Default::default(),
            spec: Some(spec),
        };
        // Through JSON, as the apiserver stores it.
        let json = serde_json_round_trip(&lease);
        assert_eq!(Record::from_lease(&json), record);
    }

    fn serde_json_round_trip(lease: &Lease) -> Lease {
        let text = k8s_openapi::serde_json::to_string(lease).unwrap();
        k8s_openapi::serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn identity_is_hostname_and_uuid() {
        let opts = LeaderElectionOptions::default();
        let a = LeaderElectionConfig::from_options(&opts, "kube-scheduler");
        let b = LeaderElectionConfig::from_options(&opts, "kube-scheduler");
        assert_ne!(a.identity, b.identity);
        let (host, uuid) = a.identity.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{}", a.identity);
        assert_eq!(a.describe(), "kube-system/kube-scheduler");
        let named = LeaderElectionOptions {
            resource_name: Some("my-scheduler".into()),
            ..opts
        };
        assert_eq!(
            LeaderElectionConfig::from_options(&named, "kube-scheduler").lease_name,
            "my-scheduler"
        );
    }

    #[test]
    fn jitter_stays_within_the_factor() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(4400));
        }
    }
}

/// The lease was lost while the daemon led: upstream daemons exit on it.
#[derive(Debug, thiserror::Error)]
#[error("leaderelection lost")]
pub struct LeadershipLost;

/// Runs a daemon's work until shutdown, or until `leadership` (when it was elected) is
/// lost; then fails readiness, stops every task of `tasks`, and on a clean shutdown
/// releases the lease so a successor takes over at once (upstream's ReleaseOnCancel).
pub async fn run_until_stopped(
    leadership: Option<Leadership>,
    shutdown: &mut Shutdown,
    checks: &crate::serving::HealthChecks,
    mut tasks: tokio::task::JoinSet<()>,
) -> Result<(), LeadershipLost> {
    let result = match &leadership {
        Some(l) => {
            tokio::select! {
                _ = shutdown.signaled() => Ok(()),
                _ = l.lost() => Err(LeadershipLost),
            }
        }
        None => {
            shutdown.signaled().await;
            Ok(())
        }
    };
    checks.set_shutting_down();
    tasks.shutdown().await;
    if let (Some(l), Ok(())) = (leadership, &result) {
        l.release().await;
    }
    result
}
