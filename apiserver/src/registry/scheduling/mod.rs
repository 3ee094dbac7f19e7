//! Strategies of scheduling.k8s.io resources with behaviour of their own.

pub mod priority_classes;
