//! Argument checks shared by this crate's CPU custom ops (`batch_norm.rs`,
//! `conv.rs`): their kernels read contiguous f32/f64 slices.

use candle_core::{CpuStorage, DType, Layout, WithDType};

/// The elements of a contiguous argument `what` of op `op`.
///
/// # Errors
///
/// A non-contiguous layout, or storage of another dtype than `T`.
pub(crate) fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&T::cpu_storage_as_slice(s)?[start..end]),
        None => candle_core::bail!("{op}: {what} is not contiguous"),
    }
}

/// The common dtype of an op's arguments, which must all be f32 or all f64.
///
/// # Errors
///
/// Mixed dtypes, or a dtype other than f32/f64, naming `op`.
pub(crate) fn same_dtype(op: &str, dtypes: &[DType]) -> candle_core::Result<DType> {
    let d = dtypes[0];
    if !matches!(d, DType::F32 | DType::F64) || dtypes.iter().any(|&e| e != d) {
        candle_core::bail!("{op}: arguments must all be f32 or all f64, got {dtypes:?}");
    }
    Ok(d)
}
