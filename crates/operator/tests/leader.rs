//! Leader election on a coordination.k8s.io Lease, against a real kube-apiserver.
//!
//! Short timings (3 s lease, 2 s renew deadline, 250 ms retry period) keep the tests quick; the
//! assertions are about who holds the Lease and when, as the API server records it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use pequod_operator::leader::{LeaderElector, Leadership, LeaseConfig};
use pequod_testenv::{Profile, shared};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const LEASE: &str = "pequod-leader";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(250);
/// The renew deadline less two retry periods.
const SHORT_OF_RENEW_DEADLINE: Duration = Duration::from_millis(1500);

fn config(namespace: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: LEASE_DURATION,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY_PERIOD,
        ..LeaseConfig::new(namespace, LEASE, identity)
    }
}

fn elector(client: &kube::Client, namespace: &str, identity: &str) -> LeaderElector {
    LeaderElector::new(client.clone(), config(namespace, identity)).expect("a valid config")
}

async fn lease(client: &kube::Client, namespace: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get(LEASE)
        .await
        .expect("the Lease")
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .expect("leaseTransitions")
}

fn renew_time(lease: &Lease) -> jiff::Timestamp {
    let MicroTime(t) = lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.clone())
        .expect("renewTime");
    t
}

fn acquire_time(lease: &Lease) -> jiff::Timestamp {
    let MicroTime(t) = lease
        .spec
        .as_ref()
        .and_then(|s| s.acquire_time.clone())
        .expect("acquireTime");
    t
}

fn spawn_acquire(elector: &LeaderElector) -> JoinHandle<Leadership> {
    let elector = elector.clone();
    tokio::spawn(async move { elector.acquire().await.expect("acquire") })
}

async fn acquired(task: JoinHandle<Leadership>, within: Duration) -> Leadership {
    timeout(within, task)
        .await
        .expect("acquired in time")
        .expect("the acquire task")
}

#[tokio::test]
async fn of_two_candidates_exactly_one_leads_and_keeps_the_lease_by_renewing() {
    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "leader-one").await;
    let a = elector(&client, &ns, "replica-a");
    let b = elector(&client, &ns, "replica-b");

    // Both race for a Lease that does not exist yet.
    let mut task_a = spawn_acquire(&a);
    let mut task_b = spawn_acquire(&b);
    let (a_won, won) = timeout(Duration::from_secs(10), async {
        tokio::select! {
            won = &mut task_a => (true, won),
            won = &mut task_b => (false, won),
        }
    })
    .await
    .expect("one candidate acquires");
    let leadership = won.expect("the acquire task");
    let (winner, loser, mut waiting) = if a_won {
        (&a, &b, task_b)
    } else {
        (&b, &a, task_a)
    };
    let winner_id = winner.config().identity.clone();

    let first = lease(&client, &ns).await;
    assert_eq!(holder(&first), Some(winner_id.as_str()));
    assert_eq!(transitions(&first), 0);
    assert!(winner.is_leader() && leadership.is_leader());
    let status = loser.status();

    // For well over a lease duration the winner renews and the loser keeps waiting.
    let watch_until = Instant::now() + LEASE_DURATION + Duration::from_secs(2);
    let mut last_renew = renew_time(&first);
    let mut renewals = 0;
    while Instant::now() < watch_until {
        sleep(Duration::from_millis(400)).await;
        let now = lease(&client, &ns).await;
        assert_eq!(holder(&now), Some(winner_id.as_str()), "the leader changed");
        assert_eq!(transitions(&now), 0);
        let renewed = renew_time(&now);
        assert!(renewed >= last_renew);
        if renewed > last_renew {
            renewals += 1;
        }
        last_renew = renewed;
        assert!(!waiting.is_finished(), "the second candidate acquired too");
        assert!(!status.is_leader() && !loser.is_leader());
        assert!(winner.is_leader());
    }
    assert!(renewals >= 5, "the leader renewed only {renewals} times");

    waiting.abort();
    let _ = (&mut waiting).await;
    drop(leadership);
}

#[tokio::test]
async fn release_hands_the_lease_over_at_once() {
    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "leader-release").await;
    let a = elector(&client, &ns, "replica-a");
    let b = elector(&client, &ns, "replica-b");

    // A release leaves the Lease without holder, valid for one second.
    let first = a.acquire().await.expect("a acquires");
    first.release().await.expect("a releases");
    assert!(!a.is_leader());
    let released = lease(&client, &ns).await;
    assert_eq!(holder(&released), None);
    assert_eq!(
        released
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds),
        Some(1)
    );
    assert_eq!(transitions(&released), 0);

    // A released Lease is free at once: a takes it again (a change of holder).
    let leadership = timeout(Duration::from_secs(2), a.acquire())
        .await
        .expect("a re-acquires at once")
        .expect("a acquires");
    assert_eq!(transitions(&lease(&client, &ns).await), 1);

    let waiting = spawn_acquire(&b);
    sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "b acquired a held Lease");
    assert!(!b.is_leader());

    let released_at = Instant::now();
    leadership.release().await.expect("a releases");
    assert!(!a.is_leader());
    let taken = acquired(waiting, LEASE_DURATION * 3).await;
    let handover = released_at.elapsed();
    assert!(
        handover < LEASE_DURATION / 2,
        "b took {handover:?} to take over a released Lease (lease duration {LEASE_DURATION:?})"
    );
    assert!(taken.is_leader() && b.is_leader());
    let now = lease(&client, &ns).await;
    assert_eq!(holder(&now), Some("replica-b"));
    assert_eq!(transitions(&now), 2);
    taken.release().await.expect("b releases");
}

#[tokio::test]
async fn an_abandoned_lease_is_taken_over_only_after_it_expires() {
    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "leader-expire").await;
    let a = elector(&client, &ns, "replica-a");
    let b = elector(&client, &ns, "replica-b");

    let leadership = a.acquire().await.expect("a acquires");
    let waiting = spawn_acquire(&b);
    sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "b acquired a held Lease");

    // a stops renewing without releasing, as if it crashed.
    drop(leadership);
    assert!(!a.is_leader());
    let abandoned_at = Instant::now();
    sleep(Duration::from_millis(300)).await;
    let abandoned = lease(&client, &ns).await;
    assert_eq!(holder(&abandoned), Some("replica-a"));
    assert_eq!(transitions(&abandoned), 0);

    let taken = acquired(waiting, LEASE_DURATION * 4).await;
    let waited = abandoned_at.elapsed();
    let now = lease(&client, &ns).await;
    assert_eq!(holder(&now), Some("replica-b"));
    assert_eq!(transitions(&now), 1, "a change of holder is a transition");
    let gap = acquire_time(&now).duration_since(renew_time(&abandoned));
    assert!(
        gap >= jiff::SignedDuration::try_from(LEASE_DURATION).expect("duration"),
        "b took over {gap:?} after a's last renewal, before the {LEASE_DURATION:?} lease expired"
    );
    assert!(
        waited < LEASE_DURATION * 2,
        "b took {waited:?} to take over an expired Lease"
    );
    assert!(taken.is_leader());
    drop(taken);
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_sees_leadership_lost_at_its_next_renewal() {
    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "leader-stolen").await;
    let a = elector(&client, &ns, "replica-a");
    let mut leadership = a.acquire().await.expect("a acquires");
    sleep(RETRY_PERIOD * 2).await;
    assert!(leadership.is_leader());

    // Someone else writes itself into the Lease.
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    let mut stolen = lease(&client, &ns).await;
    let spec = stolen.spec.as_mut().expect("spec");
    spec.holder_identity = Some("thief".into());
    spec.acquire_time = Some(MicroTime(jiff::Timestamp::now()));
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    spec.lease_transitions = Some(1);
    leases
        .replace(LEASE, &PostParams::default(), &stolen)
        .await
        .expect("stealing the Lease");

    // Noticed at the next renewal, well before the renew deadline could run out.
    timeout(SHORT_OF_RENEW_DEADLINE, leadership.lost())
        .await
        .expect("leadership lost at the next renewal");
    assert!(!a.is_leader() && !leadership.is_leader());
    // lost() stays resolved.
    timeout(Duration::from_millis(100), leadership.lost())
        .await
        .expect("lost() again resolves at once");

    // a does not fight for the Lease; a release after losing writes nothing.
    leadership.release().await.expect("nothing to release");
    sleep(RETRY_PERIOD * 3).await;
    let now = lease(&client, &ns).await;
    assert_eq!(holder(&now), Some("thief"));
    assert_eq!(transitions(&now), 1);
}

#[tokio::test]
async fn a_leader_that_cannot_renew_for_the_renew_deadline_loses_leadership() {
    let env = shared(Profile::Minimal);
    let admin = env.client();
    let ns = env.create_namespace(&admin, "leader-deadline").await;

    // The elector acts as a user whose right to the Lease is then taken away.
    let user = "leader-test-user";
    let role = Role {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: vec!["get".into(), "create".into(), "update".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "leases".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            ..Subject::default()
        }]),
    };
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns);
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("role binding");
    let mut config = env.config();
    config.auth_info.impersonate = Some(user.into());
    let restricted = kube::Client::try_from(config).expect("an impersonating client");

    let a = elector(&restricted, &ns, "replica-a");
    let mut leadership = timeout(Duration::from_secs(10), a.acquire())
        .await
        .expect("acquired in time")
        .expect("a acquires");

    bindings
        .delete("leases", &DeleteParams::default())
        .await
        .expect("deleting the role binding");
    let revoked_at = Instant::now();

    timeout(RENEW_DEADLINE * 3, leadership.lost())
        .await
        .expect("leadership lost after the renew deadline");
    let after = revoked_at.elapsed();
    let lost_at = jiff::Timestamp::now();
    assert!(!a.is_leader());
    assert!(
        after >= SHORT_OF_RENEW_DEADLINE,
        "lost after {after:?}, before the renew deadline ({RENEW_DEADLINE:?}) ran out"
    );
    // Stepped down before anyone else could take the Lease over.
    let last_renewal = lease(&admin, &ns).await;
    assert_eq!(holder(&last_renewal), Some("replica-a"));
    let gap = lost_at.duration_since(renew_time(&last_renewal));
    assert!(
        gap < jiff::SignedDuration::try_from(LEASE_DURATION).expect("duration"),
        "stepped down {gap:?} after the last renewal, later than the lease duration"
    );
}
