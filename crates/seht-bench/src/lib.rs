//! Workloads for the benchmarks: a model, a batch, its weights, and the
//! operations whose cost is compared (a plain training step, an HVP, a trace
//! estimate, a penalised step). Shared by `benches/` and by the peak-memory
//! example, so both measure the same thing.

use candle_core::Var;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use seht_candle::{
    Gradient, GraphMode, HessianOperator, Param, ParamSet, Penalty, Selection, penalised_loss, trace_estimate,
};
use seht_estimator::{
    BlockVec, Estimator, HvpOperator, ProbeRng, Rademacher, Reading, SehtD, SehtH, TraceEstimator, probe_rng,
};
use seht_models::{
    ImageClassifier, Phase, ResNet, ResNetConfig, RnnKind, RnnLm, RnnLmConfig, WideResNet, WideResNetConfig,
    seeded_varbuilder,
};

/// A model on one fixed batch.
pub struct Workload {
    /// Name used in benchmark ids.
    pub name: String,
    net: Net,
    xs: Tensor,
    ys: Tensor,
    /// The penalised parameters (weights only).
    pub weights: Vec<Param>,
    params: ParamSet,
    trainable: Vec<Var>,
}

/// An image classifier or a language model.
enum Net {
    Image(Box<dyn ImageClassifier>),
    Lm(RnnLm),
}

/// The multi-layer perceptron of [`Model::Mlp`]: linear layers with ReLU
/// between them, on flattened images.
struct Mlp(Vec<candle_nn::Linear>);

impl ImageClassifier for Mlp {
    fn logits(&self, xs: &Tensor, _phase: Phase) -> seht_models::Result<Tensor> {
        let mut h = xs.flatten_from(1)?;
        for (i, l) in self.0.iter().enumerate() {
            h = candle_core::Module::forward(l, &h)?;
            if i + 1 < self.0.len() {
                h = seht_candle::ops::relu(&h).map_err(candle_core::Error::wrap)?;
            }
        }
        Ok(h)
    }

    /// Names `fcN.weight` / `fcN.bias`: roles from the names.
    fn param_set(&self, varmap: &VarMap) -> seht_models::Result<ParamSet> {
        Ok(ParamSet::from_varmap(varmap))
    }
}

fn seeded(shape: &[usize], seed: u64, dev: &Device) -> candle_core::Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect::<Vec<_>>(), shape, dev)
}

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// A 1-stage ResNet of width 8 on 8×8 inputs (an MLP-sized network).
    Tiny,
    /// ResNet with widths w, 2w, 4w, 8w and `blocks` per stage on 32×32.
    ResNet {
        /// Base width (64 = ResNet-18).
        width: usize,
        /// Blocks per stage (2 = ResNet-18).
        blocks: usize,
    },
    /// Multi-layer perceptron on flattened 3×32×32 images: 3072 → `hidden`
    /// → `hidden` → 10, ReLU, no normalisation.
    Mlp {
        /// Width of the two hidden layers.
        hidden: usize,
    },
    /// 2-layer LSTM LM, vocabulary 10,000, sizes `hidden`, batch 20 × 35.
    Lstm {
        /// Embedding and hidden size.
        hidden: usize,
    },
    /// Wide ResNet `depth`-`widen` (Zagoruyko & Komodakis 2016) on 3×32×32,
    /// 10 classes, dropout 0.3 (WRN-28-10: depth 28, widen 10).
    WideResNet {
        /// Depth (6n + 4).
        depth: usize,
        /// Widening factor.
        widen: usize,
    },
}

impl Workload {
    /// Builds `model` with batch size `batch` (images) on the CPU.
    pub fn new(model: Model, batch: usize) -> candle_core::Result<Self> {
        Self::on(model, batch, &Device::Cpu)
    }

    /// Builds `model` with batch size `batch` on `dev`. The weights and the
    /// batch are drawn on the host from fixed seeds, so every device gets the
    /// same values.
    pub fn on(model: Model, batch: usize, dev: &Device) -> candle_core::Result<Self> {
        let dev = dev.clone();
        let varmap = VarMap::new();
        let vb = seeded_varbuilder(&varmap, 0, DType::F32, &dev);
        let wrap = candle_core::Error::wrap;
        let resnet = |width, blocks| -> candle_core::Result<Net> {
            Ok(Net::Image(Box::new(
                ResNet::new(&ResNetConfig::narrow(3, 10, width, blocks), vb.clone()).map_err(wrap)?,
            )))
        };
        let (name, net, xs, ys) = match model {
            Model::Tiny => (
                "tiny-resnet".to_string(),
                resnet(8, [1, 1, 1, 1])?,
                seeded(&[batch, 3, 8, 8], 1, &dev)?,
                labels(batch, 10, &dev)?,
            ),
            Model::ResNet { width, blocks } => (
                format!("resnet-w{width}-b{blocks}"),
                resnet(width, [blocks; 4])?,
                seeded(&[batch, 3, 32, 32], 1, &dev)?,
                labels(batch, 10, &dev)?,
            ),
            Model::Mlp { hidden } => {
                let dims = [3 * 32 * 32, hidden, hidden, 10];
                let layers = dims
                    .windows(2)
                    .enumerate()
                    .map(|(i, d)| candle_nn::linear(d[0], d[1], vb.pp(format!("fc{i}"))))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                (
                    format!("mlp-h{hidden}"),
                    Net::Image(Box::new(Mlp(layers))),
                    seeded(&[batch, 3 * 32 * 32], 1, &dev)?,
                    labels(batch, 10, &dev)?,
                )
            }
            Model::WideResNet { depth, widen } => {
                let cfg =
                    WideResNetConfig { depth, widen_factor: widen, dropout: 0.3, in_channels: 3, num_classes: 10 };
                (
                    format!("wrn-{depth}-{widen}"),
                    Net::Image(Box::new(WideResNet::new(&cfg, vb.clone()).map_err(wrap)?)),
                    seeded(&[batch, 3, 32, 32], 1, &dev)?,
                    labels(batch, 10, &dev)?,
                )
            }
            Model::Lstm { hidden } => {
                let cfg = RnnLmConfig {
                    kind: RnnKind::Lstm,
                    vocab_size: 10_000,
                    embedding: hidden,
                    hidden,
                    layers: 2,
                    dropout: 0.5,
                    tie_weights: false,
                    init_range: 0.1,
                };
                let m = RnnLm::new(&cfg, vb.clone()).map_err(wrap)?;
                let toks = labels(20 * 36, 10_000, &dev)?.reshape((20, 36))?;
                (format!("lstm-h{hidden}"), Net::Lm(m), toks.narrow(1, 0, 35)?, toks.narrow(1, 1, 35)?)
            }
        };
        let params = match &net {
            Net::Image(m) => m.param_set(&varmap),
            Net::Lm(m) => m.roles().param_set(&varmap),
        }
        .map_err(wrap)?;
        let weights = params.select(&Selection::Weights).map_err(candle_core::Error::wrap)?;
        let trainable = params.trainable_vars();
        Ok(Self { name, net, xs, ys, weights, params, trainable })
    }

    /// The training loss on the workload's batch (dropout masks from `seed`).
    pub fn loss(&self, seed: u64) -> candle_core::Result<Tensor> {
        let wrap = candle_core::Error::wrap;
        match &self.net {
            Net::Image(m) => {
                candle_nn::loss::cross_entropy(&m.logits(&self.xs, Phase::Train { seed }).map_err(wrap)?, &self.ys)
            }
            Net::Lm(m) => {
                let (logits, _) =
                    m.forward_t(&self.xs, &m.zero_state(20).map_err(wrap)?, Phase::Train { seed }).map_err(wrap)?;
                RnnLm::loss(&logits, &self.ys).map_err(wrap)
            }
        }
    }

    /// Number of weight tensors (SEHT-D's layers).
    pub fn num_blocks(&self) -> usize {
        self.weights.len()
    }

    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        self.params.num_trainable()
    }

    /// A plain step's work: forward and backward.
    pub fn plain_step(&self) -> candle_core::Result<()> {
        seht_candle::backward_no_graph(&self.loss(0)?)?;
        Ok(())
    }

    /// The first half of an HVP: the forward pass and the gradient kept on the
    /// graph (`HessianOperator::new`), without the second backward.
    pub fn gradient_on_graph(&self) -> Result<(), seht_candle::Error> {
        HessianOperator::new(&self.loss(0)?, &self.weights)?;
        Ok(())
    }

    /// One HVP with a Rademacher probe over all weights (forward, gradient on
    /// the graph, second backward).
    pub fn hvp(&self, rng: &mut ProbeRng) -> Result<(), seht_candle::Error> {
        self.rademacher_hvp(rng)?;
        Ok(())
    }

    fn rademacher_hvp(&self, rng: &mut ProbeRng) -> Result<BlockVec<Tensor>, seht_candle::Error> {
        // A product that is not differentiated again: without its graph (as
        // `torch.autograd.grad` without `create_graph` in the peer benchmark).
        let op = HessianOperator::with_mode(&self.loss(0)?, &self.weights, GraphMode::Detached)?;
        let v: Vec<Option<Tensor>> = op
            .blocks()
            .iter()
            .enumerate()
            .map(|(i, b)| op.part_from_host(i, &rand_vec(rng, b.len)).map(Some))
            .collect::<Result<_, _>>()?;
        op.hvp(&BlockVec::from_parts(v))
    }

    /// An estimate-only trace (detached).
    pub fn estimate(&self, est: &impl TraceEstimator, rng: &mut ProbeRng) -> Result<usize, seht_candle::Error> {
        Ok(trace_estimate(&self.loss(0)?, &self.weights, est, rng)?.hvps)
    }

    /// A measurement by an estimator that returns a number rather than a
    /// differentiable value (XTrace, XNysTrace, Hutchinson's diagonal, XDiag):
    /// the forward pass, the gradient on the graph, and `f` run on the
    /// detached Hessian of the batch's loss over the weights. Returns what
    /// `f` returns (the products it spent).
    pub fn measure(
        &self,
        f: impl FnOnce(&HessianOperator) -> seht_estimator::Result<usize>,
    ) -> Result<usize, seht_candle::Error> {
        let op = HessianOperator::with_mode(&self.loss(0)?, &self.weights, GraphMode::Detached)?;
        Ok(f(&op)?)
    }

    /// A penalised step's work: forward, penalty, and the backward of
    /// `loss + λ·tr̂` (the third-order pass).
    pub fn penalised_step(&self, est: &impl TraceEstimator, rng: &mut ProbeRng) -> Result<usize, seht_candle::Error> {
        let (total, e) = penalised_loss(&self.loss(0)?, &self.weights, est, 1e-3, rng)?;
        seht_candle::backward_no_graph(&total)?;
        Ok(e.hvps)
    }

    /// A penalised step's work as training does it
    /// (`seht_candle::penalised_gradients`): each probe's quadratic form is
    /// differentiated on its own and its graph dropped.
    pub fn penalised_step_per_probe(
        &self,
        est: &impl TraceEstimator,
        rng: &mut ProbeRng,
    ) -> Result<usize, seht_candle::Error> {
        let r = seht_candle::penalised_gradients(&self.loss(0)?, &self.weights, &self.trainable, est, 1e-3, rng)?;
        Ok(r.estimate.hvps)
    }

    /// The device the workload lives on.
    pub fn device(&self) -> &Device {
        self.xs.device()
    }

    /// One HVP `Hσ` over all weights with a Rademacher probe from `rng`,
    /// copied to the host (for comparing devices).
    pub fn hvp_host(&self, rng: &mut ProbeRng) -> Result<Vec<f32>, seht_candle::Error> {
        let hv = self.rademacher_hvp(rng)?;
        let mut out = Vec::new();
        for part in hv.parts().iter().flatten() {
            out.extend(part.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The gradient of `loss + λ·tr̂` (exact, third-order pass) for every
    /// trainable variable, concatenated on the host.
    pub fn penalised_grads_host(
        &self,
        est: &impl TraceEstimator,
        lambda: f64,
        rng: &mut ProbeRng,
    ) -> Result<Vec<f32>, seht_candle::Error> {
        let (total, _) = penalised_loss(&self.loss(0)?, &self.weights, est, lambda, rng)?;
        let g = seht_candle::backward_no_graph(&total)?;
        let mut out = Vec::new();
        for v in &self.trainable {
            if let Some(t) = g.get(v.as_tensor()) {
                out.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            }
        }
        Ok(out)
    }

    /// A first-order penalised step's work (`seht_candle::Penalty` with
    /// `Gradient::FirstOrder`): three forward/backward passes, no
    /// higher-order graph. `p = None` is SEHT-H (Rademacher probes over all
    /// weights); `Some(p)` is SEHT-D (a fresh layer draw, sparse probes,
    /// unbiased reading), where a draw that selects no layer costs a plain
    /// step, as in training. Returns the number of probes that cost passes.
    pub fn first_order_step(
        &self,
        probes: usize,
        p: Option<f64>,
        rng: &mut ProbeRng,
    ) -> Result<usize, seht_candle::Error> {
        let estimator: Estimator = match p {
            None => SehtH::seht_h(probes)?.into(),
            Some(p) => SehtD::new(probes, p, Reading::Unbiased)?.into(),
        };
        let penalty = Penalty::new(estimator, 1e-3, Gradient::FirstOrder { relative_step: None })?;
        Ok(penalty.gradients(&self.params, || self.loss(0), rng)?.estimate.hvps)
    }

    /// The logits `(N, C)` and labels `(N,)` of the workload's batch (the
    /// language model: one row per token).
    fn logits_and_labels(&self, seed: u64) -> candle_core::Result<(Tensor, Tensor)> {
        let wrap = candle_core::Error::wrap;
        match &self.net {
            Net::Image(m) => Ok((m.logits(&self.xs, Phase::Train { seed }).map_err(wrap)?, self.ys.clone())),
            Net::Lm(m) => {
                let (logits, _) =
                    m.forward_t(&self.xs, &m.zero_state(20).map_err(wrap)?, Phase::Train { seed }).map_err(wrap)?;
                Ok((logits.flatten_to(1)?, self.ys.flatten_all()?))
            }
        }
    }

    /// A Gauss–Newton-penalised step's work
    /// (`seht_candle::Penalty::gauss_newton`, one label draw,
    /// λ = 1e-3): the forward pass, the loss's gradient, one sampled-label
    /// gradient and the penalty's gradient (double backprop: second order
    /// only; first order: two more forward/backward passes).
    pub fn gauss_newton_step(
        &self,
        gradient: seht_candle::Gradient,
        rng: &mut ProbeRng,
    ) -> Result<(), seht_candle::Error> {
        let penalty = seht_candle::Penalty::gauss_newton(1, 1e-3, gradient)?;
        let objective = || self.logits_and_labels(0).map(|(z, y)| seht_candle::Objective::classification(z, y));
        penalty.gradients(&self.params, objective, rng)?;
        Ok(())
    }
}

fn labels(n: usize, classes: u32, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec((0..n as u32).map(|i| (i * 7 + 3) % classes).collect::<Vec<_>>(), n, dev)
}

fn rand_vec(rng: &mut ProbeRng, n: usize) -> Vec<f64> {
    use seht_estimator::ProbeDistribution;
    Rademacher.sample(rng, n)
}

/// A fresh probe generator.
pub fn rng(seed: u64) -> ProbeRng {
    probe_rng(seed)
}

pub use seht_candle::malloc::{CountingAlloc, peak_bytes};
