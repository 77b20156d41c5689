fn main() -> std::process::ExitCode {
    pixelpass::cli::main()
}
