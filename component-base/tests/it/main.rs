//! Integration tests, one binary.

mod delegated_auth;
mod leader_election;
mod serving;
