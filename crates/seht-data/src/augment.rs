//! Image augmentation, seeded and reproducible: random crop with zero
//! padding, horizontal flip, and Cutout (DeVries & Taylor 2017).
//!
//! Crop and flip act on the raw bytes (padding is black, as torchvision's
//! `RandomCrop(32, padding=4)` on a PIL image); Cutout acts on the normalised
//! image and sets a square, clipped at the border, to zero (the dataset mean),
//! as in the authors' code: its centre is uniform over the image.

use rand::Rng;

use crate::error::{Result, invalid};

/// Which augmentations to apply. No hidden defaults: every field is explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Random crop after zero padding by this many pixels on each side.
    pub crop_padding: Option<usize>,
    /// Flip horizontally with probability 1/2.
    pub hflip: bool,
    /// Cutout with a square of this side.
    pub cutout: Option<usize>,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment { crop_padding: None, hflip: false, cutout: None };
    /// The standard CIFAR augmentation: crop with 4-pixel padding and flip.
    pub const CIFAR: Augment = Augment { crop_padding: Some(4), hflip: true, cutout: None };

    /// Checks the sizes against an image of `h × w`.
    pub fn validate(&self, h: usize, w: usize) -> Result<()> {
        if let Some(p) = self.crop_padding
            && p > h.min(w)
        {
            return Err(invalid("crop_padding", p, format!("larger than the {h}×{w} image")));
        }
        if let Some(s) = self.cutout
            && (s == 0 || s > h.max(w))
        {
            return Err(invalid("cutout", s, format!("must be between 1 and the image size {h}×{w}")));
        }
        Ok(())
    }

    /// Crop and flip of one CHW byte image into `out` (same size).
    pub fn crop_flip(&self, src: &[u8], shape: (usize, usize, usize), rng: &mut impl Rng, out: &mut Vec<u8>) {
        let (c, h, w) = shape;
        let (dy, dx) = match self.crop_padding {
            Some(p) if p > 0 => {
                (rng.random_range(0..=2 * p) as isize - p as isize, rng.random_range(0..=2 * p) as isize - p as isize)
            }
            _ => (0, 0),
        };
        let flip = self.hflip && rng.random::<bool>();
        for ch in 0..c {
            let plane = &src[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xo = if flip { w - 1 - x } else { x };
                    let sx = xo as isize + dx;
                    out.push(if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        0
                    });
                }
            }
        }
    }

    /// Cutout on one normalised CHW image, in place.
    pub fn cutout(&self, img: &mut [f32], shape: (usize, usize, usize), rng: &mut impl Rng) {
        let Some(s) = self.cutout else { return };
        let (c, h, w) = shape;
        let (cy, cx) = (rng.random_range(0..h) as isize, rng.random_range(0..w) as isize);
        let half = (s / 2) as isize;
        let (y0, y1) = ((cy - half).max(0) as usize, ((cy - half + s as isize).min(h as isize)) as usize);
        let (x0, x1) = ((cx - half).max(0) as usize, ((cx - half + s as isize).min(w as isize)) as usize);
        for ch in 0..c {
            for y in y0..y1 {
                img[ch * h * w + y * w + x0..ch * h * w + y * w + x1].fill(0.0);
            }
        }
    }
}
