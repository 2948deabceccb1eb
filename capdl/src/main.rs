//! `capdl print|check|binary system.toml`: the system spec tool.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "capdl", about = "capvisor system.toml -> capDL spec")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the capDL spec (textual syntax) of a system.toml.
    Print { system: PathBuf },
    /// Validate a system.toml, build its spec and run the structural checks.
    Check { system: PathBuf },
    /// Write the binary spec the root task reads.
    Binary {
        system: PathBuf,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn load(path: &Path) -> Result<capdl::Spec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    capdl::spec_from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Print { system } => {
            print!("{}", capdl::to_capdl(&load(&system)?));
        }
        Command::Check { system } => {
            let spec = load(&system)?;
            println!(
                "{}: ok ({} VMs, {} PDs, {} objects, {} capabilities)",
                system.display(),
                spec.vms.len(),
                spec.pds.len(),
                spec.objects.len(),
                spec.caps.len()
            );
        }
        Command::Binary { system, output } => {
            let bytes = capdl::encode(&load(&system)?);
            std::fs::write(&output, &bytes).map_err(|e| format!("{}: {e}", output.display()))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capdl: {e}");
            ExitCode::FAILURE
        }
    }
}
