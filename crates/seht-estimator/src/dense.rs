//! An explicit dense symmetric matrix as an operator, for tests and examples.

use std::convert::Infallible;

use crate::block::{Block, BlockVec, total_len};
use crate::error::{Error, Result};
use crate::operator::HvpOperator;

/// A dense symmetric `n × n` matrix (row-major), split into blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseOperator {
    n: usize,
    a: Vec<f64>,
    blocks: Vec<Block>,
    offsets: Vec<usize>,
}

impl DenseOperator {
    /// Wraps `a` (row-major, `n·n` entries), split into `blocks` whose lengths
    /// sum to `n`. Fails if the sizes disagree or `a` is not symmetric (to
    /// a relative tolerance of 1e-12).
    pub fn new(n: usize, a: Vec<f64>, blocks: Vec<Block>) -> Result<Self> {
        if a.len() != n * n {
            return Err(Error::DimensionMismatch {
                context: "dense matrix entries (n·n)".into(),
                expected: n * n,
                actual: a.len(),
            });
        }
        let total = total_len(&blocks);
        if total != n {
            return Err(Error::DimensionMismatch {
                context: "sum of block lengths".into(),
                expected: n,
                actual: total,
            });
        }
        let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for i in 0..n {
            for j in 0..i {
                if (a[i * n + j] - a[j * n + i]).abs() > 1e-12 * scale {
                    return Err(Error::NotSymmetric { row: i, col: j });
                }
            }
        }
        let mut offsets = Vec::with_capacity(blocks.len());
        let mut at = 0;
        for b in &blocks {
            offsets.push(at);
            at += b.len;
        }
        Ok(Self { n, a, blocks, offsets })
    }

    /// One block named `"all"` covering the whole matrix.
    pub fn single_block(n: usize, a: Vec<f64>) -> Result<Self> {
        Self::new(n, a, vec![Block::new("all", n)])
    }

    /// The dimension `n`.
    pub fn dim(&self) -> usize {
        self.n
    }

    /// Entry `(i, j)`.
    pub fn entry(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }

    /// The exact trace.
    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.entry(i, i)).sum()
    }

    /// The exact trace of the diagonal sub-block of `block`.
    pub fn block_trace(&self, block: usize) -> f64 {
        let o = self.offsets[block];
        (o..o + self.blocks[block].len).map(|i| self.entry(i, i)).sum()
    }

    /// `‖A‖_F²`.
    pub fn frobenius_sq(&self) -> f64 {
        self.a.iter().map(|x| x * x).sum()
    }

    /// `Σᵢ aᵢᵢ²`.
    pub fn diag_sq(&self) -> f64 {
        (0..self.n).map(|i| self.entry(i, i).powi(2)).sum()
    }

    /// Offset of block `block` in the flat vector.
    pub fn offset(&self, block: usize) -> usize {
        self.offsets[block]
    }

    fn flatten(&self, v: &BlockVec<Vec<f64>>) -> Vec<f64> {
        let mut x = vec![0.0; self.n];
        for (i, p) in v.present() {
            x[self.offsets[i]..self.offsets[i] + p.len()].copy_from_slice(p);
        }
        x
    }
}

impl HvpOperator for DenseOperator {
    type Part = Vec<f64>;
    type Scalar = f64;
    type Error = Infallible;

    fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    fn part_from_host(&self, _block: usize, values: &[f64]) -> Result<Vec<f64>, Infallible> {
        Ok(values.to_vec())
    }

    fn part_to_host(&self, _block: usize, part: &Vec<f64>) -> Result<Vec<f64>, Infallible> {
        Ok(part.clone())
    }

    fn hvp(&self, v: &BlockVec<Vec<f64>>) -> Result<BlockVec<Vec<f64>>, Infallible> {
        let x = self.flatten(v);
        let y: Vec<f64> = (0..self.n).map(|i| (0..self.n).map(|j| self.entry(i, j) * x[j]).sum()).collect();
        let mut out = BlockVec::zeros(self.blocks.len());
        for (i, b) in self.blocks.iter().enumerate() {
            out.set(i, y[self.offsets[i]..self.offsets[i] + b.len].to_vec());
        }
        Ok(out)
    }

    fn quadratic_form(&self, v: &BlockVec<Vec<f64>>) -> Result<f64, Infallible> {
        // Only the rows and columns in v's support are touched.
        let idx: Vec<(usize, f64)> = v
            .present()
            .flat_map(|(b, p)| p.iter().enumerate().map(move |(k, &x)| (self.offsets[b] + k, x)))
            .filter(|&(_, x)| x != 0.0)
            .collect();
        Ok(idx.iter().map(|&(i, xi)| xi * idx.iter().map(|&(j, xj)| self.entry(i, j) * xj).sum::<f64>()).sum())
    }

    fn scalar_value(&self, s: &f64) -> Result<f64, Infallible> {
        Ok(*s)
    }

    fn weighted_sum(&self, terms: &[(f64, f64)]) -> Result<f64, Infallible> {
        Ok(terms.iter().map(|(c, s)| c * s).sum())
    }

    fn constant(&self, value: f64) -> Result<f64, Infallible> {
        Ok(value)
    }
}
