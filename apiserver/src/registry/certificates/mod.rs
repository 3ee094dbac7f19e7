//! Strategies of certificates.k8s.io resources.

pub mod certificate_signing_requests;
