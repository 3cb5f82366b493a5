//! The `paper-code` regularizer trains the baseline, at its own cost; the
//! evaluation-mode SEHT penalty trains on the training-mode loss and adds a
//! gradient of its own.

mod common;

use std::num::{NonZeroU64, NonZeroUsize};

use common::*;
use seht_candle::Gradient;
use seht_estimator::SehtH;
use seht_train::config::{PaperCodePenalty, PenaltyPhase, Regularizer};

fn checkpoint(out: &std::path::Path, name: &str, epochs: usize) -> Vec<u8> {
    std::fs::read(out.join(name).join(format!("checkpoint/ckpt-{epochs:04}.safetensors"))).expect("checkpoint")
}

#[test]
fn a_paper_code_run_ends_with_the_baselines_weights_bit_for_bit() {
    let data = temp_dir("paper-code-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("paper-code-out");
    // λ·1ᵀH1 is far beyond the divergence bound (|1ᵀH1| is about 1.9e3
    // here): a constant nothing is trained on must not stop the run.
    let paper = Regularizer::PaperCode(PaperCodePenalty {
        lambda: 1.0,
        probes: NonZeroUsize::new(2).expect("2"),
        every: NonZeroU64::new(3).expect("3"),
    });
    let bounded = |name: &str, reg| {
        let mut cfg = image_config(name, reg, 2);
        cfg.divergence.max_abs_objective = Some(10.0);
        cfg
    };
    let base = seht_train::train(&bounded("base", Regularizer::Baseline), &opts(data.path(), out.path()))
        .expect("baseline")
        .expect("finished");
    let pc = seht_train::train(&bounded("paper", paper), &opts(data.path(), out.path()))
        .expect("paper code")
        .expect("finished");
    assert_eq!(pc.status, seht_train::RunStatus::Finished, "{:?}", pc.divergence);
    // Its value was computed (every third step), and it moved nothing.
    assert_eq!(pc.penalty_steps, pc.steps.div_ceil(3), "the value every third step");
    let log = std::fs::read_to_string(out.path().join("paper/log.jsonl")).expect("log");
    let first: seht_train::EpochRecord = serde_json::from_str(log.lines().next().expect("line")).expect("json");
    let value = first.trace_mean.expect("the paper code's value is logged");
    eprintln!("paper code 1ᵀH1 mean over epoch 1: {value:.4}");
    assert!(value.is_finite() && value != 0.0);
    assert_eq!(
        checkpoint(out.path(), "base", 2),
        checkpoint(out.path(), "paper", 2),
        "weights differ from the baseline's"
    );
    let (b, p) = (base.final_epoch.expect("final"), pc.final_epoch.expect("final"));
    assert_eq!((b.test, b.train_loss), (p.test, p.train_loss));
    // A penalty that does send a gradient gives other weights (so the
    // comparison can fail).
    let seht_h = seht(SehtH::seht_h(1).expect("cfg").into(), 1, Gradient::ExactPerProbe);
    seht_train::train(&image_config("seht-h", seht_h, 2), &opts(data.path(), out.path())).expect("seht-h");
    assert_ne!(checkpoint(out.path(), "base", 2), checkpoint(out.path(), "seht-h", 2));
}

#[test]
fn the_evaluation_mode_penalty_trains_and_moves_the_weights() {
    let data = temp_dir("eval-phase-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("eval-phase-out");
    let with_phase = |phase| match seht(SehtH::seht_h(1).expect("cfg").into(), 1, Gradient::ExactPerProbe) {
        Regularizer::Seht(mut p) => {
            p.phase = phase;
            p.lambda = 0.05;
            Regularizer::Seht(p)
        }
        _ => unreachable!("seht() builds a SEHT penalty"),
    };
    let train_mode = image_config("train-phase", with_phase(PenaltyPhase::Train), 2);
    let eval_mode = image_config("eval-phase", with_phase(PenaltyPhase::Eval), 2);
    let text = eval_mode.to_toml();
    assert!(text.contains("phase = \"eval\""), "the phase is written beside the results:\n{text}");
    assert!(
        !train_mode.to_toml().contains("phase ="),
        "the default phase is not written (older configs stay the same run)"
    );
    let m = seht_train::train(&eval_mode, &opts(data.path(), out.path())).expect("eval phase").expect("finished");
    seht_train::train(&train_mode, &opts(data.path(), out.path())).expect("train phase");
    seht_train::train(&image_config("plain", Regularizer::Baseline, 2), &opts(data.path(), out.path())).expect("plain");
    assert_eq!(m.penalty_steps, m.steps);
    let log = std::fs::read_to_string(out.path().join("eval-phase/log.jsonl")).expect("log");
    for line in log.lines() {
        let r: seht_train::EpochRecord = serde_json::from_str(line).expect("json");
        eprintln!("eval-mode SEHT-H epoch {}: mean trace estimate {:?}", r.epoch, r.trace_mean);
    }
    let eval = checkpoint(out.path(), "eval-phase", 2);
    assert_ne!(eval, checkpoint(out.path(), "plain", 2), "the evaluation-mode penalty sent no gradient");
    assert_ne!(eval, checkpoint(out.path(), "train-phase", 2), "the two phases gave the same weights");
    let t = m.final_trace.expect("final trace");
    assert!(t.train_mode.is_some_and(|x| x.mean.is_finite()), "the training-mode trace is measured");
    let fit = m.train_eval.expect("evaluation-mode metrics on the training set");
    assert!(fit.top1.is_some_and(|a| (0.0..=1.0).contains(&a)));
}
