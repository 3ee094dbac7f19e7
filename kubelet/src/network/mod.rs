//! The pod network of a pikube node, as kubenet once was in upstream's kubelet (today a
//! network add-on's job; flannel's `host-gw` backend is the closest upstream relative):
//! the CNI configuration of the node's bridge ([`cni`]), one route per other Node's
//! podCIDR via that Node's InternalIP with no encapsulation ([`routes`]), and masquerade
//! for pod traffic leaving the cluster ([`masquerade`]), both kept in sync with the Nodes
//! by [`hostgw`].

pub mod cni;
pub mod hostgw;
pub mod masquerade;
pub mod routes;

pub use cni::{conflist, network_name, write_conflist, CniSettings, Error, CONFLIST_FILE};
