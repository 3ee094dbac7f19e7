fn main() {
    kube_proxy::cli::main(std::env::args_os().collect())
}
