//! `pequod-operator`: runs the transform-controller and the graph-executor.

fn main() {}
