//! The Helm chart, installed into the test control plane (being written).
