//! Strategies of core/v1 resources with behaviour of their own.

pub mod connect;
pub mod namespaces;
pub mod pods;
pub mod serviceaccounts;
pub mod services;
