//! pikubeadm: kubeadm's role for pikube. `pikubeadm certs` writes the cluster's PKI (CA,
//! apiserver serving and kubelet-client certificates, service-account keys) and the
//! components' kubeconfigs with embedded client certificates, idempotently; `pikubeadm
//! token create` and `pikubeadm join` let a node join with a bootstrap token.

pub mod certs;
pub mod cli;
pub mod kubeconfig;
pub mod options;
pub mod pki;
pub mod token;
