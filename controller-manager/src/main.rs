fn main() {
    controller_manager::cli::main(std::env::args_os().collect())
}
