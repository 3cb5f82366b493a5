//! Faults of a run folder (issue 38): a second writer is refused naming the
//! folder and the holder; a lock left by an ended process is taken over; a
//! finished run is reported without loading its checkpoint; a damaged
//! checkpoint is named with the way out.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::*;
use seht_train::config::Regularizer;
use seht_train::{Error, ExperimentConfig, Metrics};

/// A tiny baseline run of `epochs` epochs on 4 images per CIFAR file.
fn tiny(name: &str, epochs: usize) -> ExperimentConfig {
    let mut cfg = image_config(name, Regularizer::Baseline, epochs);
    cfg.final_trace.batches = 0;
    cfg
}

fn train(cfg: &ExperimentConfig, data: &Path, out: &Path, stop: Option<usize>) -> Result<Option<Metrics>, Error> {
    let mut o = opts(data, out);
    o.stop_after_epochs = stop;
    seht_train::train(cfg, &o)
}

/// Holds `<dir>/.lock` as another writer would, with its id written in.
fn hold_lock(dir: &Path, text: &str) -> File {
    std::fs::create_dir_all(dir).expect("run dir");
    let mut f =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(".lock")).expect("open");
    f.try_lock().expect("the test takes the lock first");
    f.write_all(text.as_bytes()).expect("write id");
    f
}

#[test]
fn a_second_writer_is_refused_naming_the_folder_and_the_holder() {
    let (data, out) = (temp_dir("lock-data"), temp_dir("lock-out"));
    write_cifar10(data.path(), 4);
    let cfg = tiny("locked", 1);
    let dir = out.path().join("locked");
    let held = hold_lock(&dir, "pid 4242\nhost elsewhere\n");
    let e = train(&cfg, data.path(), out.path(), None).expect_err("a locked run folder is refused");
    assert!(matches!(&e, Error::RunLocked { dir: d, .. } if d == &dir), "{e:?}");
    let msg = e.to_string();
    for says in [dir.display().to_string().as_str(), "process 4242", "host elsewhere", "wait", "run again"] {
        assert!(msg.contains(says), "`{says}` missing from: {msg}");
    }
    assert!(!dir.join("checkpoint").exists() && !dir.join("log.jsonl").exists(), "nothing was written");
    // Released, the folder trains.
    drop(held);
    let m = train(&cfg, data.path(), out.path(), None).expect("unlocked").expect("finished");
    assert_eq!(m.final_epoch.map(|r| r.epoch), Some(1));
}

#[test]
fn a_lock_file_of_an_ended_process_is_taken_over_and_released_at_the_end() {
    let (data, out) = (temp_dir("stale-data"), temp_dir("stale-out"));
    write_cifar10(data.path(), 4);
    let cfg = tiny("stale", 2);
    let dir = out.path().join("stale");
    // What a killed writer leaves: the file with its id, no lock held.
    drop(hold_lock(&dir, "pid 999999999\nhost gone\n"));
    assert!(train(&cfg, data.path(), out.path(), Some(1)).expect("taken over").is_none(), "stopped after epoch 1");
    let text = std::fs::read_to_string(dir.join(".lock")).expect("lock file");
    assert!(text.starts_with(&format!("pid {}\n", std::process::id())), "the new holder's id: {text:?}");
    // The lock went with the (stopped) session: the run resumes to the end.
    let m = train(&cfg, data.path(), out.path(), None).expect("resumed").expect("finished");
    assert_eq!(m.final_epoch.map(|r| r.epoch), Some(2));
    File::open(dir.join(".lock")).expect("open").try_lock().expect("released after the run");
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).expect("file").len();
    OpenOptions::new().write(true).open(path).expect("open").set_len(len / 2).expect("truncate");
}

#[test]
fn a_finished_run_is_reported_without_loading_its_checkpoint() {
    let (data, out) = (temp_dir("fin-data"), temp_dir("fin-out"));
    write_cifar10(data.path(), 4);
    let cfg = tiny("fin", 2);
    let m = train(&cfg, data.path(), out.path(), None).expect("trained").expect("finished");
    truncate(&out.path().join("fin/checkpoint/ckpt-0002.safetensors"));
    let again = train(&cfg, data.path(), out.path(), None).expect("reported despite the damaged checkpoint");
    assert_eq!(again, Some(m));
}

/// The error of resuming a run (stopped after epoch 1 of 2) whose `file`
/// in `checkpoint/` was damaged by `damage`.
fn resume_damaged(tag: &str, file: &str, damage: fn(&Path)) -> (Error, std::path::PathBuf, TempDir) {
    let (data, out) = (temp_dir(&format!("{tag}-data")), temp_dir(&format!("{tag}-out")));
    write_cifar10(data.path(), 4);
    let cfg = tiny(tag, 2);
    assert!(train(&cfg, data.path(), out.path(), Some(1)).expect("epoch 1").is_none());
    let path = out.path().join(tag).join("checkpoint").join(file);
    damage(&path);
    let e = train(&cfg, data.path(), out.path(), None).expect_err("a damaged checkpoint is refused");
    (e, path, out)
}

fn assert_names_file_and_way_out(e: &Error, path: &Path, run_dir: &Path) {
    let msg = e.to_string();
    assert!(matches!(e, Error::CheckpointDamaged { path: p, .. } if p == path), "{e:?}");
    for says in [path.display().to_string(), format!("delete the run folder {}", run_dir.display()), "restore".into()] {
        assert!(msg.contains(&says), "`{says}` missing from: {msg}");
    }
}

#[test]
fn a_truncated_checkpoint_names_the_file_and_the_way_out() {
    let (e, path, out) = resume_damaged("trunc", "ckpt-0001.safetensors", truncate);
    assert_names_file_and_way_out(&e, &path, &out.path().join("trunc"));
}

#[test]
fn a_flipped_byte_in_state_json_names_the_file_and_the_way_out() {
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).expect("state.json");
        bytes[0] ^= 0x01; // `{` becomes `z`
        std::fs::write(path, bytes).expect("write");
    };
    let (e, path, out) = resume_damaged("flip", "state.json", flip);
    assert_names_file_and_way_out(&e, &path, &out.path().join("flip"));
}

#[test]
fn a_second_writer_of_an_analysis_folder_is_refused_naming_the_folder_and_the_holder() {
    let (data, out) = (temp_dir("alock-data"), temp_dir("alock-out"));
    write_cifar10(data.path(), 4);
    let cfg = tiny("alock", 1);
    train(&cfg, data.path(), out.path(), None).expect("trained").expect("finished");
    let target = out.path().join("analysis");
    let held = hold_lock(&target, "pid 4343\nhost elsewhere\n");
    let analyze = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seht"))
            .args(["analyze", "--quiet", "--mode", "eval", "--batches", "1", "--trace-probes", "2", "--top-k", "1"])
            .args(["--lanczos-steps", "4", "--slq-probes", "1", "--slq-steps", "4", "--run"])
            .arg(out.path().join("alock"))
            .arg("--data-dir")
            .arg(data.path())
            .arg("--out")
            .arg(&target)
            .output()
            .expect("seht analyze")
    };
    let o = analyze();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    for says in [target.display().to_string().as_str(), "process 4343", "wait"] {
        assert!(msg.contains(says), "`{says}` missing from: {msg}");
    }
    assert!(!target.join("analysis.json").exists(), "nothing was written");
    drop(held);
    let o = analyze();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(target.join("analysis.json").is_file());
}
