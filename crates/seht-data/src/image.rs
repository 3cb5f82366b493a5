//! An in-memory image classification dataset.

#[cfg(feature = "tensors")]
use candle_core::{Device, Tensor};

use crate::error::{Result, invalid};

/// Images stored as raw bytes (`n × c × h × w`, channel-major, as in the
/// CIFAR binary files) with `u32` labels and the normalisation to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, `n·c·h·w` bytes, image after image, each in CHW order.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Channels, height, width.
    pub shape: (usize, usize, usize),
    /// Number of classes.
    pub num_classes: usize,
    /// Class names, when the dataset ships them (else empty).
    pub class_names: Vec<String>,
    /// Per-channel mean of pixel/255, subtracted on conversion.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of pixel/255, divided on conversion.
    pub std: Vec<f32>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }

    /// The raw bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// A new set holding the images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<ImageSet> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(invalid("index", bad, format!("the set has {} images", self.len())));
        }
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Ok(ImageSet { pixels, labels: indices.iter().map(|&i| self.labels[i]).collect(), ..self.clone_meta() })
    }

    fn clone_meta(&self) -> ImageSet {
        ImageSet {
            pixels: Vec::new(),
            labels: Vec::new(),
            shape: self.shape,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// Normalises raw CHW bytes into `out`: `(x/255 − mean_c)/std_c`.
    pub fn normalise_into(&self, raw: &[u8], out: &mut Vec<f32>) {
        let (c, h, w) = self.shape;
        let plane = h * w;
        for ch in 0..c {
            let (m, s) = (self.mean[ch], self.std[ch]);
            out.extend(raw[ch * plane..(ch + 1) * plane].iter().map(|&p| (p as f32 / 255.0 - m) / s));
        }
    }

    #[cfg(feature = "tensors")]
    /// All images as a normalised `(n, c, h, w)` f32 tensor and the labels as
    /// a `(n,)` u32 tensor, without augmentation (for evaluation).
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut xs = Vec::with_capacity(self.pixels.len());
        for i in 0..self.len() {
            self.normalise_into(self.image(i), &mut xs);
        }
        let (c, h, w) = self.shape;
        Ok((
            Tensor::from_vec(xs, (self.len(), c, h, w), device)?,
            Tensor::from_vec(self.labels.clone(), self.len(), device)?,
        ))
    }

    /// Number of images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// A dataset's training and test splits.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    /// Training images.
    pub train: ImageSet,
    /// Test images.
    pub test: ImageSet,
}
