//! The `kiri` command: parse the arguments, then run what they ask for (`cli/`).

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    cli::run(cli::Cli::parse())
}
