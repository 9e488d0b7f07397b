//! The JSON messages exchanged with the guest (see `guest/README.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the host asks the guest to evaluate.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// Module files by path relative to the module root.
    pub files: &'a BTreeMap<String, String>,
    /// Package directory relative to the module root (`.`).
    pub package: &'a str,
    /// The merged input.
    pub input: &'a serde_json::Value,
    /// Dependency modules.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub deps: &'a [crate::Dependency],
    /// Lets a warm guest reuse the module it already built for this digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<&'a str>,
}

/// What the guest answers: either the three outputs or errors.
#[derive(Deserialize, Debug, Default)]
pub struct Response {
    /// The concrete `graph` value.
    #[serde(default)]
    pub graph: Option<serde_json::Value>,
    /// The `outputs` value, if the module has one.
    #[serde(default)]
    pub outputs: Option<serde_json::Value>,
    /// The `violations` value, if the module has one.
    #[serde(default)]
    pub violations: Option<serde_json::Value>,
    /// Errors; when present, the evaluation failed.
    #[serde(default)]
    pub errors: Option<Vec<GuestError>>,
}

/// One error as the guest reports it.
#[derive(Deserialize, Debug, Clone)]
pub struct GuestError {
    /// `input`, `load`, `schema`, `eval` or `export`.
    pub phase: String,
    /// CUE path, dot-separated.
    #[serde(default)]
    pub path: String,
    /// CUE's message.
    #[serde(default)]
    pub message: String,
    /// Source positions.
    #[serde(default)]
    pub positions: Vec<crate::Position>,
    /// The value was not concrete.
    #[serde(default)]
    pub incomplete: bool,
}
