//! The Hessian of each method's final model (issue 21, item 4): `seht
//! analyze` on the first seed's run of every table-1 method, then `seht
//! analyze-compare` for the density figure and the table comparing methods
//! (top eigenvalue, trace, negative fraction), appended to `summary.md`.
//! Orchestration only: the analysis itself is `seht analyze`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use seht_protocol::preset::Cell;

/// Settings of the analysis of each final model: small, so that the smoke
/// preset stays quick (one batch; 10 trace probes; the top eigenvalue with at
/// most 20 Lanczos steps; one SLQ probe of 20 steps: at most 51 products).
const SETTINGS: [&str; 16] = [
    "--mode",
    "eval",
    "--batches",
    "1",
    "--trace-probes",
    "10",
    "--top-k",
    "1",
    "--lanczos-steps",
    "20",
    "--tolerance",
    "1e-3",
    "--slq-probes",
    "1",
    "--slq-steps",
    "20",
];

/// Analyses the final model of each table-1 method (first seed, main
/// matrix; not a run that diverged) into `out/analysis/<run>/`, skipping
/// those already analysed, and compares them in `out/analysis/`; appends a
/// section to `out/summary.md`.
/// Does nothing when table 1 was not run.
pub fn final_models(seht: &Path, data_dir: &Path, out: &Path, cells: &[Cell]) -> Result<()> {
    let Some(seed) = cells.iter().filter(|c| c.table == "table1" && c.grid_lambda.is_none()).map(|c| c.seed).min()
    else {
        return Ok(());
    };
    let dir = out.join("analysis");
    let mut reports = Vec::new();
    for c in cells.iter().filter(|c| c.table == "table1" && c.grid_lambda.is_none() && c.seed == seed) {
        let run = out.join("runs").join(&c.name);
        // Not run, or diverged: no final model to analyse.
        if seht_records::Metrics::read(&run).map_or(true, |m| m.diverged().is_some()) {
            continue;
        }
        let target = dir.join(&c.name);
        let json = target.join("analysis.json");
        if !json.is_file() {
            eprintln!("analysing the Hessian of {} …", c.name);
            let o = Command::new(seht)
                .arg("analyze")
                .arg("--run")
                .arg(&run)
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--out")
                .arg(&target)
                .arg("--quiet")
                .args(SETTINGS)
                .output()
                .with_context(|| format!("running {} analyze", seht.display()))?;
            std::fs::create_dir_all(&target)?;
            std::fs::write(target.join("analyze.log"), [o.stdout.as_slice(), o.stderr.as_slice()].concat())?;
            if !o.status.success() {
                bail!("seht analyze of {} failed; see {}", c.name, target.join("analyze.log").display());
            }
        }
        reports.push(json);
    }
    if reports.is_empty() {
        return Ok(());
    }
    let o = Command::new(seht)
        .arg("analyze-compare")
        .arg("--out")
        .arg(&dir)
        .args(&reports)
        .output()
        .with_context(|| format!("running {} analyze-compare", seht.display()))?;
    if !o.status.success() {
        bail!("seht analyze-compare failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let table = std::fs::read_to_string(dir.join("comparison.md")).context("reading analysis/comparison.md")?;
    let section = format!(
        "\n## Hessian of the final models (table 1, seed {seed})\n\n`seht analyze` in eval mode on one training batch: \
         the top eigenvalue (Lanczos) with its residual, tr(H) from per-layer Hutchinson estimates, the fraction of \
         negative eigenvalues from the density (SLQ). Per-run outputs: `analysis/<run>/`.\n\n{table}\n\
         ![Hessian eigenvalue densities](analysis/density_comparison.png)\n"
    );
    let summary = out.join("summary.md");
    let mut text = std::fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
    text.push_str(&section);
    std::fs::write(&summary, text).with_context(|| format!("writing {}", summary.display()))?;
    Ok(())
}
