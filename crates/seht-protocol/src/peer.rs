//! The measurement protocol of `cargo xtask bench-peer`: what its numbers
//! mean, separate from the processes that produce them (in xtask).
//!
//! The same training steps timed in this project
//! (candle: `crates/seht-bench/examples/step_memory.rs`, one release build)
//! and in PyTorch (`bench/peer/torch_steps.py`) on the same machine, and one
//! side-by-side Markdown table.
//!
//! Pairs: each configuration is measured as `--pairs` pairs of processes, one
//! candle and one torch process run back to back, so that both see the same
//! machine state; the time ratio of a configuration is the median over its
//! pairs of candle's time / torch's time within the pair, beside the
//! smallest and largest pair ratio and the number of pairs. A load that
//! comes and goes on a shared machine slows both members of a pair alike
//! and cancels in their ratio; a process hit alone moves one pair ratio,
//! which the median ignores (a ratio of means or of medians over
//! separately drawn processes does neither). Pair k of every configuration
//! runs before pair k + 1 of any (round-robin), so the pairs of one
//! configuration are spread over the whole run. Within a pair the order
//! alternates (candle first in pairs 1, 3, 5, …, torch first in 2, 4, …):
//! a drift within a pair, or an effect of running second (caches, clock
//! boost, memory the first process just freed), then raises half of the
//! ratios and lowers the other half instead of biasing them all one way.
//! Every process runs one configuration under an address-space limit, with
//! the same number of threads. A process that fails or runs out of memory
//! is recorded as such, and its pair gives no ratio. The time and memory
//! cells of each side are the medians over its processes of each
//! process's own median step time (or working memory).
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
use std::str::FromStr;

use crate::cost::{P_LAYER, Spread, expected_seht_d, median, pair_ratios, range_coverage, select_probability, spread};

/// Pairs per configuration unless `--pairs` says otherwise.
pub const DEFAULT_PAIRS: u32 = 5;
const _: () = assert!(DEFAULT_PAIRS >= 5, "issue 33: at least 5 pairs per configuration by default");

/// A model both tools build under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerModel {
    /// A small multi-layer perceptron on flattened images.
    Mlp,
    /// A ResNet-18 of width 16 (narrow).
    ResNet16,
    /// The full-width ResNet-18.
    ResNet18,
    /// WRN-28-10.
    Wrn28x10,
    /// The LSTM language model (batch 20 × 35 tokens).
    Lstm,
}

/// The models and their names on the command line and in both tools.
pub const MODELS: [(PeerModel, &str); 5] = [
    (PeerModel::Mlp, "mlp"),
    (PeerModel::ResNet16, "resnet16"),
    (PeerModel::ResNet18, "resnet18"),
    (PeerModel::Wrn28x10, "wrn28-10"),
    (PeerModel::Lstm, "lstm"),
];

/// A training step both tools run under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A plain SGD step.
    Plain,
    /// One Hessian-vector product.
    Hvp,
    /// An exact SEHT-H step, K = 1.
    ExactH1,
    /// An exact SEHT-D step whose layer draw selected a tensor.
    ExactD,
    /// A first-order SEHT-H step.
    FirstOrder,
}

/// The steps and their names.
pub const STEPS: [(Step, &str); 5] = [
    (Step::Plain, "plain"),
    (Step::Hvp, "hvp"),
    (Step::ExactH1, "exact-h1"),
    (Step::ExactD, "exact-d"),
    (Step::FirstOrder, "first-order"),
];

/// The name of `x` in a name table.
pub fn name_of<T: PartialEq + Copy>(table: &[(T, &'static str)], x: T) -> &'static str {
    table.iter().find(|(t, _)| *t == x).map_or("?", |(_, n)| n)
}

/// Every name of a name table, comma-separated.
pub fn names<T>(table: &[(T, &'static str)]) -> String {
    table.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

/// One configuration: `MODEL/BATCH/STEP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The model.
    pub model: PeerModel,
    /// The batch size.
    pub batch: NonZeroUsize,
    /// The step.
    pub step: Step,
}

impl Config {
    /// The model's name.
    pub fn model_name(&self) -> &'static str {
        name_of(&MODELS, self.model)
    }

    /// The step's name.
    pub fn step_name(&self) -> &'static str {
        name_of(&STEPS, self.step)
    }

    /// The default set: four models, four steps each.
    pub fn defaults() -> Vec<Self> {
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

/// Which tool a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// This project (`step_memory`).
    Candle,
    /// PyTorch (`bench/peer/torch_steps.py`).
    Torch,
}

impl Framework {
    /// Its name in the processes' output lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Candle => "candle",
            Self::Torch => "torch",
        }
    }
}

/// What one process measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// Its median step time.
    pub seconds: f64,
    /// Working memory, GiB: candle's `working_gib`, torch's
    /// `working_from_build_gib` (both from the RSS before the first step of
    /// the built model).
    pub working_gib: f64,
    /// The number of weight tensors (SEHT-D's L), when the tool printed it.
    pub weight_tensors: Option<usize>,
}

/// Why a process gave no measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Whether it ran out of memory.
    pub out_of_memory: bool,
    /// Why, in words.
    pub why: String,
}

/// One process's measurement or failure.
pub type Outcome = Result<Measure, Failure>;

/// The measurement in a process's standard output: its line
/// `candle,MODEL,BATCH,STEP,working,peak_rss,heap_peak,seconds[,L]` or
/// `torch,MODEL,BATCH,STEP,working,peak_rss,median_s,working_from_build[,L]`.
pub fn parse_line(fw: Framework, stdout: &str) -> Option<Measure> {
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
pub fn outcome(fw: Framework, success: bool, signal: Option<i32>, stdout: &str, stderr: &str) -> Outcome {
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

/// One framework's pairs of one configuration, summarised.
#[derive(Debug, Clone, PartialEq)]
pub enum Summary {
    /// Medians over the processes that measured.
    Measured {
        /// Median step time, seconds.
        seconds: f64,
        /// Median working memory, GiB.
        working_gib: f64,
        /// SEHT-D's L, when printed.
        weight_tensors: Option<usize>,
        /// Processes that measured.
        pairs: usize,
        /// Processes run.
        of: usize,
    },
    /// None measured; the first failure.
    Failed {
        /// Whether it ran out of memory.
        out_of_memory: bool,
    },
    /// Not run.
    NotRun,
}

/// The medians of the processes that measured, else the first failure.
pub fn summarise(outcomes: &[Outcome]) -> Summary {
    let ok: Vec<&Measure> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let first_failure = outcomes.iter().find_map(|o| o.as_ref().err());
    match (median(ok.iter().map(|m| m.seconds).collect()), first_failure) {
        (Some(seconds), _) => Summary::Measured {
            seconds,
            working_gib: median(ok.iter().map(|m| m.working_gib).collect()).unwrap_or(f64::NAN),
            weight_tensors: ok.iter().find_map(|m| m.weight_tensors),
            pairs: ok.len(),
            of: outcomes.len(),
        },
        (None, Some(f)) => Summary::Failed { out_of_memory: f.out_of_memory },
        (None, None) => Summary::NotRun,
    }
}

impl Summary {
    /// The median step time, when measured.
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Self::Measured { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }

    /// The median working memory, when measured.
    pub fn working_gib(&self) -> Option<f64> {
        match self {
            Self::Measured { working_gib, .. } => Some(*working_gib),
            _ => None,
        }
    }

    /// SEHT-D's L, when printed.
    pub fn weight_tensors(&self) -> Option<usize> {
        match self {
            Self::Measured { weight_tensors, .. } => *weight_tensors,
            _ => None,
        }
    }

    /// A cell for `value` of a measured summary (written by `show`), else
    /// what happened.
    pub fn cell(&self, value: Option<f64>, show: fn(f64) -> String) -> String {
        match self {
            Self::Measured { pairs, of, .. } => match value {
                Some(v) if pairs < of => format!("{} ({pairs} of {of} pairs)", show(v)),
                Some(v) => show(v),
                None => String::new(),
            },
            Self::Failed { out_of_memory: true } => "out of memory".into(),
            Self::Failed { out_of_memory: false } => "failed".into(),
            Self::NotRun => "not run".into(),
        }
    }
}

/// Every pair's outcome of one configuration, per framework: `candle[k]`
/// and `torch[k]` ran as pair k.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// candle's processes, by pair.
    pub candle: Vec<Outcome>,
    /// torch's processes, by pair.
    pub torch: Vec<Outcome>,
}

impl Runs {
    /// The outcomes of `fw`.
    pub fn of(&mut self, fw: Framework) -> &mut Vec<Outcome> {
        match fw {
            Framework::Candle => &mut self.candle,
            Framework::Torch => &mut self.torch,
        }
    }
}

/// What `/proc/cpuinfo` says about the CPU: its first `model name` and
/// `flags` lines (every processor of a machine repeats them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Its model name.
    pub model: Option<String>,
    avx512f: bool,
    avx2: bool,
    /// Whether it has FMA.
    pub fma: bool,
}

/// The CPU's model and the vector extensions that decide the kernels, from
/// the text of `/proc/cpuinfo`. Flags are whole words of the `flags` line
/// (not of `vmx flags`, nor prefixes: `avx512fp16` is not `avx512f`).
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim())
        })
    };
    let flags: Vec<&str> = field("flags").map(|f| f.split_whitespace().collect()).unwrap_or_default();
    let has = |flag: &str| flags.contains(&flag);
    Cpu {
        model: field("model name").filter(|m| !m.is_empty()).map(str::to_string),
        avx512f: has("avx512f"),
        avx2: has("avx2"),
        fma: has("fma"),
    }
}

/// Whether a Cargo manifest turns on gemm's `x86-v4` feature: a `gemm = …`
/// dependency line, not commented out, that lists it (the form
/// `crates/seht-candle/Cargo.toml` uses; Cargo unifies the feature into
/// candle's own gemm).
pub fn enables_gemm_x86_v4(manifest: &str) -> bool {
    manifest.lines().map(str::trim_start).any(|l| {
        let key = l.split(|c: char| c == '=' || c.is_whitespace()).next().unwrap_or("");
        key == "gemm" && l.contains("\"x86-v4\"")
    })
}

/// Which of gemm 0.19's kernels candle's matrix products and this project's
/// convolutions run on a CPU `cpu` of architecture `arch`, gemm built with
/// `x86-v4` or not. gemm-common's `init_gemm_fn` picks at run time: on x86,
/// AVX-512 when built with `x86-v4` and the CPU has avx512f, else the
/// AVX2/FMA (x86-64-v3) kernels when it has fma, else scalar; NEON on
/// aarch64.
pub fn gemm_kernels(arch: &str, x86_v4: bool, cpu: &Cpu) -> String {
    let x86 = matches!(arch, "x86_64" | "x86");
    match (x86, x86_v4) {
        (true, true) if cpu.avx512f => "AVX-512 (gemm built with `x86-v4`; the CPU has avx512f)".into(),
        (true, true) if cpu.fma => "AVX2/FMA (gemm built with `x86-v4`, but the CPU lacks avx512f)".into(),
        (true, false) if cpu.fma => "AVX2/FMA (gemm built without `x86-v4`)".into(),
        (true, _) => "scalar (the CPU lacks fma)".into(),
        _ if arch == "aarch64" => "NEON".into(),
        _ => format!("gemm's default for {arch}"),
    }
}

/// What the Python side imports: torch's version and, where torch has
/// `torch.backends.cpu.get_cpu_capability` (2.1 and later), the vector
/// extension its CPU kernels dispatch to (`AVX512`, `AVX2`, `DEFAULT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torch {
    /// `torch.__version__`.
    pub version: String,
    /// The CPU capability, where torch reports one.
    pub capability: Option<String>,
}

/// The program `torch_version` runs: the version, then the capability (or
/// an empty line).
pub const TORCH_INFO: &str = "import torch; print(torch.__version__); \
     f = getattr(getattr(torch.backends, 'cpu', None), 'get_cpu_capability', None); print(f() if f else '')";

/// `TORCH_INFO`'s output: its first line the version, its second the CPU
/// capability where it printed one.
pub fn parse_torch_info(stdout: &str) -> Option<Torch> {
    let mut lines = stdout.lines().map(str::trim);
    let version = lines.next().filter(|v| !v.is_empty())?.to_string();
    let capability = lines.next().filter(|c| !c.is_empty()).map(str::to_string);
    Some(Torch { version, capability })
}

/// What the table's header says about the run.
pub struct Header {
    /// When it ran (UTC).
    pub date: String,
    /// Logical cores.
    pub cores: usize,
    /// The CPU.
    pub cpu: Cpu,
    /// `gemm_kernels`' answer.
    pub gemm: String,
    /// The torch it ran.
    pub torch: Torch,
    /// Threads per process.
    pub threads: u32,
    /// Pairs per configuration.
    pub pairs: u32,
    /// Address-space limit per process, GiB.
    pub limit_gib: u64,
    /// Cores kept busy by other processes, sampled before each measured
    /// process ([`busy_cores`]); empty where `/proc/stat` is unreadable.
    pub background: Vec<f64>,
}

/// Background load above which the header warns (cores kept busy by other
/// processes).
pub const BACKGROUND_WARN_CORES: f64 = 0.1;

/// `(busy, total)` jiffies of all CPUs from the text of `/proc/stat` (its
/// `cpu ` line: busy = user + nice + system + irq + softirq + steal; total
/// adds idle and iowait), or `None` when the line is missing or malformed.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some((busy, busy + v[3] + v[4]))
}

/// Cores busy between two `/proc/stat` samples `(busy, total)` on a machine
/// of `cores` cores (0 when no time passed).
pub fn busy_cores(before: (u64, u64), after: (u64, u64), cores: usize) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64 * cores as f64
}

impl Header {
    /// The background-load line (with a warning above
    /// [`BACKGROUND_WARN_CORES`]), or nothing without samples.
    fn background_line(&self) -> String {
        if self.background.is_empty() {
            return String::new();
        }
        let mut b = self.background.clone();
        b.sort_by(f64::total_cmp);
        let (lo, mid, hi) = (b[0], b[b.len() / 2], b[b.len() - 1]);
        let mut line = format!(
            "- background load: other processes kept {lo:.2}–{hi:.2} (median {mid:.2}) of the {} cores busy, \
             sampled for 0.5 s before each measured process\n",
            self.cores
        );
        if hi > BACKGROUND_WARN_CORES {
            line.push_str(
                "- **warning: the machine was not idle.** PyTorch's OpenMP threads busy-wait, and under contention \
                 torch slowed far more than candle in our measurements (16–31× on the LSTM step, against \
                 about 2× for candle): the pairs do not cancel that, and ratios measured under load flatter \
                 candle. Rerun on an idle machine (or with `OMP_WAIT_POLICY=PASSIVE` in the environment, which \
                 torch honours) before quoting them\n",
            );
        }
        line
    }

    /// The header's lines, Markdown list items.
    pub fn lines(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        format!(
            "- CPU: {}, {} cores (nproc); AVX-512 (avx512f): {}; AVX2: {}\n\
             - candle's matrix kernels (gemm): {}\n\
             - torch: {}{}\n\
             - {} thread{} per process (both frameworks) · {} pair{} per configuration · {} GiB address space per \
             process · {}\n",
            self.cpu.model.as_deref().unwrap_or("unknown CPU (no `model name` in /proc/cpuinfo)"),
            self.cores,
            yes(self.cpu.avx512f),
            yes(self.cpu.avx2),
            self.gemm,
            self.torch.version,
            self.torch.capability.as_ref().map_or(String::new(), |c| format!(", CPU capability {c}")),
            self.threads,
            plural(self.threads),
            self.pairs,
            plural(self.pairs),
            self.limit_gib,
            self.date,
        ) + &self.background_line()
    }
}

/// `x` with three decimals, or three significant digits when it is below 0.1.
pub fn three_digits(x: f64) -> String {
    let decimals = if x > 0.0 && x < 0.1 { (2.0 - x.log10().floor()) as usize } else { 3 };
    format!("{x:.decimals$}")
}

/// GiB as the tools print them, to 1 MiB.
/// GiB with three decimals.
pub fn gib(x: f64) -> String {
    format!("{x:.3}")
}

/// `a / b` as `1.23×`, empty without both.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => String::new(),
    }
}

/// The Markdown report: header, table, notes, every pair's ratio, failures.
pub fn render(header: &Header, results: &[(Config, Runs)]) -> String {
    let mut md = String::from("# Peer benchmark: this project (candle) and PyTorch\n\n");
    md.push_str(&header.lines());
    md.push('\n');
    let _ = write!(
        md,
        "Pairs: each configuration ran as pairs of processes, one candle and one torch process back to back (candle \
         first in odd pairs, torch first in even ones, so that a drift or an effect of running second does not bias \
         every pair the same way), pair k of every configuration before pair k + 1 of any. \"candle / torch\": the \
         median over pairs of the pair's time ratio; \"range\": its smallest and largest pair ratio (for n \
         independent pairs the range holds the median pair ratio with probability 1 − 2^(1−n): {:.1} % at n = {}); \
         \"pairs\": the pairs in which both processes measured a time. Time: each framework's median over its \
         processes of the process's median step time (s). Memory: working memory of the step (GiB, peak RSS \
         during the first step above the RSS of the built model; candle `working_gib`, torch \
         `working_from_build_gib`), the median over processes. \"÷ plain\": the step's time over the same \
         framework's plain step of the same model and batch (`cargo xtask bench-peer`).\n\n",
        100.0 * range_coverage(header.pairs as usize),
        header.pairs,
    );
    md.push_str(
        "| model | batch | step | candle (s) | torch (s) | candle / torch | range | pairs | candle ÷ plain \
         | torch ÷ plain | candle (GiB) | torch (GiB) | memory candle / torch | SEHT-D expected, candle (s) ¹ \
         | SEHT-D expected, torch (s) ¹ |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let summaries: Vec<(Config, Summary, Summary)> =
        results.iter().map(|(c, r)| (*c, summarise(&r.candle), summarise(&r.torch))).collect();
    let times = |os: &[Outcome]| os.iter().map(|o| o.as_ref().ok().map(|m| m.seconds)).collect::<Vec<_>>();
    let pairs: Vec<(Option<Spread>, usize)> = results
        .iter()
        .map(|(_, r)| (spread(&pair_ratios(&times(&r.candle), &times(&r.torch))), r.candle.len().max(r.torch.len())))
        .collect();
    let plain =
        |c: &Config| summaries.iter().find(|(p, ..)| p.model == c.model && p.batch == c.batch && p.step == Step::Plain);
    let mut layers: Vec<String> = Vec::new();
    for ((c, candle, torch), (ratios, of)) in summaries.iter().zip(&pairs) {
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
        let n = ratios.map_or(0, |r| r.n);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.model_name(),
            c.batch,
            c.step_name(),
            candle.cell(candle.seconds(), three_digits),
            torch.cell(torch.seconds(), three_digits),
            ratios.map_or(String::new(), |r| format!("{:.2}×", r.median)),
            ratios.map_or(String::new(), |r| format!("{:.2}–{:.2}×", r.min, r.max)),
            if n == *of { n.to_string() } else { format!("{n} of {of}") },
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
    let _ = writeln!(md, "\nEach pair's ratio candle / torch, in pair order (†: torch ran first; –: no ratio):\n");
    for (c, runs) in results {
        let cells: Vec<String> = times(&runs.candle)
            .iter()
            .zip(times(&runs.torch))
            .enumerate()
            .map(|(k, (a, b))| {
                let mark = if pair_order(k as u32)[0] == Framework::Torch { "†" } else { "" };
                match pair_ratios(&[*a], &[b])[..] {
                    [r] => format!("{r:.2}{mark}"),
                    _ => format!("–{mark}"),
                }
            })
            .collect();
        let _ = writeln!(md, "- {c}: {}", cells.join(", "));
    }
    let mut failures = String::new();
    for (c, runs) in results {
        for (fw, outcomes) in [(Framework::Candle, &runs.candle), (Framework::Torch, &runs.torch)] {
            for (pair, o) in outcomes.iter().enumerate() {
                if let Err(f) = o {
                    let _ = writeln!(failures, "- {} {c}, pair {}: {}", fw.name(), pair + 1, f.why);
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
/// earlier jobs: the mean of the same job in earlier pairs, else of the
/// same framework, else of everything (`None` before anything ran).
pub fn eta(done: &[((Framework, usize), f64)], remaining: &[(Framework, usize)]) -> Option<f64> {
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

/// Seconds as `12m03s`.
pub fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}

/// `YYYY-MM-DD HH:MM UTC` of `secs` since the Unix epoch.
pub fn utc_date(secs: u64) -> String {
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

/// Which framework runs first in pair `pair` (0-based): candle in even
/// pairs, torch in odd ones, so that an effect of running second (or a
/// drift within the pair) raises half the pair ratios and lowers the other
/// half.
pub fn pair_order(pair: u32) -> [Framework; 2] {
    if pair % 2 == 1 { [Framework::Torch, Framework::Candle] } else { [Framework::Candle, Framework::Torch] }
}

/// The processes of a run, in order, as (pair, configuration index,
/// framework): pair k of every configuration before pair k + 1 of any, and
/// the two processes of a pair next to each other.
pub fn schedule(pairs: u32, configs: usize) -> Vec<(u32, usize, Framework)> {
    (0..pairs).flat_map(|k| (0..configs).flat_map(move |i| pair_order(k).map(|fw| (k, i, fw)))).collect()
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

    /// Two processors' worth of an AVX-512 Xeon's /proc/cpuinfo (flags cut
    /// short), with the `vmx flags` line newer kernels print.
    const XEON: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n\
        flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 avx512f avx512dq avx512bw avx512vl \
        avx512_fp16\nvmx flags\t: vnmi preemption_timer\nbogomips\t: 4800.00\n\n\
        processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx2 avx512f\n";
    /// An AMD EPYC (Zen 3: AVX2 and FMA, no AVX-512), its `vmx flags`
    /// line naming a made-up `avx512f` so that only the `flags` line counts.
    const EPYC: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
        flags\t\t: fpu sse sse2 fma avx f16c avx2 bmi2 avx512fx sha_ni\nvmx flags\t: avx512f\n";
    /// An aarch64 machine: `Features`, no `flags`, no `model name`.
    const ARM: &str = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd0c\n";

    #[test]
    fn cpuinfo_gives_the_model_and_whole_word_flags_of_the_flags_line() {
        let cpu =
            |model: Option<&str>, avx512f, avx2, fma| Cpu { model: model.map(str::to_string), avx512f, avx2, fma };
        let cases = [
            (XEON, cpu(Some("Intel(R) Xeon(R) Platinum 8488C"), true, true, true)),
            (EPYC, cpu(Some("AMD EPYC 7B13"), false, true, true)),
            (ARM, cpu(None, false, false, false)),
            ("", cpu(None, false, false, false)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_cpuinfo(text), want, "{text}");
        }
    }

    #[test]
    fn gemm_kernels_are_avx512_exactly_when_built_with_x86_v4_on_an_avx512f_cpu() {
        let (xeon, epyc, arm) = (parse_cpuinfo(XEON), parse_cpuinfo(EPYC), parse_cpuinfo(ARM));
        let old = Cpu { fma: false, avx2: false, ..Cpu::default() };
        let cases = [
            ("x86_64", true, &xeon, "AVX-512 (gemm built with `x86-v4`; the CPU has avx512f)"),
            ("x86_64", false, &xeon, "AVX2/FMA (gemm built without `x86-v4`)"),
            ("x86_64", true, &epyc, "AVX2/FMA (gemm built with `x86-v4`, but the CPU lacks avx512f)"),
            ("x86_64", true, &old, "scalar (the CPU lacks fma)"),
            ("aarch64", true, &arm, "NEON"),
        ];
        for (arch, v4, cpu, want) in cases {
            assert_eq!(gemm_kernels(arch, v4, cpu), want, "{arch} x86-v4 {v4} {cpu:?}");
        }
    }

    #[test]
    fn a_manifest_enables_x86_v4_only_on_a_live_gemm_line() {
        let cases = [
            ("[dependencies]\ngemm = { version = \"0.19\", features = [\"x86-v4\"] }\n", true),
            ("gemm = { version = \"0.19\" }\n# gemm = { version = \"0.19\", features = [\"x86-v4\"] }\n", false),
            ("gemm-common = { version = \"0.19\", features = [\"x86-v4\"] }\n", false),
            ("gemm={version=\"0.19\",features=[\"x86-v4\"]}\n", true),
            ("", false),
        ];
        for (manifest, want) in cases {
            assert_eq!(enables_gemm_x86_v4(manifest), want, "{manifest}");
        }
    }

    #[test]
    fn torch_info_has_a_version_and_maybe_a_cpu_capability() {
        let torch = |v: &str, c: Option<&str>| Some(Torch { version: v.into(), capability: c.map(str::to_string) });
        assert_eq!(parse_torch_info("2.15.0+cpu\nAVX512\n"), torch("2.15.0+cpu", Some("AVX512")));
        assert_eq!(parse_torch_info("2.0.1\n\n"), torch("2.0.1", None));
        assert_eq!(parse_torch_info("2.0.1"), torch("2.0.1", None));
        assert_eq!(parse_torch_info("\n"), None);
    }

    #[test]
    fn pairs_alternate_their_order_and_run_round_robin() {
        use Framework::{Candle as C, Torch as T};
        let pair = |k, i, first, second| [(k, i, first), (k, i, second)];
        let want = [
            pair(0, 0, C, T),
            pair(0, 1, C, T),
            pair(1, 0, T, C),
            pair(1, 1, T, C),
            pair(2, 0, C, T),
            pair(2, 1, C, T),
        ];
        assert_eq!(schedule(3, 2), want.concat());
        // The default (at least 5 pairs, checked where it is defined): as
        // many candle-first pairs as torch-first ones, give or take one.
        let jobs = schedule(DEFAULT_PAIRS, 1);
        let candle_first = jobs.chunks(2).filter(|p| p[0].2 == C).count() as i64;
        assert!((2 * candle_first - i64::from(DEFAULT_PAIRS)).abs() <= 1, "{jobs:?}");
    }

    #[test]
    fn background_load_is_read_from_proc_stat_and_warned_about() {
        let a = parse_proc_stat("cpu  100 20 30 1000 50 0 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n").expect("parsed");
        assert_eq!(a, (155, 1205));
        let b = (a.0 + 50, a.1 + 100);
        assert!((busy_cores(a, b, 2) - 1.0).abs() < 1e-12);
        assert_eq!(busy_cores(a, a, 2), 0.0);
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 x 4 5 6 7 8\n"), None);
        let cpu = parse_cpuinfo(XEON);
        let mut header = Header {
            date: "2025-01-02 03:04 UTC".into(),
            cores: 2,
            gemm: gemm_kernels("x86_64", true, &cpu),
            cpu,
            torch: Torch { version: "2.15.0+cpu".into(), capability: None },
            threads: 2,
            pairs: 3,
            limit_gib: 22,
            background: vec![0.02, 0.05, 0.01],
        };
        let quiet = header.lines();
        assert!(quiet.contains("kept 0.01–0.05 (median 0.02) of the 2 cores busy"), "{quiet}");
        assert!(!quiet.contains("warning"), "{quiet}");
        header.background.push(1.9);
        assert!(header.lines().contains("warning: the machine was not idle"));
        header.background.clear();
        assert!(!header.lines().contains("background load"));
    }

    #[test]
    fn table_has_pair_ratios_medians_expected_cost_and_failures() {
        let cpu = parse_cpuinfo(XEON);
        let header = Header {
            date: "2025-01-02 03:04 UTC".into(),
            cores: 2,
            gemm: gemm_kernels("x86_64", true, &cpu),
            cpu,
            torch: Torch { version: "2.15.0+cpu".into(), capability: Some("AVX512".into()) },
            threads: 2,
            pairs: 3,
            limit_gib: 22,
            background: vec![0.01, 0.02, 0.0],
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
        for line in [
            "- CPU: Intel(R) Xeon(R) Platinum 8488C, 2 cores (nproc); AVX-512 (avx512f): yes; AVX2: yes\n",
            "- candle's matrix kernels (gemm): AVX-512 (gemm built with `x86-v4`; the CPU has avx512f)\n",
            "- torch: 2.15.0+cpu, CPU capability AVX512\n",
            "- 2 threads per process (both frameworks) · 3 pairs per configuration · 22 GiB address space per process \
             · 2025-01-02 03:04 UTC\n",
            "probability 1 − 2^(1−n): 75.0 % at n = 3)",
            "| model | batch | step | candle (s) | torch (s) | candle / torch | range | pairs | candle ÷ plain |",
            // Pair ratios 3, 1, 2: median 2×, range 1–3×; each side's median 0.2 and 0.1; memory 2×.
            "| mlp | 8 | plain | 0.200 | 0.100 | 2.00× | 1.00–3.00× | 3 | 1.00× | 1.00× | 0.100 | 0.050 | 2.00× |  |  |",
            // Pair 2 lost torch: two ratios. Expected: q = 0.142625; candle
            // 0.142625·2 + 0.857375·0.2 = 0.45672…, torch 0.142625·0.5 + 0.857375·0.1 = 0.15705.
            "| mlp | 8 | exact-d | 2.000 | 0.500 (2 of 3 pairs) | 4.00× | 4.00–4.00× | 2 of 3 | 10.00× | 5.00× | 0.400 \
             | 0.200 (2 of 3 pairs) | 2.00× | 0.457 | 0.157 |",
            "| resnet16 | 8 | plain | out of memory | 1.000 |  |  | 0 of 3 |  | 1.00× | out of memory | 0.300 |  |  |  |",
            "mlp L = 3 (q = 0.143)",
            "- torch mlp/8/exact-d, pair 2: memory allocation of 9 bytes failed",
            "- candle resnet16/8/plain, pair 3:",
            "- mlp/8/plain: 3.00, 1.00†, 2.00\n",
            "- mlp/8/exact-d: 4.00, –†, 4.00\n",
            "- resnet16/8/plain: –, –†, –\n",
        ] {
            assert!(md.contains(line), "missing {line:?} in\n{md}");
        }
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
