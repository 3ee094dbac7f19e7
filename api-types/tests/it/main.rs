//! Integration tests, one binary.

mod openapi;
mod protobuf;
mod strategic_merge;
