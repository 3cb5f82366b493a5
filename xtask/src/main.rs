//! Project automation. Each subcommand lives in its own file; xtask
//! orchestrates and shells out, and holds no math.

use std::process::ExitCode;

mod fetch_data;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  reproduce     run the paper's experiments and write tables and figures (not built yet)
  fetch-data    download and unpack CIFAR-10, CIFAR-100 and WikiText-2 [--data-dir DIR] [NAME...]
  help          show this message";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("reproduce") => {
            eprintln!(
                "cargo xtask reproduce: not implemented yet.\n\
                 What exists today: the trace estimators (crate seht-estimator) and the candle\n\
                 backend (crate seht-candle), with their tests (`cargo test --workspace`) and\n\
                 the example `cargo run --release -p seht-candle --example penalised_training`.\n\
                 The models, data loaders, training loop and the reproduction pipeline are\n\
                 still open work (see docs/architecture.md). Nothing was run."
            );
            ExitCode::from(2)
        }
        Some("fetch-data") => match fetch_data::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cargo xtask fetch-data: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("help") | Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("cargo xtask: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
