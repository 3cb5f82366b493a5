//! Drawing probes block by block and handing them to an operator.

use crate::block::BlockVec;
use crate::error::{Error, Result};
use crate::operator::HvpOperator;
use crate::plan::ProbePlan;
use crate::probe::{ProbeDistribution, ProbeRng};

/// Draws a probe over `blocks` from `dist`, on the host; blocks not listed are
/// absent (zero), and so is any listed block whose draw came out all zero.
pub(crate) fn draw_host(
    op_blocks: &[crate::Block],
    blocks: &[usize],
    dist: &impl ProbeDistribution,
    rng: &mut ProbeRng,
) -> BlockVec<Vec<f64>> {
    let mut v = BlockVec::zeros(op_blocks.len());
    for &b in blocks {
        let values = dist.sample(rng, op_blocks[b].len);
        if values.iter().any(|&x| x != 0.0) {
            v.set(b, values);
        }
    }
    v
}

/// Moves a host block vector to the operator's storage.
pub(crate) fn to_operator<O: HvpOperator>(op: &O, v: &BlockVec<Vec<f64>>) -> Result<BlockVec<O::Part>> {
    let blocks = op.blocks();
    v.try_map(|i, values| {
        if values.len() != blocks[i].len {
            return Err(Error::DimensionMismatch {
                context: format!("block {} ({})", i, blocks[i].name),
                expected: blocks[i].len,
                actual: values.len(),
            });
        }
        op.part_from_host(i, values).map_err(Error::operator)
    })
}

/// Reads an operator vector back to the host, as one flat vector over all
/// blocks (absent blocks as zeros).
pub(crate) fn to_host_flat<O: HvpOperator>(op: &O, v: &BlockVec<O::Part>) -> Result<Vec<f64>> {
    let blocks = op.blocks();
    let mut out = Vec::with_capacity(crate::block::total_len(blocks));
    for (i, b) in blocks.iter().enumerate() {
        match v.get(i) {
            Some(p) => {
                let h = op.part_to_host(i, p).map_err(Error::operator)?;
                if h.len() != b.len {
                    return Err(Error::DimensionMismatch {
                        context: format!("Hv block {} ({})", i, b.name),
                        expected: b.len,
                        actual: h.len(),
                    });
                }
                out.extend_from_slice(&h);
            }
            None => out.extend(std::iter::repeat_n(0.0, b.len)),
        }
    }
    Ok(out)
}

/// Splits a flat host vector into blocks (all present).
pub(crate) fn split_flat(blocks: &[crate::Block], flat: &[f64]) -> BlockVec<Vec<f64>> {
    let mut v = BlockVec::zeros(blocks.len());
    let mut at = 0;
    for (i, b) in blocks.iter().enumerate() {
        v.set(i, flat[at..at + b.len].to_vec());
        at += b.len;
    }
    v
}

/// The mean of the plan's `K` quadratic forms `scale·σᵀHσ`, each probe drawn
/// over the plan's blocks: the shared loop of Hutchinson-type estimators. An
/// empty block list or an all-zero probe costs no product and counts as 0.
pub(crate) fn mean_quadratic_forms<O: HvpOperator, D: ProbeDistribution>(
    op: &O,
    plan: ProbePlan<D>,
    rng: &mut ProbeRng,
) -> Result<crate::TraceEstimate<O::Scalar>> {
    plan.check(op.blocks().len())?;
    let ProbePlan { blocks, distribution, probes: k, scale, target } = plan;
    let mut terms = Vec::with_capacity(k);
    let mut samples = Vec::with_capacity(k);
    let mut hvps = 0;
    for _ in 0..k {
        if blocks.is_empty() {
            samples.push(0.0);
            continue;
        }
        let host = draw_host(op.blocks(), &blocks, &distribution, rng);
        if host.support().is_empty() {
            samples.push(0.0);
            continue;
        }
        let q = op.quadratic_form(&to_operator(op, &host)?).map_err(Error::operator)?;
        hvps += 1;
        samples.push(scale * op.scalar_value(&q).map_err(Error::operator)?);
        terms.push((scale / k as f64, q));
    }
    let value = if terms.is_empty() {
        op.constant(0.0).map_err(Error::operator)?
    } else {
        op.weighted_sum(&terms).map_err(Error::operator)?
    };
    let (mean, std_error) = crate::estimate::mean_and_std_error(&samples);
    Ok(crate::TraceEstimate { value, samples, mean, std_error, target, blocks, hvps })
}

/// `Hx` for a flat host vector `x` over all blocks, as a flat host vector:
/// one Hessian-vector product.
pub(crate) fn hvp_flat<O: HvpOperator>(op: &O, x: &[f64]) -> Result<Vec<f64>> {
    let v = to_operator(op, &split_flat(op.blocks(), x))?;
    let hv = op.hvp(&v).map_err(Error::operator)?;
    to_host_flat(op, &hv)
}

/// Draws `m` test vectors `ωᵢ` over all blocks from `dist`, scaled by
/// `1/√E[σ²]` so that `E[ωωᵀ] = I`, and takes `yᵢ = Hωᵢ` (`m` products):
/// the sketch `Y = HΩ` of the exchangeable estimators. Fails on a
/// non-finite product.
pub(crate) fn sketch<O: HvpOperator, D: crate::probe::ProbeDistribution>(
    op: &O,
    m: usize,
    dist: &D,
    rng: &mut ProbeRng,
) -> Result<Sketch> {
    let n = crate::block::total_len(op.blocks());
    let scale = 1.0 / dist.second_moment().sqrt();
    let mut omegas = Vec::with_capacity(m);
    let mut ys = Vec::with_capacity(m);
    for _ in 0..m {
        let mut w = dist.sample(rng, n);
        if scale != 1.0 {
            w.iter_mut().for_each(|x| *x *= scale);
        }
        let y = hvp_flat(op, &w)?;
        if y.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { context: "sketch HΩ".into() });
        }
        omegas.push(w);
        ys.push(y);
    }
    Ok(Sketch { omegas, ys })
}

/// The test vectors `Ω` and the products `Y = HΩ` of an exchangeable estimator,
/// each a list of `m` flat host vectors.
pub(crate) struct Sketch {
    pub omegas: Vec<Vec<f64>>,
    pub ys: Vec<Vec<f64>>,
}
