//! Parameter blocks and block-structured vectors.
//!
//! A network's parameters come in blocks (one tensor per layer weight). The
//! estimators see the parameter vector as a list of blocks so that they can
//! select blocks (SEHT-D's layer draw) and so that a backend keeps its own
//! storage per block (one tensor each).

/// One block of parameters, as an operator exposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// A stable, human-readable name (e.g. `layer1.0.conv1.weight`).
    pub name: String,
    /// Number of scalar entries in the block.
    pub len: usize,
}

impl Block {
    /// Creates a block description.
    pub fn new(name: impl Into<String>, len: usize) -> Self {
        Self { name: name.into(), len }
    }
}

/// A vector split into blocks, where a block may be absent, meaning zero.
///
/// Absent blocks let sparse probes (SEHT-D) skip whole layers: a backend never
/// needs to allocate or multiply a block that is known to be zero.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockVec<T> {
    parts: Vec<Option<T>>,
}

impl<T> BlockVec<T> {
    /// A vector of `n` blocks, all zero (absent).
    pub fn zeros(n: usize) -> Self {
        Self { parts: (0..n).map(|_| None).collect() }
    }

    /// A vector from its parts; `None` is a zero block.
    pub fn from_parts(parts: Vec<Option<T>>) -> Self {
        Self { parts }
    }

    /// Number of blocks (present or not).
    pub fn num_blocks(&self) -> usize {
        self.parts.len()
    }

    /// The part of block `i`, if present.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.parts.get(i).and_then(Option::as_ref)
    }

    /// Sets block `i`.
    ///
    /// # Panics
    /// If `i` is not a block index of this vector.
    pub fn set(&mut self, i: usize, part: T) {
        self.parts[i] = Some(part);
    }

    /// Iterates over `(index, part)` of the present blocks.
    pub fn present(&self) -> impl Iterator<Item = (usize, &T)> {
        self.parts.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
    }

    /// Indices of the present blocks.
    pub fn support(&self) -> Vec<usize> {
        self.present().map(|(i, _)| i).collect()
    }

    /// The parts, in block order.
    pub fn parts(&self) -> &[Option<T>] {
        &self.parts
    }

    /// Consumes the vector and returns its parts.
    pub fn into_parts(self) -> Vec<Option<T>> {
        self.parts
    }

    /// Maps each present part through `f`.
    pub fn try_map<U, E>(&self, mut f: impl FnMut(usize, &T) -> Result<U, E>) -> Result<BlockVec<U>, E> {
        let parts = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| p.as_ref().map(|p| f(i, p)).transpose())
            .collect::<Result<Vec<_>, E>>()?;
        Ok(BlockVec { parts })
    }
}

/// Total number of entries over `blocks`.
pub fn total_len(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| b.len).sum()
}
