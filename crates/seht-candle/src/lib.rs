//! The candle backend of `seht`: exact Hessian-vector products by double
//! backprop, and a Hessian-trace penalty whose gradient is exact.
//!
//! [`Penalty::gradients`] is the entry point: the gradient of `L + λ·tr̂(H)`
//! (or of `L + λ·tr̂(G)`, the Gauss–Newton trace: [`Penalty::gauss_newton`])
//! as a candle `GradStore`, exact (in one pass or one probe at a time) or
//! from first-order gradients only.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer, SGD, VarBuilder, VarMap};
//! use seht_candle::{Gradient, ParamSet, Penalty};
//! use seht_estimator::{SehtH, probe_rng};
//!
//! fn main() -> anyhow::Result<()> {
//!     let dev = Device::Cpu;
//!     let varmap = VarMap::new();
//!     let model = candle_nn::linear(4, 3, VarBuilder::from_varmap(&varmap, DType::F64, &dev).pp("fc"))?;
//!     let xs = Tensor::randn(0f64, 1.0, (8, 4), &dev)?;
//!     let ys = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &dev)?;
//!     let params = ParamSet::from_varmap(&varmap);
//!     let mut opt = SGD::new(params.trainable_vars(), 0.1)?;
//!     let penalty = Penalty::new(SehtH::seht_h(1)?, 1e-2, Gradient::FirstOrder { relative_step: None })?;
//!     let loss = || candle_nn::loss::cross_entropy(&model.forward(&xs)?, &ys);
//!     let step = penalty.gradients(&params, loss, &mut probe_rng(0))?;
//!     opt.step(&step.grads)?;
//!     println!("trace estimate {}", step.estimate.mean);
//!     Ok(())
//! }
//! ```

mod accumulate;
mod attention_ops;
mod autodiff;
mod batch_norm;
mod conv;
mod cpu_op;
mod cross_entropy;
mod error;
pub mod first_order;
pub mod gauss_newton;
mod gauss_newton_operator;
pub mod gradcheck;
pub mod malloc;
mod operator;
pub mod ops;
pub mod paper_code;
mod params;
pub mod pattern;
mod penalty;
mod step;

pub use accumulate::{Combination, PenalisedGradients, penalised_gradients};
pub use autodiff::{backward_create_graph, backward_no_graph, backward_to_with, backward_with, check_higher_order};
pub use error::{Error, Result};
pub use gauss_newton_operator::GaussNewtonOperator;
pub use malloc::retain_freed_memory;
pub use operator::{GraphMode, HessianOperator};
pub use params::{Param, ParamSet, Role, Selection};
pub use penalty::{penalised_loss, trace_estimate, trace_penalty};
pub use step::{Curvature, Gradient, Objective, PenalisedGrads, Penalty};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
