//! A tiny ResNet trained for a few epochs on fixture CIFAR-format data with
//! every method; a tiny LSTM on a fixture corpus; and exact resumption.

mod common;

use common::*;
use seht_candle::Gradient;
use seht_estimator::{Reading, SehtH};
use seht_train::config::Regularizer;

#[test]
fn every_image_method_trains_and_writes_a_complete_run_folder() {
    let data = temp_dir("e2e-data");
    write_cifar10(data.path(), 16); // 80 training images, 16 test
    let out = temp_dir("e2e-out");
    for (name, reg) in image_methods() {
        let cfg = image_config(name, reg, 3);
        let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect(name).expect("finished");
        let run = out.path().join(name);
        for f in ["config.toml", "log.jsonl", "metrics.json", "checkpoint/state.json"] {
            assert!(run.join(f).is_file(), "{name}: {f} missing");
        }
        let log = std::fs::read_to_string(run.join("log.jsonl")).expect("log");
        let records: Vec<seht_train::EpochRecord> =
            log.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        assert_eq!(records.len(), 3, "{name}: one log line per epoch");
        let losses: Vec<f64> = records.iter().map(|r| r.train_loss).collect();
        let final_epoch = m.final_epoch.as_ref().expect("a finished run has a final epoch");
        eprintln!("{name}: train loss per epoch {losses:?}, final test acc {:?}", final_epoch.test.top1);
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        assert!(losses[2] < losses[0], "{name}: loss must fall over the run: {losses:?}");
        assert_eq!((m.status, final_epoch.epoch), (seht_train::RunStatus::Finished, 3));
        assert!(m.final_trace.as_ref().is_some_and(|t| t.mean.is_finite()));
        let copied = seht_train::ExperimentConfig::from_file(&run.join("config.toml")).expect("config copy parses");
        assert_eq!(copied, cfg, "{name}: the config beside the results is the config that ran");
        match &cfg.regularizer {
            Regularizer::Seht(p) => {
                assert_eq!(m.penalty_steps, m.steps.div_ceil(p.every.get()), "every {}-th step", p.every);
                assert!(records.iter().any(|r| r.trace_mean.is_some()));
            }
            _ => assert_eq!(m.penalty_steps, 0),
        }
    }
}

#[test]
fn language_models_train_with_and_without_the_penalty() {
    let data = temp_dir("lm-data");
    write_text(data.path());
    let out = temp_dir("lm-out");
    for (name, reg) in [
        ("lstm-baseline", Regularizer::Baseline),
        ("lstm-seht-d", seht(seht_d(0.3, Reading::Unbiased), 1, Gradient::ExactPerProbe)),
        ("lstm-confidence", Regularizer::ConfidencePenalty { beta: 0.1 }),
        (
            "lstm-seht-h-first-order",
            seht(SehtH::seht_h(1).expect("cfg").into(), 1, Gradient::FirstOrder { relative_step: None }),
        ),
    ] {
        let m = seht_train::train(&text_config(name, reg, 3), &opts(data.path(), out.path()))
            .expect(name)
            .expect("finished");
        let (best, last) = (m.best_epoch.as_ref().expect("best"), m.final_epoch.as_ref().expect("final"));
        let ppl: Vec<f64> = [best, last].iter().map(|r| r.test.perplexity.expect("ppl")).collect();
        eprintln!("{name}: test perplexity best/final {ppl:?}");
        assert!(ppl.iter().all(|p| p.is_finite() && *p > 1.0));
        assert!(last.valid.as_ref().is_some_and(|v| v.perplexity.is_some()));
        let vocab = 16.0; // the fixture has 15 words + <eos>
        assert!(last.test.perplexity.expect("ppl") < vocab, "{name}: must beat a uniform guess");
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one() {
    let data = temp_dir("resume-data");
    write_cifar10(data.path(), 8);
    let (a, b) = (temp_dir("resume-a"), temp_dir("resume-b"));
    let cfg = image_config("resume", seht(seht_d(0.3, Reading::Unbiased), 1, Gradient::ExactPerProbe), 3);
    let whole = seht_train::train(&cfg, &opts(data.path(), a.path())).expect("train").expect("finished");
    let mut o = opts(data.path(), b.path());
    o.stop_after_epochs = Some(1);
    assert!(seht_train::train(&cfg, &o).expect("first part").is_none(), "stopped after one epoch");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("resume/checkpoint/state.json")).expect("state"))
            .expect("json");
    assert_eq!(state["epochs_done"], 1);
    // A checkpoint written before the single `seht` kind records its
    // regularizer in the old form: it still belongs to the same config.
    let mut old = state.clone();
    old["config"]["regularizer"] = serde_json::json!({
        "kind": "seht-d", "probes": 1, "p": 0.3, "lambda": 1e-3, "reading": "unbiased", "every": 1, "rescale": false
    });
    let state_path = b.path().join("resume/checkpoint/state.json");
    std::fs::write(&state_path, serde_json::to_vec(&old).expect("json")).expect("old-form state");
    // A leftover temporary file from a kill during a write is ignored.
    std::fs::write(b.path().join("resume/checkpoint/state.tmp"), b"{garbage").expect("tmp");
    let resumed = seht_train::train(&cfg, &opts(data.path(), b.path())).expect("resume").expect("finished");
    let (w, r) = (whole.final_epoch.as_ref().expect("finished"), resumed.final_epoch.as_ref().expect("finished"));
    assert_eq!(w.test, r.test, "same final metrics");
    assert_eq!(w.train_loss, r.train_loss);
    assert_eq!(whole.final_trace.as_ref().map(|t| t.mean), resumed.final_trace.as_ref().map(|t| t.mean));
    // A finished run is not run again.
    let again = seht_train::train(&cfg, &opts(data.path(), b.path())).expect("again").expect("finished");
    assert_eq!(again, resumed);
}

#[test]
fn seht_trace_measures_a_trained_run() {
    let data = temp_dir("trace-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("trace-out");
    seht_train::train(&image_config("t", Regularizer::Baseline, 1), &opts(data.path(), out.path())).expect("train");
    let t = seht_train::trace_of_run(&out.path().join("t"), &env(data.path()), 2, 3).expect("trace");
    assert!(t.mean.is_finite() && t.std_error.is_finite() && t.std_error > 0.0, "{t:?}");
    assert_eq!((t.batches, t.probes), (2, 3));
}
