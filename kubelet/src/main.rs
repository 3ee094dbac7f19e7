fn main() {
    kubelet::cli::main(std::env::args_os().collect())
}
