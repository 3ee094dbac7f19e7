mod common;
mod cri;
mod node;
mod perf;
mod pods;
mod server;
mod volumes;
