fn main() {
    apiserver::cli::main(std::env::args_os().collect())
}
