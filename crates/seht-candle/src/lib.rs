//! The candle backend of `seht`: exact Hessian-vector products by double
//! backprop, and a Hessian-trace penalty whose gradient is exact.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Linear, Module, VarBuilder, VarMap};
//! use seht_candle::{ParamSet, Selection, penalised_loss};
//! use seht_estimator::{SehtH, probe_rng};
//!
//! fn main() -> anyhow::Result<()> {
//!     // First thing in main: before any candle work or thread.
//!     unsafe { seht_candle::enable_higher_order()? };
//!     let dev = Device::Cpu;
//!     let varmap = VarMap::new();
//!     let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//!     let model = candle_nn::linear(4, 3, vb.pp("fc"))?;
//!     let xs = Tensor::randn(0f32, 1.0, (8, 4), &dev)?;
//!     let ys = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &dev)?;
//!     let loss = candle_nn::loss::cross_entropy(&model.forward(&xs)?, &ys)?;
//!     let params = ParamSet::from_varmap(&varmap).select(&Selection::Weights)?;
//!     let (total, est) = penalised_loss(&loss, &params, &SehtH::seht_h(1)?, 1e-2, &mut probe_rng(0))?;
//!     let grads = total.backward()?; // exact gradient of loss + λ·σᵀHσ
//!     println!("trace estimate {}", est.mean);
//!     # let _ = grads;
//!     Ok(())
//! }
//! ```

mod accumulate;
mod autodiff;
mod error;
pub mod first_order;
pub mod gauss_newton;
pub mod gradcheck;
pub mod malloc;
mod operator;
pub mod ops;
mod params;
pub mod pattern;
mod penalty;

pub use accumulate::{Combination, PenalisedGradients, penalised_gradients};
pub use autodiff::{ENV_VAR, check_higher_order, enable_higher_order, env_enabled};
pub use error::{Error, Result};
pub use malloc::retain_freed_memory;
pub use operator::{GraphMode, HessianOperator};
pub use params::{Param, ParamSet, Role, Selection};
pub use penalty::{penalised_loss, trace_estimate, trace_penalty};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
