fn main() -> std::process::ExitCode {
    dockercoins::main("rng", rng::ABOUT, rng::run)
}
