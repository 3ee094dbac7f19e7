//! Component tests, one binary: each test starts its own etcd and apiserver.

mod common;
mod lifecycle;
mod placement;
