//! Logging for the binaries: stderr, filtered by `PIXELPASS_LOG` (or `RUST_LOG`).

/// Logs go to stderr; `PIXELPASS_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init() {
    let filter = std::env::var("PIXELPASS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    // zbus (under ashpd) warns about routine portal traffic: only its errors, unless asked.
    let filter = if filter.contains("zbus") {
        filter
    } else {
        format!("{filter},zbus=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,zbus=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
