//! The operator's configuration: flags, each with an environment variable (the Helm chart
//! sets the variables; a developer types the flags).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use pequod_api::parse_duration;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines).
    Json,
    /// Human-readable lines.
    Text,
}

/// `pequod-operator`: runs the transform-controller and the graph-executor.
#[derive(Clone, Debug, Parser)]
#[command(version, about)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches, not a state
pub struct Args {
    /// Namespaces whose Transforms and graphs are reconciled (comma-separated); empty means all.
    #[arg(long, env = "PEQUOD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Deprecated: grant every cluster-scoped kind (same as `--cluster-scoped-kinds='*'`).
    /// Prefer naming the kinds.
    #[arg(long, env = "PEQUOD_ALLOW_CLUSTER_SCOPED")]
    pub allow_cluster_scoped: bool,

    /// Cluster-scoped kinds graphs may write (comma-separated): `Namespace` (core group),
    /// `Kind.group` (`ClusterRole.rbac.authorization.k8s.io`), `*.group` or `*`. Empty: none.
    /// A graph may then also fill the Namespaces it creates itself, never existing ones.
    #[arg(long, env = "PEQUOD_CLUSTER_SCOPED_KINDS", value_delimiter = ',', value_parser = parse_kind)]
    pub cluster_scoped_kinds: Vec<pequod_graph_executor::KindPattern>,

    /// Only graphs in namespaces whose labels match this selector (`key=value,key!=value,key,!key`)
    /// get the cluster-scoped kinds; empty: graphs in every namespace do.
    #[arg(long, env = "PEQUOD_CLUSTER_SCOPED_NAMESPACE_SELECTOR", value_parser = parse_selector)]
    pub cluster_scoped_namespace_selector: Option<pequod_graph_executor::Selector>,

    /// Let graphs write Roles, RoleBindings, ClusterRoles and ClusterRoleBindings with the
    /// operator's own rights (no `serviceAccountName` and no default ServiceAccount). Off: such
    /// graphs stall with reason `RBACRequiresIdentity`.
    #[arg(long, env = "PEQUOD_ALLOW_RBAC_WITHOUT_IDENTITY")]
    pub allow_rbac_without_identity: bool,

    /// Namespaces every graph may also write to, besides its own (comma-separated).
    #[arg(long, env = "PEQUOD_ALLOW_NAMESPACES", value_delimiter = ',')]
    pub allow_namespaces: Vec<String>,

    /// ServiceAccount (in the Transform's namespace) impersonated for Transforms that name none.
    #[arg(long, env = "PEQUOD_DEFAULT_SERVICE_ACCOUNT")]
    pub default_service_account: Option<String>,

    /// CPU deadline of one CUE evaluation (e.g. `10s`, `500ms`).
    #[arg(long, env = "PEQUOD_CUE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub cue_timeout: Duration,

    /// Memory cap of one CUE evaluation, in MiB.
    #[arg(long, env = "PEQUOD_CUE_MEMORY_MIB", default_value_t = 512)]
    pub cue_memory_mib: u64,

    /// CUE evaluations run in parallel (each needs up to `--cue-memory-mib`).
    #[arg(long, env = "PEQUOD_CUE_INSTANCES", default_value_t = 2)]
    pub cue_instances: usize,

    /// Where the precompiled CUE guest is cached (default: `~/.cache/pequod/cue`).
    #[arg(long, env = "PEQUOD_CUE_CACHE_DIR")]
    pub cue_cache_dir: Option<PathBuf>,

    /// A read-only directory that may hold the precompiled CUE guest (the image ships one in
    /// `/usr/share/pequod/cue`), used when the cache has none and it fits this CPU.
    #[arg(long, env = "PEQUOD_CUE_SEED_DIR")]
    pub cue_seed_dir: Option<PathBuf>,

    /// Compile the CUE guest into the cache directory (`--cue-cache-dir`) and exit: how the
    /// image build fills its seed directory.
    #[arg(long)]
    pub precompile_guest: bool,

    /// Where modules find the CUE modules they depend on, in `CUE_REGISTRY` syntax
    /// (`host[/prefix][+insecure]`, `module/prefix=registry`, `none`); default `registry.cue.works`.
    #[arg(long, env = "CUE_REGISTRY", default_value = "", value_parser = parse_cue_registry)]
    pub cue_registry: pequod_source::cue_registry::CueRegistry,

    /// Registries (`host:port`) reached over plain HTTP instead of HTTPS (comma-separated).
    #[arg(long, env = "PEQUOD_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,

    /// How long in-flight reconciles may take to finish after SIGTERM before the process
    /// exits anyway (keep it below the Pod's terminationGracePeriodSeconds).
    #[arg(long, env = "PEQUOD_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Also fetch modules from this host and its disk: loopback, link-local and unspecified
    /// hosts, Git over plain `http://`, `file://` URLs and local paths. For tests and the local
    /// demo only: in a cluster, application teams would reach the operator's pod and files.
    #[arg(long, env = "PEQUOD_ALLOW_LOCAL_SOURCES")]
    pub allow_local_sources: bool,

    /// Connect and read timeout of registry requests and Git connections (e.g. `30s`).
    #[arg(long, env = "PEQUOD_SOURCE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub source_timeout: Duration,

    /// Where fetched OCI/Git modules are cached by digest (default: `~/.cache/pequod/sources`).
    #[arg(long, env = "PEQUOD_SOURCE_CACHE_DIR")]
    pub source_cache_dir: Option<PathBuf>,

    /// Bound on the bytes of that cache on disk; least recently used modules go first (0: no
    /// bound).
    #[arg(long, env = "PEQUOD_SOURCE_CACHE_MAX_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub source_cache_max_bytes: u64,

    /// Cached modules unused for this long are removed (e.g. `168h`; `0`: never). Cached
    /// modules never change: this only keeps the disk clean.
    #[arg(long, env = "PEQUOD_SOURCE_CACHE_TTL", default_value = "168h", value_parser = parse_duration)]
    pub source_cache_ttl: Duration,

    /// Transforms reconciled in parallel.
    #[arg(long, env = "PEQUOD_TRANSFORM_CONCURRENCY", default_value_t = 8)]
    pub transform_concurrency: u16,

    /// ResourceGraphs executed in parallel.
    #[arg(long, env = "PEQUOD_GRAPH_CONCURRENCY", default_value_t = 8)]
    pub graph_concurrency: u16,

    /// Nodes of one graph applied in parallel.
    #[arg(long, env = "PEQUOD_APPLY_CONCURRENCY", default_value_t = 4)]
    pub apply_concurrency: usize,

    /// Elect a leader among replicas on a coordination.k8s.io Lease (`--leader-elect=false`
    /// for a single local process).
    #[arg(long, env = "PEQUOD_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "pequod-system")]
    pub leader_election_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, env = "PEQUOD_LEASE_NAME", default_value = "pequod-operator")]
    pub lease_name: String,

    /// This replica's identity in the Lease (default: the pod name, else host name + pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a leader's Lease is valid without renewal.
    #[arg(long, env = "PEQUOD_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long a leader keeps trying to renew before it steps down.
    #[arg(long, env = "PEQUOD_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often candidates try to acquire and the leader renews.
    #[arg(long, env = "PEQUOD_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    #[arg(long, env = "PEQUOD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "PEQUOD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, env = "PEQUOD_LOG", default_value = "info")]
    pub log: String,
}

impl Args {
    /// This replica's Lease identity.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_or_else(|_| "pequod".into(), |h| h.trim().to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// A cluster-scoped kind pattern, checked when the operator starts.
fn parse_kind(text: &str) -> Result<pequod_graph_executor::KindPattern, String> {
    pequod_graph_executor::KindPattern::parse(text)
}

/// A namespace label selector, checked when the operator starts.
fn parse_selector(text: &str) -> Result<pequod_graph_executor::Selector, String> {
    pequod_graph_executor::Selector::parse(text)
}

impl Args {
    /// Where graphs may write beyond their own namespace.
    pub fn scope(&self) -> pequod_graph_executor::Scope {
        let scope = pequod_graph_executor::Scope {
            cluster_kinds: self.cluster_scoped_kinds.clone(),
            cluster_namespace_selector: self.cluster_scoped_namespace_selector.clone(),
            extra_namespaces: self.allow_namespaces.clone(),
            rbac_without_identity: self.allow_rbac_without_identity,
        };
        if self.allow_cluster_scoped {
            scope.all_cluster_kinds()
        } else {
            scope
        }
    }

    /// What the operator should warn about at start: settings that hand tenants more than
    /// they may expect.
    pub fn scope_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.allow_cluster_scoped {
            warnings.push(
                "--allow-cluster-scoped grants every cluster-scoped kind to every graph; name the kinds with --cluster-scoped-kinds (e.g. Namespace) instead".to_owned(),
            );
        }
        let scope = self.scope();
        if scope.any_cluster_scope() && self.default_service_account.is_none() {
            warnings.push(
                "cluster-scoped kinds are granted and no --default-service-account is set: Transforms without serviceAccountName write those kinds with the operator's own rights".to_owned(),
            );
        }
        if self.allow_rbac_without_identity {
            warnings.push(
                "--allow-rbac-without-identity: any Transform author may create Roles and RoleBindings (and granted cluster-scoped RBAC) with the operator's rights".to_owned(),
            );
        }
        warnings
    }
}

/// A `CUE_REGISTRY` value, checked when the operator starts.
fn parse_cue_registry(text: &str) -> Result<pequod_source::cue_registry::CueRegistry, String> {
    pequod_source::cue_registry::CueRegistry::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_flags() {
        let args = Args::try_parse_from([
            "pequod-operator",
            "--cluster-scoped-kinds=Namespace,ClusterRole.rbac.authorization.k8s.io",
            "--cluster-scoped-namespace-selector=pequod.io/trusted=true",
        ])
        .expect("parse");
        let scope = args.scope();
        assert_eq!(scope.cluster_kinds.len(), 2);
        assert!(scope.needs_namespace_labels());
        assert!(
            args.scope_warnings()
                .iter()
                .any(|w| w.contains("no --default-service-account")),
            "{:?}",
            args.scope_warnings()
        );
        let defaults = Args::try_parse_from(["pequod-operator"]).expect("parse");
        assert!(!defaults.scope().any_cluster_scope());
        assert!(defaults.scope_warnings().is_empty());
        let old =
            Args::try_parse_from(["pequod-operator", "--allow-cluster-scoped"]).expect("parse");
        assert!(old.scope().any_cluster_scope());
        assert!(
            old.scope_warnings()
                .iter()
                .any(|w| w.contains("--cluster-scoped-kinds"))
        );
        for bad in [
            "--cluster-scoped-kinds=Name space",
            "--cluster-scoped-namespace-selector=a in (b)",
        ] {
            assert!(
                Args::try_parse_from(["pequod-operator", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn flags_and_defaults() {
        let args = Args::try_parse_from([
            "pequod-operator",
            "--namespaces=a,b",
            "--leader-elect=false",
            "--cue-timeout=2s",
            "--source-cache-ttl=24h",
        ])
        .expect("parse");
        assert_eq!(args.source_cache_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(args.source_cache_max_bytes, 512 * 1024 * 1024);
        assert_eq!(args.namespaces, ["a", "b"]);
        assert!(!args.leader_elect);
        assert_eq!(args.cue_timeout, Duration::from_secs(2));
        assert_eq!(args.http_addr.to_string(), "127.0.0.1:8080");
        assert!(
            !args.allow_local_sources,
            "sources are network hosts by default"
        );
        let local = Args::try_parse_from(["pequod-operator", "--allow-local-sources"]);
        assert!(local.expect("parse").allow_local_sources);
        assert!(Args::try_parse_from(["pequod-operator", "--leader-elect=maybe"]).is_err());
        assert!(
            Args::try_parse_from(["pequod-operator", "--cue-registry=a.example+fast"]).is_err(),
            "a bad CUE registry setting stops the operator at start"
        );
    }
}
