fn main() -> std::process::ExitCode {
    dockercoins::main("webui", webui::ABOUT, webui::run)
}
