//! The `pequod_*` Prometheus metrics (DESIGN §9), one registry per process.
