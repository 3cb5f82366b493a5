//! Whole-process memory of one training step, one configuration per process.
//!
//! ```sh
//! cargo run --release -p seht-bench --example step_memory -- resnet18 32 exact-h1 [--repeats 3]
//! cargo run --release -p seht-bench --example step_memory -- --table [--limit-gib 22] \
//!     [--configs resnet18/8/plain,lstm/20/hvp,…] [--repeats 0]
//! ```
//!
//! One configuration (`MODEL BATCH STEP`) prints one CSV line
//! `candle,MODEL,BATCH,STEP,working_gib,peak_rss_gib,heap_peak_gib,seconds,weight_tensors`:
//!
//! - `working_gib`: peak resident set size (`VmHWM`, whole process) during the
//!   first step minus the resident set size just before it (GiB, 2³⁰ bytes);
//! - `peak_rss_gib`: that peak itself;
//! - `heap_peak_gib`: the allocator's view, the peak of live heap bytes above
//!   those live before the step ([`CountingAlloc`]);
//! - `seconds`: the median of `--repeats` further steps (default 3; 0: not
//!   timed, printed as `-`), to 10 µs;
//! - `weight_tensors`: the number of weight tensors, SEHT-D's layers (added
//!   last, so that readers of the first eight fields are unaffected).
//!
//! `MODEL`: `resnet18` (full width, CIFAR, training-mode BatchNorm),
//! `resnet16` (widths 16–128, one block per stage), `wrn28-10`, `wrn16-2`,
//! `mlp` (3072 → 512 → 512 → 10 with biases, ReLU between, on flattened
//! 3×32×32 inputs), `lstm` (2 × 512, batch 20 × 35; BATCH is ignored),
//! `lstm128` (2 × 128). `STEP`: `plain` (forward, backward), `hvp` (gradient
//! on the graph, one Hessian-vector product), `exact-h1` (exact SEHT-H K = 1
//! penalised step), `exact-d` (exact SEHT-D p = 0.05, a step whose draw
//! selected layers: the measured step and every timed one are redrawn until
//! the draw selects some), `first-order` (first-order SEHT-H K = 1), `gn`
//! (the Gauss–Newton trace penalty, one label draw, gradient by double
//! backprop: second order only), `gn-first-order` (the same, its gradient by
//! central differences of first-order gradients).
//! `--table` runs configurations (`--configs`, default: those of issue 16)
//! each in its own process under an address-space limit (`--limit-gib`,
//! default 22) and prints a Markdown table; a configuration over the limit
//! shows as such. `bench/peer/torch_steps.py` is the PyTorch twin (same
//! model and step names), and `cargo xtask bench-peer` runs both.

use std::process::Command;
use std::time::Instant;

use seht_bench::{CountingAlloc, Model, Workload, peak_bytes, rng};
use seht_candle::Gradient;
use seht_estimator::{Reading, SehtD, SehtH};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const GIB: f64 = (1u64 << 30) as f64;

/// SEHT-D draws tried for a step that selects layers before giving up.
const MAX_DRAWS: usize = 200;

const STEPS: [&str; 7] = ["plain", "hvp", "exact-h1", "exact-d", "first-order", "gn", "gn-first-order"];

/// `field` of /proc/self/status in bytes.
fn status_bytes(field: &str) -> Res<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let line = s.lines().find(|l| l.starts_with(field)).ok_or_else(|| format!("/proc/self/status has no {field}"))?;
    let kb: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse()?;
    Ok(kb * 1024)
}

fn model(name: &str) -> Res<Model> {
    Ok(match name {
        "resnet18" => Model::ResNet { width: 64, blocks: 2 },
        "resnet16" => Model::ResNet { width: 16, blocks: 1 },
        "mlp" => Model::Mlp { hidden: 512 },
        "wrn28-10" => Model::WideResNet { depth: 28, widen: 10 },
        "wrn16-2" => Model::WideResNet { depth: 16, widen: 2 },
        "lstm" => Model::Lstm { hidden: 512 },
        "lstm128" => Model::Lstm { hidden: 128 },
        other => {
            return Err(
                format!("unknown model `{other}`: resnet18, resnet16, mlp, wrn28-10, wrn16-2, lstm, lstm128").into()
            );
        }
    })
}

/// One step of kind `step`; the number of Hessian-vector products it made
/// (SEHT-D: 0 when its draw selected no layer).
fn step(w: &Workload, step: &str, r: &mut seht_estimator::ProbeRng) -> Res<usize> {
    Ok(match step {
        "plain" => {
            w.plain_step()?;
            0
        }
        "hvp" => {
            w.hvp(r)?;
            1
        }
        "exact-h1" => w.penalised_step(&SehtH::seht_h(1)?, r)?,
        "exact-d" => w.penalised_step(&SehtD::new(1, 0.05, Reading::Unbiased)?, r)?,
        "first-order" => w.first_order_step(1, None, r)?,
        "gn" => {
            w.gauss_newton_step(Gradient::ExactPerProbe, r)?;
            1
        }
        "gn-first-order" => {
            w.gauss_newton_step(Gradient::FirstOrder { relative_step: Some(2e-2) }, r)?;
            1
        }
        other => return Err(format!("unknown step `{other}`: {}", STEPS.join(", ")).into()),
    })
}

fn one(model_name: &str, batch: usize, kind: &str, repeats: usize) -> Res<()> {
    seht_candle::retain_freed_memory();
    let w = Workload::new(model(model_name)?, batch)?;
    let mut r = rng(3);
    // SEHT-D: the peak and the times of steps whose draw selected layers
    // (reset and redraw until one does; p = 0.05 on the MLP's 3 layers
    // selects in 14% of draws).
    let selected = |hvps: usize| kind != "exact-d" || hvps > 0;
    let no_draw = || format!("{model_name}: {MAX_DRAWS} SEHT-D draws selected no layer");
    let (mut working, mut peak, mut heap) = (0, 0, 0);
    for attempt in 1.. {
        let base = status_bytes("VmRSS:")?;
        std::fs::write("/proc/self/clear_refs", "5")?; // resets VmHWM to VmRSS
        let (hvps, b) = peak_bytes(|| step(&w, kind, &mut r));
        let hwm = status_bytes("VmHWM:")?;
        (working, peak, heap) = (hwm.saturating_sub(base), hwm, b);
        if selected(hvps?) {
            break;
        }
        if attempt == MAX_DRAWS {
            return Err(no_draw().into());
        }
    }
    let mut times = Vec::new();
    for _ in 0..repeats {
        for attempt in 1.. {
            let t = Instant::now();
            if selected(step(&w, kind, &mut r)?) {
                times.push(t.elapsed().as_secs_f64());
                break;
            }
            if attempt == MAX_DRAWS {
                return Err(no_draw().into());
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).map_or("-".to_string(), |t| format!("{t:.5}"));
    println!(
        "candle,{model_name},{batch},{kind},{:.3},{:.3},{:.3},{median},{}",
        working as f64 / GIB,
        peak as f64 / GIB,
        heap as f64 / GIB,
        w.num_blocks(),
    );
    Ok(())
}

fn table(limit_gib: u64, only: Option<&str>, repeats: usize) -> Res<()> {
    let exe = std::env::current_exe()?;
    let mut configs: Vec<(String, usize, String)> = Vec::new();
    match only {
        Some(list) => {
            for c in list.split(',') {
                let f: Vec<&str> = c.trim().split('/').collect();
                let [m, b, s] = f.as_slice() else {
                    return Err(format!("--configs entry `{c}`: expected MODEL/BATCH/STEP").into());
                };
                configs.push((
                    m.to_string(),
                    b.parse().map_err(|e| format!("--configs entry `{c}`: {e}"))?,
                    s.to_string(),
                ));
            }
        }
        None => {
            for (m, b) in [("resnet18", 8), ("resnet18", 32), ("resnet18", 128), ("wrn28-10", 32), ("lstm", 20)] {
                for s in STEPS {
                    configs.push((m.to_string(), b, s.to_string()));
                }
            }
        }
    }
    println!("| model | batch | step | working memory (GiB) | peak RSS (GiB) | peak heap (GiB) | step (s) |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for (m, b, s) in configs {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v {}; exec \"$0\" {m} {b} {s} --repeats {repeats}", limit_gib << 20))
            .arg(&exe)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find(|l| l.starts_with("candle,")) {
            Some(line) if out.status.success() => {
                let f: Vec<&str> = line.split(',').collect();
                println!("| {m} | {b} | {s} | {} | {} | {} | {} |", f[4], f[5], f[6], f[7]);
            }
            _ => {
                let err = String::from_utf8_lossy(&out.stderr);
                let why = err.lines().last().unwrap_or("no output");
                println!("| {m} | {b} | {s} | over {limit_gib} GiB or failed ({}) | | | |", why.trim());
            }
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| -> Res<Option<&String>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(Some(args.get(i + 1).ok_or_else(|| format!("{name} needs a value"))?)),
            None => Ok(None),
        }
    };
    let repeats: usize = match option("--repeats")? {
        Some(r) => r.parse().map_err(|e| format!("--repeats `{r}`: {e}"))?,
        None => 3,
    };
    if args.first().map(String::as_str) == Some("--table") {
        let limit = match option("--limit-gib")? {
            Some(l) => l.parse().map_err(|e| format!("--limit-gib `{l}`: {e}"))?,
            None => 22,
        };
        return table(limit, option("--configs")?.map(String::as_str), repeats);
    }
    let [m, b, s, ..] = args.as_slice() else {
        return Err(
            "usage: step_memory MODEL BATCH STEP [--repeats N] | --table [--limit-gib N] [--configs …] [--repeats N]"
                .into(),
        );
    };
    let batch: usize = b.parse().map_err(|e| format!("BATCH `{b}`: {e}"))?;
    one(m, batch, s, repeats)
}
