fn main() -> std::process::ExitCode {
    webui::main()
}
