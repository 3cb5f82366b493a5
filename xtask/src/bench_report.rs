//! `cargo xtask bench-report`: criterion's estimates (target/criterion) and
//! the peak-memory example's output, as Markdown tables of times and ratios
//! to each group's plain step, written into docs/performance.md between
//! markers. Runs `cargo bench -p seht-bench` (every benchmark file) first
//! unless `--no-run`.
//!
//! Groups are named `topic.key` (`penalised.resnet18`, `scaling.width16`):
//! one section per topic, one table per group, and for the width sweep one
//! more table with a row per width.

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

/// The benchmark files' topics, in the report's order, with what each measures.
const TOPICS: &[(&str, &str)] = &[
    ("hvp", "An HVP against a gradient (forward + backward)"),
    ("estimate", "Estimate-only traces (detached) against a plain step"),
    ("penalised", "Penalised steps (exact and first-order) against a plain step"),
    ("scaling", "Scaling with width, K and p (ResNet, one block per stage)"),
];

/// Orders `width8` before `width16`: text first, then the trailing number.
fn natural(key: &str) -> (String, u64) {
    let digits = key.len() - key.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (text, num) = key.split_at(key.len() - digits);
    (text.to_string(), num.parse().unwrap_or(0))
}

/// Mean time in seconds of every `group/bench` under `target/criterion`
/// whose group belongs to one of [`TOPICS`].
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
        let name = group.file_name().to_string_lossy().to_string();
        let topic = name.split('.').next().unwrap_or("");
        if !group.path().is_dir() || !TOPICS.iter().any(|(t, _)| *t == topic) {
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

pub fn run(root: &Path, no_run: bool) -> Result<()> {
    if !no_run {
        let status = Command::new(cargo()).args(["bench", "-p", "seht-bench"]).current_dir(root).status()?;
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
    let machine = crate::machine::cpu_model().unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let md = render(&est, &peak, &format!("{cores} cores ({machine})"));
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

type Table = BTreeMap<(String, String), f64>;

/// The Markdown between the markers: `est` holds seconds per `(group, bench)`,
/// `peak` megabytes per `(model key, bench)`.
fn render(est: &Table, peak: &Table, machine: &str) -> String {
    let mut md = format!("{START}\n\n## Criterion benchmarks (`cargo xtask bench-report`)\n\n");
    let _ = writeln!(
        md,
        "Machine: {machine}. Mean time per iteration from criterion (10 samples); ratio to the plain step (forward + backward) of the same group, measured in the same run; peak extra heap from one run of the `peak_memory` example. SEHT-D draws a fresh layer selection every iteration, so its mean is the expected cost.\n"
    );
    let mut groups: Vec<String> =
        est.keys().map(|(g, _)| g.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    groups.sort_by_key(|g| {
        let (topic, key) = g.split_once('.').unwrap_or((g, ""));
        (TOPICS.iter().position(|(t, _)| *t == topic), natural(key))
    });
    let ratio = |g: &str, b: &str| -> Option<f64> {
        Some(est.get(&(g.to_string(), b.to_string()))? / est.get(&(g.to_string(), "plain_step".to_string()))?)
    };
    let mut topic_seen = "";
    for g in &groups {
        let (topic, key) = g.split_once('.').unwrap_or((g, ""));
        if topic != topic_seen {
            let what = TOPICS.iter().find(|(t, _)| *t == topic).map(|(_, w)| *w).unwrap_or("");
            let _ = writeln!(md, "### {what} (`benches/{topic}.rs`)\n");
            topic_seen = TOPICS.iter().find(|(t, _)| *t == topic).map(|(t, _)| *t).unwrap_or("");
        }
        let _ = writeln!(
            md,
            "#### {g}\n\n| configuration | time (ms) | ratio to plain | peak extra heap (MB) |\n| --- | ---: | ---: | ---: |"
        );
        for ((gg, b), t) in est.iter().filter(|((gg, _), _)| gg == g) {
            let r = ratio(gg, b).map(|r| format!("{r:.2}×")).unwrap_or_default();
            let mb = peak.get(&(key.to_string(), b.clone())).map(|v| format!("{v:.0}")).unwrap_or_default();
            let _ = writeln!(md, "| {b} | {:.1} | {r} | {mb} |", t * 1e3);
        }
        md.push('\n');
    }
    let widths: Vec<&String> = groups.iter().filter(|g| g.starts_with("scaling.width")).collect();
    if !widths.is_empty() {
        let cols = ["hvp", "estimate_seht_h_k1", "penalised_seht_h_k1", "first_order_seht_h_k1"];
        let _ = writeln!(
            md,
            "#### Width sweep, ratios to the plain step\n\n| width | plain step (ms) | {} |\n| ---: | ---: |{}",
            cols.join(" | "),
            " ---: |".repeat(cols.len())
        );
        for g in widths {
            let plain = est.get(&(g.clone(), "plain_step".to_string())).map(|t| format!("{:.1}", t * 1e3));
            let cells: Vec<String> =
                cols.iter().map(|c| ratio(g, c).map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into())).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                g.trim_start_matches("scaling.width"),
                plain.unwrap_or_default(),
                cells.join(" | ")
            );
        }
        md.push('\n');
    }
    md.push_str(END);
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, f64)]) -> Table {
        rows.iter().map(|(g, b, v)| ((g.to_string(), b.to_string()), *v)).collect()
    }

    #[test]
    fn natural_order_puts_width8_before_width16() {
        let mut keys = vec!["width64", "width8", "k", "width16"];
        keys.sort_by_key(|k| natural(k));
        assert_eq!(keys, ["k", "width8", "width16", "width64"]);
    }

    #[test]
    fn tables_give_ratios_to_their_own_group_plain_step_and_a_width_sweep() {
        let est = table(&[
            ("scaling.width16", "plain_step", 0.4),
            ("scaling.width16", "hvp", 1.6),
            ("scaling.width8", "plain_step", 0.1),
            ("scaling.width8", "hvp", 0.3),
            ("penalised.resnet18", "plain_step", 2.0),
            ("penalised.resnet18", "first_order_seht_h_k1", 6.2),
            ("hvp.mlp", "plain_step", 0.01),
        ]);
        let peak = table(&[("resnet18", "first_order_seht_h_k1", 4512.0)]);
        let md = render(&est, &peak, "2 cores (test)");
        assert!(md.starts_with(START) && md.ends_with(END), "{md}");
        assert!(md.contains("| first_order_seht_h_k1 | 6200.0 | 3.10× | 4512 |"), "{md}");
        assert!(md.contains("| hvp | 300.0 | 3.00× |  |"), "{md}");
        // Topic order (hvp before penalised before scaling), width 8 before 16.
        let pos = |s: &str| md.find(s).unwrap_or_else(|| panic!("{s} missing in {md}"));
        assert!(pos("#### hvp.mlp") < pos("#### penalised.resnet18"));
        assert!(pos("#### penalised.resnet18") < pos("#### scaling.width8"));
        assert!(pos("#### scaling.width8") < pos("#### scaling.width16"));
        assert!(md.contains("| 8 | 100.0 | 3.00× | — | — | — |"), "{md}");
        assert!(md.contains("| 16 | 400.0 | 4.00× | — | — | — |"), "{md}");
    }
}
