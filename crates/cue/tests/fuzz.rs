//! Fuzzing (proptest) of the guest's answer as the host reads it: the bytes a module's
//! evaluation returns are decoded and checked into typed graph nodes by
//! `pequod_cue::graph::interpret`. A module is its author's code, so everything in the answer
//! (the `graph` value, node ids, objects given as YAML text, outputs, violations, errors) is
//! hostile.
//!
//! Every property runs `PEQUOD_FUZZ_CASES` cases (2000 when unset, so `cargo xtask test` stays
//! quick; `cargo xtask fuzz` runs a million). Invariants:
//!
//! - `fuzz_cue_graph_interpret`: graph values (well-formed with hostile edits, or anything),
//!   also with objects as YAML text (nested, aliased, malformed), never panic; an accepted
//!   render has one node per entry with unique DNS-label ids, objects with non-empty
//!   `apiVersion`, `kind` and `metadata.name`, nested at most `MAX_OBJECT_DEPTH`, outputs at
//!   most `MAX_DEPTH`; guest errors always win and keep their phase.
//! - `fuzz_cue_graph_bytes`: any bytes (also mutations of a real answer) decoded as the host
//!   decodes them never panic, and what `interpret` accepts meets the same invariants.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Instant;

use pequod_api::lenient::{MAX_DEPTH, MAX_OBJECT_DEPTH, depth};
use pequod_cue::graph::{interpret, is_dns_label};
use pequod_cue::{EvalError, Rendered};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

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

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-c]{1,3}",
        2 => "\\PC{0,12}",
        1 => "[\\x00-\\x7f]{0,8}",
        1 => Just(String::new()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "nodes",
            "id",
            "object",
            "dependsOn",
            "readyWhen",
            "applyPolicy",
            "type",
            "mode",
            "ignoreFields",
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "path",
            "message",
            "severity",
            "phase",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn json(depth: u32) -> impl Strategy<Value = Value> {
    scalar().prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `levels` of nesting (a scalar is 1), as parsed JSON (serde_json's own limit keeps it below
/// 128, as for the guest's answer).
fn nested(levels: usize) -> Value {
    let text = format!(
        "{}\"leaf\"{}",
        "{\"x\":".repeat(levels.saturating_sub(1)),
        "}".repeat(levels.saturating_sub(1))
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn node_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "web", "db-1", "x0"]).prop_map(Value::from),
        2 => prop::sample::select(vec![
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "é",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ])
        .prop_map(Value::from),
        1 => text().prop_map(Value::from),
        1 => scalar(),
    ]
}

/// A Kubernetes-shaped object with hostile parts.
fn object() -> impl Strategy<Value = Value> {
    let string_or_any = |s: BoxedStrategy<String>| {
        prop_oneof![
            6 => s.prop_map(|s| Some(Value::String(s))),
            1 => Just(None),
            1 => json(1).prop_map(Some),
        ]
    };
    (
        string_or_any(
            prop::sample::select(vec!["v1", "apps/v1", ""])
                .prop_map(str::to_owned)
                .boxed(),
        ),
        string_or_any(
            prop::sample::select(vec!["ConfigMap", "Deployment", ""])
                .prop_map(str::to_owned)
                .boxed(),
        ),
        string_or_any(text().boxed()),
        prop_oneof![
            3 => Just(None),
            1 => json(3).prop_map(Some),
            1 => (1_usize..130).prop_map(|levels| Some(nested(levels))),
        ],
        any::<u8>(),
    )
        .prop_map(|(api_version, kind, name, data, shape)| {
            let mut object = Map::new();
            let mut metadata = Map::new();
            if let Some(name) = name {
                metadata.insert("name".into(), name);
            }
            if let Some(v) = api_version {
                object.insert("apiVersion".into(), v);
            }
            if let Some(v) = kind {
                object.insert("kind".into(), v);
            }
            object.insert(
                "metadata".into(),
                if shape % 11 == 0 {
                    Value::from("not a map")
                } else {
                    Value::Object(metadata)
                },
            );
            if let Some(data) = data {
                object.insert("data".into(), data);
            }
            match shape % 13 {
                0 => Value::Array(vec![Value::Object(object)]),
                1 => Value::Null,
                _ => Value::Object(object),
            }
        })
}

/// YAML text for an object: the object itself, or nesting, aliases, tags and malformed text.
fn yaml() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => object().prop_map(|o| yaml_serde::to_string(&o).unwrap_or_default()),
        1 => object().prop_map(|o| o.to_string()),
        1 => (1_usize..400).prop_map(|n| format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata: {}1{}\n",
            "[".repeat(n),
            "]".repeat(n)
        )),
        1 => (1_usize..12, 1_usize..10).prop_map(|(levels, width)| {
            // Aliases that expand exponentially ("billion laughs").
            let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\na0: &a0 [x]\n");
            for level in 1..=levels {
                let items = vec![format!("*a{}", level - 1); width].join(", ");
                let _ = writeln!(text, "a{level}: &a{level} [{items}]");
            }
            text
        }),
        1 => prop::sample::select(vec![
            "",
            "---\n---\n",
            "!!binary aGk=",
            "a: !!int x",
            "? [a]\n: b",
            "<<: *missing",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n<<: {x: 1}",
            "{",
            "a: b: c",
            "\t- x",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 1e999}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: .nan}\n",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,40}",
    ]
}

fn node() -> impl Strategy<Value = Value> {
    let depends_on = prop_oneof![
        4 => prop::collection::vec(node_id(), 0..3).prop_map(Value::Array),
        1 => json(1),
    ];
    let ready_when = prop_oneof![
        4 => Just(None),
        2 => prop::collection::vec(
            prop::sample::select(vec!["Current", "Exists", "ConditionMatch", "FieldEquals", "Eventually", ""])
                .prop_map(|t| json!({"type": t, "conditionType": "Ready"})),
            0..3,
        )
        .prop_map(|rules| Some(Value::Array(rules))),
        1 => json(2).prop_map(Some),
    ];
    let apply_policy = prop_oneof![
        4 => Just(None),
        2 => (
            prop::sample::select(vec!["Apply", "Create", "Adopt", "apply", ""]),
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(|(mode, ignore)| Some(json!({"mode": mode, "ignoreFields": ignore}))),
        1 => json(2).prop_map(Some),
    ];
    (
        prop::option::of(node_id()),
        prop_oneof![3 => object(), 1 => yaml().prop_map(Value::from), 1 => json(2)],
        prop::option::of(depends_on),
        ready_when,
        apply_policy,
        prop::option::of((key(), json(1))),
    )
        .prop_map(
            |(id, object, depends_on, ready_when, apply_policy, extra)| {
                let mut node = Map::new();
                if let Some(id) = id {
                    node.insert("id".into(), id);
                }
                node.insert("object".into(), object);
                if let Some(v) = depends_on {
                    node.insert("dependsOn".into(), v);
                }
                if let Some(v) = ready_when {
                    node.insert("readyWhen".into(), v);
                }
                if let Some(v) = apply_policy {
                    node.insert("applyPolicy".into(), v);
                }
                if let Some((k, v)) = extra {
                    node.insert(k, v);
                }
                Value::Object(node)
            },
        )
}

fn guest_errors() -> impl Strategy<Value = Option<Value>> {
    let error = (
        prop::sample::select(vec!["input", "load", "schema", "eval", "export", "", "other"]),
        text(),
        text(),
        any::<bool>(),
        prop::collection::vec((text(), any::<u32>(), any::<u32>()), 0..2),
    )
        .prop_map(|(phase, path, message, incomplete, positions)| {
            let positions: Vec<Value> = positions
                .into_iter()
                .map(|(file, line, column)| json!({"file": file, "line": line, "column": column}))
                .collect();
            json!({"phase": phase, "path": path, "message": message, "incomplete": incomplete, "positions": positions})
        });
    prop_oneof![
        6 => Just(None),
        1 => Just(Some(json!([]))),
        2 => prop::collection::vec(error, 1..8).prop_map(|e| Some(Value::Array(e))),
        1 => json(2).prop_map(Some),
    ]
}

/// A guest answer as JSON: a graph (usually well-formed with hostile nodes), outputs,
/// violations, errors.
fn response() -> impl Strategy<Value = Value> {
    let graph = prop_oneof![
        8 => prop::collection::vec(node(), 0..6).prop_map(|nodes| Some(json!({"nodes": nodes}))),
        1 => json(3).prop_map(Some),
        1 => Just(None),
    ];
    let outputs = prop_oneof![
        3 => Just(None),
        2 => json(3).prop_map(Some),
        1 => (1_usize..60).prop_map(|levels| Some(nested(levels))),
    ];
    let violations = prop_oneof![
        3 => Just(None),
        2 => prop::collection::vec(
            (text(), text(), prop::sample::select(vec!["Error", "Warning", "Info", ""]), prop::option::of(text())),
            0..3,
        )
        .prop_map(|v| {
            Some(Value::Array(
                v.into_iter()
                    .map(|(path, message, severity, position)| {
                        json!({"path": path, "message": message, "severity": severity, "position": position})
                    })
                    .collect(),
            ))
        }),
        1 => json(2).prop_map(Some),
    ];
    (graph, outputs, violations, guest_errors()).prop_map(|(graph, outputs, violations, errors)| {
        let mut answer = Map::new();
        for (key, value) in [
            ("graph", graph),
            ("outputs", outputs),
            ("violations", violations),
            ("errors", errors),
        ] {
            if let Some(value) = value {
                answer.insert(key.into(), value);
            }
        }
        Value::Object(answer)
    })
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Decodes an answer as the host does and checks what `interpret` makes of it.
fn check_answer(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(response) = serde_json::from_slice(bytes) else {
        return Ok(());
    };
    let result = interpret(response);
    if let Err(error) = &result {
        // Every message renders, and says what class of failure it is.
        let _ = error.to_string();
        let _ = error.is_transient();
        let _ = error.cue_errors();
    }
    // What the answer says, read independently (a `Value` needs valid UTF-8 everywhere,
    // the answer's fields skip what they do not know unread).
    let Ok(answer) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    let guest_errors = answer["errors"]
        .as_array()
        .filter(|e| !e.is_empty())
        .cloned();
    if let Some(errors) = guest_errors {
        let phase = errors[0]["phase"].as_str().unwrap_or_default();
        let Err(result) = result else {
            return Err(TestCaseError::fail("guest errors ignored"));
        };
        let expected = match phase {
            "input" => matches!(result, EvalError::InvalidInput(_)),
            "schema" => matches!(result, EvalError::Schema(_)),
            "load" => matches!(result, EvalError::Load(_)),
            "export" if errors.iter().any(|e| e["incomplete"] == true) => {
                matches!(result, EvalError::NotConcrete(_))
            }
            _ => matches!(result, EvalError::Eval(_)),
        };
        prop_assert!(expected, "phase {:?} became {:?}", phase, result);
        return Ok(());
    }
    let Ok(Rendered {
        nodes,
        outputs,
        violations,
    }) = result
    else {
        prop_assert!(
            matches!(result, Err(EvalError::InvalidGraph(_))),
            "{:?}",
            result
        );
        return Ok(());
    };
    let entries = answer["graph"]["nodes"].as_array().map_or(0, Vec::len);
    prop_assert_eq!(nodes.len(), entries);
    let mut seen = HashSet::new();
    for node in &nodes {
        prop_assert!(is_dns_label(&node.id), "{:?}", node.id);
        let bytes = node.id.as_bytes();
        prop_assert!(
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        );
        prop_assert!(
            bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        );
        prop_assert!(seen.insert(node.id.clone()), "duplicate id {}", node.id);
        prop_assert!(node.object.is_object());
        for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
            prop_assert!(
                node.object
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
                "{} missing in {}",
                pointer,
                node.object
            );
        }
        prop_assert!(depth(&node.object) <= MAX_OBJECT_DEPTH);
    }
    if let Some(outputs) = &outputs {
        prop_assert!(!outputs.is_null());
        prop_assert!(depth(outputs) <= MAX_DEPTH);
    }
    prop_assert!(violations.len() <= answer["violations"].as_array().map_or(0, Vec::len));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn fuzz_cue_graph_interpret() {
    fuzz("cue/graph_interpret", response(), |answer| {
        check_answer(answer.to_string().as_bytes())
    });
}

#[test]
fn fuzz_cue_graph_bytes() {
    let mutated = (
        response(),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0_u8..3), 1..4),
    )
        .prop_map(|(answer, edits)| {
            let mut bytes = answer.to_string().into_bytes();
            for (at, byte, how) in edits {
                let len = bytes.len();
                match how {
                    0 if len > 0 => bytes[at % len] = byte,
                    1 => bytes.insert(at % (len + 1), byte),
                    _ if len > 0 => {
                        bytes.remove(at % len);
                    }
                    _ => {}
                }
            }
            bytes
        });
    let strategy = prop_oneof![
        3 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    fuzz("cue/graph_bytes", strategy, |bytes| check_answer(&bytes));
}
