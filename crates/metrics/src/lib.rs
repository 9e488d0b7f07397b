//! The `pequod_*` Prometheus metrics (DESIGN §9), one registry per process.
//!
//! Make one [`Metrics`] at start-up, share it as an `Arc<Metrics>` with every component, and
//! serve [`Metrics::encode`] on `/metrics`. Every family is registered once, in
//! [`Metrics::new`]; recording is lock-free apart from the label lookup, so call sites stay one
//! line:
//!
//! | Call | Records |
//! |------|---------|
//! | [`reconciled(controller, &result, duration)`](Metrics::reconciled) | `pequod_reconcile_total{controller,result}`, `pequod_reconcile_duration_seconds{controller}` |
//! | [`reconcile_error(controller, permanent)`](Metrics::reconcile_error) | `pequod_reconcile_errors_total{controller,kind}` (`permanent`/`transient`) |
//! | [`cue_eval(ok, duration, cache_hit)`](Metrics::cue_eval) | `pequod_cue_eval_duration_seconds{result}` (`ok`/`error`), `pequod_cue_cache_total{result}` (`hit`/`miss`) |
//! | [`fetched(source_type, ok, duration)`](Metrics::fetched) | `pequod_fetch_duration_seconds{source_type,result}` |
//! | [`applied(group, version, kind, ok, duration)`](Metrics::applied) | `pequod_apply_total{group,version,kind,result}`, `pequod_apply_duration_seconds{group,version,kind}` |
//! | [`set_managed(namespace, graph, n)`](Metrics::set_managed) / [`forget_graph(namespace, graph)`](Metrics::forget_graph) | `pequod_managed_resources{namespace,graph}` |
//! | [`dag_executed(duration)`](Metrics::dag_executed) | `pequod_dag_execution_duration_seconds` |
//! | [`pruned(kind)`](Metrics::pruned) | `pequod_prune_total{kind}` |
//! | [`drifted(policy)`](Metrics::drifted) | `pequod_drift_total{policy}` (`Correct`/`Report`) |
//! | [`set_leader(is_leader)`](Metrics::set_leader) | `pequod_leader` (0/1) |
//! | [`observe_source_cache(read)`](Metrics::observe_source_cache) | `pequod_source_cache_{hits,misses,evictions}_total`, `pequod_source_cache_bytes`, `pequod_source_cache_entries`, read from `read()` at each scrape |
//!
//! Controller names are constants of the caller (`"transform-controller"`, `"graph-executor"`);
//! source types are the `cueRef` kinds (`inline`, `configmap`, `embedded`, `oci`, `git`). Label
//! values are never user-chosen names except the namespace and name of a graph, whose series
//! [`Metrics::forget_graph`] removes when the graph is gone, and the kinds of applied objects,
//! which are bounded by what the API server serves.
//!
//! For a transform-controller reconcile, for example:
//!
//! ```
//! # use std::time::Instant;
//! # let metrics = pequod_metrics::Metrics::new();
//! let started = Instant::now();
//! let result: Result<(), &str> = Ok(());
//! metrics.reconciled("transform-controller", &result, started.elapsed());
//! metrics.fetched("configmap", true, started.elapsed());
//! metrics.cue_eval(true, started.elapsed(), false);
//! assert!(metrics.encode().contains("pequod_reconcile_total{controller=\"transform-controller\",result=\"success\"} 1"));
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Histogram buckets (seconds) of whole reconciles and DAG passes: 5 ms to 5 min.
const RECONCILE_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Buckets of one CUE evaluation: a warm render takes milliseconds, a cold one seconds.
const CUE_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of one module fetch: inline text in microseconds, OCI/Git up to a minute.
const FETCH_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];
/// Buckets of one server-side apply: an API round trip.
const APPLY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Constructor of a histogram family's members.
type Buckets = fn() -> Histogram;

/// `{controller, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerResult {
    controller: String,
    result: &'static str,
}

/// `{controller}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

/// `{controller, kind}`: the kind of error, permanent or transient.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerErrorKind {
    controller: String,
    kind: &'static str,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// `{source_type, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceResult {
    source_type: String,
    result: &'static str,
}

/// `{group, version, kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

/// `{group, version, kind, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GvkResult {
    group: String,
    version: String,
    kind: String,
    result: &'static str,
}

/// `{namespace, graph}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GraphLabel {
    namespace: String,
    graph: String,
}

/// `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// `{policy}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

/// What the module cache (`pequod_source::CacheStats`) reports, read at each scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCacheStats {
    /// Lookups answered since start.
    pub hits: u64,
    /// Lookups not answered since start.
    pub misses: u64,
    /// Entries removed for the byte bound or the TTL since start.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// Reads the module cache's numbers.
type ReadSourceCache = Box<dyn Fn() -> SourceCacheStats + Send + Sync>;

/// The `pequod_source_cache_*` families: nothing until a reader is set, then its numbers at
/// each scrape.
#[derive(Default)]
struct SourceCacheCollector {
    read: Mutex<Option<ReadSourceCache>>,
}

impl std::fmt::Debug for SourceCacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCacheCollector")
            .finish_non_exhaustive()
    }
}

impl Collector for SourceCacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = match &*self.read.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(read) => read(),
            None => return Ok(()),
        };
        for (name, help, value) in [
            (
                "source_cache_hits",
                "Module cache lookups answered",
                stats.hits,
            ),
            (
                "source_cache_misses",
                "Module cache lookups not answered (absent, expired or failing verification)",
                stats.misses,
            ),
            (
                "source_cache_evictions",
                "Module cache entries removed for the byte bound or the TTL",
                stats.evictions,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let bytes = ConstGauge::new(stats.bytes);
        bytes.encode(encoder.encode_descriptor(
            "source_cache",
            "Bytes the module cache holds (on disk; in memory without a cache directory)",
            Some(&Unit::Bytes),
            bytes.metric_type(),
        )?)?;
        let entries = ConstGauge::new(stats.entries);
        entries.encode(encoder.encode_descriptor(
            "source_cache_entries",
            "Modules the module cache holds",
            None,
            entries.metric_type(),
        )?)
    }
}

fn success(ok: bool) -> &'static str {
    if ok { "success" } else { "error" }
}

fn histograms<S: Clone + std::hash::Hash + Eq>(buckets: Buckets) -> Family<S, Histogram, Buckets> {
    Family::new_with_constructor(buckets)
}

/// Every `pequod_*` family, registered into a registry of its own. Thread-safe; share it as
/// `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<ControllerResult, Counter>,
    reconcile_duration: Family<ControllerLabel, Histogram, Buckets>,
    reconcile_errors: Family<ControllerErrorKind, Counter>,
    cue_eval_duration: Family<ResultLabel, Histogram, Buckets>,
    cue_cache: Family<ResultLabel, Counter>,
    fetch_duration: Family<SourceResult, Histogram, Buckets>,
    apply_total: Family<GvkResult, Counter>,
    apply_duration: Family<Gvk, Histogram, Buckets>,
    managed: Family<GraphLabel, Gauge>,
    dag_duration: Histogram,
    prune_total: Family<KindLabel, Counter>,
    drift_total: Family<PolicyLabel, Counter>,
    leader: Gauge,
    source_cache: Arc<SourceCacheCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of families, all registered (series appear once first recorded; the
    /// unlabelled `pequod_leader` and `pequod_dag_execution_duration_seconds` always show).
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("pequod"),
            reconcile_total: Family::default(),
            reconcile_duration: histograms(|| Histogram::new(RECONCILE_BUCKETS)),
            reconcile_errors: Family::default(),
            cue_eval_duration: histograms(|| Histogram::new(CUE_BUCKETS)),
            cue_cache: Family::default(),
            fetch_duration: histograms(|| Histogram::new(FETCH_BUCKETS)),
            apply_total: Family::default(),
            apply_duration: histograms(|| Histogram::new(APPLY_BUCKETS)),
            managed: Family::default(),
            dag_duration: Histogram::new(RECONCILE_BUCKETS),
            prune_total: Family::default(),
            drift_total: Family::default(),
            leader: Gauge::default(),
            source_cache: Arc::default(),
        };
        metrics.register();
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "reconcile",
            "Reconciles by controller and result (success, error)",
            self.reconcile_total.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile by controller",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by controller and kind of error (permanent, transient)",
            self.reconcile_errors.clone(),
        );
        r.register_with_unit(
            "cue_eval_duration",
            "Duration of one CUE evaluation by result (ok, error)",
            Unit::Seconds,
            self.cue_eval_duration.clone(),
        );
        r.register(
            "cue_cache",
            "Render cache lookups by result (hit, miss)",
            self.cue_cache.clone(),
        );
        r.register_with_unit(
            "fetch_duration",
            "Duration of one module fetch by source type and result (success, error)",
            Unit::Seconds,
            self.fetch_duration.clone(),
        );
        r.register(
            "apply",
            "Server-side applies by group, version, kind and result (success, error)",
            self.apply_total.clone(),
        );
        r.register_with_unit(
            "apply_duration",
            "Duration of one server-side apply by group, version and kind",
            Unit::Seconds,
            self.apply_duration.clone(),
        );
        r.register(
            "managed_resources",
            "Objects in a ResourceGraph's inventory",
            self.managed.clone(),
        );
        r.register_with_unit(
            "dag_execution_duration",
            "Duration of one executor pass over a ResourceGraph",
            Unit::Seconds,
            self.dag_duration.clone(),
        );
        r.register(
            "prune",
            "Stale objects pruned (deleted or released) by kind",
            self.prune_total.clone(),
        );
        r.register(
            "drift",
            "Objects found changed by another manager, by drift policy (Correct, Report)",
            self.drift_total.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease, else 0",
            self.leader.clone(),
        );
        r.register_collector(Box::new(self.source_cache.clone()));
    }

    /// The OpenMetrics text exposition of every family, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; should it ever, serve an empty exposition rather
        // than half of one.
        if text::encode(&mut out, &self.registry).is_err() {
            "# EOF\n".clone_into(&mut out);
        }
        out
    }

    /// One reconcile of `controller` finished with `result` after `duration`.
    pub fn reconciled<T, E>(&self, controller: &str, result: &Result<T, E>, duration: Duration) {
        self.reconcile_total
            .get_or_create(&ControllerResult {
                controller: controller.to_owned(),
                result: success(result.is_ok()),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabel {
                controller: controller.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// A reconcile of `controller` failed with a permanent (waits for a change) or transient
    /// (retried) error. Call from the error policy.
    pub fn reconcile_error(&self, controller: &str, permanent: bool) {
        self.reconcile_errors
            .get_or_create(&ControllerErrorKind {
                controller: controller.to_owned(),
                kind: if permanent { "permanent" } else { "transient" },
            })
            .inc();
    }

    /// One CUE evaluation: whether it succeeded, how long it took (including a cache lookup
    /// that answered it), and whether the render cache answered.
    pub fn cue_eval(&self, ok: bool, duration: Duration, cache_hit: bool) {
        self.cue_eval_duration
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .observe(duration.as_secs_f64());
        self.cue_cache
            .get_or_create(&ResultLabel {
                result: if cache_hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// One module fetch from `source_type` (`inline`, `configmap`, `embedded`, `oci`, `git`).
    pub fn fetched(&self, source_type: &str, ok: bool, duration: Duration) {
        self.fetch_duration
            .get_or_create(&SourceResult {
                source_type: source_type.to_owned(),
                result: success(ok),
            })
            .observe(duration.as_secs_f64());
    }

    /// One server-side apply of an object of `group` (empty for the core group), `version`
    /// and `kind`.
    pub fn applied(&self, group: &str, version: &str, kind: &str, ok: bool, duration: Duration) {
        self.apply_total
            .get_or_create(&GvkResult {
                group: group.to_owned(),
                version: version.to_owned(),
                kind: kind.to_owned(),
                result: success(ok),
            })
            .inc();
        self.apply_duration
            .get_or_create(&Gvk {
                group: group.to_owned(),
                version: version.to_owned(),
                kind: kind.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// The graph `namespace/graph` manages `count` objects (its inventory).
    pub fn set_managed(&self, namespace: &str, graph: &str, count: usize) {
        self.managed
            .get_or_create(&GraphLabel {
                namespace: namespace.to_owned(),
                graph: graph.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The graph `namespace/graph` is gone: its series disappear.
    pub fn forget_graph(&self, namespace: &str, graph: &str) {
        self.managed.remove(&GraphLabel {
            namespace: namespace.to_owned(),
            graph: graph.to_owned(),
        });
    }

    /// One executor pass over a graph's DAG took `duration`.
    pub fn dag_executed(&self, duration: Duration) {
        self.dag_duration.observe(duration.as_secs_f64());
    }

    /// One stale object of `kind` was pruned.
    pub fn pruned(&self, kind: &str) {
        self.prune_total
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// One object was found drifted under the drift `policy` (`Correct` or `Report`).
    pub fn drifted(&self, policy: &str) {
        self.drift_total
            .get_or_create(&PolicyLabel {
                policy: policy.to_owned(),
            })
            .inc();
    }

    /// Whether this replica holds the leader lease.
    pub fn set_leader(&self, is_leader: bool) {
        self.leader.set(i64::from(is_leader));
    }

    /// Reports the module cache: `read` is called at each scrape (keep it cheap) and replaces
    /// any earlier reader. Until one is set, the `pequod_source_cache_*` families are absent.
    pub fn observe_source_cache(
        &self,
        read: impl Fn() -> SourceCacheStats + Send + Sync + 'static,
    ) {
        *self
            .source_cache
            .read
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(read));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(20);

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    #[test]
    fn reconciles_and_errors_are_counted_per_controller() {
        let metrics = Metrics::new();
        metrics.reconciled::<(), ()>("graph-executor", &Ok(()), MS);
        metrics.reconciled::<(), ()>("graph-executor", &Ok(()), MS);
        metrics.reconciled::<(), &str>("graph-executor", &Err("boom"), MS);
        metrics.reconcile_error("graph-executor", true);
        metrics.reconcile_error("transform-controller", false);
        let text = metrics.encode();
        has(
            &text,
            r#"pequod_reconcile_total{controller="graph-executor",result="success"} 2"#,
        );
        has(
            &text,
            r#"pequod_reconcile_total{controller="graph-executor",result="error"} 1"#,
        );
        has(
            &text,
            r#"pequod_reconcile_duration_seconds_count{controller="graph-executor"} 3"#,
        );
        has(
            &text,
            r#"pequod_reconcile_duration_seconds_bucket{le="0.025",controller="graph-executor"} 3"#,
        );
        has(
            &text,
            r#"pequod_reconcile_errors_total{controller="graph-executor",kind="permanent"} 1"#,
        );
        has(
            &text,
            r#"pequod_reconcile_errors_total{controller="transform-controller",kind="transient"} 1"#,
        );
        has(&text, "# TYPE pequod_reconcile_duration_seconds histogram");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn cue_and_fetch_record_result_and_cache() {
        let metrics = Metrics::new();
        metrics.cue_eval(true, MS, false);
        metrics.cue_eval(true, Duration::from_micros(50), true);
        metrics.cue_eval(false, MS, false);
        metrics.fetched("configmap", true, MS);
        metrics.fetched("oci", false, Duration::from_secs(3));
        let text = metrics.encode();
        has(
            &text,
            r#"pequod_cue_eval_duration_seconds_count{result="ok"} 2"#,
        );
        has(
            &text,
            r#"pequod_cue_eval_duration_seconds_count{result="error"} 1"#,
        );
        has(&text, r#"pequod_cue_cache_total{result="hit"} 1"#);
        has(&text, r#"pequod_cue_cache_total{result="miss"} 2"#);
        has(
            &text,
            r#"pequod_fetch_duration_seconds_count{source_type="configmap",result="success"} 1"#,
        );
        has(
            &text,
            r#"pequod_fetch_duration_seconds_bucket{le="2.5",source_type="oci",result="error"} 0"#,
        );
        has(
            &text,
            r#"pequod_fetch_duration_seconds_bucket{le="5.0",source_type="oci",result="error"} 1"#,
        );
    }

    #[test]
    fn applies_are_counted_per_gvk() {
        let metrics = Metrics::new();
        metrics.applied("", "v1", "ConfigMap", true, MS);
        metrics.applied("apps", "v1", "Deployment", false, MS);
        let text = metrics.encode();
        has(
            &text,
            r#"pequod_apply_total{group="",version="v1",kind="ConfigMap",result="success"} 1"#,
        );
        has(
            &text,
            r#"pequod_apply_total{group="apps",version="v1",kind="Deployment",result="error"} 1"#,
        );
        has(
            &text,
            r#"pequod_apply_duration_seconds_count{group="apps",version="v1",kind="Deployment"} 1"#,
        );
    }

    #[test]
    fn managed_resources_follow_the_graph_and_go_with_it() {
        let metrics = Metrics::new();
        metrics.set_managed("team-a", "web", 3);
        metrics.set_managed("team-a", "web", 5);
        metrics.set_managed("team-b", "db", 1);
        let text = metrics.encode();
        has(
            &text,
            r#"pequod_managed_resources{namespace="team-a",graph="web"} 5"#,
        );
        metrics.forget_graph("team-a", "web");
        let text = metrics.encode();
        assert!(!text.contains(r#"graph="web""#), "{text}");
        has(
            &text,
            r#"pequod_managed_resources{namespace="team-b",graph="db"} 1"#,
        );
    }

    #[test]
    fn dag_prune_drift_and_leader() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        has(&text, "pequod_leader 0");
        has(&text, "pequod_dag_execution_duration_seconds_count 0");
        metrics.dag_executed(Duration::from_millis(300));
        metrics.pruned("ConfigMap");
        metrics.pruned("ConfigMap");
        metrics.drifted("Correct");
        metrics.drifted("Report");
        metrics.set_leader(true);
        let text = metrics.encode();
        has(&text, "pequod_dag_execution_duration_seconds_count 1");
        has(
            &text,
            r#"pequod_dag_execution_duration_seconds_bucket{le="0.5"} 1"#,
        );
        has(&text, r#"pequod_prune_total{kind="ConfigMap"} 2"#);
        has(&text, r#"pequod_drift_total{policy="Correct"} 1"#);
        has(&text, r#"pequod_drift_total{policy="Report"} 1"#);
        has(&text, "pequod_leader 1");
        metrics.set_leader(false);
        has(&metrics.encode(), "pequod_leader 0");
    }

    #[test]
    fn source_cache_is_read_at_each_scrape() {
        let metrics = Metrics::new();
        assert!(
            !metrics.encode().contains("source_cache"),
            "absent until observed"
        );
        let stats = Arc::new(Mutex::new(SourceCacheStats::default()));
        let read = stats.clone();
        metrics.observe_source_cache(move || *read.lock().expect("lock"));
        let text = metrics.encode();
        has(&text, "pequod_source_cache_hits_total 0");
        has(&text, "# TYPE pequod_source_cache_misses counter");
        *stats.lock().expect("lock") = SourceCacheStats {
            hits: 7,
            misses: 3,
            evictions: 2,
            entries: 4,
            bytes: 4096,
        };
        let text = metrics.encode();
        has(&text, "pequod_source_cache_hits_total 7");
        has(&text, "pequod_source_cache_misses_total 3");
        has(&text, "pequod_source_cache_evictions_total 2");
        has(&text, "# TYPE pequod_source_cache_bytes gauge");
        has(&text, "# UNIT pequod_source_cache_bytes bytes");
        has(&text, "pequod_source_cache_bytes 4096");
        has(&text, "pequod_source_cache_entries 4");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn shared_across_threads() {
        let metrics = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        metrics.pruned("Secret");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        has(
            &metrics.encode(),
            r#"pequod_prune_total{kind="Secret"} 400"#,
        );
    }
}
