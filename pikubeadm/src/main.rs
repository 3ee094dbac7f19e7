fn main() {
    pikubeadm::cli::main(std::env::args_os().collect())
}
