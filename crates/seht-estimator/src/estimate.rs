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
