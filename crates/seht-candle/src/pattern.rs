//! Activation patterns: the data-dependent choices of a forward pass (which
//! ReLU units are active, which element wins each max-pool window), recorded
//! on one pass and replayed on others.
//!
//! A network built from ReLU and max pooling is piecewise smooth: inside one
//! *linear region* (one activation pattern) it is a smooth function of the
//! weights, and its Hessian is the Hessian of that piece — what autodiff
//! gives. Finite differences of gradients at `w ± εσ` cross region
//! boundaries, and then measure the jumps of the gradient instead of its
//! derivative, with an error that grows like `1/ε` (Fig. 2 of
//! `docs/performance.md`). Replaying the base pass's pattern at `w ± εσ`
//! evaluates the *same* smooth piece on both sides, so the differences
//! converge to the autodiff values at rate `O(ε²)`
//! ([`crate::first_order`]).
//!
//! The ops that consult the pattern are [`crate::ops::relu`],
//! [`crate::ops::clamp`], [`crate::ops::max_pool2d`] and [`crate::ops::pool2d`]
//! with [`crate::ops::PoolKind::Max`]: each computes a 0/1 mask from its input and
//! multiplies by it. Outside [`record`] and [`replay`] they compute the mask
//! and nothing is kept. Inside [`record`] every mask is appended to the
//! pattern in the order the ops run; inside [`replay`] each op takes the next
//! recorded mask instead of computing one, and fails with
//! [`Error::PatternMismatch`] if its shape differs or the pattern ran out —
//! the replayed pass must run the same ops in the same order (same model,
//! same batch shape). Dropout masks are not part of the pattern: they come
//! from the pass's seed (`seht_models::Phase`).
//!
//! The tape is per thread: the ops must run on the thread that called
//! [`record`] or [`replay`] (candle's forward passes do).

use std::cell::RefCell;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The masks of one forward pass, in the order its ops ran. Masks are stored
/// as `u8` (one byte per activation).
#[derive(Debug, Clone, Default)]
pub struct ActivationPattern {
    masks: Vec<(&'static str, Tensor)>,
}

impl ActivationPattern {
    /// Number of masks recorded.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// True when no op recorded a mask (a smooth network).
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Bytes held by the masks.
    pub fn bytes(&self) -> usize {
        self.masks.iter().map(|(_, m)| m.elem_count()).sum()
    }
}

enum Tape {
    Record(Vec<(&'static str, Tensor)>),
    Replay { masks: Vec<(&'static str, Tensor)>, next: usize },
}

thread_local! {
    static TAPE: RefCell<Option<Tape>> = const { RefCell::new(None) };
}

/// Puts `tape` in place for the duration of `f`, restoring what was there
/// before (so that calls nest, and a panic in `f` leaves no tape behind),
/// and returns `f`'s result and the tape.
fn with_tape<T>(tape: Tape, f: impl FnOnce() -> T) -> (T, Tape) {
    struct Restore(Option<Option<Tape>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(prev) = self.0.take() {
                TAPE.with(|t| *t.borrow_mut() = prev);
            }
        }
    }
    let mut guard = Restore(Some(TAPE.with(|t| t.replace(Some(tape)))));
    let out = f();
    let prev = guard.0.take().flatten();
    // Only this function installs or removes a tape, and nested calls restore
    // ours before returning: it is still in place.
    let ours = TAPE.with(|t| t.replace(prev)).unwrap_or(Tape::Record(Vec::new()));
    (out, ours)
}

/// Runs `f` (a forward pass) and returns its result with the activation
/// pattern it produced.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, ActivationPattern) {
    let (out, tape) = with_tape(Tape::Record(Vec::new()), f);
    let masks = match tape {
        Tape::Record(m) => m,
        Tape::Replay { masks, .. } => masks,
    };
    (out, ActivationPattern { masks })
}

/// Runs `f` (a forward pass) with every pattern-consulting op using the mask
/// recorded in `pattern` instead of its own.
///
/// # Errors
/// [`Error::PatternMismatch`] when `f` used fewer masks than were recorded.
/// An op of `f` that finds no mask left, or one of another op or shape,
/// fails itself with [`Error::PatternMismatch`], which reaches the caller
/// through `f`'s own result.
pub fn replay<T>(pattern: &ActivationPattern, f: impl FnOnce() -> T) -> Result<T> {
    let (out, tape) = with_tape(Tape::Replay { masks: pattern.masks.clone(), next: 0 }, f);
    if let Tape::Replay { masks, next } = tape
        && next != masks.len()
    {
        return Err(Error::PatternMismatch {
            op: "replay",
            detail: format!("the replayed pass used {next} of the {} recorded masks", masks.len()),
        });
    }
    Ok(out)
}

/// The mask of a pattern-consulting op: computed by `compute` (returning a
/// `u8` tensor of `like`'s shape) unless a pattern is being replayed, and
/// recorded when one is being recorded. Returned in `like`'s dtype.
pub(crate) fn mask(op: &'static str, like: &Tensor, compute: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    let replayed = TAPE.with(|t| -> Result<Option<Tensor>> {
        let mut t = t.borrow_mut();
        let Some(Tape::Replay { masks, next }) = t.as_mut() else { return Ok(None) };
        let Some((rec_op, m)) = masks.get(*next) else {
            return Err(Error::PatternMismatch {
                op,
                detail: format!("the recorded pattern has only {} masks", masks.len()),
            });
        };
        if *rec_op != op || m.shape() != like.shape() {
            return Err(Error::PatternMismatch {
                op,
                detail: format!(
                    "mask {} was recorded by {rec_op} with shape {:?}; this {op} has shape {:?}",
                    *next,
                    m.shape(),
                    like.shape()
                ),
            });
        }
        *next += 1;
        Ok(Some(m.clone()))
    })?;
    let m = match replayed {
        Some(m) => m,
        None => {
            let m = compute()?;
            debug_assert_eq!(m.dtype(), DType::U8);
            TAPE.with(|t| {
                if let Some(Tape::Record(masks)) = t.borrow_mut().as_mut() {
                    masks.push((op, m.clone()));
                }
            });
            m
        }
    };
    Ok(m.to_dtype(like.dtype())?)
}
