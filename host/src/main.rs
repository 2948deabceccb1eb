use capvisor::options::{Cli, Command};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run(args) => capvisor::cli::run(&args),
    };
    std::process::exit(status);
}
