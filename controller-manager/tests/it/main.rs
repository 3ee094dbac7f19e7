//! Component tests, one binary: each test starts its own etcd and apiserver.

mod certificates;
mod common;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod garbagecollector;
mod informers;
mod job;
mod leader_election;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod persistentvolume;
mod podgc;
mod replicaset;
mod resourcequota;
mod serviceaccount;
mod statefulset;
