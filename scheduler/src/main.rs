fn main() {
    scheduler::cli::main(std::env::args_os().collect())
}
