//! Fuzzing (proptest) of what a Transform's author writes and the API server sends back:
//! Transform JSON as it arrives from a watch or a LIST, spec durations, and the API server's
//! error messages that are redacted before anyone sees them.
//!
//! Every property runs `PEQUOD_FUZZ_CASES` cases (2000 when unset, so `cargo xtask test` stays
//! quick; `cargo xtask fuzz` runs a million). Invariants:
//!
//! - `fuzz_spec_decode_json` / `fuzz_spec_decode_bytes`: any JSON (adversarial strings, numbers,
//!   nesting, Transform-shaped or not) and any bytes (also mutations of a real Transform)
//!   decode as `TransformSpec`, `Transform`, `Lenient<Transform>`, a list of them, and as
//!   `ResourceGraph` / `Lenient<ResourceGraph>` without panicking; `Lenient` decodes whatever
//!   the plain type decodes, to the same value without `managedFields`; a decoded spec's
//!   `problem()` never panics, and when it is `None` the spec is usable: `input` at most
//!   `MAX_DEPTH` deep and `MAX_INPUT_BYTES` large, `interval` and `timeout` parse within
//!   their bounds.
//! - `fuzz_spec_durations`: `parse_duration` and `bounded_duration` never panic, a bounded
//!   duration is always within `[min, MAX_DURATION]`, and Go-style durations read right.
//! - `fuzz_spec_deep_input`: `spec.input` (and `metadata.managedFields`, `status.outputs`)
//!   nested up to 4000 levels decodes to the value or to the undecodable marker, never to an
//!   error or a stack overflow, and the Transforms next to it in a list still decode.
//! - `fuzz_spec_deep_graph`: the same for a ResourceGraph node's `object` (the executor's
//!   LIST): the object or the marker, and the graph next to it still decodes.
//! - `fuzz_spec_redact`: `redact::api_values` never panics, never leaves a quoted value after
//!   a field-error phrase (`Invalid value: "…"`), and takes every Secret value out of messages
//!   in the API server's format; `secrets_and_api_values` takes out every Secret given.

use std::cell::Cell;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use pequod_api::lenient::{self, Lenient, MAX_DEPTH, MAX_INPUT_BYTES, UNDECODABLE};
use pequod_api::redact::{api_values, secrets_and_api_values};
use pequod_api::transform::{MAX_DURATION, MIN_INTERVAL, MIN_TIMEOUT, bounded_duration};
use pequod_api::{ResourceGraph, Transform, TransformSpec, parse_duration};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde::Deserialize;
use serde_json::{Value, json};

/// Cases per property: `PEQUOD_FUZZ_CASES` (underscores allowed), else 2000.
fn cases() -> u32 {
    std::env::var("PEQUOD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2000)
}

/// Runs `test` on `cases()` values of `strategy` and prints how many ran and how long it took
/// (`cargo xtask fuzz` shows these lines). A panic inside `test` is a failure, shrunk.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0_u64);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} cases in {:.1?}",
        ran.get(),
        started.elapsed()
    );
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Duration-like text: Go syntax, bare seconds, and everything around it that must fail.
fn duration_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{1,20}",
        "[0-9]{0,3}\\.[0-9]{0,12}",
        prop::sample::select(vec![
            "0",
            "5124095576030000",
            "18446744073709551616",
            "1e400",
            "1e3",
            "inf",
            "NaN",
            "-1",
            "+1",
            ".",
            "..1",
            "9.999",
            "604800",
            "604800.000000001",
            "10080",
            "168",
            "0x10",
        ])
        .prop_map(str::to_owned),
    ];
    let unit = prop::sample::select(vec![
        "ms", "s", "m", "h", "", "d", "us", "µs", "ns", "H", "S", "mss", " ", "ms ",
    ]);
    prop_oneof![
        8 => prop::collection::vec((number, unit), 1..4).prop_map(|parts| {
            parts.into_iter().fold(String::new(), |mut out, (n, u)| {
                out.push_str(&n);
                out.push_str(u);
                out
            })
        }),
        1 => "\\PC{0,12}",
        1 => "[ \\t]{0,2}[0-9.hms]{0,10}[ \\t\\n]{0,2}",
    ]
}

/// Strings meant to break things: durations, quotes, escapes, control and odd Unicode.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,16}",
        1 => "[\\x00-\\x7f]{0,16}",
        1 => duration_text(),
        1 => prop::sample::select(vec![
            "",
            "\u{0}",
            "\u{feff}",
            "\u{10ffff}",
            "\\ud800",
            "inline",
            "oci",
            "git",
            "configmap",
            "embedded",
            "Inline",
            UNDECODABLE,
            "Invalid value: \"x\"",
            "$ref",
        ])
        .prop_map(str::to_owned),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![0_i64, -1, 1, i64::MIN, i64::MAX, 2_147_483_648])
            .prop_map(Value::from),
    ]
}

/// The keys of a Transform, so that arbitrary trees hit its fields.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "namespace",
            "managedFields",
            "labels",
            "spec",
            "status",
            "cueRef",
            "type",
            "ref",
            "path",
            "version",
            "interval",
            "pullSecretRef",
            "input",
            "outputs",
            "valuesFrom",
            "valuesKey",
            "targetPath",
            "optional",
            "serviceAccountName",
            "suspend",
            "deletionPolicy",
            "driftPolicy",
            "adopt",
            "timeout",
            "conditions",
            "history",
            UNDECODABLE,
        ])
        .prop_map(str::to_owned),
        1 => nasty_string(),
    ]
}

/// Any JSON value with Transform-ish keys, at most `depth` levels of containers.
fn json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Transform that decodes, as the API server sends it.
fn valid_transform() -> Value {
    json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {
            "name": "web",
            "namespace": "team",
            "uid": "1234",
            "labels": {"app": "web"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
        },
        "spec": {
            "cueRef": {"type": "git", "ref": "https://example.com/r.git#main", "interval": "5m", "version": "^1"},
            "input": {"replicas": 2, "image": "nginx"},
            "valuesFrom": [{"kind": "Secret", "name": "db", "valuesKey": "v", "targetPath": "db", "optional": true}],
            "serviceAccountName": "deployer",
            "timeout": "10m",
            "adopt": [{"kind": "ConfigMap", "name": "c"}]
        },
        "status": {"outputs": {"url": "https://x"}}
    })
}

/// Paths of `valid_transform` a mutation may replace or remove.
const PATHS: [&str; 20] = [
    "",
    "/apiVersion",
    "/metadata",
    "/metadata/name",
    "/metadata/labels",
    "/metadata/managedFields",
    "/spec",
    "/spec/cueRef",
    "/spec/cueRef/type",
    "/spec/cueRef/ref",
    "/spec/cueRef/interval",
    "/spec/input",
    "/spec/valuesFrom",
    "/spec/valuesFrom/0/kind",
    "/spec/serviceAccountName",
    "/spec/timeout",
    "/spec/adopt",
    "/spec/suspend",
    "/status",
    "/status/outputs",
];

#[derive(Clone, Debug)]
enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
    Duration(&'static str, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (prop::sample::select(PATHS.to_vec()), json(3)).prop_map(|(p, v)| Edit::Set(p, v)),
        2 => prop::sample::select(PATHS.to_vec()).prop_map(Edit::Remove),
        3 => (prop::sample::select(vec!["/spec/cueRef/interval", "/spec/timeout"]), duration_text())
            .prop_map(|(p, t)| Edit::Duration(p, t)),
    ]
}

fn apply(edits: &[Edit]) -> Value {
    let mut value = valid_transform();
    for edit in edits {
        match edit {
            Edit::Set("", v) => value = v.clone(),
            Edit::Set(path, v) => {
                if let Some(slot) = value.pointer_mut(path) {
                    *slot = v.clone();
                }
            }
            Edit::Duration(path, text) => {
                if let Some(slot) = value.pointer_mut(path) {
                    *slot = Value::from(text.as_str());
                }
            }
            Edit::Remove(path) => {
                if let Some((parent, last)) = path.rsplit_once('/')
                    && let Some(Value::Object(map)) = value.pointer_mut(parent)
                {
                    map.remove(last);
                }
            }
        }
    }
    value
}

/// A Transform as JSON: mostly a real one with edits, sometimes anything at all.
fn transform_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::collection::vec(edit(), 0..4).prop_map(|edits| apply(&edits)),
        1 => json(4),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks

#[derive(Deserialize)]
struct List {
    items: Vec<Lenient<Transform>>,
}

/// A decoded spec's `problem()` is `None` only when the spec is usable.
fn check_spec(spec: &TransformSpec) -> Result<(), TestCaseError> {
    let problem = spec.problem();
    if problem.is_some() {
        return Ok(());
    }
    if let Some(input) = &spec.input {
        prop_assert!(lenient::depth(input) <= MAX_DEPTH);
        prop_assert!(input.to_string().len() <= MAX_INPUT_BYTES);
        prop_assert!(input.get(UNDECODABLE).is_none() || !input[UNDECODABLE].is_string());
    }
    if let Some(interval) = &spec.cue_ref.interval {
        let d = parse_duration(interval);
        prop_assert!(
            d.as_ref()
                .is_ok_and(|d| *d >= MIN_INTERVAL && *d <= MAX_DURATION),
            "interval {:?} accepted: {:?}",
            interval,
            d
        );
    }
    if let Some(timeout) = &spec.timeout {
        let d = parse_duration(timeout);
        prop_assert!(
            d.as_ref()
                .is_ok_and(|d| *d >= MIN_TIMEOUT && *d <= MAX_DURATION),
            "timeout {:?} accepted: {:?}",
            timeout,
            d
        );
    }
    Ok(())
}

/// Decodes `text` every way the operator does; none may panic, and `Lenient` must decode
/// whatever the plain type decodes.
fn check_decoding(text: &[u8]) -> Result<(), TestCaseError> {
    let plain = serde_json::from_slice::<Transform>(text);
    let lenient = serde_json::from_slice::<Lenient<Transform>>(text);
    if let Ok(spec) = serde_json::from_slice::<TransformSpec>(text) {
        check_spec(&spec)?;
    }
    if let Ok(Lenient(transform)) = &lenient {
        check_spec(&transform.spec)?;
        prop_assert!(transform.metadata.managed_fields.is_none());
    }
    if let Ok(mut transform) = plain {
        check_spec(&transform.spec)?;
        // The API server sends UTF-8 only; `Transform` skips unknown fields without looking
        // at their bytes, `Lenient` copies them as text.
        if std::str::from_utf8(text).is_err() {
            return Ok(());
        }
        transform.metadata.managed_fields = None;
        prop_assert!(lenient.is_ok(), "Lenient fails where Transform decodes");
        if let Ok(Lenient(lenient)) = lenient {
            let (lenient, transform) = (
                serde_json::to_value(&lenient),
                serde_json::to_value(&transform),
            );
            prop_assert_eq!(lenient.ok(), transform.ok());
        }
    }
    // The executor reads ResourceGraphs the same way.
    let graph = serde_json::from_slice::<ResourceGraph>(text);
    let lenient_graph = serde_json::from_slice::<Lenient<ResourceGraph>>(text);
    if let Ok(mut graph) = graph
        && std::str::from_utf8(text).is_ok()
    {
        graph.metadata.managed_fields = None;
        prop_assert!(
            lenient_graph
                .as_ref()
                .is_ok_and(|l| serde_json::to_value(&l.0).ok() == serde_json::to_value(&graph).ok()),
            "Lenient<ResourceGraph> differs where ResourceGraph decodes"
        );
    }
    let mut list = b"{\"items\": [".to_vec();
    list.extend_from_slice(text);
    list.extend_from_slice(b", ");
    list.extend_from_slice(valid_transform().to_string().as_bytes());
    list.extend_from_slice(b"]}");
    if let Ok(list) = serde_json::from_slice::<List>(&list) {
        prop_assert_eq!(list.items.len(), 2);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn fuzz_spec_decode_json() {
    fuzz("spec/decode_json", transform_json(), |value| {
        check_decoding(value.to_string().as_bytes())?;
        if let Some(spec) = value.get("spec") {
            check_decoding(spec.to_string().as_bytes())?;
        }
        Ok(())
    });
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

#[test]
fn fuzz_spec_decode_bytes() {
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..4),
                prop::sample::select(vec![
                    b"[".to_vec(),
                    b"{".to_vec(),
                    b"\"".to_vec(),
                    b"\\".to_vec(),
                    b"null".to_vec(),
                    b"\"\\ud800\"".to_vec(),
                    b"1e999".to_vec(),
                    b",".to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1_usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    let bytes = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        3 => (transform_json(), prop::collection::vec(mutation, 1..4)).prop_map(|(value, mutations)| {
            let mut text = value.to_string().into_bytes();
            for mutation in mutations {
                let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
                match mutation {
                    Mutation::Flip(i, b) if !text.is_empty() => {
                        let i = at(i, text.len());
                        text[i] = b;
                    }
                    Mutation::Insert(i, b) => {
                        let i = at(i, text.len() + 1);
                        text.splice(i..i, b);
                    }
                    Mutation::Delete(i, n) if !text.is_empty() => {
                        let i = at(i, text.len());
                        let end = (i + n).min(text.len());
                        text.drain(i..end);
                    }
                    Mutation::Truncate(i) => {
                        let i = at(i, text.len() + 1);
                        text.truncate(i);
                    }
                    _ => {}
                }
            }
            text
        }),
    ];
    fuzz("spec/decode_bytes", bytes, |bytes| check_decoding(&bytes));
}

/// Seconds of a Go-style duration made of whole numbers, the plain way.
fn expected_seconds(parts: &[(u32, &str)]) -> f64 {
    parts
        .iter()
        .map(|(n, unit)| {
            f64::from(*n)
                * match *unit {
                    "h" => 3600.0,
                    "m" => 60.0,
                    "s" => 1.0,
                    _ => 0.001,
                }
        })
        .sum()
}

#[test]
fn fuzz_spec_durations() {
    let well_formed = prop::collection::vec(
        (
            0_u32..100_000,
            prop::sample::select(vec!["h", "m", "s", "ms"]),
        ),
        1..4,
    );
    let strategy = (
        duration_text(),
        well_formed,
        prop_oneof![
            Just(Duration::ZERO),
            Just(MIN_TIMEOUT),
            Just(MIN_INTERVAL),
            Just(MAX_DURATION),
            (0_u64..700_000).prop_map(Duration::from_secs),
        ],
        nasty_string(),
    );
    fuzz("spec/durations", strategy, |(text, parts, min, field)| {
        let parsed = parse_duration(&text);
        match bounded_duration(&field, &text, min) {
            Ok(d) => {
                prop_assert!(d >= min && d <= MAX_DURATION, "{:?} -> {:?}", text, d);
                prop_assert_eq!(parsed, Ok(d));
            }
            Err(message) => {
                prop_assert!(message.contains(field.as_str()), "{}", message);
                if let Ok(d) = parsed {
                    prop_assert!(
                        d < min || d > MAX_DURATION,
                        "{:?} refused: {}",
                        text,
                        message
                    );
                }
            }
        }
        // Go-style text reads as the sum of its parts (to a microsecond: f64 arithmetic).
        let go = parts.iter().fold(String::new(), |mut out, (n, unit)| {
            let _ = write!(out, "{n}{unit}");
            out
        });
        let d = parse_duration(&go);
        prop_assert!(d.is_ok(), "{:?}: {:?}", go, d);
        let d = d.unwrap_or_default();
        let expected = expected_seconds(&parts);
        prop_assert!(
            (d.as_secs_f64() - expected).abs() < 1e-6 * expected.max(1.0),
            "{:?} read as {:?}, not {}s",
            go,
            d,
            expected
        );
        // Through the spec: the same bounds.
        let spec: TransformSpec = serde_json::from_value(json!({
            "cueRef": {"type": "oci", "ref": "r.example.com/m", "interval": text},
            "timeout": go,
        }))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_spec(&spec)?;
        Ok(())
    });
}

/// `levels` of nesting (a scalar is 1) in one of a few shapes, as JSON text.
fn nested(levels: usize, shape: u8) -> String {
    let containers = levels.saturating_sub(1);
    let mut text = String::with_capacity(containers * 8);
    for i in 0..containers {
        match (shape + u8::from(i % 2 == 1)) % 3 {
            0 => text.push('['),
            1 => text.push_str("{\"a\":"),
            _ => text.push_str("[0,"),
        }
    }
    text.push_str("\"leaf\"");
    for i in (0..containers).rev() {
        match (shape + u8::from(i % 2 == 1)) % 3 {
            1 => text.push('}'),
            _ => text.push(']'),
        }
    }
    text
}

#[test]
fn fuzz_spec_deep_input() {
    let levels = prop_oneof![
        3 => 1_usize..160,
        1 => 160_usize..4000,
        1 => prop::sample::select(vec![MAX_DEPTH, MAX_DEPTH + 1, 127, 128, 129, 130]),
    ];
    let strategy = (levels, 0_u8..3, 0_u8..3, any::<bool>());
    fuzz(
        "spec/deep_input",
        strategy,
        |(levels, shape, managed_shape, deep_managed)| {
            let input = nested(levels, shape);
            let managed = if deep_managed {
                nested(levels, managed_shape)
            } else {
                "{}".to_owned()
            };
            let spec_text = format!(
                r#"{{"cueRef": {{"type": "embedded", "ref": "webservice"}}, "input": {input}}}"#
            );
            let item = format!(
                r#"{{"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
                "metadata": {{"name": "deep", "namespace": "team",
                    "managedFields": [{{"manager": "kubectl", "fieldsV1": {managed}}}]}},
                "spec": {spec_text}, "status": {{"outputs": {input}}}}}"#
            );
            let spec: TransformSpec = serde_json::from_str(&spec_text)
                .map_err(|e| TestCaseError::fail(format!("{levels} levels: {e}")))?;
            let list = format!(r#"{{"items": [{item}, {}]}}"#, valid_transform());
            let list: List = serde_json::from_str(&list).map_err(|e| {
                TestCaseError::fail(format!("the list fails at {levels} levels: {e}"))
            })?;
            prop_assert_eq!(list.items.len(), 2);
            prop_assert_eq!(&list.items[0].0.spec, &spec);
            prop_assert_eq!(list.items[1].0.spec.problem(), None);
            if !deep_managed {
                let plain: Transform = serde_json::from_str(&item)
                    .map_err(|e| TestCaseError::fail(format!("{levels} levels: {e}")))?;
                prop_assert_eq!(&plain.spec, &spec);
            }
            let value = spec.input.as_ref().expect("input is never dropped");
            let problem = spec.problem();
            if let Some(why) = value.get(UNDECODABLE) {
                prop_assert!(
                    levels > MAX_DEPTH,
                    "{} levels made a marker: {}",
                    levels,
                    why
                );
                prop_assert!(problem.is_some_and(|p| p.contains("cannot be decoded")));
            } else {
                prop_assert_eq!(lenient::depth(value), levels);
                prop_assert_eq!(problem.is_some(), levels > MAX_DEPTH);
            }
            Ok(())
        },
    );
}

#[derive(Deserialize)]
struct Graphs {
    items: Vec<Lenient<ResourceGraph>>,
}

fn resource_graph(object: &str, managed: &str) -> String {
    format!(
        r#"{{"apiVersion": "platform.pequod.io/v1alpha1", "kind": "ResourceGraph",
            "metadata": {{"name": "g", "namespace": "team",
                "managedFields": [{{"manager": "pequod", "fieldsV1": {managed}}}]}},
            "spec": {{"sourceRef": {{"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform", "name": "g"}},
                "revision": 1, "renderHash": "h", "module": {{"ref": "r", "digest": "d"}},
                "nodes": [{{"id": "a", "object": {object}}}]}}}}"#
    )
}

#[test]
fn fuzz_spec_deep_graph() {
    let levels = prop_oneof![
        3 => 1_usize..160,
        1 => 160_usize..4000,
        1 => prop::sample::select(vec![127, 128, 129, 130]),
    ];
    fuzz(
        "spec/deep_graph",
        (levels, 0_u8..3, any::<bool>()),
        |(levels, shape, deep_managed)| {
            let object = nested(levels, shape);
            let managed = if deep_managed {
                nested(levels, shape)
            } else {
                "{}".to_owned()
            };
            let fine = resource_graph(
                r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}"#,
                "{}",
            );
            let list = format!(
                r#"{{"items": [{}, {fine}]}}"#,
                resource_graph(&object, &managed)
            );
            let graphs: Graphs = serde_json::from_str(&list).map_err(|e| {
                TestCaseError::fail(format!("the list fails at {levels} levels: {e}"))
            })?;
            prop_assert_eq!(graphs.items.len(), 2);
            prop_assert_eq!(
                graphs.items[1].0.spec.nodes[0].object["kind"].as_str(),
                Some("ConfigMap")
            );
            let object = &graphs.items[0].0.spec.nodes[0].object;
            if let Some(why) = object.get(UNDECODABLE) {
                prop_assert!(
                    levels > MAX_DEPTH,
                    "{} levels made a marker: {}",
                    levels,
                    why
                );
            } else {
                prop_assert_eq!(lenient::depth(object), levels);
            }
            Ok(())
        },
    );
}

/// Go's `%q`: what the API server writes around a string value.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Marks every generated Secret value: it appears nowhere else, so finding it in a redacted
/// message means a Secret leaked.
const SECRET_MARK: char = '\u{2603}';

fn secret() -> impl Strategy<Value = String> {
    ("\\PC{0,6}", "[\\x20-\\x7e]{0,6}").prop_map(|(a, b)| format!("{a}{SECRET_MARK}{b}"))
}

/// A value as the API server prints it in a field error (`%q` for strings, `%v` for numbers,
/// `%#v` for maps and slices), possibly holding a Secret value.
fn bad_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => secret().prop_map(|s| go_quote(&s)),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => prop::collection::btree_map("[a-z]{1,4}", secret(), 1..3).prop_map(|m| {
            let entries: Vec<String> = m.iter().map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v))).collect();
            format!("map[string]interface {{}}{{{}}}", entries.join(", "))
        }),
        1 => prop::collection::vec(secret(), 1..3).prop_map(|v| {
            let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
            format!("[]interface {{}}{{{}}}", items.join(", "))
        }),
    ]
}

/// Detail text after a value: the validators' messages, and noise without Secret values.
fn detail() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "must be no more than 63 characters",
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'",
            "supported values: \"A\", \"B\"",
            "must be between 1 and 65535, inclusive",
            "spec.x in body should match '^[a-z]+$'",
        ])
        .prop_map(str::to_owned),
        "[a-z :,\"\\[\\]{}().]{0,20}",
    ]
}

/// One field error in `k8s.io/apimachinery`'s `field.Error` format.
fn field_error() -> impl Strategy<Value = String> {
    let with_value = prop::sample::select(vec![
        "Invalid value",
        "Unsupported value",
        "Duplicate value",
        "Not found",
    ]);
    let without_value = prop::sample::select(vec![
        "Required value",
        "Forbidden",
        "Too long",
        "Internal error",
    ]);
    let path = "[a-z]{1,6}(\\.[a-z]{1,6}|\\[[0-9]\\]){0,3}";
    prop_oneof![
        4 => (path, with_value, bad_value(), detail()).prop_map(|(path, kind, value, detail)| {
            if detail.is_empty() {
                format!("{path}: {kind}: {value}")
            } else {
                format!("{path}: {kind}: {value}: {detail}")
            }
        }),
        1 => (path, without_value, detail()).prop_map(|(path, kind, detail)| {
            if detail.is_empty() {
                format!("{path}: {kind}")
            } else {
                format!("{path}: {kind}: {detail}")
            }
        }),
    ]
}

/// A message of the API server refusing an object, as `StatusError` formats it.
fn api_message() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "ConfigMap",
            "Secret",
            "Deployment",
            "Widget.example.com",
        ]),
        "[a-z]{1,8}",
        prop::collection::vec(field_error(), 1..4),
    )
        .prop_map(|(kind, name, errors)| {
            let aggregate = if errors.len() == 1 {
                errors[0].clone()
            } else {
                format!("[{}]", errors.join(", "))
            };
            format!("{kind} {name:?} is invalid: {aggregate}")
        })
}

/// Any text with field-error phrases and quotes sprinkled in.
fn phrase_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "Invalid value: ",
                "Unsupported value: ",
                "Duplicate value: ",
                "Not found: ",
                "\"",
                "\\",
                ": ",
                ", ",
                "{",
                "}",
                "[",
                "]",
                "(",
                ")",
            ])
            .prop_map(str::to_owned),
            "\\PC{0,5}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

const PHRASES: [&str; 4] = [
    "Invalid value: ",
    "Unsupported value: ",
    "Duplicate value: ",
    "Not found: ",
];

#[test]
fn fuzz_spec_redact() {
    let strategy = (
        api_message(),
        phrase_soup(),
        prop::collection::vec(secret(), 0..3),
        "[a-z ,.:]{0,12}",
    );
    fuzz("spec/redact", strategy, |(message, soup, secrets, glue)| {
        for text in [&message, &soup] {
            let redacted = api_values(text);
            for phrase in PHRASES {
                for (at, _) in redacted.match_indices(phrase) {
                    prop_assert!(
                        !redacted[at + phrase.len()..].starts_with('"'),
                        "a quoted value stays in {:?} (from {:?})",
                        redacted,
                        text
                    );
                }
            }
            if !PHRASES.iter().any(|p| text.contains(p)) {
                prop_assert_eq!(&redacted, text);
            }
        }
        let redacted = api_values(&message);
        prop_assert!(
            !redacted.contains(SECRET_MARK),
            "a Secret value leaks: {:?} from {:?}",
            redacted,
            message
        );
        // Secret values anywhere in a text (a CUE error, a log line) go, whatever their order.
        let text = secrets.iter().fold(glue.clone(), |mut out, s| {
            out.push_str(s);
            out.push_str(&glue);
            out
        });
        let cleaned = secrets_and_api_values(&text, &secrets);
        for secret in secrets.iter().filter(|s| s.chars().count() >= 4) {
            prop_assert!(
                !cleaned.contains(secret.as_str()),
                "{:?} stays in {:?}",
                secret,
                cleaned
            );
        }
        Ok(())
    });
}

/// The marker stands in for the undecodable value and names why; keys stay as written.
#[test]
fn fuzz_spec_free_form_object() {
    fuzz("spec/free_form_object", json(4), |value| {
        let text = json!({"cueRef": {"type": "inline", "ref": "x"}, "input": value}).to_string();
        let spec: TransformSpec =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // serde_json reads floats to within an ulp (no `float_roundtrip`): compare with the
        // value read back the same way.
        let expected: Value = serde_json::from_str(&value.to_string())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match expected {
            Value::Null => prop_assert_eq!(&spec.input, &None),
            expected => prop_assert_eq!(spec.input.as_ref(), Some(&expected)),
        }
        check_spec(&spec)
    });
}
