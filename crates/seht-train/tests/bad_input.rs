//! Bad configs and folders fail with a clear error before any training.

mod common;

use common::*;
use seht_train::config::Error as ConfigError;
use seht_train::config::Regularizer;
use seht_train::{Error, ExperimentConfig};

const GOOD: &str = r#"
name = "r18"
seed = 0
epochs = 2

[data]
kind = "image"
dataset = "cifar10"
dir = "cifar-10-batches-bin"
batch_size = 32
train_subset = 0
test_subset = 0
validation = 0
crop_padding = 4
hflip = true
workers = 1

[model]
kind = "resnet"
widths = [64, 128, 256, 512]
blocks = [2, 2, 2, 2]

[optim]
lr = 0.01
momentum = 0.9
weight_decay = 5e-4
clip_grad_norm = 0.0

[schedule]
kind = "cosine"

[regularizer]
kind = "seht"
lambda = 0.01
every = 1
rescale = false
estimator = { kind = "seht-d", probes = 1, p1 = 0.05, p2 = 0.05, reading = "partial-sum" }
gradient = { kind = "exact-per-probe" }

[final_trace]
batches = 0
probes = 0
"#;

fn parse(text: &str) -> Result<ExperimentConfig, ConfigError> {
    ExperimentConfig::from_toml_str(text, std::path::Path::new("exp.toml"))
}

#[test]
fn a_good_config_parses_and_round_trips() {
    let cfg = parse(GOOD).expect("good");
    assert_eq!(parse(&cfg.to_toml()).expect("round trip"), cfg);
}

#[test]
fn unknown_fields_are_rejected_naming_the_field() {
    let e = parse(&GOOD.replace("hflip = true", "hflip = true\nflip_vertical = true")).expect_err("unknown");
    assert!(e.to_string().contains("flip_vertical") && e.to_string().contains("exp.toml"), "{e}");
    let e = parse(&GOOD.replace("every = 1", "every = 1\nlamda = 3")).expect_err("typo");
    assert!(e.to_string().contains("lamda"), "{e}");
}

#[test]
fn out_of_range_estimator_settings_are_refused_as_read_naming_the_value() {
    for (from, to, says) in [
        ("p2 = 0.05", "p2 = 0.6", "p2 = 0.6 is outside (0, 1/2]"),
        ("p1 = 0.05", "p1 = 0.0", "p1 = 0 is outside (0, 1]"),
        ("probes = 1, p1", "probes = 0, p1", "probes must be at least 1"),
        ("every = 1", "every = 0", "regularizer.every"),
        (
            "\"exact-per-probe\" }",
            "\"first-order\", relative_step = 1.5 }",
            "`regularizer.gradient.relative_step` = 1.5",
        ),
    ] {
        let e = parse(&GOOD.replacen(from, to, 1)).expect_err(to);
        assert!(e.to_string().contains(says), "{to}: {e}");
    }
}

#[test]
fn the_old_seht_forms_are_read_as_the_new_one() {
    let new = parse(GOOD).expect("good");
    let old = GOOD.replace(
        "kind = \"seht\"\nlambda = 0.01\nevery = 1\nrescale = false\nestimator = { kind = \"seht-d\", probes = 1, p1 = 0.05, p2 = 0.05, reading = \"partial-sum\" }\ngradient = { kind = \"exact-per-probe\" }",
        "kind = \"seht-d\"\nprobes = 1\np = 0.05\nlambda = 0.01\nreading = \"partial-sum\"\nevery = 1\nrescale = false",
    );
    assert_ne!(old, GOOD);
    assert_eq!(parse(&old).expect("old seht-d"), new);
    let first_order = old
        .replace("kind = \"seht-d\"", "kind = \"seht-first-order\"")
        .replace("rescale = false", "rescale = false\nrelative_step = 0.0");
    let fo = parse(&first_order).expect("old seht-first-order");
    let Regularizer::Seht(p) = &fo.regularizer else { panic!("not converted: {:?}", fo.regularizer) };
    assert_eq!(p.gradient, seht_candle::Gradient::FirstOrder { relative_step: None });
    let h = parse(&first_order.replace("p = 0.05", "p = 0.0")).expect("old first-order SEHT-H");
    let Regularizer::Seht(p) = &h.regularizer else { panic!("not converted") };
    assert_eq!(p.estimator, seht_estimator::SehtH::seht_h(1).expect("cfg").into());
    // A typo in an old form is still named.
    let e = parse(&old.replace("every = 1", "every = 1\nlamda = 3")).expect_err("typo");
    assert!(e.to_string().contains("lamda"), "{e}");
}

#[test]
fn missing_fields_are_rejected_no_hidden_defaults() {
    let e = parse(&GOOD.replace("weight_decay = 5e-4\n", "")).expect_err("missing");
    assert!(e.to_string().contains("weight_decay"), "{e}");
}

#[test]
fn out_of_range_values_name_the_field() {
    for (from, to, field) in [
        ("lambda = 0.01", "lambda = -0.01", "regularizer.lambda"),
        ("lr = 0.01", "lr = 0.0", "optim.lr"),
        ("momentum = 0.9", "momentum = 1.5", "optim.momentum"),
        ("epochs = 2", "epochs = 0", "epochs"),
        ("batch_size = 32", "batch_size = 0", "data.batch_size"),
    ] {
        let e = parse(&GOOD.replacen(from, to, 1)).expect_err(field);
        assert!(matches!(&e, ConfigError::Config { field: f, .. } if f == field), "{to}: {e}");
    }
}

#[test]
fn the_divergence_bound_is_optional_and_validated_naming_the_field() {
    // Configs written before `[divergence]` existed stop only at a non-finite loss.
    assert_eq!(parse(GOOD).expect("good").divergence.max_abs_objective, None);
    let bounded = parse(&format!("{GOOD}\n[divergence]\nmax_abs_objective = 100.0\n")).expect("bounded");
    assert_eq!(bounded.divergence.max_abs_objective, Some(100.0));
    assert_eq!(parse(&bounded.to_toml()).expect("round trip"), bounded);
    for bad in ["-1.0", "0.0", "inf", "nan"] {
        let e = parse(&format!("{GOOD}\n[divergence]\nmax_abs_objective = {bad}\n")).expect_err(bad);
        assert!(
            matches!(&e, ConfigError::Config { field, .. } if field == "divergence.max_abs_objective"),
            "{bad}: {e}"
        );
        // ±inf and nan are refused, by key path, before parsing (`must be
        // finite`); the others by the field's own check (`finite and > 0`).
        assert!(e.to_string().contains("must be finite"), "{e}");
    }
    let e = parse(&format!("{GOOD}\n[divergence]\nmax_objective = 1.0\n")).expect_err("typo");
    assert!(e.to_string().contains("max_objective"), "{e}");
}

#[test]
fn methods_that_do_not_fit_the_task_are_rejected() {
    let mut cfg = text_config("x", Regularizer::Mixup { alpha: 1.0 }, 1);
    assert!(matches!(cfg.validate(), Err(ConfigError::Config { field, .. }) if field == "regularizer.kind"));
    cfg.regularizer = Regularizer::Baseline;
    cfg.model = image_config("y", Regularizer::Baseline, 1).model;
    assert!(matches!(cfg.validate(), Err(ConfigError::Config { field, .. }) if field == "model.kind"));
}

#[test]
fn a_missing_data_folder_is_named_before_training() {
    let data = temp_dir("bad-missing");
    let out = temp_dir("bad-missing-out");
    let e = seht_train::train(&image_config("m", Regularizer::Baseline, 1), &opts(data.path(), out.path()))
        .expect_err("no data");
    assert!(e.to_string().contains("data_batch_1.bin") && e.to_string().contains("missing"), "{e}");
    assert!(!out.path().join("m/checkpoint").exists(), "nothing was trained");
}

#[test]
fn a_checkpoint_from_another_config_is_refused() {
    let data = temp_dir("bad-ckpt");
    write_cifar10(data.path(), 4);
    let out = temp_dir("bad-ckpt-out");
    let mut cfg = image_config("same-name", Regularizer::Baseline, 2);
    let mut o = opts(data.path(), out.path());
    o.stop_after_epochs = Some(1);
    seht_train::train(&cfg, &o).expect("first part");
    cfg.optim.lr = 0.5;
    match seht_train::train(&cfg, &opts(data.path(), out.path())) {
        Err(Error::CheckpointMismatch { path, .. }) => assert!(path.ends_with("state.json")),
        other => panic!("expected CheckpointMismatch, got {other:?}"),
    }
}

/// An old-form `seht-d` with `p = 0` is refused, not converted to SEHT-H
/// (only the old first-order form used `p = 0` for SEHT-H).
#[test]
fn an_old_seht_d_with_p_zero_is_refused() {
    // The old form, as configs/demo/seht-d-k1-p0.05.toml had it (the file
    // went with the demo's new method set in 7997860).
    let text = GOOD.replace(
        "kind = \"seht\"\nlambda = 0.01\nevery = 1\nrescale = false\nestimator = { kind = \"seht-d\", probes = 1, p1 = 0.05, p2 = 0.05, reading = \"partial-sum\" }\ngradient = { kind = \"exact-per-probe\" }",
        "kind = \"seht-d\"\nprobes = 1\np = 0.05\nlambda = 1e-3\nreading = \"partial-sum\"\nevery = 1\nrescale = false",
    );
    assert!(text.contains("p = 0.05") && parse(&text).is_ok(), "the old form, and it reads");
    let e = parse(&text.replace("p = 0.05", "p = 0")).expect_err("p = 0");
    assert!(e.to_string().contains("p = 0"), "{e}");
}

/// `GOOD` with its regularizer replaced by `regularizer` (the lines under `[regularizer]`).
fn with_regularizer(regularizer: &str) -> String {
    let (head, tail) = GOOD.split_once("[regularizer]\n").expect("regularizer");
    let (_, rest) = tail.split_once("\n\n").expect("end of the regularizer");
    format!("{head}[regularizer]\n{regularizer}\n\n{rest}")
}

#[test]
fn a_zero_period_or_probe_count_names_its_field() {
    let paper = "kind = \"paper-code\"\nlambda = 1e-3\nprobes = 5\nevery = 10";
    assert!(parse(&with_regularizer(paper)).is_ok(), "the paper-code form itself reads");
    for (text, field) in [
        (GOOD.replacen("every = 1", "every = 0", 1), "regularizer.every"),
        (with_regularizer(&paper.replace("every = 10", "every = 0")), "regularizer.every"),
        (with_regularizer(&paper.replace("probes = 5", "probes = 0")), "regularizer.probes"),
        (GOOD.replacen("every = 1", "every = -2", 1), "regularizer.every"),
    ] {
        let e = parse(&text).expect_err(field);
        assert!(matches!(&e, ConfigError::Config { field: f, .. } if f == field), "{field}: {e}");
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
}

#[test]
fn a_first_order_step_too_small_for_f32_is_refused_with_a_value_that_works() {
    let seht = |step: &str| {
        GOOD.replace(
            "gradient = { kind = \"exact-per-probe\" }",
            &format!("gradient = {{ kind = \"first-order\", relative_step = {step} }}"),
        )
    };
    let gn = |step: &str| {
        with_regularizer(&format!(
            "kind = \"gauss-newton\"\nlambda = 1e-3\ndraws = 1\ngradient = {{ kind = \"first-order\", relative_step = {step} }}"
        ))
    };
    // The SEHT gradient is a second difference (rounding u/ε²): measured
    // relative errors of 8–11 at 1e-4 in f32; the Gauss–Newton gradient a
    // first difference (rounding u/ε).
    for (text, value) in [(seht("1e-4"), "0.0001"), (seht("1e-3"), "0.001"), (gn("1e-6"), "0.000001")] {
        let e = parse(&text).expect_err(value);
        assert!(
            matches!(&e, ConfigError::Config { field, .. } if field == "regularizer.gradient.relative_step"),
            "{e}"
        );
        for says in [value, "f32", "2e-2"] {
            assert!(e.to_string().contains(says), "`{says}` missing from: {e}");
        }
    }
    for ok in [seht("2e-3"), seht("2e-2"), gn("1e-5"), gn("2e-2"), seht("0.5").replace(", relative_step = 0.5", "")] {
        parse(&ok).unwrap_or_else(|e| panic!("{e}"));
    }
}
