//! Errors at the outermost boundary, and how they are written in a log line.

/// What a service's `run` returns when it fails: any error, typed where it
/// was made, converted by `?`; [`main`](crate::main) logs it with its causes
/// and exits 1.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error with its causes, on one line: `error sending request: connection refused`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
