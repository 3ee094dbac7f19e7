//! Integration tests, one binary.

mod leader_election;
mod serving;
