//! Every reason Pequod writes into a condition or a node's status, in one place: both
//! controllers set them, the CLI shows them, and the user guide's troubleshooting table lists
//! each failure with its fix (a test keeps the table complete).
//!
//! Each reason also says what kind of state it stands for: [`Kind::Permanent`] failures stay
//! until someone changes something (`Stalled`, retried only with a long backoff), while
//! [`Kind::Transient`] ones are retried on their own (`Reconciling`).

use std::fmt;

/// What a reason stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// All is well, or a step succeeded.
    Ok,
    /// On its way: waiting for something that will happen without anyone acting.
    Progress,
    /// A failure a retry may fix (the network, the API server, a registry).
    Transient,
    /// A failure that needs a change by a person: the spec, the module, RBAC.
    Permanent,
}

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $name:ident => $kind:ident,)+) => {
        /// A condition or node reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[doc = $doc])+ $name,)+
        }

        impl Reason {
            /// Every reason.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)+];

            /// The reason as written into conditions (`OutOfScope`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                }
            }

            /// What kind of state this reason stands for.
            pub const fn kind(self) -> Kind {
                match self {
                    $(Reason::$name => Kind::$kind,)+
                }
            }
        }
    };
}

reasons! {
    // The Transform's pipeline.
    /// The module was fetched.
    Fetched => Ok,
    /// Fetching failed in a way no other reason names.
    FetchFailed => Transient,
    /// The repository, tag, digest, branch, ConfigMap or embedded module does not exist.
    NotFound => Permanent,
    /// The registry or Git server refused the credentials (or the pull secret is missing).
    Unauthorized => Permanent,
    /// No tag satisfies the version constraint.
    NoVersionMatches => Permanent,
    /// The registry or Git server could not be reached.
    NetworkError => Transient,
    /// The module reference is malformed.
    InvalidRef => Permanent,
    /// The source is not allowed: a local path, `file://`, plain `http://`, or a loopback,
    /// link-local or metadata address.
    SourceNotAllowed => Permanent,
    /// The fetched artifact is not a CUE module (no `.cue` files, a bad module file, ...).
    BadModule => Permanent,
    /// A `valuesFrom` ConfigMap or Secret is missing or malformed.
    ValuesFromFailed => Permanent,
    /// The input does not match the module's `#Input`.
    SchemaViolation => Permanent,
    /// An Error-severity violation of the module's policy blocks the apply.
    PolicyViolation => Permanent,
    /// The evaluation ran out of time or memory, or the guest crashed.
    EvaluationLimit => Permanent,
    /// The module does not evaluate for this input, or renders a malformed graph.
    RenderFailed => Permanent,
    /// The stored spec is out of bounds (interval, timeout) or its input is nested too deep
    /// or too large.
    InvalidSpec => Permanent,
    /// The graph is malformed: a bad `ignoreFields`, a cycle, an unknown dependency, two
    /// nodes for one object, or the API server refused it.
    InvalidGraph => Permanent,
    /// Input and policy checks passed.
    Valid => Ok,
    /// The graph was written.
    Rendered => Ok,
    /// The graph was not Ready within `spec.timeout`.
    Timeout => Permanent,
    /// The ResourceGraph does not exist yet.
    GraphPending => Progress,
    /// The executor has not caught up with the latest revision yet.
    GraphProgressing => Progress,
    // The executor's graph-level reasons.
    /// A node would write outside what the graph may write.
    OutOfScope => Permanent,
    /// An RBAC object in a graph without an impersonated ServiceAccount.
    RBACRequiresIdentity => Permanent,
    /// `serviceAccountName` is set but the operator cannot impersonate.
    ImpersonationUnavailable => Permanent,
    /// Teardown: the API server forbids deleting an object.
    DeleteForbidden => Permanent,
    /// Teardown in progress.
    Deleting => Progress,
    /// Objects no longer rendered are being removed.
    Pruning => Progress,
    /// Every node is ready.
    AllNodesReady => Ok,
    /// Nodes failed; they are retried with backoff.
    NodesFailed => Transient,
    /// Nodes are applied and becoming ready.
    Progressing => Progress,
    /// Someone else changed fields Pequod owns (`driftPolicy: Report`).
    DriftDetected => Permanent,
    // Node reasons.
    /// The node's apply failed (conflict, refusal, RBAC); retried with backoff.
    ApplyFailed => Transient,
    /// The API server does not serve the node's kind (yet).
    KindNotServed => Progress,
    /// A dependency is not ready yet.
    WaitingForDependency => Progress,
    /// A dependency failed.
    DependencyFailed => Transient,
    /// Not looked at yet.
    Pending => Progress,
    /// The node's object is ready.
    Ready => Ok,
    /// The node's object reports a failure.
    NotReady => Transient,
}

impl Reason {
    /// The reason written as `text`, if it is one of Pequod's.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == text)
    }

    /// Whether this is a failure (transient or permanent).
    pub const fn is_failure(self) -> bool {
        matches!(self.kind(), Kind::Transient | Kind::Permanent)
    }
}

/// Whether an API server answer with this HTTP status is permanent: a bad request, a refusal
/// (RBAC), something missing, a conflict or an invalid object stays that way until someone
/// changes something; 429, 5xx and timeouts are worth retrying soon.
pub const fn is_permanent_status(code: u16) -> bool {
    matches!(code, 400 | 403 | 404 | 409 | 413 | 422)
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "{reason} twice");
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
        }
        assert_eq!(Reason::parse("Nope"), None);
        assert!(Reason::OutOfScope.is_failure());
        assert!(!Reason::Deleting.is_failure());
        assert_eq!(Reason::NetworkError.kind(), Kind::Transient);
        for code in [400, 403, 404, 409, 422] {
            assert!(is_permanent_status(code), "{code}");
        }
        for code in [429, 500, 502, 503, 504] {
            assert!(!is_permanent_status(code), "{code}");
        }
    }

    /// The troubleshooting table of the user guide names every failure a user can see.
    #[test]
    fn every_failure_is_in_the_user_guides_troubleshooting_table() {
        let guide = include_str!("../../../docs/user-guide.md");
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.is_failure())
            .map(|r| r.as_str())
            .filter(|r| !guide.contains(&format!("| `{r}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/user-guide.md has no table row for {missing:?}"
        );
    }
}
