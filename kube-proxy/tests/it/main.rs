//! End-to-end tests, one binary: each test builds its own network namespaces, starts
//! its own etcd and apiserver, and runs the kube-proxy binary in a "node" namespace
//! against real nftables.

mod common;
mod dns;
mod healthcheck;
mod multinode;
mod net;
mod proxy;
mod rules;
mod servicelb;
mod udp;
