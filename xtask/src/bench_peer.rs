//! `cargo xtask bench-peer`: the same training steps timed in this project
//! (candle: `crates/seht-bench/examples/step_memory.rs`, one release build)
//! and in PyTorch (`bench/peer/torch_steps.py`) on the same machine, and one
//! side-by-side Markdown table.
//!
//! Round-robin: each round runs every configuration, the candle process then
//! the torch process, so that both see the same machine state; every process
//! runs one configuration under an address-space limit, with the same number
//! of threads. A process that fails or runs out of memory is recorded as
//! such. Each cell of the table is the median over rounds of each process's
//! own median step time (or working memory).
//!
//! SEHT-D (`exact-d`): both tools time a step whose layer draw selected at
//! least one of the L weight tensors. A draw selects some with probability
//! `q = 1 − (1 − p)^L` (p = 0.05, each tensor independently); one that
//! selects none costs a plain step in training (`seht_candle::Penalty` draws
//! before building the gradient's graph). The table's expected cost of a
//! SEHT-D step is therefore `q·t(exact-d) + (1 − q)·t(plain)`, an
//! approximation: it takes the cost of a selecting step as the same whichever
//! and however many layers were drawn.

use std::fmt::{self, Write as _};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// SEHT-D's layer probability in both tools' `exact-d` step.
const P_LAYER: f64 = 0.05;

/// The one-line install of a Python with torch (CPU wheels).
const INSTALL: &str =
    "python3 -m venv .venv-peer && .venv-peer/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu";

/// `cargo xtask bench-peer`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Configurations MODEL/BATCH/STEP, comma-separated. MODEL: mlp,
    /// resnet16, resnet18, wrn28-10, lstm (BATCH is ignored: 20 × 35); STEP:
    /// plain, hvp, exact-h1, exact-d, first-order. Default: mlp/32,
    /// resnet16/32, resnet18/32 and lstm/20, each with plain, hvp, exact-h1
    /// and exact-d.
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.parse::<Config>())]
    pub configs: Option<Vec<Config>>,
    /// Rounds: every configuration is run this many times in each framework.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Threads per process (RAYON_NUM_THREADS for candle, torch.set_num_threads).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// The Python that has torch [default: $SEHT_PEER_PYTHON, else python3].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Where the table goes [default: target/bench-peer.md in the workspace].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Address-space limit of each process, GiB (`ulimit -v`).
    #[arg(long, default_value_t = 22)]
    pub limit_gib: u64,
}

/// A model both tools build under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerModel {
    Mlp,
    ResNet16,
    ResNet18,
    Wrn28x10,
    Lstm,
}

const MODELS: [(PeerModel, &str); 5] = [
    (PeerModel::Mlp, "mlp"),
    (PeerModel::ResNet16, "resnet16"),
    (PeerModel::ResNet18, "resnet18"),
    (PeerModel::Wrn28x10, "wrn28-10"),
    (PeerModel::Lstm, "lstm"),
];

/// A training step both tools run under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Plain,
    Hvp,
    ExactH1,
    ExactD,
    FirstOrder,
}

const STEPS: [(Step, &str); 5] = [
    (Step::Plain, "plain"),
    (Step::Hvp, "hvp"),
    (Step::ExactH1, "exact-h1"),
    (Step::ExactD, "exact-d"),
    (Step::FirstOrder, "first-order"),
];

fn name_of<T: PartialEq + Copy>(table: &[(T, &'static str)], x: T) -> &'static str {
    table.iter().find(|(t, _)| *t == x).map_or("?", |(_, n)| n)
}

fn names<T>(table: &[(T, &'static str)]) -> String {
    table.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

/// One configuration: `MODEL/BATCH/STEP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    model: PeerModel,
    batch: NonZeroUsize,
    step: Step,
}

impl Config {
    fn model_name(&self) -> &'static str {
        name_of(&MODELS, self.model)
    }

    fn step_name(&self) -> &'static str {
        name_of(&STEPS, self.step)
    }

    /// The default set: four models, four steps each.
    fn defaults() -> Vec<Self> {
        let mut out = Vec::new();
        for (model, batch) in
            [(PeerModel::Mlp, 32), (PeerModel::ResNet16, 32), (PeerModel::ResNet18, 32), (PeerModel::Lstm, 20)]
        {
            for step in [Step::Plain, Step::Hvp, Step::ExactH1, Step::ExactD] {
                let batch = NonZeroUsize::new(batch).unwrap_or(NonZeroUsize::MIN);
                out.push(Self { model, batch, step });
            }
        }
        out
    }
}

impl FromStr for Config {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let [m, b, st] = s.trim().split('/').collect::<Vec<_>>()[..] else {
            return Err("expected MODEL/BATCH/STEP, e.g. resnet18/32/plain".into());
        };
        let model = MODELS
            .iter()
            .find(|(_, n)| *n == m)
            .map(|(x, _)| *x)
            .ok_or_else(|| format!("unknown model `{m}` (one of {})", names(&MODELS)))?;
        let batch = b.parse::<NonZeroUsize>().map_err(|_| format!("batch `{b}` is not a positive integer"))?;
        let step = STEPS
            .iter()
            .find(|(_, n)| *n == st)
            .map(|(x, _)| *x)
            .ok_or_else(|| format!("unknown step `{st}` (one of {})", names(&STEPS)))?;
        Ok(Self { model, batch, step })
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.model_name(), self.batch, self.step_name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framework {
    Candle,
    Torch,
}

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Self::Candle => "candle",
            Self::Torch => "torch",
        }
    }
}

/// What one process measured.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measure {
    /// Its median step time.
    seconds: f64,
    /// Working memory, GiB: candle's `working_gib`, torch's
    /// `working_from_build_gib` (both from the RSS before the first step of
    /// the built model).
    working_gib: f64,
    /// The number of weight tensors (SEHT-D's L), when the tool printed it.
    weight_tensors: Option<usize>,
}

/// Why a process gave no measurement.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    out_of_memory: bool,
    why: String,
}

type Outcome = Result<Measure, Failure>;

/// The measurement in a process's standard output: its line
/// `candle,MODEL,BATCH,STEP,working,peak_rss,heap_peak,seconds[,L]` or
/// `torch,MODEL,BATCH,STEP,working,peak_rss,median_s,working_from_build[,L]`.
fn parse_line(fw: Framework, stdout: &str) -> Option<Measure> {
    let line = stdout.lines().find(|l| l.starts_with(&format!("{},", fw.name())))?;
    let f: Vec<&str> = line.trim().split(',').collect();
    if f.len() < 8 {
        return None;
    }
    let num = |i: usize| f[i].parse::<f64>().ok().filter(|x| x.is_finite());
    let (seconds, working_gib) = match fw {
        Framework::Candle => (num(7)?, num(4)?),
        Framework::Torch => (num(6)?, num(7)?),
    };
    Some(Measure { seconds, working_gib, weight_tensors: f.get(8).and_then(|l| l.parse().ok()) })
}

/// One process's outcome from its exit (success, or the signal that killed
/// it) and its output.
fn outcome(fw: Framework, success: bool, signal: Option<i32>, stdout: &str, stderr: &str) -> Outcome {
    let last = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    const OOM: [&str; 6] = [
        "memory allocation of",  // Rust's allocation failure
        "can't allocate memory", // torch's CPU allocator
        "cannot allocate memory",
        "out of memory",
        "memoryerror",
        "bad_alloc",
    ];
    let lower = stderr.to_lowercase();
    let out_of_memory = signal == Some(9) || OOM.iter().any(|m| lower.contains(m));
    if success && !out_of_memory {
        return parse_line(fw, stdout)
            .ok_or_else(|| Failure {
                out_of_memory: false, why: format!("no `{},…` line in its output", fw.name())
            });
    }
    let why = match (signal, last) {
        (Some(9), _) => "killed by signal 9 (SIGKILL: most likely the out-of-memory killer)".to_string(),
        (_, Some(line)) => line.to_string(),
        (Some(sig), None) => format!("killed by signal {sig}"),
        (None, None) => "failed without a message".to_string(),
    };
    Err(Failure { out_of_memory, why })
}

/// The median of `xs` (the mean of the middle two for an even count).
fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// One framework's rounds of one configuration, summarised.
#[derive(Debug, Clone, PartialEq)]
enum Summary {
    Measured { seconds: f64, working_gib: f64, weight_tensors: Option<usize>, rounds: usize, of: usize },
    Failed { out_of_memory: bool },
    NotRun,
}

fn summarise(outcomes: &[Outcome]) -> Summary {
    let ok: Vec<&Measure> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let first_failure = outcomes.iter().find_map(|o| o.as_ref().err());
    match (median(ok.iter().map(|m| m.seconds).collect()), first_failure) {
        (Some(seconds), _) => Summary::Measured {
            seconds,
            working_gib: median(ok.iter().map(|m| m.working_gib).collect()).unwrap_or(f64::NAN),
            weight_tensors: ok.iter().find_map(|m| m.weight_tensors),
            rounds: ok.len(),
            of: outcomes.len(),
        },
        (None, Some(f)) => Summary::Failed { out_of_memory: f.out_of_memory },
        (None, None) => Summary::NotRun,
    }
}

impl Summary {
    fn seconds(&self) -> Option<f64> {
        match self {
            Self::Measured { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }

    fn working_gib(&self) -> Option<f64> {
        match self {
            Self::Measured { working_gib, .. } => Some(*working_gib),
            _ => None,
        }
    }

    fn weight_tensors(&self) -> Option<usize> {
        match self {
            Self::Measured { weight_tensors, .. } => *weight_tensors,
            _ => None,
        }
    }

    /// A cell for `value` of a measured summary (written by `show`), else
    /// what happened.
    fn cell(&self, value: Option<f64>, show: fn(f64) -> String) -> String {
        match self {
            Self::Measured { rounds, of, .. } => match value {
                Some(v) if rounds < of => format!("{} ({rounds} of {of} rounds)", show(v)),
                Some(v) => show(v),
                None => String::new(),
            },
            Self::Failed { out_of_memory: true } => "out of memory".into(),
            Self::Failed { out_of_memory: false } => "failed".into(),
            Self::NotRun => "not run".into(),
        }
    }
}

/// Every round's outcome of one configuration, per framework.
#[derive(Debug, Clone, Default)]
struct Runs {
    candle: Vec<Outcome>,
    torch: Vec<Outcome>,
}

impl Runs {
    fn of(&mut self, fw: Framework) -> &mut Vec<Outcome> {
        match fw {
            Framework::Candle => &mut self.candle,
            Framework::Torch => &mut self.torch,
        }
    }
}

/// What the table's header line says about the run.
struct Header {
    date: String,
    cores: usize,
    cpu: String,
    torch: String,
    threads: u32,
    rounds: u32,
    limit_gib: u64,
}

/// `q = 1 − (1 − p)^L`: the probability that a SEHT-D draw selects any of
/// `l` weight tensors.
fn select_probability(l: usize) -> f64 {
    1.0 - (1.0 - P_LAYER).powi(l as i32)
}

/// The expected time of a SEHT-D step: `q·t(exact-d) + (1 − q)·t(plain)`.
fn expected_seht_d(exact_d: f64, plain: f64, l: usize) -> f64 {
    let q = select_probability(l);
    q * exact_d + (1.0 - q) * plain
}

/// `x` with three decimals, or three significant digits when it is below 0.1.
fn three_digits(x: f64) -> String {
    let decimals = if x > 0.0 && x < 0.1 { (2.0 - x.log10().floor()) as usize } else { 3 };
    format!("{x:.decimals$}")
}

/// GiB as the tools print them, to 1 MiB.
fn gib(x: f64) -> String {
    format!("{x:.3}")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => String::new(),
    }
}

/// The Markdown report: header line, table, notes.
fn render(header: &Header, results: &[(Config, Runs)]) -> String {
    let mut md = String::from("# Peer benchmark: this project (candle) and PyTorch\n\n");
    let _ = writeln!(
        md,
        "{} · {} cores (nproc), {} · torch {} · {} thread{} per process · {} round{} · {} GiB address space per process\n",
        header.date,
        header.cores,
        header.cpu,
        header.torch,
        header.threads,
        if header.threads == 1 { "" } else { "s" },
        header.rounds,
        if header.rounds == 1 { "" } else { "s" },
        header.limit_gib
    );
    md.push_str(
        "Time: the median over rounds of each process's median step time (s). Memory: working memory of the step \
         (GiB, peak RSS during the first step above the RSS of the built model; candle `working_gib`, torch \
         `working_from_build_gib`). \"÷ plain\": the step's time over the same framework's plain step of the same \
         model and batch. Each round runs every configuration, candle then torch, each in its own process \
         (`cargo xtask bench-peer`).\n\n",
    );
    md.push_str(
        "| model | batch | step | candle (s) | torch (s) | candle / torch | candle ÷ plain | torch ÷ plain \
         | candle (GiB) | torch (GiB) | memory candle / torch | SEHT-D expected, candle (s) ¹ | SEHT-D expected, torch (s) ¹ |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let summaries: Vec<(Config, Summary, Summary)> =
        results.iter().map(|(c, r)| (*c, summarise(&r.candle), summarise(&r.torch))).collect();
    let plain =
        |c: &Config| summaries.iter().find(|(p, ..)| p.model == c.model && p.batch == c.batch && p.step == Step::Plain);
    let mut layers: Vec<String> = Vec::new();
    for (c, candle, torch) in &summaries {
        let (pc, pt) = match plain(c) {
            Some((_, pc, pt)) => (pc.seconds(), pt.seconds()),
            None => (None, None),
        };
        let expected = |s: &Summary, plain: Option<f64>| match (c.step, s.seconds(), plain, s.weight_tensors()) {
            (Step::ExactD, Some(t), Some(p), Some(l)) => three_digits(expected_seht_d(t, p, l)),
            _ => String::new(),
        };
        if c.step == Step::ExactD {
            let l = |s: &Summary| s.weight_tensors().map_or("?".to_string(), |l| l.to_string());
            let entry = match (candle.weight_tensors(), torch.weight_tensors()) {
                (Some(a), Some(b)) if a == b => {
                    format!("{} L = {a} (q = {:.3})", c.model_name(), select_probability(a))
                }
                _ => format!("{} L = {} in candle, {} in torch", c.model_name(), l(candle), l(torch)),
            };
            if !layers.contains(&entry) {
                layers.push(entry);
            }
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.model_name(),
            c.batch,
            c.step_name(),
            candle.cell(candle.seconds(), three_digits),
            torch.cell(torch.seconds(), three_digits),
            ratio(candle.seconds(), torch.seconds()),
            ratio(candle.seconds(), pc),
            ratio(torch.seconds(), pt),
            candle.cell(candle.working_gib(), gib),
            torch.cell(torch.working_gib(), gib),
            ratio(candle.working_gib(), torch.working_gib()),
            expected(candle, pc),
            expected(torch, pt),
        );
    }
    let _ = writeln!(
        md,
        "\n¹ `exact-d` is an exact SEHT-D p = {P_LAYER} step whose layer draw selected at least one of the L weight \
         tensors (both tools redraw until one does). A draw selects some with probability q = 1 − (1 − p)^L; one that \
         selects none costs a plain step in training. The expected cost of a SEHT-D step is taken as \
         q·t(exact-d) + (1 − q)·t(plain), which assumes a selecting step costs the same whichever layers it drew \
         (it needs the plain step of the same model and batch in the run).{} Candle's working memory for `exact-d` is \
         an RSS difference, which understates the step when draws before it selected nothing \
         (step_memory's `heap_peak_gib` does not).",
        if layers.is_empty() { String::new() } else { format!(" Here: {}.", layers.join("; ")) }
    );
    let mut failures = String::new();
    for (c, runs) in results {
        for (fw, outcomes) in [(Framework::Candle, &runs.candle), (Framework::Torch, &runs.torch)] {
            for (round, o) in outcomes.iter().enumerate() {
                if let Err(f) = o {
                    let _ = writeln!(failures, "- {} {c}, round {}: {}", fw.name(), round + 1, f.why);
                }
            }
        }
    }
    if !failures.is_empty() {
        let _ = write!(md, "\nFailed processes:\n\n{failures}");
    }
    md
}

/// Seconds left for `remaining` jobs, from the measured durations `done` of
/// earlier jobs: the mean of the same job in earlier rounds, else of the
/// same framework, else of everything (`None` before anything ran).
fn eta(done: &[((Framework, usize), f64)], remaining: &[(Framework, usize)]) -> Option<f64> {
    let mean = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let all = mean(done.iter().map(|(_, s)| *s).collect())?;
    Some(
        remaining
            .iter()
            .map(|job| {
                mean(done.iter().filter(|(k, _)| k == job).map(|(_, s)| *s).collect())
                    .or_else(|| mean(done.iter().filter(|(k, _)| k.0 == job.0).map(|(_, s)| *s).collect()))
                    .unwrap_or(all)
            })
            .sum(),
    )
}

fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}

/// `YYYY-MM-DD HH:MM UTC` of `secs` since the Unix epoch.
fn utc_date(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", t / 3600, (t % 3600) / 60)
}

/// The torch version `python` imports, or a message naming the python and
/// the install command.
fn torch_version(python: &Path) -> Result<String> {
    let hint = format!(
        "install it with `{INSTALL}`, then run `SEHT_PEER_PYTHON=.venv-peer/bin/python cargo xtask bench-peer` \
         (or pass --python)"
    );
    let out = Command::new(python).args(["-c", "import torch; print(torch.__version__)"]).output();
    match out {
        Err(e) => bail!("cannot run the python `{}` ({e}): {hint}", python.display()),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let why = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
            bail!("the python `{}` cannot import torch ({why}): {hint}", python.display())
        }
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
    }
}

/// Builds the candle tool (the same command as by hand, so the build is
/// shared) and returns its path.
fn build_step_memory(root: &Path) -> Result<PathBuf> {
    eprintln!("building the candle tool (cargo build --release --workspace --example step_memory) …");
    let status = crate::cargo()
        .args(["build", "--release", "--workspace", "--example", "step_memory"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the step_memory example failed");
    }
    let exe =
        crate::target_dir(root).join("release/examples").join(format!("step_memory{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        bail!("{} was not built", exe.display());
    }
    Ok(exe)
}

/// Runs `program args…` under `ulimit -v` with `threads` threads.
fn run_limited(program: &Path, args: &[String], limit_gib: u64, threads: u32) -> std::io::Result<Output> {
    let t = threads.to_string();
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {} && exec \"$0\" \"$@\"", limit_gib << 20))
        .arg(program)
        .args(args)
        .env("RAYON_NUM_THREADS", &t)
        .env("OMP_NUM_THREADS", &t)
        .env("MKL_NUM_THREADS", &t)
        .output()
}

/// One process of `fw` on `c`.
fn measure(fw: Framework, c: &Config, candle: &Path, python: &Path, script: &Path, args: &Args) -> Outcome {
    let mut argv = vec![c.model_name().to_string(), c.batch.to_string(), c.step_name().to_string()];
    let (program, argv) = match fw {
        Framework::Candle => (candle, argv),
        Framework::Torch => {
            argv.insert(0, script.display().to_string());
            argv.extend(["--threads".to_string(), args.threads.to_string()]);
            (python, argv)
        }
    };
    match run_limited(program, &argv, args.limit_gib, args.threads) {
        Err(e) => Err(Failure { out_of_memory: false, why: format!("cannot run {}: {e}", program.display()) }),
        Ok(o) => {
            use std::os::unix::process::ExitStatusExt;
            outcome(
                fw,
                o.status.success(),
                o.status.signal(),
                &String::from_utf8_lossy(&o.stdout),
                &String::from_utf8_lossy(&o.stderr),
            )
        }
    }
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let configs = args.configs.clone().unwrap_or_else(Config::defaults);
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var_os("SEHT_PEER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    // Before the build and the runs: a missing torch or an output path that
    // cannot be written should not cost them.
    let out = args.out.clone().unwrap_or_else(|| crate::target_dir(root).join("bench-peer.md"));
    if out.is_dir() {
        anyhow::bail!("--out {} is a folder; give a file path (e.g. {}/bench-peer.md)", out.display(), out.display());
    }
    let torch = torch_version(&python)?;
    let script = root.join("bench/peer/torch_steps.py");
    let candle = build_step_memory(root)?;
    let header = Header {
        date: utc_date(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: crate::report::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        torch,
        threads: args.threads,
        rounds: args.rounds,
        limit_gib: args.limit_gib,
    };
    let jobs: Vec<(u32, usize, Framework)> = (0..args.rounds)
        .flat_map(|r| (0..configs.len()).flat_map(move |i| [(r, i, Framework::Candle), (r, i, Framework::Torch)]))
        .collect();
    eprintln!(
        "bench-peer: {} configurations × {} round(s) × candle and torch = {} processes, {} threads each, python `{}` (torch {})",
        configs.len(),
        args.rounds,
        jobs.len(),
        args.threads,
        python.display(),
        header.torch
    );
    let mut results: Vec<(Config, Runs)> = configs.iter().map(|c| (*c, Runs::default())).collect();
    let mut done: Vec<((Framework, usize), f64)> = Vec::new();
    let t0 = Instant::now();
    for (n, &(round, i, fw)) in jobs.iter().enumerate() {
        let c = configs[i];
        let t = Instant::now();
        let o = measure(fw, &c, &candle, &python, &script, &args);
        let secs = t.elapsed().as_secs_f64();
        done.push(((fw, i), secs));
        let what = match &o {
            Ok(m) => format!("step {} s, {} GiB", three_digits(m.seconds), gib(m.working_gib)),
            Err(f) if f.out_of_memory => format!("out of memory ({})", f.why),
            Err(f) => format!("failed ({})", f.why),
        };
        let remaining: Vec<(Framework, usize)> = jobs[n + 1..].iter().map(|&(_, i, fw)| (fw, i)).collect();
        eprintln!(
            "[{}/{}] round {}/{} {:<6} {c}: {what}; process {:.1} s, elapsed {}, left ~{}",
            n + 1,
            jobs.len(),
            round + 1,
            args.rounds,
            fw.name(),
            secs,
            format_secs(t0.elapsed().as_secs_f64()),
            eta(&done, &remaining).map_or("?".into(), format_secs),
        );
        results[i].1.of(fw).push(o);
    }
    let md = render(&header, &results);
    println!("{md}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(s: &str) -> Config {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn measured(seconds: f64, working_gib: f64, l: Option<usize>) -> Outcome {
        Ok(Measure { seconds, working_gib, weight_tensors: l })
    }

    #[test]
    fn configs_parse_and_bad_ones_are_named() {
        let c = config("resnet16/32/exact-d");
        assert_eq!((c.model, c.batch.get(), c.step), (PeerModel::ResNet16, 32, Step::ExactD));
        assert_eq!(c.to_string(), "resnet16/32/exact-d");
        let err = |s: &str| s.parse::<Config>().err().unwrap_or_default();
        assert!(err("vgg/32/plain").contains("unknown model `vgg` (one of mlp, resnet16"), "{}", err("vgg/32/plain"));
        assert!(err("mlp/32/exact").contains("unknown step `exact` (one of plain, hvp"), "{}", err("mlp/32/exact"));
        assert!(err("mlp/plain").contains("expected MODEL/BATCH/STEP"), "{}", err("mlp/plain"));
        assert!(err("mlp/0/plain").contains("batch `0` is not a positive integer"), "{}", err("mlp/0/plain"));
        assert_eq!(Config::defaults().len(), 16);
    }

    #[test]
    fn both_tools_lines_parse_with_and_without_the_layer_count() {
        let candle = "noise\ncandle,mlp,8,exact-d,0.050,0.400,0.060,0.012,3\n";
        assert_eq!(
            parse_line(Framework::Candle, candle),
            Some(Measure { seconds: 0.012, working_gib: 0.05, weight_tensors: Some(3) })
        );
        // The torch line: median_s is field 6, working_from_build field 7.
        let torch = "torch,resnet18,32,plain,0.008,0.786,8.595,0.486\n";
        assert_eq!(
            parse_line(Framework::Torch, torch),
            Some(Measure { seconds: 8.595, working_gib: 0.486, weight_tensors: None })
        );
        assert_eq!(parse_line(Framework::Torch, candle), None);
        // Not timed (`--repeats 0`): no measurement.
        assert_eq!(parse_line(Framework::Candle, "candle,mlp,8,plain,0.1,0.2,0.1,-,3"), None);
    }

    #[test]
    fn failed_processes_are_recorded_not_panicked_on() {
        let rust_oom = "memory allocation of 8589934592 bytes failed\n";
        let o = outcome(Framework::Candle, false, Some(6), "", rust_oom);
        assert_eq!(o, Err(Failure { out_of_memory: true, why: rust_oom.trim().into() }));
        let torch_oom = "Traceback (most recent call last):\nRuntimeError: [enforce fail at alloc_cpu.cpp:117] \
                         DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes.\n";
        assert!(matches!(
            outcome(Framework::Torch, false, None, "", torch_oom),
            Err(Failure { out_of_memory: true, .. })
        ));
        let killed = outcome(Framework::Torch, false, Some(9), "", "");
        assert!(matches!(&killed, Err(f) if f.out_of_memory && f.why.contains("signal 9")), "{killed:?}");
        let other = outcome(Framework::Candle, false, None, "", "# note\nError: \"unknown model `x`\"\n");
        assert_eq!(other, Err(Failure { out_of_memory: false, why: "Error: \"unknown model `x`\"".into() }));
        let silent = outcome(Framework::Candle, true, None, "hello\n", "");
        assert!(matches!(&silent, Err(f) if !f.out_of_memory && f.why.contains("no `candle,…` line")), "{silent:?}");
    }

    #[test]
    fn small_values_keep_three_significant_digits() {
        assert_eq!(three_digits(41.8), "41.800");
        assert_eq!(three_digits(0.35), "0.350");
        assert_eq!(three_digits(0.0153), "0.0153");
        assert_eq!(three_digits(0.0031234), "0.00312");
        assert_eq!(three_digits(0.0), "0.000");
    }

    #[test]
    fn expected_seht_d_cost_weighs_the_selecting_step_by_its_probability() {
        // L = 3: q = 1 − 0.95³ = 0.142625.
        assert!((select_probability(3) - 0.142_625).abs() < 1e-12);
        assert!((expected_seht_d(10.0, 1.0, 3) - (0.142_625 * 10.0 + 0.857_375)).abs() < 1e-12);
        // Many layers: almost every draw selects some.
        assert!(expected_seht_d(10.0, 1.0, 200) > 9.99);
    }

    #[test]
    fn table_has_medians_ratios_expected_cost_and_failures() {
        let header = Header {
            date: "2025-01-02 03:04 UTC".into(),
            cores: 2,
            cpu: "Test CPU".into(),
            torch: "2.15.0".into(),
            threads: 2,
            rounds: 3,
            limit_gib: 22,
        };
        let fail = || Err(Failure { out_of_memory: true, why: "memory allocation of 9 bytes failed".into() });
        let results = vec![
            (
                config("mlp/8/plain"),
                Runs {
                    candle: vec![
                        measured(0.30, 0.10, Some(3)),
                        measured(0.10, 0.10, Some(3)),
                        measured(0.20, 0.10, Some(3)),
                    ],
                    torch: vec![
                        measured(0.10, 0.05, Some(3)),
                        measured(0.10, 0.05, Some(3)),
                        measured(0.10, 0.05, Some(3)),
                    ],
                },
            ),
            (
                config("mlp/8/exact-d"),
                Runs {
                    candle: vec![measured(2.0, 0.4, Some(3)); 3],
                    torch: vec![measured(0.5, 0.2, Some(3)), fail(), measured(0.5, 0.2, Some(3))],
                },
            ),
            (
                config("resnet16/8/plain"),
                Runs { candle: vec![fail(), fail(), fail()], torch: vec![measured(1.0, 0.3, Some(13)); 3] },
            ),
        ];
        let md = render(&header, &results);
        assert!(
            md.contains(
                "2025-01-02 03:04 UTC · 2 cores (nproc), Test CPU · torch 2.15.0 · 2 threads per process · 3 rounds"
            ),
            "{md}"
        );
        // Median over rounds 0.2; 2× torch; memory 2×.
        assert!(
            md.contains("| mlp | 8 | plain | 0.200 | 0.100 | 2.00× | 1.00× | 1.00× | 0.100 | 0.050 | 2.00× |  |  |"),
            "{md}"
        );
        // Expected: q = 0.142625; candle 0.142625·2 + 0.857375·0.2 = 0.45672…, torch 0.142625·0.5 + 0.857375·0.1 = 0.15705.
        assert!(
            md.contains("| mlp | 8 | exact-d | 2.000 | 0.500 (2 of 3 rounds) | 4.00× | 10.00× | 5.00× | 0.400 | 0.200 (2 of 3 rounds) | 2.00× | 0.457 | 0.157 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| resnet16 | 8 | plain | out of memory | 1.000 |  |  | 1.00× | out of memory | 0.300 |  |  |  |"
            ),
            "{md}"
        );
        assert!(md.contains("mlp L = 3 (q = 0.143)"), "{md}");
        assert!(md.contains("- torch mlp/8/exact-d, round 2: memory allocation of 9 bytes failed"), "{md}");
        assert!(md.contains("- candle resnet16/8/plain, round 3:"), "{md}");
    }

    #[test]
    fn eta_uses_the_same_job_then_the_framework_then_everything() {
        let (c, t) = (Framework::Candle, Framework::Torch);
        assert_eq!(eta(&[], &[(c, 0)]), None);
        let done = [((c, 0), 10.0), ((t, 0), 2.0)];
        assert_eq!(eta(&done, &[(c, 0), (t, 0)]), Some(12.0));
        assert_eq!(eta(&done, &[(c, 1)]), Some(10.0));
        assert_eq!(eta(&done, &[]), Some(0.0));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_764_529_249), "2025-11-30 19:00 UTC");
    }
}
