fn main() -> std::process::ExitCode {
    dockercoins::main("hasher", hasher::ABOUT, hasher::run)
}
