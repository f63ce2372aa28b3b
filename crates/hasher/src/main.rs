fn main() -> std::process::ExitCode {
    hasher::main()
}
