//! Project automation. Each subcommand lives in its own file; xtask
//! orchestrates and shells out (training runs in the `seht` binary), and
//! holds no math.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod analysis;
mod bench_report;
mod fetch_data;
mod fixtures;
mod paper;
mod report;
mod reproduce;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  reproduce       run the paper's experiments and write tables and figures (--help for options)
  check-results   verify a reproduce output folder: DIR [--tables 1,2,3,4] [--seeds N]
  bench-report    run `cargo bench -p seht-bench` and write its table into docs/performance.md [--no-run]
  fetch-data      download and unpack CIFAR-10, CIFAR-100 and WikiText-2 [--data-dir DIR] [NAME...]
  help            show this message";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn report(r: anyhow::Result<()>, what: &str) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cargo xtask {what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_results(args: &[String]) -> anyhow::Result<()> {
    let mut dir = None;
    let mut tables = vec!["table1".to_string(), "table2".into(), "table3".into(), "table4".into()];
    let mut seeds = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tables" => {
                tables = it
                    .next()
                    .map(|v| v.split(',').map(|t| format!("table{}", t.trim().trim_start_matches("table"))).collect())
                    .unwrap_or_default()
            }
            "--seeds" => seeds = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            d => dir = Some(PathBuf::from(d)),
        }
    }
    let dir = dir.ok_or_else(|| anyhow::anyhow!("check-results needs the output folder (e.g. results/smoke)"))?;
    report::check(&root(), &dir, &tables, seeds)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("reproduce") => report(
            reproduce::parse(&args[1..]).and_then(|a| match a {
                Some(a) => reproduce::run(&root(), a),
                None => Ok(()),
            }),
            "reproduce",
        ),
        Some("check-results") => report(check_results(&args[1..]), "check-results"),
        Some("bench-report") => report(bench_report::run(&root(), &args[1..]), "bench-report"),
        Some("fetch-data") => report(fetch_data::run(&args[1..]), "fetch-data"),
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
