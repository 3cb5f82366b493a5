//! `cargo xtask reproduce`: a preset's run matrix, run with the `seht`
//! binary (one release build), with progress bars, then the summary, tables
//! and figure. Orchestration only.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use seht_records::{DIVERGED_EXIT_CODE, Divergence, METRICS_FILE, Metrics, ProgressEvent};

use crate::progress::Board;
use seht_protocol::preset::{
    Cell, DataKind, DataNotes, DataSource, MatrixSpec, Plan, Preset, load_preset, matrix, table_names,
};

/// `cargo xtask reproduce`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// `demo` (real data shipped in the repository, ~6 min on 2 cores),
    /// `smoke` (fixture data, checks the pipeline; CI), `quick` (real data
    /// in --data-dir, ~60 min on 2 cores), `paper` (the full protocol; GPUs).
    #[arg(long, default_value = "demo")]
    pub preset: String,
    /// Config folders to run, comma-separated: 1,2,3,4 for the paper's tables,
    /// or a folder of configs/ by name (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Seeds per cell (default: the preset's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub seeds: Option<u32>,
    /// Where CIFAR-10/100 and WikiText-2 live (presets on real data).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Output folder; results go to OUT/PRESET/.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Runs in parallel on this machine (default: the preset's, else 1); each
    /// gets cores / jobs threads unless RAYON_NUM_THREADS is set.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Run only cell I of the matrix (for job arrays), then stop.
    #[arg(long, value_name = "I")]
    pub cell: Option<usize>,
    /// Write OUT/PRESET/slurm.sh (one array task per cell) and stop.
    #[arg(long)]
    pub export_slurm: bool,
    /// Print the matrix (index, run name, done or not) and stop.
    #[arg(long)]
    pub list: bool,
}

fn build_seht(root: &Path) -> Result<PathBuf> {
    eprintln!("building the seht binary (cargo build --release -p seht-train --bin seht) …");
    let status = crate::cargo()
        .args(["build", "--release", "-p", "seht-train", "--bin", "seht"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the seht binary failed");
    }
    let target = crate::target_dir(root);
    let exe = target.join("release").join(format!("seht{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        bail!("{} was not built", exe.display());
    }
    Ok(exe)
}

/// What one run of `seht train` reported.
#[derive(Debug)]
struct Finished {
    seconds: f64,
    /// False when the run was already done (seht only reported it).
    trained: bool,
    /// Where and why it diverged, when it did: a completed run with no
    /// result (`seht train` exits with [`DIVERGED_EXIT_CODE`]), which is
    /// not retried.
    diverged: Option<Divergence>,
}

/// Runs one cell; its progress lines go to `on_event`, everything else it
/// prints to `runs/<name>.log`.
fn run_cell(
    seht: &Path,
    cell: &Cell,
    data_dir: &Path,
    runs: &Path,
    threads: Option<usize>,
    on_event: &dyn Fn(ProgressEvent),
) -> Result<Finished> {
    let t0 = Instant::now();
    std::fs::create_dir_all(runs)?;
    let was_done = runs.join(&cell.name).join(METRICS_FILE).is_file();
    let log = runs.join(format!("{}.log", cell.name));
    let mut command = Command::new(seht);
    if let Some(n) = threads {
        command.env("RAYON_NUM_THREADS", n.to_string());
    }
    let mut child = command
        .args(["train", "--progress", "lines", "--config"])
        .arg(&cell.config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--out")
        .arg(runs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", seht.display()))?;
    let mut stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut messages = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the run's standard error")?;
        match ProgressEvent::parse_line(&line) {
            Some(e) => on_event(e),
            None => messages.push(line),
        }
    }
    let status = child.wait()?;
    let out = reader.join().unwrap_or_default();
    std::fs::write(&log, format!("{out}{}\n", messages.join("\n")))?;
    let diverged = status.code() == Some(i32::from(DIVERGED_EXIT_CODE));
    if !status.success() && !diverged {
        use std::os::unix::process::ExitStatusExt;
        let why = match (status.signal(), messages.iter().rfind(|l| !l.trim().is_empty())) {
            (Some(9), _) => {
                "killed by signal 9 (SIGKILL: most likely the kernel's out-of-memory killer; see `dmesg`)".into()
            }
            (Some(sig), _) => format!("killed by signal {sig}"),
            (None, Some(line)) => line.to_string(),
            (None, None) => format!("exited with {status}"),
        };
        bail!("{} failed (log: {}): {why}", cell.name, log.display());
    }
    let diverged = if diverged {
        let m = Metrics::read(&runs.join(&cell.name))
            .with_context(|| format!("{} exited as diverged (log: {})", cell.name, log.display()))?;
        let d = m.diverged().cloned();
        Some(d.with_context(|| format!("{} exited as diverged, but its metrics.json says finished", cell.name))?)
    } else {
        None
    };
    let seconds = t0.elapsed().as_secs_f64();
    if !was_done {
        // Wall time of every run that trained, over all invocations (a
        // preset may be run in parts): the summary's total comes from here.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(runs.join("timing.csv"))?;
        writeln!(f, "{},{seconds:.1}", cell.name)?;
    }
    Ok(Finished { seconds, trained: !was_done, diverged })
}

/// Threads of each run: `None` (the run's own default: all cores) when
/// RAYON_NUM_THREADS is set (the child inherits it) or one run uses the
/// machine; else the preset's `threads`, else cores / jobs (on 2 cores two
/// 1-thread runs train about 1.5× the images per second of one 2-thread run:
/// small convolutions parallelise poorly). The same for `--cell` as for a
/// parallel run, so that a cell rerun alone reproduces the run bit for bit.
fn run_threads(plan: &Plan, env_set: bool, cores: usize) -> Option<usize> {
    match (env_set, plan.preset.threads, plan.jobs) {
        (true, _, _) => None,
        (false, Some(t), _) => Some(t),
        (false, None, 1) => None,
        (false, None, jobs) => Some((cores / jobs).max(1)),
    }
}

/// `slurm.sh`: one array task per cell in `range`; `what` says which part.
fn slurm_script(plan: &Plan, args: &Args, range: std::ops::Range<usize>, what: &str, out: &Path) -> String {
    let n = range.len();
    format!(
        "#!/bin/bash\n# One array task per cell of the `{p}` matrix ({what}: {n} cells).\n\
         #SBATCH --job-name=seht-{p}\n#SBATCH --array={first}-{last}\n#SBATCH --gres=gpu:1\n#SBATCH --cpus-per-task=4\n\
         #SBATCH --output={o}/slurm-%A_%a.out\nset -euo pipefail\n\
         cargo xtask reproduce --preset {p} --tables {t} --seeds {s} --data-dir {d} --out {base} --cell \"$SLURM_ARRAY_TASK_ID\"\n\
         # When every task has finished: cargo xtask reproduce (same arguments, no --cell) writes the tables.\n",
        p = plan.preset.name,
        first = range.start,
        last = range.end.saturating_sub(1),
        o = out.display(),
        t = plan.tables.join(","),
        s = plan.seeds,
        d = args.data_dir.display(),
        base = args.out.display(),
    )
}

/// The data folder of a preset, with fixtures written when it uses them
/// (not for a listing: runs in progress may be reading them), and the notes
/// every output carries about them.
fn prepare_data(
    root: &Path,
    preset: &Preset,
    tables: &[String],
    args: &Args,
    out: &Path,
) -> Result<(PathBuf, DataNotes)> {
    let (dir, source): (PathBuf, fn(PathBuf) -> DataSource) = match preset.data {
        DataKind::Fixtures => (out.join("fixtures"), |dir| DataSource::Fixtures { dir }),
        DataKind::Shipped => (root.join("data").join("shipped"), |dir| DataSource::Shipped { dir }),
        DataKind::Real => return Ok((args.data_dir.clone(), DataNotes::new())),
    };
    if preset.data == DataKind::Fixtures && !args.list {
        crate::fixtures::write_all(&dir)?;
    }
    Ok((dir.clone(), tables.iter().map(|t| (t.clone(), source(dir.clone()))).collect()))
}

/// A preset resolved against the command line, its data prepared and its
/// matrix written: what every mode of `reproduce` works on.
struct Matrix {
    plan: Plan,
    /// `OUT/PRESET`.
    out: PathBuf,
    /// `OUT/PRESET/runs`.
    runs: PathBuf,
    data_dir: PathBuf,
    notes: DataNotes,
    cells: Vec<Cell>,
}

fn prepare(root: &Path, args: &Args) -> Result<Matrix> {
    let preset = load_preset(root, &args.preset)?;
    let tables = match &args.tables {
        Some(t) => table_names(root, t)?,
        None => preset.tables.clone(),
    };
    let plan = Plan {
        seeds: args.seeds.map(|s| s as usize).unwrap_or(preset.seeds),
        jobs: args.jobs.map(|j| j as usize).unwrap_or(preset.jobs),
        tables,
        preset,
    };
    let out = args.out.join(&plan.preset.name);
    std::fs::create_dir_all(&out)?;
    let (data_dir, mut notes) = prepare_data(root, &plan.preset, &plan.tables, args, &out)?;
    // A listing writes no config: the runs it lists may be in progress.
    let spec = MatrixSpec {
        root,
        preset: &plan.preset,
        tables: &plan.tables,
        seeds: plan.seeds,
        data_dir: &data_dir,
        out: &out,
        write: !args.list,
    };
    let cells = matrix(&spec, &mut notes)?;
    if spec.write {
        let bracket = plan.preset.lambda_grid.as_ref().is_some_and(|g| g.bracket);
        seht_protocol::selection::apply_available_selections(&out, &cells, bracket)?;
    }
    Ok(Matrix { runs: out.join("runs"), plan, out, data_dir, notes, cells })
}

/// `cargo xtask reproduce`: by mode, `--export-slurm`, `--list`, `--cell I`,
/// or the whole matrix.
pub fn run(root: &Path, args: Args) -> Result<()> {
    let m = prepare(root, &args)?;
    if args.export_slurm {
        return export_slurm(&m, &args);
    }
    if args.list {
        list(&m);
        return Ok(());
    }
    let threads = run_threads(
        &m.plan,
        std::env::var_os("RAYON_NUM_THREADS").is_some(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    match args.cell {
        Some(i) => one_cell(root, &m, i, threads),
        None => all_cells(root, &m, threads),
    }
}

/// Whether a selection must be bracketed (the preset's `lambda_grid.bracket`).
fn bracket(m: &Matrix) -> bool {
    m.plan.preset.lambda_grid.as_ref().is_some_and(|g| g.bracket)
}

/// The number of grid cells that run first (a selecting grid), else 0.
fn grid_first(cells: &[Cell]) -> usize {
    cells.iter().take_while(|c| c.grid_lambda.is_some()).count()
}

/// `--export-slurm`: one array task per cell; a selecting grid's cells in
/// an array of their own that the main rows' array waits for.
fn export_slurm(m: &Matrix, args: &Args) -> Result<()> {
    let (plan, out, cells) = (&m.plan, &m.out, &m.cells);
    let path = out.join("slurm.sh");
    let grid = grid_first(cells);
    if cells.iter().any(|c| c.selected) && grid > 0 {
        let main = out.join("slurm-main.sh");
        std::fs::write(&path, slurm_script(plan, args, 0..grid, "the λ grid, which runs first", out))?;
        std::fs::write(&main, slurm_script(plan, args, grid..cells.len(), "the main rows, after the grid", out))?;
        println!(
            "wrote {} ({grid} grid tasks) and {} ({} main tasks, which train with the λ the grid selects); submit with:\n  jid=$(sbatch --parsable {}) && sbatch --dependency=afterok:$jid {}",
            path.display(),
            main.display(),
            cells.len() - grid,
            path.display(),
            main.display()
        );
        return Ok(());
    }
    std::fs::write(&path, slurm_script(plan, args, 0..cells.len(), "all cells", out))?;
    println!("wrote {} ({} array tasks); submit with: sbatch {}", path.display(), cells.len(), path.display());
    Ok(())
}

/// `--list`: every cell's index, run name and state; for a main cell whose
/// grid selects, the value it selects now (or why none yet).
fn list(m: &Matrix) {
    for (i, c) in m.cells.iter().enumerate() {
        let state = match Metrics::read(&m.runs.join(&c.name)) {
            Ok(r) if r.diverged().is_some() => "diverged",
            Ok(_) => "done",
            Err(_) => "-",
        };
        let selection = match c.selected {
            false => String::new(),
            true => match seht_protocol::selection::selected_value(&m.out, &m.cells, c, bracket(m)) {
                Ok(v) => format!("  selected on validation: {v:e}"),
                Err(e) => format!("  no selection yet: {e}"),
            },
        };
        println!("{i:4}  {:<40} {state}{selection}", c.name);
    }
}

/// `--cell I`: that cell alone (its λ selected first when its grid selects).
fn one_cell(root: &Path, m: &Matrix, i: usize, threads: Option<usize>) -> Result<()> {
    let cells = &m.cells;
    let cell = cells.get(i).with_context(|| format!("--cell {i}: the matrix has {} cells", cells.len()))?;
    // Before the build: a main cell whose grid has not finished is an
    // error that needs no binary.
    if cell.selected {
        let grid = grid_first(cells);
        let (field, l) =
            seht_protocol::selection::apply_selection(&m.out, cells, cell, bracket(m)).with_context(|| {
                format!("run the grid cells 0–{} first (--cell I, or without --cell)", grid.saturating_sub(1))
            })?;
        println!("cell {i} ({}): {field} selected on validation = {l:e}", cell.name);
    }
    let seht = build_seht(root)?;
    let f = run_cell(&seht, cell, &m.data_dir, &m.runs, threads, &|_| {})?;
    match &f.diverged {
        None => println!("cell {i} ({}) done in {:.0} s", cell.name, f.seconds),
        Some(d) => println!("cell {i} ({}) diverged at {d} ({:.0} s): recorded, not an error", cell.name, f.seconds),
    }
    Ok(())
}

/// What the workers of [`all_cells`] collect.
#[derive(Default)]
struct Tally {
    failures: Mutex<Vec<String>>,
    diverged: Mutex<Vec<String>>,
}

/// The whole matrix, `jobs` runs at a time (a selecting grid's cells first),
/// then the outputs.
fn all_cells(root: &Path, m: &Matrix, threads: Option<usize>) -> Result<()> {
    let plan = &m.plan;
    eprintln!(
        "reproduce, preset `{}`: {}.\n{} runs ({} × methods × {} seeds), {} at a time; expected about {} minutes on a 2-core CPU machine.\nResults: {}/summary.md. Finished runs are skipped; an interrupted run resumes from its checkpoint.",
        plan.preset.name,
        plan.preset.description,
        m.cells.len(),
        plan.tables.join(", "),
        plan.seeds,
        plan.jobs,
        plan.preset.expected_minutes,
        m.out.display()
    );
    for (t, n) in &m.notes {
        eprintln!("data, {t}: {}", n.describe());
    }
    let seht = build_seht(root)?;
    let t0 = Instant::now();
    let board = Board::new(&m.cells, plan.jobs);
    let tally = Tally::default();
    // A selecting λ grid: its cells (first in the matrix) all finish before
    // any main cell starts, since their results set the main cells' λ.
    let all: Vec<usize> = (0..m.cells.len()).collect();
    let phases: Vec<Vec<usize>> = if m.cells.iter().any(|c| c.selected) {
        let (grid, main): (Vec<usize>, Vec<usize>) = all.into_iter().partition(|&i| m.cells[i].grid_lambda.is_some());
        vec![grid, main]
    } else {
        vec![all]
    };
    for phase in phases {
        let queue = Mutex::new(phase.into_iter().rev().collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..plan.jobs {
                s.spawn(|| work(m, &seht, threads, &queue, &board, &tally));
            }
        });
    }
    board.close();
    let failures = tally.failures.lock().map(|f| f.clone()).unwrap_or_default();
    if !failures.is_empty() {
        bail!("{} runs failed: {}", failures.len(), failures.join(", "));
    }
    let diverged = tally.diverged.lock().map(|d| d.clone()).unwrap_or_default();
    if !diverged.is_empty() {
        eprintln!(
            "{} runs diverged (recorded in their metrics.json; left out of the tables' means): {}",
            diverged.len(),
            diverged.join(", ")
        );
    }
    outputs(root, m, &seht, t0.elapsed().as_secs_f64())
}

/// One worker: takes cells from `queue` until it is empty, selects a main
/// cell's λ first, runs the cell and reports it on the board.
fn work(m: &Matrix, seht: &Path, threads: Option<usize>, queue: &Mutex<Vec<usize>>, board: &Board, tally: &Tally) {
    let total = m.cells.len();
    while let Some(i) = queue.lock().map(|mut q| q.pop()).unwrap_or(None) {
        let cell = &m.cells[i];
        board.start(i);
        let selected = match cell.selected {
            true => seht_protocol::selection::apply_selection(&m.out, &m.cells, cell, bracket(m))
                .map(|(field, l)| board.println(&format!("{}: {field} selected on validation = {l:e}", cell.name))),
            false => Ok(()),
        }
        .map_err(anyhow::Error::from);
        match selected.and_then(|()| run_cell(seht, cell, &m.data_dir, &m.runs, threads, &|e| board.event(i, e))) {
            Ok(f) => {
                board.finish(i, Ok((f.seconds, f.trained)));
                if f.diverged.is_some()
                    && let Ok(mut d) = tally.diverged.lock()
                {
                    d.push(cell.name.clone());
                }
                let what = match (f.trained, &f.diverged) {
                    (true, None) => "trained".to_string(),
                    (false, None) => "already done, read".to_string(),
                    (true, Some(d)) => format!("diverged at {d}; recorded"),
                    (false, Some(d)) => format!("already done (diverged at {d}), read"),
                };
                let (t, me, seed, secs) = (&cell.table, &cell.method, cell.seed, f.seconds);
                board.println(&format!("[{}/{total}] {t} {me} (seed {seed}) {what} in {secs:.0} s", i + 1));
            }
            Err(e) => {
                board.finish(i, Err(()));
                board.println(&format!("[{}/{total}] {e:#}", i + 1));
                if let Ok(mut f) = tally.failures.lock() {
                    f.push(cell.name.clone());
                }
            }
        }
    }
}

/// The summary, tables and figures (`seht_protocol::report::write`), then
/// the Hessian analysis of the final models as an appendix.
fn outputs(root: &Path, m: &Matrix, seht: &Path, wall: f64) -> Result<()> {
    let provenance = seht_protocol::report::Provenance {
        machine: crate::machine::machine(),
        revision: crate::machine::git_revision(root),
        wall_secs: wall,
    };
    let draw = |runs: &[seht_protocol::report::MethodRuns], out: &Path, stem: &str, caption: &str, own: bool| {
        crate::figure::write(runs, out, stem, caption, own)
            .map_err(|e| seht_protocol::Error::Invalid(format!("drawing {stem}: {e:#}")))
    };
    let written = seht_protocol::report::write(root, &m.out, &m.plan, &m.cells, &m.notes, &provenance, &draw)?;
    // The curvature of each table-1 method's final model (seed 0): top
    // eigenvalue, trace, density figure, appended to the summary. An
    // appendix: a failure is reported, the tables stand.
    if let Err(e) = crate::analysis::final_models(seht, &m.data_dir, &m.out, &m.cells) {
        eprintln!("warning: the Hessian analysis of the final models failed: {e:#}");
    }
    println!(
        "done in {:.1} minutes.\n  summary: {}{}",
        wall / 60.0,
        written.summary.display(),
        written.figure.map(|f| format!("\n  figure:  {}", f.display())).unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `seht`: writes `metrics` into the run folder given
    /// after `--out` (the 9th argument) and exits with `code`.
    fn fake_seht(dir: &Path, metrics: &Path, code: i32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.join(format!("seht-exit-{code}"));
        let script = format!(
            "#!/bin/sh\nmkdir -p \"$9/run\" && cp '{}' \"$9/run/metrics.json\"\necho 'it went wrong' >&2\nexit {code}\n",
            metrics.display()
        );
        std::fs::write(&exe, script).expect("script");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        exe
    }

    #[test]
    fn a_diverged_run_is_completed_not_failed() {
        let dir = std::env::temp_dir().join(format!("xtask-reproduce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let metrics = dir.join("diverged.json");
        let d = Divergence { epoch: 1, step: 4, cause: "non-finite loss NaN".into() };
        let m = serde_json::json!({
            "name": "run", "method": "m", "data": "d", "status": "diverged", "divergence": d,
            "final_epoch": null, "best_epoch": null, "best_by": "", "final_trace": null,
            "train_seconds": 1.0, "seconds_per_epoch": 1.0, "steps": 4, "penalty_steps": 0
        });
        std::fs::write(&metrics, m.to_string()).expect("metrics");
        let cell = Cell {
            table: "t".into(),
            method: "m".into(),
            seed: 0,
            name: "run".into(),
            config: dir.join("run.toml"),
            grid_lambda: None,
            zero_for: Vec::new(),
            largest_stable: false,
            selected: false,
        };
        let code = i32::from(DIVERGED_EXIT_CODE);
        let runs = dir.join("runs");
        let f = run_cell(&fake_seht(&dir, &metrics, code), &cell, &dir, &runs, None, &|_| {}).expect("not a failure");
        assert_eq!((f.trained, f.diverged.as_ref()), (true, Some(&d)));
        // Run again (as a resumed `reproduce` does): read, not retrained.
        let f = run_cell(&fake_seht(&dir, &metrics, code), &cell, &dir, &runs, None, &|_| {}).expect("read");
        assert_eq!((f.trained, f.diverged.as_ref()), (false, Some(&d)));
        // Any other non-zero exit is a failure, naming the run's last message.
        let _ = std::fs::remove_dir_all(&runs);
        let e = run_cell(&fake_seht(&dir, &metrics, 1), &cell, &dir, &runs, None, &|_| {}).expect_err("failed");
        assert!(e.to_string().contains("it went wrong"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn plan(jobs: usize, threads: Option<usize>) -> Plan {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
        let mut preset = load_preset(&root, "demo").expect("demo");
        preset.threads = threads;
        Plan { tables: preset.tables.clone(), seeds: 1, jobs, preset }
    }

    #[test]
    fn a_preset_pins_the_threads_of_every_run_including_a_lone_cell() {
        // The preset's count wins over cores / jobs, for --cell (jobs 1) too.
        assert_eq!(run_threads(&plan(1, Some(1)), false, 16), Some(1));
        assert_eq!(run_threads(&plan(2, Some(1)), false, 2), Some(1));
        // Without it: cores / jobs in parallel, the run's own default alone.
        assert_eq!(run_threads(&plan(2, None), false, 2), Some(1));
        assert_eq!(run_threads(&plan(3, None), false, 2), Some(1));
        assert_eq!(run_threads(&plan(1, None), false, 16), None);
        // RAYON_NUM_THREADS set by the user: inherited, never overridden.
        assert_eq!(run_threads(&plan(2, Some(1)), true, 2), None);
    }

    #[test]
    fn a_slurm_array_covers_only_its_part_of_the_matrix() {
        let args = Args {
            preset: "demo".into(),
            tables: None,
            seeds: None,
            data_dir: "data".into(),
            out: "results".into(),
            jobs: None,
            cell: None,
            export_slurm: true,
            list: false,
        };
        let s = slurm_script(&plan(1, None), &args, 39..87, "the main rows", Path::new("/o"));
        assert!(s.contains("#SBATCH --array=39-86\n"), "{s}");
        assert!(s.contains("the main rows: 48 cells"), "{s}");
        let s = slurm_script(&plan(1, None), &args, 0..39, "the λ grid", Path::new("/o"));
        assert!(s.contains("#SBATCH --array=0-38\n"), "{s}");
    }
}
