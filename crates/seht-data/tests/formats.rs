//! Loaders against fixture files in the exact formats, and every bad-input case.

mod common;

use common::*;
use seht_data::{Cifar100Label, Error, TextCorpus, load_cifar10, load_cifar100, load_fashion_mnist};

#[test]
fn cifar10_pixels_labels_and_names() {
    let tmp = temp_dir("c10");
    let dir = write_cifar10(tmp.path(), 4);
    let ds = load_cifar10(&dir).expect("load");
    assert_eq!(ds.train.len(), 20);
    assert_eq!(ds.test.len(), 4);
    assert_eq!(ds.train.shape, (3, 32, 32));
    assert_eq!(ds.train.class_names.len(), 10);
    assert_eq!(ds.train.class_names[3], "cat");
    // Record i of data_batch_(f+1) is train image 4f + i.
    for f in 0..5 {
        for i in 0..4 {
            let n = 4 * f + i;
            assert_eq!(ds.train.labels[n], ((f + i) % 10) as u32);
            let img = ds.train.image(n);
            for k in [0usize, 1023, 1024, 2047, 2048, 3071] {
                assert_eq!(img[k], pixel(f, i, k), "image {n} byte {k}");
            }
        }
    }
    assert_eq!(ds.test.labels, vec![5, 6, 7, 8]);
    #[cfg(feature = "tensors")]
    {
        // Normalisation: (x/255 − mean_c)/std_c, channel c = k / 1024.
        let (xs, ys) = ds.test.to_tensors(&candle_core::Device::Cpu).expect("tensors");
        assert_eq!(xs.dims(), [4, 3, 32, 32]);
        let v = xs.flatten_all().expect("f").to_vec1::<f32>().expect("v");
        for (k, c) in [(0usize, 0usize), (1500, 1), (3000, 2)] {
            let want = (pixel(5, 0, k) as f32 / 255.0 - seht_data::CIFAR10_MEAN[c]) / seht_data::CIFAR10_STD[c];
            assert!((v[k] - want).abs() < 1e-6);
        }
        assert_eq!(ys.to_vec1::<u32>().expect("labels"), vec![5, 6, 7, 8]);
    }
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let tmp = temp_dir("c100");
    let dir = write_cifar100(tmp.path(), 30, 5);
    let fine = load_cifar100(&dir, Cifar100Label::Fine).expect("fine");
    assert_eq!(fine.train.num_classes, 100);
    assert_eq!(fine.train.labels[..4], [0, 7, 14, 21]);
    assert_eq!(fine.train.class_names[7], "fine7");
    assert_eq!(fine.train.image(3)[100], pixel(10, 3, 100));
    assert_eq!(fine.test.image(4)[3071], pixel(11, 4, 3071));
    let coarse = load_cifar100(&dir, Cifar100Label::Coarse).expect("coarse");
    assert_eq!(coarse.train.num_classes, 20);
    assert_eq!(coarse.train.labels[21..24], [1, 2, 3]);
    assert!(coarse.train.class_names.is_empty(), "no coarse names file in the fixture");
}

#[test]
fn missing_file_is_named() {
    let tmp = temp_dir("missing");
    let dir = write_cifar10(tmp.path(), 2);
    std::fs::remove_file(dir.join("data_batch_3.bin")).expect("rm");
    match load_cifar10(&dir) {
        Err(Error::MissingFile { path, hint }) => {
            assert!(path.ends_with("data_batch_3.bin"));
            assert!(hint.contains("cifar-10-binary.tar.gz"));
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

#[test]
fn partial_record_is_rejected_not_truncated() {
    let tmp = temp_dir("size");
    let dir = write_cifar10(tmp.path(), 2);
    let f = dir.join("test_batch.bin");
    let mut bytes = std::fs::read(&f).expect("read");
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&f, bytes).expect("write");
    match load_cifar10(&dir) {
        Err(Error::BadSize { path, size, record }) => {
            assert!(path.ends_with("test_batch.bin"));
            assert_eq!((size, record), (2 * 3073 - 100, 3073));
        }
        other => panic!("expected BadSize, got {other:?}"),
    }
    let e = load_cifar10(&dir).expect_err("bad");
    assert!(e.to_string().contains("test_batch.bin") && e.to_string().contains("3073"), "{e}");
}

#[test]
fn label_out_of_range_is_rejected() {
    let tmp = temp_dir("label");
    let dir = write_cifar10(tmp.path(), 3);
    let f = dir.join("data_batch_2.bin");
    let mut bytes = std::fs::read(&f).expect("read");
    bytes[3073] = 10; // record 1's label
    std::fs::write(&f, bytes).expect("write");
    assert!(matches!(load_cifar10(&dir), Err(Error::LabelOutOfRange { record: 1, label: 10, classes: 10, .. })));
    let dir = write_cifar100(tmp.path(), 3, 3);
    let f = dir.join("test.bin");
    let mut bytes = std::fs::read(&f).expect("read");
    bytes[3074 * 2 + 1] = 100; // record 2's fine label
    std::fs::write(&f, bytes).expect("write");
    assert!(matches!(
        load_cifar100(&dir, Cifar100Label::Fine),
        Err(Error::LabelOutOfRange { record: 2, label: 100, .. })
    ));
}

#[test]
fn fashion_mnist_idx_gz() {
    let tmp = temp_dir("fmnist");
    let dir = write_fashion(tmp.path(), 12, 5);
    let ds = load_fashion_mnist(&dir).expect("load");
    assert_eq!((ds.train.len(), ds.test.len()), (12, 5));
    assert_eq!(ds.train.shape, (1, 28, 28));
    assert_eq!(ds.train.labels[11], 1);
    assert_eq!(ds.test.image(4)[783], ((4 * 3 + 783) % 256) as u8);
    assert_eq!(ds.train.class_names[9], "Ankle boot");
}

#[test]
fn fashion_mnist_bad_inputs() {
    let tmp = temp_dir("fbad");
    let dir = write_fashion(tmp.path(), 4, 4);
    let img = dir.join("train-images-idx3-ubyte.gz");
    // Corrupt gzip stream.
    let mut gz = std::fs::read(&img).expect("read");
    let n = gz.len();
    gz[n / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&img, &gz).expect("write");
    match load_fashion_mnist(&dir) {
        Err(Error::Format { path, reason }) => {
            assert!(path.ends_with("train-images-idx3-ubyte.gz"));
            assert!(reason.contains("gzip"), "{reason}");
        }
        other => panic!("expected Format, got {other:?}"),
    }
    // Wrong IDX magic, and data shorter than the header says.
    std::fs::write(&img, gzip(&[1, 2, 3, 4])).expect("write");
    assert!(matches!(load_fashion_mnist(&dir), Err(Error::Format { reason, .. }) if reason.contains("magic")));
    std::fs::write(&img, gzip(&idx(&[4, 28, 28], &[0u8; 100]))).expect("write");
    assert!(matches!(load_fashion_mnist(&dir), Err(Error::Format { reason, .. }) if reason.contains("3136")));
    // Label count disagreeing with image count.
    let dir = write_fashion(tmp.path(), 4, 4);
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&idx(&[3], &[0, 1, 2]))).expect("write");
    assert!(
        matches!(load_fashion_mnist(&dir), Err(Error::Format { reason, .. }) if reason.contains("3 labels for 4 images"))
    );
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&idx(&[4], &[0, 1, 12, 2]))).expect("write");
    assert!(matches!(load_fashion_mnist(&dir), Err(Error::LabelOutOfRange { record: 2, label: 12, .. })));
}

/// The real dataset, where Debian's package is installed.
#[test]
fn fashion_mnist_from_debian_package_when_installed() {
    let dir = std::path::Path::new(seht_data::fashion::DEBIAN_DIR);
    if !dir.join("t10k-labels-idx1-ubyte.gz").is_file() {
        eprintln!("skipped: {} not installed (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let ds = load_fashion_mnist(dir).expect("load");
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    assert_eq!(ds.train.class_counts(), vec![6000; 10]);
    assert_eq!(ds.test.class_counts(), vec![1000; 10]);
}

fn write_text(dir: &std::path::Path, files: [(&str, &str); 3]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
}

#[test]
fn wikitext_vocabulary_eos_and_unk() {
    let tmp = temp_dir("wt2");
    let dir = tmp.path().join("wikitext-2");
    std::fs::create_dir_all(&dir).expect("dir");
    write_text(
        &dir,
        [
            ("wiki.train.tokens", " = Title = \n\n the cat sat <unk> \n the dog \n"),
            ("wiki.valid.tokens", " the cat \n"),
            ("wiki.test.tokens", " the bird sat \n"),
        ],
    );
    let c = TextCorpus::load_wikitext2(&dir).expect("load");
    let words: Vec<&str> = (0..c.vocab.len() as u32).map(|i| c.vocab.word(i).expect("word")).collect();
    assert_eq!(words, ["=", "Title", "<eos>", "the", "cat", "sat", "<unk>", "dog"], "first-seen order, <eos> per line");
    // Lines: "= Title =" <eos>, "" <eos>, "the cat sat <unk>" <eos>, "the dog" <eos>
    assert_eq!(c.train.tokens, [0, 1, 0, 2, 2, 3, 4, 5, 6, 2, 3, 7, 2]);
    assert_eq!(c.valid.tokens, [3, 4, 2]);
    assert_eq!(c.test.tokens, [3, 6, 5, 2], "unseen 'bird' maps to <unk>");
    assert_eq!((c.valid.out_of_vocabulary, c.test.out_of_vocabulary), (0, 1));
}

#[test]
fn own_corpus_gets_unk_added_and_empty_splits_are_rejected() {
    let tmp = temp_dir("corpus");
    write_text(tmp.path(), [("train.txt", "a b c\nb c d\n"), ("valid.txt", "a z\n"), ("test.txt", "d\n")]);
    let c = TextCorpus::load_splits(tmp.path(), ["train.txt", "valid.txt", "test.txt"], "own corpus").expect("load");
    assert_eq!(c.vocab.id("<unk>"), Some(5), "added after a b c <eos> d");
    assert_eq!(c.valid.tokens, [0, 5, 3]);
    std::fs::write(tmp.path().join("test.txt"), "\n \n").expect("write");
    match TextCorpus::load_splits(tmp.path(), ["train.txt", "valid.txt", "test.txt"], "own corpus") {
        Err(Error::EmptySplit { path }) => assert!(path.ends_with("test.txt")),
        other => panic!("expected EmptySplit, got {other:?}"),
    }
    std::fs::remove_file(tmp.path().join("valid.txt")).expect("rm");
    assert!(matches!(
        TextCorpus::load_splits(tmp.path(), ["train.txt", "valid.txt", "test.txt"], "own corpus"),
        Err(Error::MissingFile { .. })
    ));
}

#[cfg(feature = "tensors")]
#[test]
fn batchify_and_bptt_windows_follow_the_reference() {
    let tokens: Vec<u32> = (0..23).collect();
    let b = seht_data::Batchified::new(&tokens, 4).expect("batchify");
    assert_eq!((b.batch(), b.row_len()), (4, 5), "23 tokens, 4 rows of 5, remainder dropped");
    assert_eq!(b.num_windows(3), 2);
    let dev = candle_core::Device::Cpu;
    let (x, y) = b.window(0, 3, &dev).expect("window");
    assert_eq!(x.to_vec2::<u32>().expect("x"), vec![vec![0, 1, 2], vec![5, 6, 7], vec![10, 11, 12], vec![15, 16, 17]]);
    assert_eq!(y.to_vec2::<u32>().expect("y"), vec![vec![1, 2, 3], vec![6, 7, 8], vec![11, 12, 13], vec![16, 17, 18]]);
    let (x, y) = b.window(1, 3, &dev).expect("last window is shorter");
    assert_eq!(x.dims(), [4, 1]);
    assert_eq!(x.to_vec2::<u32>().expect("x")[3], vec![18]);
    assert_eq!(y.to_vec2::<u32>().expect("y")[3], vec![19]);
    assert!(b.window(2, 3, &dev).is_err());
    assert!(seht_data::Batchified::new(&tokens, 0).is_err());
    assert!(seht_data::Batchified::new(&tokens, 20).is_err());
}

/// The Fashion-MNIST subset shipped in the repository (`data/shipped`): the
/// loader checks its SHA256SUMS, and it is the class-balanced subset that
/// scripts/make-shipped-fashion-mnist.py describes.
#[test]
fn shipped_fashion_mnist_subset() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/shipped/fashion-mnist");
    assert_eq!(seht_data::checksums::verify_sha256sums(&dir).expect("checksums"), 4);
    let ds = load_fashion_mnist(&dir).expect("load");
    assert_eq!((ds.train.len(), ds.test.len()), (8000, 2000));
    assert_eq!(ds.train.class_counts(), vec![800; 10]);
    assert_eq!(ds.test.class_counts(), vec![200; 10]);
    assert_eq!(ds.train.shape, (1, 28, 28));
}

#[test]
fn sha256sums_are_checked_before_loading() {
    let tmp = temp_dir("fsums");
    let dir = write_fashion(tmp.path(), 4, 3);
    let files = ["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"];
    let list: String = files
        .iter()
        .map(|f| format!("{}  {f}\n", seht_data::checksums::sha256_file(&dir.join(f)).expect("sha")))
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), &list).expect("write");
    assert_eq!(load_fashion_mnist(&dir).expect("intact").train.len(), 4);
    // One changed byte in a listed file (still a valid IDX file of the same size).
    let img = dir.join("train-images-idx3-ubyte.gz");
    let changed = gzip(&idx(&[4, 28, 28], &[7u8; 4 * 784]));
    std::fs::write(&img, changed).expect("write");
    match load_fashion_mnist(&dir) {
        Err(Error::Modified { path, list, expected, actual }) => {
            assert!(path.ends_with("train-images-idx3-ubyte.gz") && list.ends_with("SHA256SUMS"));
            assert_ne!(expected, actual);
        }
        other => panic!("expected Modified, got {other:?}"),
    }
    // A malformed list names its line.
    std::fs::write(dir.join("SHA256SUMS"), format!("\nnot-a-hash  x\n{list}")).expect("write");
    match seht_data::checksums::verify_sha256sums(&dir) {
        Err(Error::Format { path, reason }) => {
            assert!(path.ends_with("SHA256SUMS") && reason.contains("line 2"), "{reason}")
        }
        other => panic!("expected Format, got {other:?}"),
    }
}
