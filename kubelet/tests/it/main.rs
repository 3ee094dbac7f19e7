mod common;
mod cri;
mod node;
mod perf;
mod pods;
mod probes;
mod server;
mod volumes;
