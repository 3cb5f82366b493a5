//! The fault matrix of the files `seht train` reads (issue 38 item 1): each
//! file × each fault that applies to it (missing, empty, truncated, a
//! flipped byte, wrong type, unknown field, out of range) gives a typed
//! error whose message names the file (and the field, where there is one)
//! and what to do, with no panic and every other file of the run folder
//! left as it was; or, where the fault loses nothing (a missing
//! `metrics.json` beside a final checkpoint, an unknown key of a record),
//! the run ends exactly as the undamaged one did. Prints the cases tried.
//!
//! Files: the experiment config (TOML), the run folder's `config.toml`
//! copy, `checkpoint/state.json`, the checkpoint's tensor file,
//! `metrics.json`, `log.jsonl`, and the data formats (CIFAR binary,
//! Fashion-MNIST gzipped IDX, WikiText text). The files `cargo xtask`
//! reads (presets, results) have their matrix in xtask (`faults.rs`).

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use common::*;
use seht_train::config::{DataConfig, ImageDataset, Regularizer};
use seht_train::{Error, ExperimentConfig, Metrics};

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

/// The state of the run folder a case damages.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Folder {
    /// No run folder yet (the data or the config is damaged).
    Fresh,
    /// Stopped after epoch 1 of 2 (a checkpoint to resume).
    Stopped,
    /// Finished, with its checkpoint.
    Finished,
    /// Finished, its checkpoint removed (results committed without it).
    Committed,
}

/// What a case must give.
#[derive(Debug, Clone)]
enum Expect {
    /// An error of this kind whose message holds each string.
    Refused(fn(&Error) -> bool, Vec<String>),
    /// The run ends as the undamaged run did (the fault loses nothing).
    SameResult,
}

/// A damage: what it does to the file at the path.
type Damage = Box<dyn Fn(&Path)>;

struct Case {
    file: &'static str,
    fault: Fault,
    folder: Folder,
    /// The image data set (CIFAR-10 or Fashion-MNIST) or text.
    task: Task,
    /// The damaged file: in the data folder (`data/…`) or the run folder (`run/…`).
    at: &'static str,
    damage: Damage,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Task {
    Cifar,
    Fashion,
    Text,
}

// ---- damages ----

fn remove() -> Damage {
    Box::new(|p| std::fs::remove_file(p).expect("remove"))
}
fn empty() -> Damage {
    Box::new(|p| std::fs::write(p, b"").expect("empty"))
}
/// Cut to `num/den` of its length.
fn truncate(num: u64, den: u64) -> Damage {
    Box::new(move |p| {
        let len = std::fs::metadata(p).expect("file").len();
        std::fs::OpenOptions::new().write(true).open(p).expect("open").set_len(len * num / den).expect("truncate")
    })
}
/// One byte cut off the end.
fn one_byte_short() -> Damage {
    Box::new(|p| {
        let len = std::fs::metadata(p).expect("file").len();
        std::fs::OpenOptions::new().write(true).open(p).expect("open").set_len(len - 1).expect("truncate")
    })
}
/// Byte `at` (from the end when negative) XOR `mask`.
fn flip(at: i64, mask: u8) -> Damage {
    Box::new(move |p| {
        let mut b = std::fs::read(p).expect("read");
        let i = if at < 0 { b.len() - at.unsigned_abs() as usize } else { at as usize };
        b[i] ^= mask;
        std::fs::write(p, b).expect("write")
    })
}
/// The first `from` replaced by `to` in a text file.
fn edit(from: &'static str, to: &'static str) -> Damage {
    Box::new(move |p| {
        let t = std::fs::read_to_string(p).expect("read");
        assert!(t.contains(from), "{}: no `{from}` to replace", p.display());
        std::fs::write(p, t.replacen(from, to, 1)).expect("write")
    })
}
/// Replaced by `bytes`.
fn replace_with(bytes: Vec<u8>) -> Damage {
    Box::new(move |p| std::fs::write(p, &bytes).expect("write"))
}
/// Each tensor of a safetensors file changed by `f`, and the checksum in
/// `state.json` beside it updated, as a tool that rewrote both would.
fn rewrite_tensors(f: fn(&mut BTreeMap<String, candle_core::Tensor>)) -> Damage {
    Box::new(move |p| {
        let mut t: BTreeMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(p, &candle_core::Device::Cpu).expect("load").into_iter().collect();
        f(&mut t);
        save_checkpoint_tensors(p, &t.into_iter().collect());
    })
}

// ---- expectations ----

fn is_config_parse(e: &Error) -> bool {
    matches!(e, Error::Config(seht_train::config::Error::ConfigParse { .. }))
}
fn is_config(e: &Error) -> bool {
    matches!(e, Error::Config(seht_train::config::Error::Config { path: Some(_), .. }))
}
fn is_ckpt(e: &Error) -> bool {
    matches!(e, Error::CheckpointDamaged { .. })
}
fn is_record(e: &Error) -> bool {
    matches!(e, Error::RunFileDamaged { .. })
}
fn is_data(e: &Error) -> bool {
    matches!(e, Error::Data(_))
}

fn refused(kind: fn(&Error) -> bool, says: &[&str]) -> Expect {
    Expect::Refused(kind, says.iter().map(|s| s.to_string()).collect())
}

const CKPT_FIX: &[&str] = &["damaged checkpoint", "delete the run folder", "restore the file"];
const RECORD_FIX: &[&str] = &["damaged run record", "restore the file", "delete the run folder"];
const DATA_FIX: &str = "restore it, or fetch the dataset again";

fn cases() -> Vec<Case> {
    use Fault::*;
    let mut v = Vec::new();
    let mut add = |file, fault, folder, task, at, damage, expect| {
        v.push(Case { file, fault, folder, task, at, damage, expect });
    };
    // The experiment config given to `seht train` (read by from_file).
    let cfg = "config (TOML)";
    let at = "config";
    add(
        cfg,
        Missing,
        Folder::Fresh,
        Task::Cifar,
        at,
        remove(),
        refused(is_config_parse, &["no such file", "give the path"]),
    );
    add(cfg, Empty, Folder::Fresh, Task::Cifar, at, empty(), refused(is_config_parse, &["missing field `name`"]));
    add(cfg, Truncated, Folder::Fresh, Task::Cifar, at, truncate(1, 3), refused(is_config_parse, &["missing field"]));
    // `name = …` becomes `oame = …`.
    add(
        cfg,
        FlippedByte,
        Folder::Fresh,
        Task::Cifar,
        at,
        flip(0, 0x01),
        refused(is_config_parse, &["unknown field `oame`", "expected one of"]),
    );
    add(
        cfg,
        WrongType,
        Folder::Fresh,
        Task::Cifar,
        at,
        edit("epochs = 2", "epochs = \"two\""),
        refused(is_config_parse, &["epochs", "invalid type", "expected"]),
    );
    add(
        cfg,
        UnknownField,
        Folder::Fresh,
        Task::Cifar,
        at,
        edit("hflip = true", "hflip = true\nvflip = true"),
        refused(is_config_parse, &["unknown field `vflip`", "expected one of"]),
    );
    add(
        cfg,
        OutOfRange,
        Folder::Fresh,
        Task::Cifar,
        at,
        edit("epochs = 2", "epochs = 0"),
        refused(is_config, &["field `epochs` = 0", "must be at least 1"]),
    );
    add(
        cfg,
        OutOfRange,
        Folder::Fresh,
        Task::Cifar,
        at,
        edit("lr = 0.05", "lr = -1.0"),
        refused(is_config, &["optim.lr"]),
    );

    // The run folder's config.toml, where it is the only record of which
    // config a run's results are (results committed without checkpoints).
    let copy = "run folder config.toml";
    let at = "run/config.toml";
    let c = Folder::Committed;
    add(copy, Missing, c, Task::Cifar, at, remove(), refused(is_record, &[&["missing"], RECORD_FIX].concat()));
    add(
        copy,
        Empty,
        c,
        Task::Cifar,
        at,
        empty(),
        refused(is_record, &[&["missing field `name`"], RECORD_FIX].concat()),
    );
    add(copy, Truncated, c, Task::Cifar, at, truncate(1, 3), refused(is_record, RECORD_FIX));
    add(copy, FlippedByte, c, Task::Cifar, at, flip(0, 0x01), refused(is_record, &[&["oame"], RECORD_FIX].concat()));
    add(
        copy,
        WrongType,
        c,
        Task::Cifar,
        at,
        edit("epochs = 2", "epochs = \"two\""),
        refused(is_record, &[&["epochs"], RECORD_FIX].concat()),
    );
    add(
        copy,
        UnknownField,
        c,
        Task::Cifar,
        at,
        edit("hflip = true", "hflip = true\nvflip = true"),
        refused(is_record, &[&["vflip"], RECORD_FIX].concat()),
    );
    add(
        copy,
        OutOfRange,
        c,
        Task::Cifar,
        at,
        edit("epochs = 2", "epochs = 0"),
        refused(is_record, &[&["epochs"], RECORD_FIX].concat()),
    );

    // checkpoint/state.json of a run stopped after epoch 1 of 2.
    let state = "checkpoint/state.json";
    let at = "run/checkpoint/state.json";
    let s = Folder::Stopped;
    // No state.json is no checkpoint: the run starts over, to the same end.
    add(state, Missing, s, Task::Cifar, at, remove(), Expect::SameResult);
    add(state, Empty, s, Task::Cifar, at, empty(), refused(is_ckpt, CKPT_FIX));
    add(state, Truncated, s, Task::Cifar, at, truncate(1, 2), refused(is_ckpt, CKPT_FIX));
    add(state, FlippedByte, s, Task::Cifar, at, flip(0, 0x01), refused(is_ckpt, CKPT_FIX));
    add(
        state,
        WrongType,
        s,
        Task::Cifar,
        at,
        edit("\"epochs_done\": 1", "\"epochs_done\": \"one\""),
        refused(is_ckpt, &[&["invalid type"], CKPT_FIX].concat()),
    );
    // A key it does not know is ignored (records read forward-compatibly).
    add(
        state,
        UnknownField,
        s,
        Task::Cifar,
        at,
        edit("\"epochs_done\": 1", "\"epochs_done\": 1, \"note\": 0"),
        Expect::SameResult,
    );
    add(
        state,
        OutOfRange,
        s,
        Task::Cifar,
        at,
        edit("\"epochs_done\": 1", "\"epochs_done\": 9"),
        refused(is_ckpt, &[&["epochs_done = 9"], CKPT_FIX].concat()),
    );
    add(
        state,
        OutOfRange,
        s,
        Task::Cifar,
        at,
        edit("\"ckpt-0001.safetensors\"", "\"../metrics.json\""),
        refused(is_ckpt, &[&["is not a tensor file"], CKPT_FIX].concat()),
    );

    // The checkpoint's tensor file.
    let tensors = "checkpoint tensors (safetensors)";
    let at = "run/checkpoint/ckpt-0001.safetensors";
    add(tensors, Missing, s, Task::Cifar, at, remove(), refused(is_ckpt, CKPT_FIX));
    add(tensors, Empty, s, Task::Cifar, at, empty(), refused(is_ckpt, CKPT_FIX));
    add(tensors, Truncated, s, Task::Cifar, at, truncate(1, 2), refused(is_ckpt, CKPT_FIX));
    // A byte of the last tensor's data: a safetensors file still, other weights.
    add(tensors, FlippedByte, s, Task::Cifar, at, flip(-3, 0x10), refused(is_ckpt, &[&["SHA-256"], CKPT_FIX].concat()));
    add(tensors, FlippedByte, s, Task::Cifar, at, flip(0, 0x01), refused(is_ckpt, CKPT_FIX));
    add(
        tensors,
        WrongType,
        s,
        Task::Cifar,
        at,
        rewrite_tensors(|t| {
            for v in t.values_mut() {
                *v = v.to_dtype(candle_core::DType::F64).expect("f64");
            }
        }),
        refused(is_ckpt, &[&["F64", "the config's model needs F32"], CKPT_FIX].concat()),
    );
    add(
        tensors,
        WrongType,
        s,
        Task::Cifar,
        at,
        rewrite_tensors(|t| {
            let k = t.keys().find(|k| k.starts_with("model.")).cloned().expect("a variable");
            t.insert(k, candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).expect("t"));
        }),
        refused(is_ckpt, &[&["needs F32"], CKPT_FIX].concat()),
    );
    add(
        tensors,
        UnknownField,
        s,
        Task::Cifar,
        at,
        rewrite_tensors(|t| {
            t.insert(
                "extra".into(),
                candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).expect("t"),
            );
        }),
        Expect::SameResult,
    );
    add(
        tensors,
        WrongType,
        s,
        Task::Cifar,
        at,
        rewrite_tensors(|t| {
            let k = t.keys().find(|k| k.starts_with("model.")).cloned().expect("a variable");
            t.remove(&k);
        }),
        refused(is_ckpt, &[&["no tensor model."], CKPT_FIX].concat()),
    );

    // metrics.json of a finished run (with its checkpoint).
    let metrics = "metrics.json";
    let at = "run/metrics.json";
    let f = Folder::Finished;
    // Recomputed from the final checkpoint and the log.
    add(metrics, Missing, f, Task::Cifar, at, remove(), Expect::SameResult);
    add(metrics, Empty, f, Task::Cifar, at, empty(), refused(is_record, RECORD_FIX));
    add(metrics, Truncated, f, Task::Cifar, at, truncate(1, 2), refused(is_record, RECORD_FIX));
    add(metrics, FlippedByte, f, Task::Cifar, at, flip(0, 0x01), refused(is_record, RECORD_FIX));
    add(
        metrics,
        WrongType,
        f,
        Task::Cifar,
        at,
        edit("\"steps\": ", "\"steps\": \"x\", \"_\": "),
        refused(is_record, &[&["invalid type"], RECORD_FIX].concat()),
    );
    add(metrics, UnknownField, f, Task::Cifar, at, edit("\"steps\": ", "\"note\": 1, \"steps\": "), Expect::SameResult);
    add(
        metrics,
        OutOfRange,
        f,
        Task::Cifar,
        at,
        edit("\"status\": \"finished\"", "\"status\": \"diverged\""),
        refused(is_record, &[&["does not fit the record"], RECORD_FIX].concat()),
    );
    // Results committed without their checkpoint: a missing record is
    // trained again (to the same end); a damaged one is refused, since
    // training again would replace its log.
    add(metrics, Missing, Folder::Committed, Task::Cifar, at, remove(), Expect::SameResult);
    add(metrics, Truncated, Folder::Committed, Task::Cifar, at, truncate(1, 2), refused(is_record, RECORD_FIX));

    // log.jsonl of a run stopped after epoch 1 of 2: the final metrics'
    // best epoch is read from it on resume.
    let log = "log.jsonl";
    let at = "run/log.jsonl";
    add(
        log,
        Missing,
        s,
        Task::Cifar,
        at,
        remove(),
        refused(is_record, &[&["holds epochs []", "1 epochs done"], RECORD_FIX].concat()),
    );
    add(log, Empty, s, Task::Cifar, at, empty(), refused(is_record, &[&["holds epochs []"], RECORD_FIX].concat()));
    add(log, Truncated, s, Task::Cifar, at, truncate(1, 2), refused(is_record, RECORD_FIX));
    add(log, FlippedByte, s, Task::Cifar, at, flip(0, 0x01), refused(is_record, &[&["line 1"], RECORD_FIX].concat()));
    add(
        log,
        WrongType,
        s,
        Task::Cifar,
        at,
        edit("\"epoch\":1", "\"epoch\":\"one\""),
        refused(is_record, &[&["line 1", "invalid type"], RECORD_FIX].concat()),
    );
    add(log, UnknownField, s, Task::Cifar, at, edit("\"epoch\":1", "\"note\":0,\"epoch\":1"), Expect::SameResult);
    add(
        log,
        OutOfRange,
        s,
        Task::Cifar,
        at,
        edit("\"epoch\":1", "\"epoch\":7"),
        refused(is_record, &[&["holds epochs []"], RECORD_FIX].concat()),
    );

    // CIFAR-10 binary: 3073-byte records, label first.
    let cifar = "CIFAR-10 binary";
    let at = "data/cifar-10-batches-bin/data_batch_1.bin";
    let d = Folder::Fresh;
    add(cifar, Missing, d, Task::Cifar, at, remove(), refused(is_data, &["missing", "cargo xtask fetch-data"]));
    add(cifar, Empty, d, Task::Cifar, at, empty(), refused(is_data, &["0 bytes", DATA_FIX]));
    add(cifar, Truncated, d, Task::Cifar, at, one_byte_short(), refused(is_data, &["3073-byte records", DATA_FIX]));
    add(cifar, FlippedByte, d, Task::Cifar, at, flip(0, 0x80), refused(is_data, &["record 0 has label", DATA_FIX]));
    // A CIFAR-100 file (3074-byte records) in its place.
    add(
        cifar,
        WrongType,
        d,
        Task::Cifar,
        at,
        replace_with(vec![1; 4 * 3074]),
        refused(is_data, &["3073-byte records", DATA_FIX]),
    );
    add(
        cifar,
        OutOfRange,
        d,
        Task::Cifar,
        at,
        Box::new(|p: &Path| {
            let mut b = std::fs::read(p).expect("read");
            b[3073] = 10;
            std::fs::write(p, b).expect("write");
        }),
        refused(is_data, &["record 1 has label 10", DATA_FIX]),
    );

    // Fashion-MNIST: gzipped IDX files.
    let fashion = "Fashion-MNIST IDX gz";
    let at = "data/fashion/train-images-idx3-ubyte.gz";
    let labels = "data/fashion/train-labels-idx1-ubyte.gz";
    add(fashion, Missing, d, Task::Fashion, at, remove(), refused(is_data, &["missing", "dataset-fashion-mnist"]));
    add(fashion, Empty, d, Task::Fashion, at, empty(), refused(is_data, &[DATA_FIX]));
    add(fashion, Truncated, d, Task::Fashion, at, truncate(1, 2), refused(is_data, &["gzip", DATA_FIX]));
    add(fashion, FlippedByte, d, Task::Fashion, at, flip(-6, 0x01), refused(is_data, &["gzip", DATA_FIX]));
    // The labels file in the images' place.
    add(
        fashion,
        WrongType,
        d,
        Task::Fashion,
        at,
        Box::new(move |p: &Path| {
            std::fs::copy(p.with_file_name("train-labels-idx1-ubyte.gz"), p).expect("copy");
        }),
        refused(is_data, &["expected 3-D images", DATA_FIX]),
    );
    add(
        fashion,
        OutOfRange,
        d,
        Task::Fashion,
        labels,
        replace_with(seht_data::fixtures::gzip(&seht_data::fixtures::idx(&[8], &[0, 1, 2, 3, 4, 5, 6, 12]))),
        refused(is_data, &["label 12", DATA_FIX]),
    );

    // WikiText: UTF-8 text, three splits.
    let text = "WikiText tokens";
    let at = "data/wikitext-2/wiki.train.tokens";
    add(text, Missing, d, Task::Text, at, remove(), refused(is_data, &["missing", "WikiText-2 layout"]));
    add(text, Empty, d, Task::Text, at, empty(), refused(is_data, &["the split is empty", "restore the file"]));
    // An ASCII byte with its high bit set: no longer UTF-8.
    add(text, FlippedByte, d, Task::Text, at, flip(5, 0x80), refused(is_data, &["not UTF-8", DATA_FIX]));
    add(
        text,
        WrongType,
        d,
        Task::Text,
        at,
        replace_with(seht_data::fixtures::gzip(b"the cat sat")),
        refused(is_data, &["not UTF-8", DATA_FIX]),
    );
    v
}

// ---- running the cases ----

fn config_for(task: Task) -> ExperimentConfig {
    let mut cfg = match task {
        Task::Text => text_config("fault", Regularizer::Baseline, 2),
        _ => image_config("fault", Regularizer::Baseline, 2),
    };
    if let (Task::Fashion, DataConfig::Image(d)) = (task, &mut cfg.data) {
        d.dataset = ImageDataset::FashionMnist;
        d.dir = "fashion".into();
        d.crop_padding = 0;
        d.hflip = false;
    }
    cfg.final_trace.batches = 0;
    cfg
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// Every file under `dir` (but the lock), relative path → bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if e.file_name() != ".lock" {
                out.insert(p.strip_prefix(root).expect("under root").to_path_buf(), std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A result without its timings and its data folder (each case has its own).
fn untimed(m: &Metrics) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["train_seconds", "seconds_per_epoch", "seconds_per_step"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(m).expect("json");
    strip(&mut v);
    v.as_object_mut().expect("an object").remove("data");
    v
}

#[test]
fn every_file_damaged_every_way_is_named_with_the_way_out() {
    let data = temp_dir("faults-data");
    write_cifar10(data.path(), 4);
    seht_data::fixtures::fashion_mnist(data.path(), 8, 8).expect("fashion fixture");
    write_text(data.path());
    let train = |cfg: &ExperimentConfig, data: &Path, out: &Path, stop| {
        let mut o = opts(data, out);
        o.stop_after_epochs = stop;
        seht_train::train(cfg, &o)
    };
    // The undamaged folders, and the undamaged result.
    let cfg = config_for(Task::Cifar);
    let (stopped, finished) = (temp_dir("faults-stopped"), temp_dir("faults-finished"));
    assert!(train(&cfg, data.path(), stopped.path(), Some(1)).expect("epoch 1").is_none());
    let reference = train(&cfg, data.path(), finished.path(), None).expect("run").expect("finished");
    let run = |folder: Folder| match folder {
        Folder::Stopped => Some(stopped.path().join("fault")),
        Folder::Finished | Folder::Committed => Some(finished.path().join("fault")),
        Folder::Fresh => None,
    };

    let cases = cases();
    let mut failures = Vec::new();
    let mut tried: BTreeMap<&str, Vec<Fault>> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        tried.entry(case.file).or_default().push(case.fault);
        let what = format!("case {i}: {} / {:?} ({})", case.file, case.fault, case.at);
        let (case_data, out) = (temp_dir("fault-case-data"), temp_dir("fault-case-out"));
        copy_dir(data.path(), case_data.path());
        let cfg = config_for(case.task);
        let config = case_data.path().join("exp.toml");
        std::fs::write(&config, cfg.to_toml()).expect("config");
        let dir = out.path().join("fault");
        if let Some(from) = run(case.folder) {
            copy_dir(&from, &dir);
            if case.folder == Folder::Committed {
                std::fs::remove_dir_all(dir.join("checkpoint")).expect("no checkpoint");
            }
        }
        let target = match case.at.split_once('/') {
            Some(("data", rest)) => case_data.path().join(rest),
            Some(("run", rest)) => dir.join(rest),
            _ => config.clone(),
        };
        (case.damage)(&target);
        let before = snapshot(&dir);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let cfg = ExperimentConfig::from_file(&config)?;
            train(&cfg, case_data.path(), out.path(), None)
        }));
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                failures.push(format!("{what}: panicked"));
                continue;
            }
        };
        match (&case.expect, result) {
            (Expect::Refused(kind, says), Err(e)) => {
                let msg = e.to_string();
                let mut missing: Vec<&str> = says.iter().map(String::as_str).filter(|s| !msg.contains(s)).collect();
                if !msg.contains(&target.display().to_string()) {
                    missing.push("the file's path");
                }
                if !kind(&e) {
                    failures.push(format!("{what}: wrong kind of error {e:?}"));
                } else if !missing.is_empty() {
                    failures.push(format!("{what}: {missing:?} missing from: {msg}"));
                }
                // Nothing already written is lost or half-written.
                let after = snapshot(&dir);
                let changed: Vec<_> = before
                    .iter()
                    .filter(|(p, b)| after.get(*p) != Some(*b) && !target.ends_with(p))
                    .map(|(p, _)| p.clone())
                    .collect();
                if !changed.is_empty() {
                    failures.push(format!("{what}: refused, but changed or removed {changed:?}"));
                }
            }
            (Expect::Refused(..), Ok(m)) => failures.push(format!("{what}: accepted ({:?})", m.map(|m| m.status))),
            (Expect::SameResult, Ok(Some(m))) if untimed(&m) == untimed(&reference) => {}
            (Expect::SameResult, Ok(m)) => {
                failures.push(format!("{what}: a result other than the undamaged run's: {m:?}"))
            }
            (Expect::SameResult, Err(e)) => failures.push(format!("{what}: refused: {e}")),
        }
    }
    let files = tried.len();
    let summary: Vec<String> = tried.iter().map(|(f, faults)| format!("{f}: {faults:?}")).collect();
    eprintln!(
        "fault matrix (seht train): {} cases over {files} files, {} failed\n  {}",
        cases.len(),
        failures.len(),
        summary.join("\n  ")
    );
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
