//! Fixtures: learnable data in the real CIFAR-10 binary format and a small
//! text corpus in the WikiText layout, and config builders.
#![allow(dead_code)]

use std::path::Path;

use seht_candle::Gradient;
use seht_estimator::{Estimator, Reading, SehtD, SehtH};
use seht_train::ExperimentConfig;
use seht_train::config::*;

pub use tempfile::TempDir;

/// A fresh temporary folder named after `tag` (removed on drop).
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("seht-train-{tag}-")).tempdir().expect("temp dir")
}

/// CIFAR-10 binary files whose images are a per-class pattern plus noise, so
/// that a tiny network can learn them. `per_file` records in each of the six files.
pub fn write_cifar10(root: &Path, per_file: usize) {
    seht_data::fixtures::cifar10(root, per_file, seht_data::fixtures::Pixels::Learnable { seed: 12345 })
        .expect("cifar10 fixture");
}

/// A tiny corpus in the WikiText-2 layout (60, 12 and 12 sentences).
pub fn write_text(root: &Path) {
    seht_data::fixtures::wikitext(root, [60, 12, 12]).expect("text fixture");
}

pub fn image_config(name: &str, regularizer: Regularizer, epochs: usize) -> ExperimentConfig {
    ExperimentConfig {
        name: name.into(),
        seed: 7,
        epochs,
        data: DataConfig::Image(ImageDataConfig {
            dataset: ImageDataset::Cifar10,
            dir: "cifar-10-batches-bin".into(),
            batch_size: 16,
            train_subset: 0,
            test_subset: 0,
            validation: 0,
            crop_padding: 2,
            hflip: true,
            workers: 1,
        }),
        model: ModelConfig::Resnet { widths: [4, 8, 8, 8], blocks: [1, 1, 1, 1] },
        optim: OptimConfig {
            kind: OptimKind::Sgd { momentum: 0.9 },
            lr: 0.05,
            weight_decay: 5e-4,
            clip_grad_norm: 5.0,
        },
        schedule: ScheduleConfig::Cosine,
        regularizer,
        final_trace: FinalTrace { batches: 1, probes: 2 },
        divergence: DivergenceConfig::default(),
        monitor: MonitorConfig::default(),
    }
}

pub fn text_config(name: &str, regularizer: Regularizer, epochs: usize) -> ExperimentConfig {
    ExperimentConfig {
        name: name.into(),
        seed: 3,
        epochs,
        data: DataConfig::Text(TextDataConfig {
            dir: "wikitext-2".into(),
            files: ["wiki.train.tokens".into(), "wiki.valid.tokens".into(), "wiki.test.tokens".into()],
            batch_size: 4,
            eval_batch_size: 2,
            bptt: 8,
            train_tokens: 0,
            eval_tokens: 0,
        }),
        model: ModelConfig::Rnn {
            cell: seht_train::config::RnnKind::Lstm,
            embedding: 16,
            hidden: 16,
            layers: 2,
            dropout: 0.1,
            tie_weights: true,
            init_range: 0.1,
        },
        optim: OptimConfig { kind: OptimKind::Sgd { momentum: 0.0 }, lr: 1.0, weight_decay: 0.0, clip_grad_norm: 0.25 },
        schedule: ScheduleConfig::Plateau { factor: 0.25 },
        regularizer,
        final_trace: FinalTrace { batches: 1, probes: 2 },
        divergence: DivergenceConfig::default(),
        monitor: MonitorConfig::default(),
    }
}

pub fn opts(data: &Path, out: &Path) -> seht_train::TrainOptions {
    seht_train::TrainOptions { env: env(data), out_dir: out.to_path_buf(), stop_after_epochs: None }
}

/// On the CPU, data under `data`, no progress shown.
pub fn env(data: &Path) -> seht_train::Env {
    seht_train::Env {
        data_dir: data.to_path_buf(),
        device: candle_core::Device::Cpu,
        progress: seht_train::Progress::Hidden,
    }
}

/// Every method of the paper's image tables, with small settings.
pub fn image_methods() -> Vec<(&'static str, Regularizer)> {
    vec![
        ("baseline", Regularizer::Baseline),
        ("label-smoothing", Regularizer::LabelSmoothing { epsilon: 0.1 }),
        ("confidence-penalty", Regularizer::ConfidencePenalty { beta: 0.1 }),
        ("cutout", Regularizer::Cutout { size: 8 }),
        ("mixup", Regularizer::Mixup { alpha: 1.0 }),
        ("jacobian", Regularizer::Jacobian { n_proj: 1, lambda: 0.01 }),
        ("dropblock", Regularizer::Dropblock { block_size: 2, keep_prob: 0.9 }),
        ("dropout", Regularizer::Dropout { p: 0.2 }),
        ("seht-h", seht(SehtH::seht_h(1).expect("cfg").into(), 1, Gradient::ExactPerProbe)),
        ("seht-d", seht(seht_d(0.3, Reading::PartialSum), 2, Gradient::ExactPerProbe)),
        ("seht-d-first-order", seht(seht_d(0.3, Reading::Unbiased), 2, Gradient::FirstOrder { relative_step: None })),
    ]
}

/// SEHT-D with `p1 = p2 = p` and one probe.
pub fn seht_d(p: f64, reading: Reading) -> Estimator {
    SehtD::new(1, p, reading).expect("SEHT-D config").into()
}

/// The SEHT regularizer with λ = 1e-3, rescaled when `every > 1`.
pub fn seht(estimator: Estimator, every: u64, gradient: Gradient) -> Regularizer {
    Regularizer::Seht(SehtPenalty {
        estimator,
        lambda: 1e-3,
        every: std::num::NonZeroU64::new(every).expect("every ≥ 1"),
        rescale: every > 1,
        gradient,
        phase: Default::default(),
    })
}

/// Saves `tensors` over a checkpoint's tensor file and records the new
/// file's SHA-256 in the `state.json` beside it, as a tool that edits a
/// checkpoint must: loading refuses a tensor file whose checksum differs
/// from the one recorded.
pub fn save_checkpoint_tensors(file: &Path, tensors: &std::collections::HashMap<String, candle_core::Tensor>) {
    candle_core::safetensors::save(tensors, file).expect("save");
    let state = file.with_file_name("state.json");
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).expect("state.json")).expect("json");
    s["tensors_sha256"] = seht_data::checksums::sha256_file(file).expect("sha").into();
    std::fs::write(&state, serde_json::to_vec_pretty(&s).expect("json")).expect("write");
}
