//! The GPT-style language model under `seht train` (issue 39 item 2): the
//! shipped config `configs/transformer/baseline.toml` trains on the fixture
//! corpus with AdamW, its loss falls; the curvature penalties and SGD work on
//! it as on the LSTM; an AdamW run killed after an epoch resumes to the same
//! result; and AdamW's update is PyTorch's.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use common::*;
use seht_candle::Gradient;
use seht_estimator::SehtH;
use seht_train::config::{DataConfig, GaussNewtonPenalty, OptimKind, Regularizer};
use seht_train::optim::{AdamW, Optimizer};

/// The shipped transformer config, on the fixture corpus (15 words and
/// `<eos>`), in windows of 8 tokens over 4 columns.
fn transformer_config(name: &str, epochs: usize) -> seht_train::ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/transformer/baseline.toml");
    let mut cfg = seht_train::ExperimentConfig::from_file(&path).expect("configs/transformer/baseline.toml");
    cfg.name = name.into();
    cfg.epochs = epochs;
    let DataConfig::Text(d) = &mut cfg.data else { panic!("a text config") };
    d.dir = "wikitext-2".into();
    (d.batch_size, d.eval_batch_size, d.bptt, d.train_tokens, d.eval_tokens) = (4, 2, 8, 0, 0);
    cfg
}

#[test]
fn the_transformer_config_trains_with_adamw_and_its_loss_falls() {
    let data = temp_dir("gpt-data");
    write_text(data.path());
    let out = temp_dir("gpt-out");
    let cfg = transformer_config("gpt", 2);
    assert!(matches!(cfg.optim.kind, OptimKind::AdamW { .. }));
    let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect("train").expect("finished");
    let log: Vec<seht_train::EpochRecord> = std::fs::read_to_string(out.path().join("gpt/log.jsonl"))
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    let losses: Vec<f64> = log.iter().map(|r| r.train_loss).collect();
    let uniform = 16f64.ln(); // the loss of a uniform guess over the fixture's 16 tokens
    eprintln!("transformer (AdamW): train loss per epoch {losses:?}, ln 16 = {uniform:.4}");
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[0] < uniform && losses[1] < losses[0], "the loss must fall: {losses:?}");
    let ppl = m.final_epoch.as_ref().expect("final").test.perplexity.expect("perplexity");
    assert!(ppl.is_finite() && ppl < 16.0, "test perplexity {ppl} must beat a uniform guess");
}

/// SGD (`[optim]` without `kind`), and the exact SEHT-H penalty and the
/// Gauss–Newton penalty on the transformer, one epoch each: finite losses
/// and trace estimates, and SGD learns.
#[test]
fn curvature_penalties_and_sgd_train_the_transformer() {
    let data = temp_dir("gpt-pen-data");
    write_text(data.path());
    let out = temp_dir("gpt-pen-out");
    let sgd = "[optim]\nlr = 0.5\nmomentum = 0.9\nweight_decay = 0.0\nclip_grad_norm = 1.0\n";
    for (name, regularizer, optim) in [
        ("sgd", Regularizer::Baseline, Some(sgd)),
        ("seht-h", seht(SehtH::seht_h(1).expect("seht-h").into(), 1, Gradient::ExactPerProbe), None),
        (
            "gauss-newton",
            Regularizer::GaussNewton(GaussNewtonPenalty { lambda: 1e-3, draws: 1, gradient: Gradient::ExactPerProbe }),
            None,
        ),
    ] {
        let mut cfg = transformer_config(name, 1);
        cfg.regularizer = regularizer;
        if let Some(optim) = optim {
            let text = cfg.to_toml();
            let start = text.find("[optim]").expect("[optim]");
            let end = start + text[start..].find("\n[").expect("next table") + 1;
            cfg = seht_train::ExperimentConfig::from_toml_str(
                &format!("{}{optim}\n{}", &text[..start], &text[end..]),
                "sgd.toml".as_ref(),
            )
            .expect("SGD config");
            assert!(matches!(cfg.optim.kind, OptimKind::Sgd { momentum: 0.9 }));
        }
        let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect(name).expect("finished");
        let last = m.final_epoch.as_ref().expect("final");
        eprintln!("transformer {name}: train loss {:.4}, trace mean {:?}", last.train_loss, last.trace_mean);
        assert!(last.train_loss.is_finite(), "{name}: {}", last.train_loss);
        if name == "sgd" {
            assert!(last.train_loss < 16f64.ln(), "SGD must learn: {}", last.train_loss);
        } else {
            // No claim on the loss: the training-mode Hessian of this model
            // has a negative trace that SEHT-H's λ·tr(H) rewards (−5.6e3
            // after this epoch at λ = 1e-3).
            assert!(last.trace_mean.is_some_and(f64::is_finite), "{name}: trace {:?}", last.trace_mean);
        }
    }
}

/// AdamW's moments and step counts go into the checkpoint: a run stopped
/// after one epoch and resumed ends exactly where an uninterrupted one does.
#[test]
fn an_adamw_run_resumes_to_the_same_result() {
    let data = temp_dir("gpt-resume-data");
    write_text(data.path());
    let (a, b) = (temp_dir("gpt-resume-a"), temp_dir("gpt-resume-b"));
    let cfg = transformer_config("resume", 2);
    let whole = seht_train::train(&cfg, &opts(data.path(), a.path())).expect("train").expect("finished");
    let mut o = opts(data.path(), b.path());
    o.stop_after_epochs = Some(1);
    assert!(seht_train::train(&cfg, &o).expect("first part").is_none(), "stopped after one epoch");
    let resumed = seht_train::train(&cfg, &opts(data.path(), b.path())).expect("resume").expect("finished");
    let (w, r) = (whole.final_epoch.as_ref().expect("whole"), resumed.final_epoch.as_ref().expect("resumed"));
    assert_eq!(w.train_loss, r.train_loss);
    assert_eq!(w.test, r.test);
}

/// Three AdamW steps on `w = [1, −2]` with gradients `[0.5, 1]`, `[−1, 0.25]`,
/// `[2, −3]` (lr 0.1, β = (0.9, 0.999), eps 1e-8, weight decay 0.01),
/// against the same update written out in plain f64 from PyTorch's
/// `_single_tensor_adamw`.
#[test]
fn adamw_update_is_pytorchs() {
    let w = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).expect("w")).expect("var");
    let grads = [[0.5, 1.0], [-1.0, 0.25], [2.0, -3.0]];
    let (lr, b1, b2, eps, wd) = (0.1, 0.9, 0.999, 1e-8, 0.01);
    let mut opt = Optimizer::AdamW(AdamW::new(vec![w.clone()], (b1, b2, eps), wd));
    let (mut pw, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
    for (t, g) in grads.iter().enumerate() {
        let loss =
            (w.as_tensor() * Tensor::new(&g[..], &Device::Cpu).expect("g")).expect("mul").sum_all().expect("sum");
        opt.step(&loss.backward().expect("backward"), lr).expect("step");
        let t = (t + 1) as i32;
        for i in 0..2 {
            pw[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            pw[i] -= lr / c1 * m[i] / ((v[i] / c2).sqrt() + eps);
        }
    }
    let got = w.as_tensor().to_vec1::<f64>().expect("w");
    for (a, b) in got.iter().zip(pw) {
        assert!((a - b).abs() < 1e-14, "{got:?} vs {pw:?}");
    }
    // The state survives a round trip through checkpoint tensors.
    let state = opt.state_tensors().expect("state");
    let names: Vec<&str> = state.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["adamw.m.0", "adamw.v.0", "adamw.t.0"]);
    let mut fresh = Optimizer::AdamW(AdamW::new(vec![w.clone()], (b1, b2, eps), wd));
    fresh.restore_state(|k, _| Ok(state.iter().find(|(n, _)| n == k).map(|(_, t)| t.clone()))).expect("restore");
    let again = fresh.state_tensors().expect("state");
    for ((ka, ta), (kb, tb)) in state.iter().zip(&again) {
        assert_eq!(ka, kb);
        assert_eq!(
            ta.flatten_all().expect("a").to_vec1::<f64>().ok(),
            tb.flatten_all().expect("b").to_vec1::<f64>().ok()
        );
    }
}
