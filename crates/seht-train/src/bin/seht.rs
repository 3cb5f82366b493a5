//! The `seht` command line: train a model with or without the Hessian-trace
//! penalty, and measure the Hessian trace of a trained model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use seht_train::{ExperimentConfig, Progress, TrainOptions};

#[derive(Parser)]
#[command(name = "seht", version, about = "Hessian-trace regularization (SEHT) on candle")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume, or report the finished result of) the run a config describes.
    Train {
        /// The experiment config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Folder the config's data paths are relative to.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Folder the run folder `<out>/<name>` goes in.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// No progress bars (same as `--progress hidden`).
        #[arg(long)]
        quiet: bool,
        /// `bars` (for a terminal), `lines` (`@seht-progress {json}` lines on
        /// standard error, for a supervising process such as `cargo xtask
        /// reproduce`) or `hidden`.
        #[arg(long, value_enum, default_value_t = ProgressArg::Bars)]
        progress: ProgressArg,
    },
    /// Report the Hessian trace (SEHT-H, weights only) of a run's model on
    /// training batches: mean and standard error over probes and batches.
    Trace {
        /// The run folder (holding config.toml and checkpoint/).
        #[arg(long)]
        run: PathBuf,
        /// Folder the config's data paths are relative to.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Batches.
        #[arg(long, default_value_t = 4)]
        batches: usize,
        /// Probes per batch.
        #[arg(long, default_value_t = 10)]
        probes: usize,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProgressArg {
    Bars,
    Lines,
    Hidden,
}

fn device(spec: &str) -> Result<candle_core::Device> {
    if spec == "cpu" {
        return Ok(candle_core::Device::Cpu);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        let n: usize = n.parse().with_context(|| format!("--device {spec}: expected cuda:N"))?;
        return candle_core::Device::new_cuda(n)
            .with_context(|| format!("--device {spec} (was seht built with --features cuda?)"));
    }
    bail!("--device {spec}: expected cpu or cuda:N")
}

fn main() -> Result<()> {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe { seht_candle::enable_higher_order() }?;
    // Reuse freed tensor buffers instead of page-faulting fresh ones every step.
    seht_candle::retain_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Train { config, data_dir, out, device: dev, quiet, progress } => {
            let cfg = ExperimentConfig::from_file(&config)?;
            let opts = TrainOptions {
                data_dir,
                out_dir: out,
                device: device(&dev)?,
                progress: match (quiet, progress) {
                    (true, _) | (_, ProgressArg::Hidden) => Progress::Hidden,
                    (false, ProgressArg::Bars) => Progress::Bars,
                    (false, ProgressArg::Lines) => Progress::Lines,
                },
                stop_after_epochs: None,
            };
            let Some(m) = seht_train::train(&cfg, &opts)? else { bail!("stopped before the end") };
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Command::Trace { run, data_dir, batches, probes, device: dev } => {
            let opts = TrainOptions {
                data_dir,
                out_dir: PathBuf::new(),
                device: device(&dev)?,
                progress: Progress::Hidden,
                stop_after_epochs: None,
            };
            let t = seht_train::trace_of_run(&run, &opts, batches, probes)?;
            println!(
                "Hessian trace (SEHT-H, weights): {:.6} ± {:.6} (standard error; {} batches × {} probes)",
                t.mean, t.std_error, t.batches, t.probes
            );
        }
    }
    Ok(())
}
