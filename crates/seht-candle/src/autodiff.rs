//! Turning candle's higher-order autodiff on, and checking that it is on.
//!
//! candle's `Tensor::backward` detaches every gradient it computes unless the
//! environment variable [`ENV_VAR`] is non-empty and not `"0"`. The variable is
//! read once per thread, at the first backward pass on that thread, and fixed
//! for that thread from then on. Without it a second derivative is silently
//! zero or wrong. This module sets it and verifies, per thread, that it took.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};

/// The environment variable candle reads: `CANDLE_GRAD_DO_NOT_DETACH`.
pub const ENV_VAR: &str = "CANDLE_GRAD_DO_NOT_DETACH";

thread_local! {
    static CHECKED: Cell<bool> = const { Cell::new(false) };
}

/// Whether [`ENV_VAR`] is set to a value that candle reads as "on".
pub fn env_enabled() -> bool {
    std::env::var(ENV_VAR).map(|s| !s.is_empty() && s != "0").unwrap_or(false)
}

/// Turns higher-order autodiff on for the process and checks it on the calling
/// thread. Call it first thing in `main`.
///
/// If [`ENV_VAR`] is not already on, this sets it to `"1"`. Threads started
/// afterwards read it at their first backward pass; a thread that already ran
/// a backward pass keeps the old setting (the self-check then fails on it).
///
/// # Safety
///
/// Setting an environment variable is only sound while no other thread can be
/// reading the environment (see [`std::env::set_var`]): call this before any
/// thread is spawned, including candle's and rayon's worker pools, which start
/// on the first tensor operation. When [`ENV_VAR`] is already on (for example
/// exported by the shell), nothing is written and the call is always sound.
pub unsafe fn enable_higher_order() -> Result<()> {
    if !env_enabled() {
        // SAFETY: forwarded to the caller (see the function's contract).
        unsafe { std::env::set_var(ENV_VAR, "1") };
    }
    check_higher_order()
}

/// Turns higher-order autodiff on where that is sound, and checks it: what
/// every exact penalty path calls before its first backward pass.
///
/// When [`ENV_VAR`] is not on and the process has a single thread (read from
/// `/proc/self/task` on Linux), setting it cannot race with any other
/// thread's use of the environment, so it is set here. Otherwise nothing is
/// written, and the per-thread [`check_higher_order`] decides.
///
/// # Errors
///
/// [`Error::HigherOrderDisabled`] when higher-order gradients are not in
/// effect on this thread afterwards; its message says how to turn them on.
pub fn ensure_higher_order() -> Result<()> {
    if CHECKED.with(Cell::get) {
        return Ok(());
    }
    if !env_enabled() && single_threaded() {
        // SAFETY: this process has exactly one thread (this one), so no other
        // thread can read or write the environment concurrently.
        unsafe { std::env::set_var(ENV_VAR, "1") };
    }
    check_higher_order()
}

/// Whether the process has exactly one thread (false where unknown).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// Checks that higher-order gradients are in effect on the calling thread.
///
/// It differentiates `f(x) = (x²)²` twice at `x = 2` in f64 on the CPU
/// (`f' = 4x³ = 32`, `f'' = 12x² = 48`). The function is a chain of two
/// operations on purpose: a single operation's derivative is computed from its
/// input directly and survives candle's detaching, while a chain's second
/// derivative comes out as `4x² = 16`. The first success on a thread is
/// cached, so later calls are free.
/// Returns [`Error::HigherOrderDisabled`] when the second derivative is
/// missing or wrong, which is what candle gives without [`ENV_VAR`].
pub fn check_higher_order() -> Result<()> {
    if CHECKED.with(Cell::get) {
        return Ok(());
    }
    let x = Var::from_tensor(&Tensor::new(2.0f64, &Device::Cpu)?)?;
    let y = x.as_tensor().sqr()?.sqr()?;
    let grads = y.backward()?;
    let dy = grads
        .get(x.as_tensor())
        .ok_or_else(|| Error::HigherOrderDisabled { detail: "no first derivative of (x²)²".into() })?
        .to_dtype(DType::F64)?;
    let first = dy.to_scalar::<f64>()?;
    let second = match dy.backward()?.get(x.as_tensor()) {
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
