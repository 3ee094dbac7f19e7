//! The shared test harness lives in the library, as `apiserver::testing`, so that other
//! crates' tests can start an apiserver too.

pub use apiserver::testing::*;
