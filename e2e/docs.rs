//! The docs run as written (being written).
