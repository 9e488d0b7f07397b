//! The HTTP endpoint: /metrics, /healthz, /readyz.
