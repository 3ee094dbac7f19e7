//! Component tests, one binary: each test starts its own etcd and apiserver.

mod admission_limit_ranger;
mod admission_node_restriction;
mod admission_pod_security;
mod admission_pods;
mod api_semantics;
mod apiserver_failover;
mod bootstrap_token;
mod certificate_signing_requests;
mod common;
mod connect;
mod encryption;
mod endpoint_reconciler;
mod etcd_tls;
mod event_ttl;
mod fake_kubelet;
mod kube_client;
mod kubectl;
mod priority;
mod rbac;
mod serviceaccount_token;
mod systemd;
mod x509_auth;
