//! Component tests, one binary: each test starts its own etcd and apiserver.

mod common;
mod deployment;
mod disruption;
mod endpoints;
mod garbagecollector;
mod leader_election;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod podgc;
mod replicaset;
mod serviceaccount;
mod statefulset;
