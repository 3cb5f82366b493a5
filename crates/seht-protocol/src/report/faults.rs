//! The fault matrix of the files `cargo xtask` reads (issue 38 item 1):
//! `configs/presets.toml`, a table's method configs, the run records
//! (`metrics.json`, `log.jsonl`) read by the report and by the λ
//! selection, and the outputs `check-results` reads. Each file × each fault
//! that applies (missing, empty, truncated, a flipped byte, wrong type,
//! unknown field, out of range) must give an error naming the file (and
//! the field or row, where there is one) and what to do, with no panic and
//! the file left as it was. Prints the cases tried. The files `seht train`
//! reads have their matrix in seht-train (`tests/fault_matrix.rs`).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use super::tests::{finished, temp, write_run};
use super::*;
use crate::selection::grid_selection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Missing,
    Empty,
    Truncated,
    FlippedByte,
    WrongType,
    UnknownField,
    OutOfRange,
}

/// What reads the damaged file.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// `load_preset(root, "p")`.
    Preset,
    /// `matrix(…)` of preset `p` (reads the method configs).
    Matrix,
    /// The report's `collect` of table `t1`.
    Report,
    /// The λ selection of `t1/m`.
    Selection,
    /// `check-results` of the outputs folder.
    Check,
}

type Damage = Box<dyn Fn(&Path)>;

struct Case {
    file: &'static str,
    fault: Fault,
    reader: Reader,
    /// The damaged file, relative to the test's folder.
    at: &'static str,
    damage: Damage,
    /// What the message must hold besides the file's path.
    says: &'static [&'static str],
}

fn remove() -> Damage {
    Box::new(|p| std::fs::remove_file(p).expect("remove"))
}
fn empty() -> Damage {
    Box::new(|p| std::fs::write(p, b"").expect("empty"))
}
/// The file cut after its first `n` bytes.
fn cut(n: u64) -> Damage {
    Box::new(move |p| std::fs::OpenOptions::new().write(true).open(p).expect("open").set_len(n).expect("truncate"))
}
/// Byte `at` XOR `mask`.
fn flip(at: usize, mask: u8) -> Damage {
    Box::new(move |p| {
        let mut b = std::fs::read(p).expect("read");
        b[at] ^= mask;
        std::fs::write(p, b).expect("write")
    })
}
fn edit(from: &'static str, to: &'static str) -> Damage {
    Box::new(move |p| {
        let t = std::fs::read_to_string(p).expect("read");
        assert!(t.contains(from), "{}: no `{from}` in {t}", p.display());
        std::fs::write(p, t.replacen(from, to, 1)).expect("write")
    })
}

const PRESETS: &str = "[p]\ndescription = \"d\"\nexpected_minutes = 1\nseeds = 1\ndata = \"fixtures\"\ntables = [\"t1\"]\n\n\
[p.lambda_grid]\nvalues = [1e-3, 1e-1]\nmethods = [\"t1/m\"]\nvalidation = 32\nseeds = 1\n";
const METHOD: &str = "name = \"m\"\nseed = 0\nepochs = 1\n\n\
[data]\nkind = \"image\"\ndataset = \"fashion-mnist\"\ndir = \"d\"\nbatch_size = 8\ntrain_subset = 0\ntest_subset = 0\n\
validation = 0\ncrop_padding = 0\nhflip = false\nworkers = 1\n\n\
[model]\nkind = \"resnet\"\nwidths = [4, 4, 4, 4]\nblocks = [1, 1, 1, 1]\n\n\
[optim]\nlr = 0.1\nmomentum = 0.9\nweight_decay = 5e-4\nclip_grad_norm = 0.0\n\n[schedule]\nkind = \"cosine\"\n\n\
[regularizer]\nkind = \"seht\"\nestimator = { kind = \"hutchinson\", probes = 1, distribution = \"rademacher\" }\n\
lambda = 0.01\nevery = 1\nrescale = false\ngradient = { kind = \"exact-per-probe\" }\n\n\
[final_trace]\nbatches = 0\nprobes = 0\n";
const PRESET_FIX: &[&str] = &["configs/presets.toml", "git checkout"];
const RECORD_FIX: &[&str] = &["delete the run folder", "cargo xtask reproduce"];
const OUTPUT_FIX: &[&str] = &["rewrite the outputs with `cargo xtask reproduce`"];

fn cases() -> Vec<Case> {
    use Fault::*;
    let mut v = Vec::new();
    let mut add = |file, fault, reader, at, damage, says| v.push(Case { file, fault, reader, at, damage, says });
    let (presets, at) = ("configs/presets.toml", "root/configs/presets.toml");
    add(presets, Missing, Reader::Preset, at, remove(), &["cannot be read", "git checkout"] as &[&str]);
    add(presets, Empty, Reader::Preset, at, empty(), &["unknown preset `p`"]);
    add(presets, Truncated, Reader::Preset, at, cut(40), PRESET_FIX);
    add(presets, FlippedByte, Reader::Preset, at, flip(0, 0x01), PRESET_FIX);
    add(presets, WrongType, Reader::Preset, at, edit("seeds = 1", "seeds = \"one\""), &["seeds", "invalid type"]);
    add(
        presets,
        UnknownField,
        Reader::Preset,
        at,
        edit("seeds = 1", "seeds = 1\nseedz = 2"),
        &["seedz", "expected one of"],
    );
    add(presets, OutOfRange, Reader::Preset, at, edit("seeds = 1", "seeds = 0"), &["[p]", "must be at least 1"]);
    add(
        presets,
        OutOfRange,
        Reader::Preset,
        at,
        edit("validation = 32", "validation = 0"),
        &["[p]", "lambda_grid", "validation"],
    );
    add(
        presets,
        OutOfRange,
        Reader::Preset,
        at,
        edit("values = [1e-3", "values = [-1.0"),
        &["[p]", "lambda_grid", "≥ 0"],
    );
    add(
        presets,
        OutOfRange,
        Reader::Preset,
        at,
        edit("\"t1\"]\n", "\"t9\"]\n"),
        &["[p]", "configs/t9/ does not exist"],
    );
    add(
        presets,
        OutOfRange,
        Reader::Preset,
        at,
        edit("methods = [\"t1/m\"]", "methods = [\"t1/mm\"]"),
        &["[p]", "lambda_grid.methods", "`t1/mm` names no method config"],
    );

    let (method, at) = ("configs/<table>/<method>.toml", "root/configs/t1/m.toml");
    add(method, Truncated, Reader::Matrix, at, cut(6), &["m.toml", "not a TOML file", "git checkout"]);
    add(method, FlippedByte, Reader::Matrix, at, flip(4, 0x80), &["m.toml", "cannot be read", "git checkout"]);
    // Its fields are checked as the matrix reads it (seht-config; the
    // matrix of seht-train covers every field): the file is named.
    let invalid = &["m.toml", "not a valid config", "git checkout"];
    add(method, WrongType, Reader::Matrix, at, edit("epochs = 1", "epochs = \"1\""), invalid);
    add(method, UnknownField, Reader::Matrix, at, edit("epochs = 1", "epochs = 1\nepoch = 2"), invalid);
    add(
        method,
        OutOfRange,
        Reader::Matrix,
        at,
        edit("lambda = 0.01", "lambda = -1.0"),
        &["m.toml", "regularizer.lambda"],
    );

    // Run records read by the report.
    let (metrics, at) = ("runs/<run>/metrics.json", "out/runs/t1-m-s0/metrics.json");
    add(metrics, Missing, Reader::Report, at, remove(), RECORD_FIX);
    add(metrics, Empty, Reader::Report, at, empty(), RECORD_FIX);
    add(metrics, Truncated, Reader::Report, at, cut(50), RECORD_FIX);
    add(metrics, FlippedByte, Reader::Report, at, flip(0, 0x01), RECORD_FIX);
    add(
        metrics,
        WrongType,
        Reader::Report,
        at,
        edit("\"steps\": 20", "\"steps\": \"20\""),
        &["invalid type", "delete the run folder"],
    );
    add(
        metrics,
        OutOfRange,
        Reader::Report,
        at,
        edit("\"status\": \"finished\"", "\"status\": \"diverged\""),
        &["does not fit the record", "delete the run folder"],
    );
    let (log, at) = ("runs/<run>/log.jsonl", "out/runs/t1-m-s0/log.jsonl");
    add(log, Missing, Reader::Report, at, remove(), RECORD_FIX);
    add(log, Truncated, Reader::Report, at, cut(30), &["line 1", "delete the run folder"]);
    add(log, FlippedByte, Reader::Report, at, flip(0, 0x01), &["line 1", "delete the run folder"]);
    add(
        log,
        WrongType,
        Reader::Report,
        at,
        edit("\"epoch\":2", "\"epoch\":\"2\""),
        &["line 1", "invalid type", "delete the run folder"],
    );

    // The λ selection reads the grid runs' metrics.json.
    let (grid, at) = ("λ-grid runs/<run>/metrics.json", "out/runs/t1-m-grid-l1e-1-s0/metrics.json");
    add(grid, Missing, Reader::Selection, at, remove(), RECORD_FIX);
    add(grid, Truncated, Reader::Selection, at, cut(50), RECORD_FIX);
    add(grid, FlippedByte, Reader::Selection, at, flip(0, 0x01), RECORD_FIX);
    add(
        grid,
        WrongType,
        Reader::Selection,
        at,
        edit("\"steps\": 20", "\"steps\": -1"),
        &["invalid value", "delete the run folder"],
    );

    // The outputs check-results reads.
    for (file, at) in [
        ("summary.md", "out/summary.md"),
        ("training_time.md", "out/training_time.md"),
        ("hessian_trace.md", "out/hessian_trace.md"),
    ] {
        add(file, Missing, Reader::Check, at, remove(), OUTPUT_FIX);
        add(file, Empty, Reader::Check, at, empty(), &["it is empty", "cargo xtask reproduce"]);
    }
    let (csv, at) = ("<table>.csv", "out/t1.csv");
    add(csv, Missing, Reader::Check, at, remove(), OUTPUT_FIX);
    add(csv, Empty, Reader::Check, at, empty(), &["no header", "cargo xtask reproduce"]);
    add(csv, Truncated, Reader::Check, at, cut(40), &["no row for m", "cargo xtask reproduce"]);
    add(csv, FlippedByte, Reader::Check, at, flip(0, 0x01), &["no header", "cargo xtask reproduce"]);
    add(csv, WrongType, Reader::Check, at, edit(",0\n", ",x\n"), &["diverged = \"x\"", "cargo xtask reproduce"]);
    add(csv, OutOfRange, Reader::Check, at, edit(",0\n", ",5\n"), &["5 diverged of 1 seeds", "cargo xtask reproduce"]);
    add(
        csv,
        OutOfRange,
        Reader::Check,
        at,
        edit("test top-1 (%),80", "test top-1 (%),inf"),
        &["no finite mean", "cargo xtask reproduce"],
    );
    let (md, at) = ("<table>.md", "out/t1.md");
    add(md, Missing, Reader::Check, at, remove(), OUTPUT_FIX);
    add(md, Empty, Reader::Check, at, empty(), &["lacks rows", "cargo xtask reproduce"]);
    add(md, Truncated, Reader::Check, at, cut(20), &["lacks rows", "cargo xtask reproduce"]);
    let (svg, at) = ("<figure>.svg", "out/t1-figure.svg");
    add(svg, Missing, Reader::Check, at, remove(), OUTPUT_FIX);
    add(svg, Truncated, Reader::Check, at, cut(10), &["not an SVG document", "cargo xtask reproduce"]);
    add(svg, FlippedByte, Reader::Check, at, flip(1, 0x01), &["not an SVG document", "cargo xtask reproduce"]);
    let (png, at) = ("<figure>.png", "out/t1-figure.png");
    add(png, Missing, Reader::Check, at, remove(), OUTPUT_FIX);
    add(png, Empty, Reader::Check, at, empty(), &["not a PNG file", "cargo xtask reproduce"]);
    add(png, FlippedByte, Reader::Check, at, flip(0, 0x01), &["not a PNG file", "cargo xtask reproduce"]);
    let (lambda, at) = ("lambda.csv", "out/lambda.csv");
    add(lambda, Missing, Reader::Check, at, remove(), OUTPUT_FIX);
    add(lambda, Empty, Reader::Check, at, empty(), &["has no rows", "cargo xtask reproduce"]);
    add(lambda, WrongType, Reader::Check, at, edit(",1,0\n", ",1,x\n"), &["bad row", "cargo xtask reproduce"]);
    add(
        lambda,
        OutOfRange,
        Reader::Check,
        at,
        edit(",1,1,0\n", ",1,0,0\n"),
        &["selects no λ", "cargo xtask reproduce"],
    );
    v
}

/// A project root with the presets file and table `t1` (method `m`), and an
/// output folder with `m`'s run, a λ-grid run, and outputs check-results
/// accepts.
fn fixture(base: &Path) -> (PathBuf, PathBuf) {
    let (root, out) = (base.join("root"), base.join("out"));
    std::fs::create_dir_all(root.join("configs/t1")).expect("configs");
    std::fs::write(root.join("configs/presets.toml"), PRESETS).expect("presets");
    std::fs::write(root.join("configs/t1/m.toml"), METHOD).expect("method");
    write_run(&out, "t1", "m", 0, None, finished("t1-m-s0", 0.8, None));
    for l in [1e-3, 1e-1] {
        write_run(&out, "t1", "m", 0, Some(l), finished(&format!("t1-m-grid-l{l:e}-s0"), 0.8, Some(0.5 + l)));
    }
    let top1 = findings::Quality::Top1.label();
    for (f, text) in [
        ("summary.md", "# summary\n\n- [lambda.md](lambda.md)\n".to_string()),
        ("training_time.md", "# time\n".into()),
        ("hessian_trace.md", "# trace\n".into()),
        ("t1.csv", format!("table,method,column,mean,std,seeds,a,b,c,status,diverged\nt1,m,{top1},80,0,1,,,,run,0\n")),
        ("t1.md", "# t1\n\n| method | top-1 |\n|---|---|\n| m | 80 |\n".into()),
        ("t1-figure.svg", "<svg></svg>".into()),
        ("lambda.csv", "table,method,lambda,metric,mean,std,seeds,selected,diverged\nt1,m,1e-3,v,50,0,1,0,0\nt1,m,1e-1,v,60,0,1,1,0\n".into()),
    ] {
        std::fs::write(out.join(f), text).expect("output");
    }
    std::fs::write(out.join("t1-figure.png"), b"\x89PNG\r\n").expect("png");
    assert_eq!(figure_stem("t1"), "t1-figure", "the fixture's figure name");
    (root, out)
}

/// Reads the files as `reader` does.
fn read_as(reader: Reader, root: &Path, out: &Path) -> Result<()> {
    let preset = || crate::preset::load_preset(root, "p");
    let cells = || -> Result<Vec<Cell>> {
        let p = preset()?;
        crate::preset::matrix(
            &crate::preset::MatrixSpec {
                root,
                preset: &p,
                tables: &p.tables,
                seeds: 1,
                data_dir: out,
                out: &out.join("matrix"),
                write: true,
            },
            &mut Default::default(),
        )
    };
    match reader {
        Reader::Preset => preset().map(|_| ()),
        Reader::Matrix => cells().map(|_| ()),
        Reader::Report => collect(out, &cells()?, "t1").map(|_| ()),
        Reader::Selection => {
            let cells = cells()?;
            let grid: Vec<&Cell> = cells.iter().filter(|c| c.grid_lambda.is_some()).collect();
            grid_selection(out, &grid, "t1", "m").map(|_| ())
        }
        Reader::Check => {
            let args =
                CheckArgs { dir: out.to_path_buf(), preset: None, tables: Some(vec!["t1".into()]), seeds: Some(1) };
            check(root, &args).map(|_| ())
        }
    }
}

#[test]
fn every_file_xtask_reads_damaged_every_way_is_named_with_the_way_out() {
    let base = temp("faults-base");
    let (root, out) = fixture(&base);
    for reader in [Reader::Preset, Reader::Matrix, Reader::Report, Reader::Selection, Reader::Check] {
        read_as(reader, &root, &out).unwrap_or_else(|e| panic!("the undamaged fixture, {reader:?}: {e:#}"));
    }
    let cases = cases();
    let mut failures = Vec::new();
    let mut tried: BTreeMap<&str, Vec<Fault>> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        tried.entry(case.file).or_default().push(case.fault);
        let what = format!("case {i}: {} / {:?}", case.file, case.fault);
        let dir = temp(&format!("faults-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let (root, out) = fixture(&dir);
        let target = dir.join(case.at);
        (case.damage)(&target);
        let damaged = std::fs::read(&target).ok();
        match std::panic::catch_unwind(AssertUnwindSafe(|| read_as(case.reader, &root, &out))) {
            Err(_) => failures.push(format!("{what}: panicked")),
            Ok(Ok(())) => failures.push(format!("{what}: accepted")),
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                let mut missing: Vec<&str> = case.says.iter().copied().filter(|s| !msg.contains(s)).collect();
                if !msg.contains(&target.display().to_string()) {
                    missing.push("the file's path");
                }
                if !missing.is_empty() {
                    failures.push(format!("{what}: {missing:?} missing from: {msg}"));
                }
            }
        }
        if std::fs::read(&target).ok() != damaged {
            failures.push(format!("{what}: the file was changed by reading it"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&base);
    let summary: Vec<String> = tried.iter().map(|(f, faults)| format!("{f}: {faults:?}")).collect();
    eprintln!(
        "fault matrix (cargo xtask): {} cases over {} files, {} failed\n  {}",
        cases.len(),
        tried.len(),
        failures.len(),
        summary.join("\n  ")
    );
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
