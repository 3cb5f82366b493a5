//! Which backward passes keep the graph of their gradients.
//!
//! A Hessian-vector product differentiates a gradient, so the backward pass
//! that computes that gradient must record its own operations (PyTorch's
//! `create_graph = True`). Recording costs memory: every intermediate of the
//! backward pass stays alive as long as the gradients do, about four times a
//! plain step's working memory on a ResNet (docs/performance.md). So this
//! crate decides per backward pass, not per process:
//!
//! - [`backward_create_graph`]: the gradient on the graph, for the passes whose
//!   result is differentiated again (the gradient inside a Hessian-vector
//!   product, the Hessian-vector product inside the exact penalty);
//! - [`backward_no_graph`]: every other pass (plain steps, the first-order
//!   penalty, the outer pass of an estimate or of a penalised step).
//!
//! Both set candle's per-thread switch ([`candle_core::backprop::set_do_not_detach`],
//! added by this workspace's candle patch, `vendor/candle-core`, see
//! docs/architecture.md) for one pass and restore it afterwards, so neither
//! depends on the `CANDLE_GRAD_DO_NOT_DETACH` environment variable, and
//! threads and callers' own loops keep whatever they had (by default: no
//! graph, the lean setting).

use std::cell::Cell;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};

thread_local! {
    static CHECKED: Cell<bool> = const { Cell::new(false) };
}

/// Restores candle's per-thread switch when dropped (also on unwinding).
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        candle_core::backprop::set_do_not_detach(self.0);
    }
}

/// `∂t/∂(every variable t depends on)`, with (`create_graph`) or without the
/// graph of the gradients, whatever the thread's setting is.
///
/// # Errors
///
/// candle's, from the backward pass.
pub fn backward_with(t: &Tensor, create_graph: bool) -> candle_core::Result<GradStore> {
    let _restore = Restore(candle_core::backprop::set_do_not_detach(create_graph));
    t.backward()
}

/// `∂t/∂(each of targets)` only, with or without the graph of the
/// gradients: the pass visits only the nodes that lead to a target (the
/// vendored candle's `Tensor::backward_to`), so the part of the graph that
/// leads only to other variables costs nothing. Each gradient is the one
/// [`backward_with`] gives, bit for bit; the store has none for other
/// variables.
///
/// A SEHT-D product `vᵀHv` over the blocks its layer draw selected needs
/// `Hv` on those blocks only: its backward pass stops at the lowest
/// selected layer instead of running down to the input.
///
/// `targets` must be variables (`Var`s' tensors): an intermediate tensor
/// is not a leaf of the pass, and gradient would flow through it.
///
/// # Errors
///
/// A target that is not a variable (naming its position in `targets`);
/// candle's, from the backward pass.
pub fn backward_to_with(t: &Tensor, targets: &[&Tensor], create_graph: bool) -> candle_core::Result<GradStore> {
    if let Some(i) = targets.iter().position(|x| !x.is_variable()) {
        candle_core::bail!("backward_to_with: target {i} (shape {:?}) is not a variable", targets[i].dims());
    }
    let _restore = Restore(candle_core::backprop::set_do_not_detach(create_graph));
    t.backward_to(targets)
}

/// The gradients of `t` on the graph, ready to be differentiated again
/// (PyTorch's `backward(create_graph=True)`).
///
/// # Errors
///
/// candle's, from the backward pass.
pub fn backward_create_graph(t: &Tensor) -> candle_core::Result<GradStore> {
    backward_with(t, true)
}

/// The gradients of `t` without their graph: what a step needs, at a plain
/// step's memory.
///
/// # Errors
///
/// candle's, from the backward pass.
pub fn backward_no_graph(t: &Tensor) -> candle_core::Result<GradStore> {
    backward_with(t, false)
}

/// Checks that [`backward_create_graph`] gives second derivatives on the
/// calling thread: a guard against a backward rule or a candle change that
/// loses the graph, which would make every Hessian-vector product silently
/// wrong.
///
/// It differentiates `f(x) = (x²)²` twice at `x = 2` in f64 on the CPU
/// (`f' = 4x³ = 32`, `f'' = 12x² = 48`). The function is a chain of two
/// operations on purpose: upstream candle without the graph detaches each
/// node's incoming gradient but not the products formed from it, so a chain's
/// second derivative came out as `4x² = 16`; the vendored candle (patch 6)
/// detaches stored gradients too, and then the first derivative carries no
/// graph at all. Either way the check fails. The first success on a thread is
/// cached, so later calls are free.
///
/// # Errors
///
/// [`Error::HigherOrderDisabled`] when the second derivative is missing or
/// wrong.
pub fn check_higher_order() -> Result<()> {
    if CHECKED.with(Cell::get) {
        return Ok(());
    }
    let x = Var::from_tensor(&Tensor::new(2.0f64, &Device::Cpu)?)?;
    let y = x.as_tensor().sqr()?.sqr()?;
    let grads = backward_create_graph(&y)?;
    let dy = grads
        .get(x.as_tensor())
        .ok_or_else(|| Error::HigherOrderDisabled { detail: "no first derivative of (x²)²".into() })?
        .to_dtype(DType::F64)?;
    let first = dy.to_scalar::<f64>()?;
    let second = match backward_no_graph(&dy)?.get(x.as_tensor()) {
        Some(d2) => d2.to_scalar::<f64>()?,
        None => {
            return Err(Error::HigherOrderDisabled {
                detail: format!(
                    "d/dx (x²)² = {first} carries no graph: the second derivative at 2 is missing, expected 48"
                ),
            });
        }
    };
    if (first - 32.0).abs() > 1e-9 || (second - 48.0).abs() > 1e-9 {
        return Err(Error::HigherOrderDisabled {
            detail: format!("derivatives of (x²)² at 2 came out {first} and {second}, expected 32 and 48"),
        });
    }
    CHECKED.with(|c| c.set(true));
    Ok(())
}
