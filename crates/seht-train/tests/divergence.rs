//! A run whose loss becomes non-finite, or whose objective passes the
//! config's bound, stops as `diverged` (epoch, step, cause) in
//! `metrics.json`, `log.jsonl` and the CLI's exit code, and is not trained
//! again.

mod common;

use std::path::Path;

use common::*;
use seht_estimator::SehtH;
use seht_train::config::Regularizer;
use seht_train::records::{DIVERGED_EXIT_CODE, LogLine};
use seht_train::{Error, ExperimentConfig, Metrics, RunStatus};

fn log_lines(run: &Path) -> Vec<LogLine> {
    seht_records::read_log_lines(run).expect("log.jsonl reads")
}

fn bounded(name: &str, regularizer: Regularizer, epochs: usize, bound: f64) -> ExperimentConfig {
    let mut cfg = image_config(name, regularizer, epochs);
    cfg.divergence.max_abs_objective = Some(bound);
    cfg
}

#[test]
fn a_non_finite_loss_stops_the_run_as_diverged_and_it_is_not_trained_again() {
    let data = temp_dir("div-nan-data");
    write_cifar10(data.path(), 8); // 48 training images: 3 steps an epoch
    let out = temp_dir("div-nan-out");
    let mut cfg = image_config("nan", Regularizer::Baseline, 3);
    // Steps so large that the weights overflow f32 within a few steps.
    cfg.optim.lr = 1e30;
    cfg.optim.clip_grad_norm = 0.0;
    let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("a divergence is no error").expect("ended");
    let d = m.diverged().expect("diverged").clone();
    eprintln!("diverged: {d}");
    assert_eq!(m.status, RunStatus::Diverged);
    assert!(d.cause.starts_with("non-finite"), "{d}");
    assert!((1..=3).contains(&d.epoch) && (1..=3).contains(&d.step), "{d}");
    assert_eq!(m.steps, 3 * (d.epoch as u64 - 1) + d.step, "the run's steps end at the one that diverged");
    assert!(m.final_epoch.is_none() && m.best_epoch.is_none() && m.final_trace.is_none(), "no result: {m:?}");
    let run = out.path().join("nan");
    assert_eq!(Metrics::read(&run).expect("metrics.json"), m);
    let lines = log_lines(&run);
    assert_eq!(lines.len(), d.epoch, "the epochs completed, then the divergence: {lines:?}");
    assert_eq!(lines.last(), Some(&LogLine::Diverged(d.clone())));

    // Run again: the same result, without training (the data are gone).
    std::fs::remove_dir_all(data.path().join("cifar-10-batches-bin")).expect("remove the data");
    let again = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("read back").expect("ended");
    assert_eq!(again, m);
    assert_eq!(log_lines(&run).len(), d.epoch, "the log is untouched");
    // Another config in the same run folder is refused, not answered with
    // this run's result (it diverged before any checkpoint when d.epoch = 1).
    cfg.optim.lr = 1e29;
    match seht_train::train(&cfg, &opts(data.path(), out.path())) {
        Err(Error::CheckpointMismatch { .. }) => {}
        other => panic!("expected CheckpointMismatch, got {other:?}"),
    }
}

#[test]
fn a_run_resumed_from_a_checkpoint_diverges_after_its_completed_epochs() {
    let data = temp_dir("div-resume-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("div-resume-out");
    let cfg = image_config("resume", Regularizer::Baseline, 3);
    let mut o = opts(data.path(), out.path());
    o.stop_after_epochs = Some(1);
    assert!(seht_train::train(&cfg, &o).expect("first epoch").is_none());
    // Poison the checkpointed weights: the resumed run's first loss is NaN.
    let ckpt = out.path().join("resume/checkpoint");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("state.json")).expect("state")).expect("json");
    let file = ckpt.join(state["tensors"].as_str().expect("tensor file"));
    let mut tensors = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).expect("tensors");
    let (name, w) = tensors.iter().find(|(k, _)| k.starts_with("model.") && k.ends_with("weight")).expect("a weight");
    let poisoned = w.affine(f64::NAN, 0.0).expect("NaN");
    tensors.insert(name.clone(), poisoned);
    save_checkpoint_tensors(&file, &tensors);

    let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("resume").expect("ended");
    let d = m.diverged().expect("diverged").clone();
    assert_eq!((d.epoch, d.step, d.cause.as_str()), (2, 1, "non-finite loss NaN"));
    assert_eq!(m.steps, 3 + 1, "one epoch of 3 steps, then the step that diverged");
    let lines = log_lines(&out.path().join("resume"));
    assert!(matches!(&lines[..], [LogLine::Epoch(e), LogLine::Diverged(x)] if e.epoch == 1 && *x == d), "{lines:?}");
    assert_eq!(seht_records::read_log(&out.path().join("resume")).expect("epochs").len(), 1);
    let again = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("read back").expect("ended");
    assert_eq!(again, m, "not trained again");
    assert_eq!(log_lines(&out.path().join("resume")), lines);
}

#[test]
fn the_bound_applies_to_the_objective_with_the_penalty_term() {
    let data = temp_dir("div-bound-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("div-bound-out");
    // The loss alone (about ln 10 = 2.3 here) stays within the bound…
    let base = bounded("bound-baseline", Regularizer::Baseline, 1, 10.0);
    let m = seht_train::train(&base, &opts(data.path(), out.path())).expect("train").expect("finished");
    assert_eq!((m.status, m.diverged()), (RunStatus::Finished, None));
    // …the loss plus λ·tr̂(H) with a huge λ does not.
    let huge = seht_train::config::SehtPenalty {
        lambda: 1e4,
        ..match seht(SehtH::seht_h(1).expect("cfg").into(), 1, seht_candle::Gradient::ExactPerProbe) {
            Regularizer::Seht(p) => p,
            _ => unreachable!(),
        }
    };
    let cfg = bounded("bound-seht-h", Regularizer::Seht(huge), 2, 10.0);
    let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("train").expect("ended");
    let d = m.diverged().expect("diverged");
    assert_eq!((d.epoch, d.step), (1, 1), "{d}");
    assert!(d.cause.contains("beyond the bound 1e1 (divergence.max_abs_objective)"), "{d}");
    assert_eq!((m.steps, m.penalty_steps), (1, 1));
    assert_eq!(log_lines(&out.path().join("bound-seht-h")), vec![LogLine::Diverged(d.clone())]);
}

#[test]
fn seht_train_reports_a_diverged_run_and_exits_with_its_code() {
    let data = temp_dir("div-cli-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("div-cli-out");
    let cfg = bounded("cli", Regularizer::Baseline, 2, 1e-3); // the first step's loss passes it
    let file = out.path().join("cli.toml");
    std::fs::write(&file, cfg.to_toml()).expect("config");
    for attempt in ["trains", "reads back"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_seht"))
            .args(["train", "--progress", "hidden", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(data.path())
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("run seht");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(i32::from(DIVERGED_EXIT_CODE)), "{attempt}: {stderr}");
        assert!(stderr.contains("run `cli` diverged at epoch 1, step 1: objective"), "{attempt}: {stderr}");
        let printed: Metrics = serde_json::from_slice(&o.stdout).expect("metrics on stdout");
        assert_eq!(printed.status, RunStatus::Diverged, "{attempt}");
    }
}

/// A run folder written without a bound (before `[divergence]` existed, or
/// by a config without one) resumes under a bound: the stopping rule is not
/// part of a run's identity (`ExperimentConfig::same_run`).
#[test]
fn adding_a_bound_to_a_checkpointed_run_resumes_it() {
    let data = temp_dir("div-add-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("div-add-out");
    let cfg = image_config("add", Regularizer::Baseline, 2);
    let mut o = opts(data.path(), out.path());
    o.stop_after_epochs = Some(1);
    assert!(seht_train::train(&cfg, &o).expect("first epoch").is_none());
    let mut with_bound = cfg.clone();
    with_bound.divergence.max_abs_objective = Some(1e3);
    let m = seht_train::train(&with_bound, &opts(data.path(), out.path())).expect("resumes").expect("ended");
    assert_eq!(m.status, RunStatus::Finished);
    assert_eq!(
        seht_records::read_log(&out.path().join("add")).expect("epochs").len(),
        2,
        "one epoch resumed, not two trained"
    );
    // Another learning rate is still another run.
    let mut other = with_bound.clone();
    other.optim.lr *= 2.0;
    assert!(matches!(seht_train::train(&other, &opts(data.path(), out.path())), Err(Error::CheckpointMismatch { .. })));
}

/// A finished run folder copied without its checkpoint (metrics.json and
/// config.toml only, as results are committed) counts as finished: run
/// again, it returns the same metrics without training; another config in
/// that folder is refused.
#[test]
fn a_finished_run_without_its_checkpoint_is_not_trained_again() {
    let data = temp_dir("done-elsewhere-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("done-elsewhere-out");
    let mut cfg = image_config("elsewhere", Regularizer::Baseline, 1);
    let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("trains").expect("ended");
    assert_eq!(m.status, RunStatus::Finished);
    let run = out.path().join("elsewhere");
    std::fs::remove_dir_all(run.join("checkpoint")).expect("remove the checkpoint");
    std::fs::remove_dir_all(data.path().join("cifar-10-batches-bin")).expect("remove the data");
    let again = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("read back").expect("ended");
    assert_eq!(again, m);
    assert_eq!(log_lines(&run).len(), 1, "the log is untouched");
    cfg.optim.lr *= 2.0;
    match seht_train::train(&cfg, &opts(data.path(), out.path())) {
        Err(Error::CheckpointMismatch { .. }) => {}
        other => panic!("expected CheckpointMismatch, got {other:?}"),
    }
}
