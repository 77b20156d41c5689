//! Benchmarks that print numbers (`pixelpass bench …`).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {}
}
