//! `cargo xtask bench-peer`: the same training steps timed in this project
//! (candle: `crates/seht-bench/examples/step_memory.rs`, one release build)
//! and in PyTorch (`bench/peer/torch_steps.py`) on the same machine, in
//! interleaved pairs, and one side-by-side Markdown table. What the pairs
//! and the table mean is `seht_protocol::peer`; this file runs the processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use seht_protocol::peer::{
    Config, DEFAULT_PAIRS, Failure, Framework, Header, Outcome, Runs, TORCH_INFO, Torch, busy_cores,
    enables_gemm_x86_v4, eta, format_secs, gemm_kernels, gib, outcome, parse_cpuinfo, parse_proc_stat,
    parse_torch_info, render, schedule, three_digits, utc_date,
};

/// How to install a Python with torch, either way: PyPI's default wheel
/// (CUDA-enabled, about 3.5 GB with its CUDA libraries, and it runs on the
/// CPU too), or the CPU-only wheel from PyTorch's own index where that index
/// is reachable.
const INSTALL: &str = "install torch in a virtual environment, either from PyPI (about 3.5 GB: the CUDA-enabled \
     wheel, which runs on the CPU too): `python3 -m venv .venv-peer && .venv-peer/bin/pip install torch`, or, \
     where https://download.pytorch.org is reachable, its CPU-only wheel (a much smaller download): \
     `python3 -m venv .venv-peer && .venv-peer/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu`";

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
    /// Pairs per configuration: each pair is one candle and one torch
    /// process back to back (candle first in odd pairs, torch first in even
    /// ones); the time ratio is the median of the pairs' ratios.
    #[arg(long, alias = "rounds", default_value_t = DEFAULT_PAIRS, value_parser = clap::value_parser!(u32).range(1..))]
    pub pairs: u32,
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

/// The torch `python` imports (`TORCH_INFO`), or a message naming the
/// python and both ways to install torch.
fn torch_version(python: &Path) -> Result<Torch> {
    let hint = format!(
        "{INSTALL}; then run `SEHT_PEER_PYTHON=.venv-peer/bin/python cargo xtask bench-peer` (or pass --python)"
    );
    let out = Command::new(python).args(["-c", TORCH_INFO]).output();
    match out {
        Err(e) => bail!("cannot run the python `{}` ({e}): {hint}", python.display()),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let why = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
            bail!("the python `{}` cannot import torch ({why}): {hint}", python.display())
        }
        Ok(o) => parse_torch_info(&String::from_utf8_lossy(&o.stdout))
            .with_context(|| format!("the python `{}` printed no torch version", python.display())),
    }
}

/// Cores kept busy by other processes over 0.5 s of this one idling
/// (`/proc/stat`), or `None` where it cannot be read (not Linux).
fn background_load(cores: usize) -> Option<f64> {
    let read = || std::fs::read_to_string("/proc/stat").ok().and_then(|t| parse_proc_stat(&t));
    let before = read()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    Some(busy_cores(before, read()?, cores))
}

/// Whether the workspace builds gemm with `x86-v4` (the root manifest or a
/// crate's under `crates/`).
fn gemm_x86_v4_in(root: &Path) -> bool {
    let crates = std::fs::read_dir(root.join("crates")).into_iter().flatten().flatten().map(|e| e.path());
    std::iter::once(root.to_path_buf())
        .chain(crates)
        .filter_map(|dir| std::fs::read_to_string(dir.join("Cargo.toml")).ok())
        .any(|m| enables_gemm_x86_v4(&m))
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
    let cpu = parse_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let mut header = Header {
        date: utc_date(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        gemm: gemm_kernels(std::env::consts::ARCH, gemm_x86_v4_in(root), &cpu),
        cpu,
        torch,
        threads: args.threads,
        pairs: args.pairs,
        limit_gib: args.limit_gib,
        background: Vec::new(),
    };
    let jobs = schedule(args.pairs, configs.len());
    eprint!("{}", header.lines());
    eprintln!(
        "bench-peer: {} configurations × {} pair(s) of candle and torch = {} processes, python `{}`",
        configs.len(),
        args.pairs,
        jobs.len(),
        python.display(),
    );
    let mut results: Vec<(Config, Runs)> = configs.iter().map(|c| (*c, Runs::default())).collect();
    let mut done: Vec<((Framework, usize), f64)> = Vec::new();
    let t0 = Instant::now();
    for (n, &(pair, i, fw)) in jobs.iter().enumerate() {
        let c = configs[i];
        if let Some(busy) = background_load(header.cores) {
            header.background.push(busy);
        }
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
            "[{}/{}] pair {}/{} {:<6} {c}: {what}; process {:.1} s, elapsed {}, left ~{}",
            n + 1,
            jobs.len(),
            pair + 1,
            args.pairs,
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
