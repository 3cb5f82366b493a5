//! The `seht` command line: train a model with or without the Hessian-trace
//! penalty, and measure the Hessian trace of a trained model.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use seht_train::analyze::{
    AnalysisSettings, AnalyzeOptions, BlockSpectraRequest, Env, ModelMode, ModelSource, ParamChoice,
};
use seht_train::estimators::{DiagonalMethod, DiagonalRequest, TraceMethod};
use seht_train::{ExperimentConfig, Progress, TraceChoice, TrainOptions};

#[derive(Parser)]
#[command(name = "seht", version, about = "Hessian-trace regularization (SEHT) on candle")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume, or report the finished result of) the run a config describes.
    ///
    /// Prints the run's metrics.json. A run whose loss or objective becomes
    /// non-finite, or whose objective passes the config's
    /// `[divergence] max_abs_objective`, stops there with status `diverged`
    /// (epoch, step, cause) in metrics.json and log.jsonl, and exits with
    /// code 3; run again, it reports the same without training. The run
    /// folder is locked while it is written (`<out>/<name>/.lock`): a second
    /// `seht train` on it is refused, naming the process that holds it; the
    /// lock of a process that ended (killed included) is taken over. Exit
    /// codes: 0 finished, 3 diverged, 1 error, 2 usage.
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
        /// Probes per batch (with another --estimator or --diagonal: the
        /// budget of products of the batches' mean Hessian, the same batch cost).
        #[arg(long, default_value_t = 10)]
        probes: usize,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Trace estimator: `hutchinson` (tr(H), tr(G), tr(DHD) as
        /// always), `hutch++` or `xtrace` (tr(H) alone, with the products
        /// spent), `xnystrace` (tr(G) of the Gauss–Newton matrix G alone: it
        /// needs a positive semi-definite matrix, and H is indefinite).
        #[arg(long, value_enum, default_value = "hutchinson")]
        estimator: EstimatorArg,
        /// Also summarise the Hessian diagonal per weight tensor:
        /// `hutchinson` (the default value) or `xdiag`, within --probes products.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "hutchinson")]
        diagonal: Option<DiagonalArg>,
    },
    /// The Hessian of a trained model: per-layer traces with standard errors
    /// (Hutchinson), the top eigenvalues with residuals (Lanczos), and the
    /// eigenvalue density (stochastic Lanczos quadrature), written as
    /// analysis.json, analysis.md and plots (SVG and PNG).
    Analyze(AnalyzeArgs),
    /// Overlays the densities of several `seht analyze` outputs and tabulates
    /// their top eigenvalues and traces (density_comparison.{svg,png},
    /// comparison.md).
    AnalyzeCompare {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// analysis.json files.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
}

// The options of `seht analyze` (its help text is the variant's).
#[derive(clap::Args)]
struct AnalyzeArgs {
    /// A run folder (holding config.toml and checkpoint/).
    #[arg(long, conflicts_with_all = ["config", "checkpoint", "init"])]
    run: Option<PathBuf>,
    /// The experiment config that built the model (with --checkpoint, or
    /// with --init).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A safetensors file of the model's variables (with --config).
    #[arg(long, requires = "config", conflicts_with = "init")]
    checkpoint: Option<PathBuf>,
    /// The config's model at initialisation (its seeded initial weights, no
    /// training), with --config: the Hessian before any step, where Zhang
    /// et al. (2024) measure block heterogeneity.
    #[arg(long, requires = "config")]
    init: bool,
    /// BatchNorm and dropout mode, always explicit: `eval` (running
    /// statistics, no dropout) or `train` (batch statistics, fixed masks).
    #[arg(long, value_enum)]
    mode: Mode,
    /// Parameters the Hessian is over.
    #[arg(long, value_enum, default_value = "weights")]
    params: Params,
    /// Training batches (no augmentation) whose mean loss is differentiated.
    #[arg(long, default_value_t = 4)]
    batches: usize,
    /// Batch size for images (default: the config's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Hutchinson probes for the per-layer traces (0: skip).
    #[arg(long, default_value_t = 20)]
    trace_probes: usize,
    /// `joint`: one product per probe for all layers; `separate`: one per
    /// probe and layer (lower variance, layers × the cost).
    #[arg(long, value_enum, default_value = "joint")]
    probing: Probing,
    /// Trace estimator: `hutchinson` (per-layer traces) or, for the
    /// whole-model trace with its own error within --trace-probes
    /// products, `hutch++` or `xtrace` (of H), or `xnystrace` (of the
    /// Gauss–Newton matrix G of the same batches: it needs a positive
    /// semi-definite matrix, and H is indefinite; the other analyses stay
    /// on H). See docs/analysis/estimators.md.
    #[arg(long, value_enum, default_value = "hutchinson")]
    estimator: EstimatorArg,
    /// Summarise the Hessian diagonal per weight tensor (mean, min, max,
    /// standard errors): `hutchinson` (the default value) or `xdiag`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "hutchinson")]
    diagonal: Option<DiagonalArg>,
    /// Hessian-vector products for --diagonal.
    #[arg(long, default_value_t = 20)]
    diagonal_hvps: usize,
    /// Top eigenvalues (0: skip).
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Most Lanczos steps for them.
    #[arg(long, default_value_t = 40)]
    lanczos_steps: usize,
    /// Relative residual at which they count as converged.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// SLQ probes for the density (0: skip).
    #[arg(long, default_value_t = 3)]
    slq_probes: usize,
    /// Lanczos steps per SLQ probe.
    #[arg(long, default_value_t = 40)]
    slq_steps: usize,
    /// Gaussian broadening of the density, as a fraction of its range.
    #[arg(long, default_value_t = 0.01)]
    broadening: f64,
    /// Store Lanczos bases in f32 (half the memory; ~1e-7 relative accuracy).
    #[arg(long)]
    f32_basis: bool,
    /// Each weight tensor's own spectral density (SLQ on its diagonal
    /// Hessian block, PROBES probes of STEPS Lanczos steps each) and their
    /// heterogeneity JS₀, the mean Jensen–Shannon divergence between the
    /// blocks' densities (Zhang et al. 2024), with its noise floor; costs
    /// PROBES · STEPS products per block. Broadening: --broadening.
    #[arg(long, value_name = "PROBES,STEPS", value_delimiter = ',')]
    block_spectra: Option<Vec<usize>>,
    /// Seed of every random draw of the analysis.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (default: <run>/analysis, or ./analysis for --checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Folder the config's data paths are relative to.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Eval,
    Train,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Params {
    Weights,
    WeightsAndNormScales,
    Trainable,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Probing {
    Joint,
    Separate,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EstimatorArg {
    Hutchinson,
    #[value(name = "hutch++")]
    HutchPlusPlus,
    Xtrace,
    Xnystrace,
}

impl From<EstimatorArg> for TraceMethod {
    fn from(e: EstimatorArg) -> Self {
        match e {
            EstimatorArg::Hutchinson => TraceMethod::Hutchinson,
            EstimatorArg::HutchPlusPlus => TraceMethod::HutchPlusPlus,
            EstimatorArg::Xtrace => TraceMethod::XTrace,
            EstimatorArg::Xnystrace => TraceMethod::XNysTrace,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DiagonalArg {
    Hutchinson,
    Xdiag,
}

impl From<DiagonalArg> for DiagonalMethod {
    fn from(d: DiagonalArg) -> Self {
        match d {
            DiagonalArg::Hutchinson => DiagonalMethod::Hutchinson,
            DiagonalArg::Xdiag => DiagonalMethod::Xdiag,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProgressArg {
    Bars,
    Lines,
    Hidden,
}

/// The environment of a command.
fn env(data_dir: PathBuf, dev: &str, progress: Progress) -> Result<Env> {
    Ok(Env { data_dir, device: device(dev)?, progress })
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

fn main() -> Result<ExitCode> {
    // Reuse freed tensor buffers instead of page-faulting fresh ones every step.
    seht_candle::retain_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Train { config, data_dir, out, device: dev, quiet, progress } => {
            let progress = match (quiet, progress) {
                (true, _) | (_, ProgressArg::Hidden) => Progress::Hidden,
                (false, ProgressArg::Bars) => Progress::Bars,
                (false, ProgressArg::Lines) => Progress::Lines,
            };
            return train(&config, data_dir, out, &dev, progress);
        }
        Command::Trace { run, data_dir, batches, probes, device: dev, estimator, diagonal } => {
            let env = env(data_dir, &dev, Progress::Hidden)?;
            let choice = TraceChoice { estimator: estimator.into(), diagonal: diagonal.map(Into::into) };
            trace(&run, &env, (batches, probes), choice)?;
        }
        Command::Analyze(args) => analyze(args)?,
        Command::AnalyzeCompare { out, reports } => analyze_compare(&out, &reports)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `seht train`: prints the run's metrics; a run that diverged exits with
/// [`seht_train::records::DIVERGED_EXIT_CODE`].
fn train(config: &Path, data_dir: PathBuf, out: PathBuf, dev: &str, progress: Progress) -> Result<ExitCode> {
    let cfg = ExperimentConfig::from_file(config)?;
    let opts = TrainOptions { env: env(data_dir, dev, progress)?, out_dir: out, stop_after_epochs: None };
    let Some(m) = seht_train::train(&cfg, &opts)? else { bail!("stopped before the end") };
    println!("{}", serde_json::to_string_pretty(&m)?);
    if let Some(d) = m.diverged() {
        eprintln!(
            "seht train: run `{}` diverged at {d}; stopped there, no final model (metrics.json and log.jsonl in {} say so; exit code {})",
            m.name,
            opts.out_dir.join(&m.name).display(),
            seht_train::records::DIVERGED_EXIT_CODE
        );
        return Ok(ExitCode::from(seht_train::records::DIVERGED_EXIT_CODE));
    }
    Ok(ExitCode::SUCCESS)
}

/// `seht trace`: prints the curvature of a run's model.
fn trace(run: &Path, env: &Env, (batches, probes): (usize, usize), choice: TraceChoice) -> Result<()> {
    let c = seht_train::curvature_of_run(run, env, (batches, probes), choice)?;
    if let Some(t) = c.report.clone() {
        println!(
            "Hessian trace tr(H) (Hutchinson, weights): {:.6} ± {:.6} (standard error; {} batches × {} probes)",
            t.mean, t.std_error, t.batches, t.probes
        );
        let show = |m: Option<seht_train::records::Measured>| match m {
            Some(m) => match m.std_error {
                Some(se) => format!("{:.6} ± {se:.6}", m.mean),
                None => format!("{:.6}", m.mean),
            },
            None => "not measured".into(),
        };
        println!("Gauss–Newton trace tr(G) (sampled labels): {}", show(t.gauss_newton));
        println!("scale-invariant trace tr(DHD), D = per-layer weight norm: {}", show(t.scale_invariant));
    }
    for line in c.lines() {
        println!("{line}");
    }
    Ok(())
}

impl AnalyzeArgs {
    /// The model to analyse, and the default output folder.
    fn source(&self) -> Result<(ModelSource, PathBuf)> {
        Ok(match (&self.run, &self.config, &self.checkpoint) {
            (Some(run), _, _) => (ModelSource::Run(run.clone()), run.join("analysis")),
            (None, Some(config), Some(tensors)) => (
                ModelSource::Checkpoint { config: config.clone(), tensors: tensors.clone() },
                PathBuf::from("analysis"),
            ),
            (None, Some(config), None) if self.init => {
                (ModelSource::Initial { config: config.clone() }, PathBuf::from("analysis"))
            }
            _ => bail!("give --run DIR, or --config FILE with --checkpoint FILE (or with --init)"),
        })
    }

    fn options(&self) -> AnalyzeOptions {
        AnalyzeOptions {
            mode: match self.mode {
                Mode::Eval => ModelMode::Eval,
                Mode::Train => ModelMode::Train,
            },
            params: match self.params {
                Params::Weights => ParamChoice::Weights,
                Params::WeightsAndNormScales => ParamChoice::WeightsAndNormScales,
                Params::Trainable => ParamChoice::Trainable,
            },
            batches: self.batches,
            batch_size: self.batch_size,
            settings: AnalysisSettings {
                trace_probes: self.trace_probes,
                probing: match self.probing {
                    Probing::Joint => seht_estimator::BlockProbing::Joint,
                    Probing::Separate => seht_estimator::BlockProbing::Separate,
                },
                estimator: self.estimator.into(),
                diagonal: self.diagonal.map(|d| DiagonalRequest { estimator: d.into(), hvps: self.diagonal_hvps }),
                top_k: self.top_k,
                lanczos_steps: self.lanczos_steps,
                tolerance: self.tolerance,
                slq_probes: self.slq_probes,
                slq_steps: self.slq_steps,
                broadening: self.broadening,
                f32_basis: self.f32_basis,
                seed: self.seed,
                block_spectra: self
                    .block_spectra
                    .as_deref()
                    .map(|v| BlockSpectraRequest { probes: v[0], steps: v.get(1).copied().unwrap_or(0) }),
            },
        }
    }
}

/// `seht analyze`: analyses, writes the report and prints its summary.
fn analyze(args: AnalyzeArgs) -> Result<()> {
    if let Some(v) = args.block_spectra.as_ref().filter(|v| v.len() != 2 || v.contains(&0)) {
        bail!("--block-spectra takes two numbers of at least 1, PROBES,STEPS (e.g. 3,30); got {v:?}");
    }
    let (source, default_out) = args.source()?;
    let progress = if args.quiet { Progress::Hidden } else { Progress::Bars };
    let env = env(args.data_dir.clone(), &args.device, progress)?;
    let aopts = args.options();
    let out = args.out.unwrap_or(default_out);
    // One writer of the output folder at a time, as for a run folder.
    let _lock = seht_train::run_lock::RunLock::acquire(&out)?;
    let report = seht_train::analyze::analyze(&source, &env, &aopts)?;
    let written = seht_train::analyze::write_report(&report, &out)?;
    if let Some(e) = &report.spectrum.eigen {
        let top: Vec<String> =
            e.values.iter().map(|v| format!("{:.6e} (residual {:.1e})", v.value, v.residual)).collect();
        println!(
            "top eigenvalues: {}{}",
            top.join(", "),
            if e.converged { "" } else { " — not converged, raise --lanczos-steps" }
        );
    }
    if let Some(t) = &report.spectrum.traces {
        println!(
            "Hessian trace (sum of {} layers): {:.6e} ± {:.1e} (standard error)",
            t.layers.len(),
            t.total,
            t.total_std_error.unwrap_or(f64::NAN)
        );
    }
    println!("{}", seht_train::analyze::cost_line(&report));
    for f in written.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// `seht analyze-compare`: the comparison table and the overlaid densities.
fn analyze_compare(out: &Path, reports: &[PathBuf]) -> Result<()> {
    let mut all = Vec::new();
    for path in reports {
        let again = "rewrite it with `seht analyze` (its output folder holds the analysis.json to give here)";
        let bytes = std::fs::read(path).with_context(|| format!("reading {}; {again}", path.display()))?;
        let r: seht_train::analyze::AnalysisReport = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not an analysis.json of `seht analyze`; {again}", path.display()))?;
        all.push(r);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md = out.join("comparison.md");
    std::fs::write(&md, seht_train::analyze::comparison_markdown(&all))
        .with_context(|| format!("writing {}", md.display()))?;
    println!("wrote {}", md.display());
    for f in seht_train::analyze::density_comparison(&all, out)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}
