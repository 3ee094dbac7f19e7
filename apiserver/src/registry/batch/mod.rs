//! Strategies of batch/v1 resources with behaviour of their own.

pub mod jobs;
