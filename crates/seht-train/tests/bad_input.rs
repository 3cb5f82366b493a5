//! Bad configs and folders fail with a clear error before any training.

mod common;

use common::*;
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
kind = "seht-d"
probes = 1
p = 0.05
lambda = 0.01
reading = "partial-sum"
every = 1
rescale = false

[final_trace]
batches = 0
probes = 0
"#;

fn parse(text: &str) -> Result<ExperimentConfig, Error> {
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
fn missing_fields_are_rejected_no_hidden_defaults() {
    let e = parse(&GOOD.replace("weight_decay = 5e-4\n", "")).expect_err("missing");
    assert!(e.to_string().contains("weight_decay"), "{e}");
}

#[test]
fn out_of_range_values_name_the_field() {
    for (from, to, field) in [
        ("lambda = 0.01", "lambda = -0.01", "regularizer.lambda"),
        ("p = 0.05", "p = 0.6", "regularizer.p"),
        ("p = 0.05", "p = 0.0", "regularizer.p"),
        ("probes = 1\np", "probes = 0\np", "regularizer.probes"),
        ("lr = 0.01", "lr = 0.0", "optim.lr"),
        ("momentum = 0.9", "momentum = 1.5", "optim.momentum"),
        ("epochs = 2", "epochs = 0", "epochs"),
        ("batch_size = 32", "batch_size = 0", "data.batch_size"),
    ] {
        let e = parse(&GOOD.replacen(from, to, 1)).expect_err(field);
        assert!(matches!(&e, Error::Config { field: f, .. } if f == field), "{to}: {e}");
    }
}

#[test]
fn methods_that_do_not_fit_the_task_are_rejected() {
    let mut cfg = text_config("x", Regularizer::Mixup { alpha: 1.0 }, 1);
    assert!(matches!(cfg.validate(), Err(Error::Config { field, .. }) if field == "regularizer.kind"));
    cfg.regularizer = Regularizer::Baseline;
    cfg.model = image_config("y", Regularizer::Baseline, 1).model;
    assert!(matches!(cfg.validate(), Err(Error::Config { field, .. }) if field == "model.kind"));
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
