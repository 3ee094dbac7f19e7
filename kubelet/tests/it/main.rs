mod common;
mod cri;
mod node;
mod pods;
mod server;
