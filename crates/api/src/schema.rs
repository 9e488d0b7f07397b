//! Hand-written OpenAPI fragments for fields whose Rust type cannot say enough by itself.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A free-form object whose unknown fields the API server keeps (Transform input, outputs).
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A complete Kubernetes object embedded in a graph node: the API server checks that it has
/// `apiVersion`, `kind` and `metadata`, and keeps every other field.
pub fn embedded_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-embedded-resource": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
