//! Documentation made from the clap definitions themselves, so it never
//! drifts from the binary: `pixelpass completions SHELL` prints a completion
//! script, and the hidden `pixelpass manpages DIR` writes the man pages
//! (pixelpass.1 and one pixelpass-SUBCOMMAND.1 per subcommand) that
//! `scripts/package.sh` puts into the Debian package.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Command, CommandFactory};
use clap_complete::Shell;

use crate::Cli;

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (elvish and powershell work too).
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug, Clone)]
pub struct ManpagesArgs {
    /// The directory to write pixelpass.1 and pixelpass-SUBCOMMAND.1 into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Print the completion script for `args.shell` on stdout, e.g.
/// `source <(pixelpass completions bash)`.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = visible(Cli::command());
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "pixelpass", &mut out);
    Ok(ExitCode::SUCCESS)
}

/// `cmd` without its hidden subcommands: clap_complete's bash script would
/// offer them (`manpages`) at the first word otherwise.
fn visible(cmd: Command) -> Command {
    let shown: Vec<Command> = cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    let mut out = Command::new("pixelpass")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommands(shown);
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    out
}

/// Write the man pages into `args.dir` and list them on stdout.
pub fn manpages(args: &ManpagesArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("cannot write the man pages into {}", args.dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("cannot list {}", args.dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(ExitCode::SUCCESS)
}
