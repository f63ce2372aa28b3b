fn main() -> std::process::ExitCode {
    rng::main()
}
