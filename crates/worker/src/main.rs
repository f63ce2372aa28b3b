fn main() -> std::process::ExitCode {
    dockercoins::main("worker", worker::ABOUT, worker::run)
}
