//! Loading the data a config names.

use seht_estimator::{Stream, step_key};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seht_data::{Batchified, ImageSet, Subset, TextCorpus};

use crate::config::{DataConfig, ExperimentConfig, ImageDataConfig, ImageDataset, TextDataConfig};
use crate::env::Env;
use crate::error::{Result, config};

/// Training, validation (maybe empty) and test images.
pub struct ImageData {
    /// Training images.
    pub train: Arc<ImageSet>,
    /// Held-out validation images (from the training set), if any.
    pub valid: Option<Arc<ImageSet>>,
    /// Test images.
    pub test: Arc<ImageSet>,
    /// A description of what was loaded, for outputs.
    pub description: String,
    /// The config's settings of the data (batch size, augmentation).
    pub config: ImageDataConfig,
}

fn resolve(data_dir: &Path, dir: &str) -> PathBuf {
    let p = Path::new(dir);
    if p.is_absolute() { p.to_path_buf() } else { data_dir.join(p) }
}

/// Loads, subsets and splits the images of `cfg`.
pub fn load_images(cfg: &ImageDataConfig, data_dir: &Path, seed: u64) -> Result<ImageData> {
    let dir = resolve(data_dir, &cfg.dir);
    let ds = match cfg.dataset {
        ImageDataset::Cifar10 => seht_data::load_cifar10(&dir)?,
        ImageDataset::Cifar100 => seht_data::load_cifar100(&dir, seht_data::Cifar100Label::Fine)?,
        ImageDataset::FashionMnist => seht_data::load_fashion_mnist(&dir)?,
    };
    let full_train = ds.train.len();
    let mut train = if cfg.train_subset == 0 {
        ds.train
    } else {
        let per_class = cfg.train_subset / ds.train.num_classes;
        if per_class == 0 {
            return Err(config(
                "data.train_subset",
                cfg.train_subset,
                format!("fewer than one image for each of {} classes", ds.train.num_classes),
            ));
        }
        seht_data::subset(&ds.train, Subset::Balanced { per_class, seed })?
    };
    let test = if cfg.test_subset == 0 {
        ds.test
    } else {
        seht_data::subset(&ds.test, Subset::First(cfg.test_subset.min(ds.test.len())))?
    };
    let valid = if cfg.validation > 0 {
        if cfg.validation >= train.len() {
            return Err(config(
                "data.validation",
                cfg.validation,
                format!("must be smaller than the {} training images", train.len()),
            ));
        }
        let mut order: Vec<usize> = (0..train.len()).collect();
        use rand::seq::SliceRandom;
        order.shuffle(&mut Stream::ValidationSplit.rng(step_key(seed, 0)));
        let (v, t) = order.split_at(cfg.validation);
        let (mut v, mut t) = (v.to_vec(), t.to_vec());
        v.sort_unstable();
        t.sort_unstable();
        let valid = train.select(&v)?;
        train = train.select(&t)?;
        Some(Arc::new(valid))
    } else {
        None
    };
    let description = format!(
        "{:?} from {} ({} of {} training images{}, {} test images)",
        cfg.dataset,
        dir.display(),
        train.len(),
        full_train,
        valid.as_ref().map(|v| format!(", {} held out for validation", v.len())).unwrap_or_default(),
        test.len()
    );
    Ok(ImageData { train: Arc::new(train), valid, test: Arc::new(test), description, config: cfg.clone() })
}

/// Loads the corpus of `cfg`, cutting the training split to `train_tokens`.
pub fn load_text(cfg: &TextDataConfig, data_dir: &Path) -> Result<(TextCorpus, String)> {
    let dir = resolve(data_dir, &cfg.dir);
    let files = [cfg.files[0].as_str(), cfg.files[1].as_str(), cfg.files[2].as_str()];
    let mut corpus = TextCorpus::load_splits(
        &dir,
        files,
        "a folder of three plain-text splits (WikiText-2 layout: wiki.{train,valid,test}.tokens)",
    )?;
    let full = corpus.train.tokens.len();
    if cfg.train_tokens > 0 && cfg.train_tokens < full {
        corpus.train.tokens.truncate(cfg.train_tokens);
    }
    let (full_valid, full_test) = (corpus.valid.tokens.len(), corpus.test.tokens.len());
    if cfg.eval_tokens > 0 {
        corpus.valid.tokens.truncate(cfg.eval_tokens);
        corpus.test.tokens.truncate(cfg.eval_tokens);
    }
    let description = format!(
        "text from {} ({} of {} training tokens, {} of {} valid, {} of {} test, vocabulary {})",
        dir.display(),
        corpus.train.tokens.len(),
        full,
        corpus.valid.tokens.len(),
        full_valid,
        corpus.test.tokens.len(),
        full_test,
        corpus.vocab.len()
    );
    Ok((corpus, description))
}

/// A corpus cut into training and evaluation columns.
pub struct TextData {
    /// Training tokens in `batch_size` columns.
    pub train: Batchified,
    /// Validation tokens in `eval_batch_size` columns.
    pub valid: Batchified,
    /// Test tokens in `eval_batch_size` columns.
    pub test: Batchified,
    /// BPTT window length.
    pub bptt: usize,
    /// Words in the vocabulary.
    pub vocab: usize,
    /// A description of what was loaded, for outputs.
    pub description: String,
}

/// The data of a run, loaded; `Run::new` (`net.rs`) joins it to its network.
pub enum Task {
    /// Image classification.
    Images(ImageData),
    /// Word-level language modelling.
    Text(TextData),
}

/// Loads the config's data.
pub(crate) fn load_task(cfg: &ExperimentConfig, env: &Env) -> Result<Task> {
    Ok(match &cfg.data {
        DataConfig::Image(d) => {
            let data = load_images(d, &env.data_dir, cfg.seed)?;
            let (_, h, w) = data.train.shape;
            if let Some(p) = Some(d.crop_padding).filter(|&p| p > h.min(w)) {
                return Err(config("data.crop_padding", p, format!("larger than the {h}×{w} images")));
            }
            Task::Images(data)
        }
        DataConfig::Text(d) => {
            let (corpus, description) = load_text(d, &env.data_dir)?;
            let text = TextData {
                train: Batchified::new(&corpus.train.tokens, d.batch_size)?,
                valid: Batchified::new(&corpus.valid.tokens, d.eval_batch_size)?,
                test: Batchified::new(&corpus.test.tokens, d.eval_batch_size)?,
                bptt: d.bptt,
                vocab: corpus.vocab.len(),
                description,
            };
            Task::Text(text)
        }
    })
}
