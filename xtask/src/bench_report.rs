//! `cargo xtask bench-report`: criterion's estimates (target/criterion) and
//! the peak-memory example's output, as a Markdown table of times and ratios
//! to each model's plain step, written into docs/performance.md between
//! markers. Runs `cargo bench -p seht-bench` first unless `--no-run`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

const START: &str = "<!-- bench-report:start -->";
const END: &str = "<!-- bench-report:end -->";

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Mean time in seconds of every `group/bench` under `target/criterion`.
fn estimates(root: &Path) -> Result<BTreeMap<(String, String), f64>> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => std::path::PathBuf::from(d),
        Some(d) => root.join(d),
        None => root.join("target"),
    };
    let dir = target.join("criterion");
    let mut out = BTreeMap::new();
    for group in std::fs::read_dir(&dir)
        .with_context(|| format!("{} (run cargo bench -p seht-bench first)", dir.display()))?
        .flatten()
    {
        if !group.path().is_dir() || group.file_name() == "report" {
            continue;
        }
        for bench in std::fs::read_dir(group.path())?.flatten() {
            let est = bench.path().join("new/estimates.json");
            let Ok(bytes) = std::fs::read(&est) else { continue };
            let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{}", est.display()))?;
            if let Some(ns) = v.pointer("/mean/point_estimate").and_then(serde_json::Value::as_f64) {
                out.insert(
                    (group.file_name().to_string_lossy().to_string(), bench.file_name().to_string_lossy().to_string()),
                    ns * 1e-9,
                );
            }
        }
    }
    Ok(out)
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let no_run = args.iter().any(|a| a == "--no-run");
    if !no_run {
        let status =
            Command::new(cargo()).args(["bench", "-p", "seht-bench", "--bench", "cost"]).current_dir(root).status()?;
        if !status.success() {
            bail!("cargo bench failed");
        }
    }
    let mem = Command::new(cargo())
        .args(["run", "--release", "-q", "-p", "seht-bench", "--example", "peak_memory"])
        .current_dir(root)
        .output()
        .context("running the peak-memory example")?;
    let mut peak: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&mem.stdout).lines() {
        let f: Vec<&str> = line.split(',').collect();
        if let [m, c, mb] = f.as_slice()
            && let Ok(v) = mb.parse::<f64>()
        {
            peak.insert((m.to_string(), c.to_string()), v);
        }
    }
    let est = estimates(root)?;
    let mut md = format!("{START}\n\n## Criterion benchmarks (`cargo xtask bench-report`)\n\n");
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "Machine: {} cores ({machine}). Mean time per iteration from criterion (10 samples); ratio to the same model's plain step (forward + backward), measured in the same run; peak extra heap from one run of the `peak_memory` example. SEHT-D draws a fresh layer selection every iteration, so its mean is the expected cost.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let groups: Vec<String> =
        est.keys().map(|(g, _)| g.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for g in groups {
        let plain = est.get(&(g.clone(), "plain_step".into())).copied();
        let _ = writeln!(
            md,
            "### {g}\n\n| configuration | time (ms) | ratio to plain | peak extra heap (MB) |\n| --- | ---: | ---: | ---: |"
        );
        for ((gg, b), t) in est.iter().filter(|((gg, _), _)| *gg == g) {
            let ratio = plain.map(|p| format!("{:.2}×", t / p)).unwrap_or_default();
            let mb = peak.get(&(gg.clone(), b.clone())).map(|v| format!("{v:.0}")).unwrap_or_default();
            let _ = writeln!(md, "| {b} | {:.1} | {ratio} | {mb} |", t * 1e3);
        }
        md.push('\n');
    }
    md.push_str(END);
    let path = root.join("docs/performance.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (doc.find(START), doc.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{md}{}", &doc[..a], &doc[b + END.len()..]),
        _ => format!("{doc}\n{md}\n"),
    };
    std::fs::write(&path, new)?;
    println!("wrote the benchmark table into {}", path.display());
    Ok(())
}
