//! What an estimator returns.

/// What a trace estimate is an estimate of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The full trace `tr(H)` over all blocks of the operator (unbiased).
    FullTrace,
    /// The paper's `t̃r(H)`: the sum of the diagonal entries that this draw
    /// selected (eq. 14), unbiased given the selection. Its expectation over
    /// selections is `p1·2p2·tr(H)`.
    PartialSum,
}

/// A trace estimate: the value (possibly on an autodiff graph), the per-probe
/// samples it averages, and their statistics.
#[derive(Debug, Clone)]
pub struct TraceEstimate<S> {
    /// The estimate as the backend's scalar; for a differentiable backend,
    /// differentiating it gives the gradient of the estimate.
    pub value: S,
    /// One sample per probe; `value` is their mean.
    pub samples: Vec<f64>,
    /// Mean of `samples` (equals `value` numerically).
    pub mean: f64,
    /// Standard error of the mean, `s/√K`; `None` for a single probe.
    pub std_error: Option<f64>,
    /// What the estimate estimates.
    pub target: Target,
    /// The blocks the estimate covered (SEHT-D: the blocks its layer draw selected).
    pub blocks: Vec<usize>,
    /// Number of Hessian-vector products spent.
    pub hvps: usize,
}

impl TraceEstimate<f64> {
    /// An estimate whose value is the mean of `samples`, with their standard
    /// error; `target`, the `blocks` covered and the `hvps` spent as given.
    pub fn from_samples(samples: Vec<f64>, target: Target, blocks: Vec<usize>, hvps: usize) -> Self {
        let (mean, std_error) = mean_and_std_error(&samples);
        Self { value: mean, samples, mean, std_error, target, blocks, hvps }
    }
}

impl<S> TraceEstimate<S> {
    /// The same estimate with its value in another form (e.g. a detached
    /// number instead of a scalar on an autodiff graph).
    pub fn with_value<T>(self, value: T) -> TraceEstimate<T> {
        TraceEstimate {
            value,
            samples: self.samples,
            mean: self.mean,
            std_error: self.std_error,
            target: self.target,
            blocks: self.blocks,
            hvps: self.hvps,
        }
    }
}

/// Mean and standard error of the mean of `samples`.
pub fn mean_and_std_error(samples: &[f64]) -> (f64, Option<f64>) {
    let k = samples.len();
    if k == 0 {
        return (0.0, None);
    }
    let mean = samples.iter().sum::<f64>() / k as f64;
    if k < 2 {
        return (mean, None);
    }
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
    (mean, Some((var / k as f64).sqrt()))
}

/// A diagonal estimate: `diag(H)` over all blocks, with a standard error
/// per entry (Hutchinson's diagonal estimator, XDiag).
#[derive(Debug, Clone, PartialEq)]
pub struct DiagonalEstimate {
    /// The estimate of `diag(H)`: `n` entries, the blocks concatenated in the
    /// operator's order (block `b` starts at the sum of the earlier blocks' lengths).
    pub diagonal: Vec<f64>,
    /// The standard error of each entry of [`diagonal`](Self::diagonal) (the
    /// estimator's own error estimate; see its documentation); `None` where
    /// the estimator had too few samples to form one.
    pub std_error: Option<Vec<f64>>,
    /// The operator's blocks, in order, so that each block's slice can be found.
    pub blocks: Vec<crate::Block>,
    /// Number of Hessian-vector products spent.
    pub hvps: usize,
}

impl DiagonalEstimate {
    /// The entries of block `b` (`None` if `b` is not a block index).
    pub fn block(&self, b: usize) -> Option<&[f64]> {
        self.range(b).map(|r| &self.diagonal[r])
    }

    /// The standard errors of block `b`'s entries (`None` if `b` is not a
    /// block index or there are no standard errors).
    pub fn block_std_error(&self, b: usize) -> Option<&[f64]> {
        let r = self.range(b)?;
        self.std_error.as_ref().map(|se| &se[r])
    }

    /// `Σᵢ diag(H)ᵢ`: the trace implied by the diagonal estimate.
    pub fn trace(&self) -> f64 {
        self.diagonal.iter().sum()
    }

    fn range(&self, b: usize) -> Option<std::ops::Range<usize>> {
        let block = self.blocks.get(b)?;
        let start: usize = self.blocks[..b].iter().map(|x| x.len).sum();
        Some(start..start + block.len)
    }
}

/// Per-entry running mean and sum of squared deviations (Welford 1962), for
/// the per-entry samples of a diagonal estimator.
#[derive(Debug, Clone)]
pub(crate) struct EntryStats {
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl EntryStats {
    /// Statistics of `n` entries, with no sample yet.
    pub(crate) fn new(n: usize) -> Self {
        Self { count: 0, mean: vec![0.0; n], m2: vec![0.0; n] }
    }

    /// Adds one sample of every entry.
    pub(crate) fn push(&mut self, sample: &[f64]) {
        self.count += 1;
        let k = self.count as f64;
        for ((m, m2), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(sample) {
            let d = x - *m;
            *m += d / k;
            *m2 += d * (x - *m);
        }
    }

    /// The per-entry means, and their standard errors `s/√K` (`None` for
    /// fewer than two samples).
    pub(crate) fn finish(self) -> (Vec<f64>, Option<Vec<f64>>) {
        let k = self.count;
        if k < 2 {
            return (self.mean, None);
        }
        let se = self.m2.iter().map(|m2| (m2 / (k - 1) as f64 / k as f64).sqrt()).collect();
        (self.mean, Some(se))
    }
}
