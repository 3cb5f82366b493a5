//! [`analyze_operator`]: the analyses of [`AnalysisSettings`] on any
//! operator, each timed and its products counted.

use std::time::Instant;

use seht_estimator::{
    BlockProbing, BlockTraces, Broadening, HvpOperator, Lanczos, Reorthogonalisation, Slq, SpectrumScale, Stream,
    block_densities, heterogeneity, total_len,
};

use super::report::{
    BlockSpectraSection, BlockSpectrum, DensitySection, EigenSection, EigenValue, Js0, LayerTrace, Spectrum,
    TraceSection,
};
use super::settings::{AnalysisSettings, stream};
use crate::estimators::{Curvature, estimate_diagonal, estimate_trace};

/// Runs the analyses `settings` asks for on any operator: per-block traces,
/// top eigenpairs, density, in that order, each timed and its products counted.
/// Every one is of `op` (recorded as the Hessian), the whole-model trace too,
/// whatever its estimator: [`analyze`](super::analyze) runs XNysTrace on the Gauss–Newton
/// matrix instead.
///
/// # Errors
/// Invalid settings ([`seht_estimator::Error`]) and the operator's errors.
pub fn analyze_operator<O: HvpOperator>(op: &O, settings: &AnalysisSettings) -> seht_estimator::Result<Spectrum> {
    settings.validate()?;
    let n = total_len(op.blocks());
    let trace = if settings.trace_probes > 0 && !settings.estimator.is_hutchinson() {
        Some(estimate_trace(
            op,
            settings.estimator,
            Curvature::Hessian,
            settings.trace_probes,
            &mut stream(settings.seed, Stream::AnalysisTrace),
        )?)
    } else {
        None
    };
    let hutchinson = settings.trace_probes > 0 && settings.estimator.is_hutchinson();
    let traces = if hutchinson { Some(layer_traces(op, settings)?) } else { None };
    let eigen = if settings.top_k > 0 { Some(top_eigenvalues(op, settings)?) } else { None };
    let density = if settings.slq_probes > 0 { Some(density(op, settings, n)?) } else { None };
    let diagonal = match settings.diagonal {
        Some(d) => Some(estimate_diagonal(op, d.estimator, d.hvps, &mut stream(settings.seed, Stream::Diagonal))?),
        None => None,
    };
    let block_spectra = match settings.block_spectra {
        Some(b) => Some(block_spectra(op, settings, b.probes, b.steps)?),
        None => None,
    };
    Ok(Spectrum { parameters: n, traces, trace, diagonal, eigen, density, block_spectra })
}

/// Every block's own density (SLQ on `H_bb`) and their heterogeneity, as
/// measured and of the shapes.
fn block_spectra<O: HvpOperator>(
    op: &O,
    settings: &AnalysisSettings,
    probes: usize,
    steps: usize,
) -> seht_estimator::Result<BlockSpectraSection> {
    let t0 = Instant::now();
    let slq = Slq::new(probes, steps)?.reorthogonalisation(Reorthogonalisation::Full(settings.precision()));
    let all: Vec<usize> = (0..op.blocks().len()).collect();
    let d = block_densities(op, &all, &slq, &mut stream(settings.seed, Stream::BlockSpectra), |_| {})?;
    let broadening = Broadening::relative(settings.broadening)?;
    let measured = heterogeneity(&d, 1000, broadening, SpectrumScale::AsMeasured)?;
    let shape = heterogeneity(&d, 1000, broadening, SpectrumScale::PerBlockMaximum)?;
    let summary = |h: &seht_estimator::Heterogeneity| Js0 {
        js0: h.js0,
        floor: h.floor,
        max_pair: h
            .pairs
            .iter()
            .max_by(|a, b| a.2.total_cmp(&b.2))
            .map(|&(i, j, js)| (d[i].name.clone(), d[j].name.clone(), js))
            .unwrap_or_default(),
        sigma: h.sigma,
    };
    let (as_measured, shape_js0) = (summary(&measured), summary(&shape));
    let blocks = d
        .iter()
        .zip(shape.densities)
        .map(|(bd, density)| BlockSpectrum {
            name: bd.name.clone(),
            len: bd.density.dim,
            density,
            trace: bd.density.dim as f64 * bd.density.moment(1).0,
            scale: bd.density.rules.iter().flat_map(|r| r.nodes.iter()).fold(0.0f64, |m, x| m.max(x.abs())),
        })
        .collect();
    Ok(BlockSpectraSection {
        probes,
        steps,
        broadening: settings.broadening,
        as_measured,
        shape: shape_js0,
        grid: shape.grid,
        blocks,
        hvps: d.iter().map(|b| b.density.hvps).sum(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Hutchinson's per-layer traces with `settings.trace_probes` probes.
fn layer_traces<O: HvpOperator>(op: &O, settings: &AnalysisSettings) -> seht_estimator::Result<TraceSection> {
    let t0 = Instant::now();
    let est = BlockTraces::rademacher(settings.trace_probes, settings.probing)?.estimate(
        op,
        &mut stream(settings.seed, Stream::AnalysisTrace),
        || {},
    )?;
    Ok(TraceSection {
        probes: settings.trace_probes,
        probing: match settings.probing {
            BlockProbing::Joint => "joint".into(),
            BlockProbing::Separate => "separate".into(),
        },
        layers: est
            .blocks
            .iter()
            .map(|b| LayerTrace { name: b.name.clone(), len: b.len, trace: b.mean, std_error: b.std_error })
            .collect(),
        total: est.total.0,
        total_std_error: est.total.1,
        hvps: est.hvps,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The top `settings.top_k` eigenpairs by Lanczos.
fn top_eigenvalues<O: HvpOperator>(op: &O, settings: &AnalysisSettings) -> seht_estimator::Result<EigenSection> {
    let t0 = Instant::now();
    let res = Lanczos::new(settings.top_k, settings.lanczos_steps, settings.tolerance)?
        .precision(settings.precision())
        .eigenpairs(op, &mut stream(settings.seed, Stream::LanczosStart))?;
    Ok(EigenSection {
        values: res
            .pairs
            .iter()
            .map(|p| EigenValue { value: p.value, residual: p.residual, residual_bound: p.residual_bound })
            .collect(),
        steps: res.steps,
        max_steps: settings.lanczos_steps,
        tolerance: settings.tolerance,
        converged: res.converged,
        hvps: res.hvps,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The eigenvalue density by SLQ, for an operator of dimension `n`.
fn density<O: HvpOperator>(op: &O, settings: &AnalysisSettings, n: usize) -> seht_estimator::Result<DensitySection> {
    let t0 = Instant::now();
    let broadening = Broadening::relative(settings.broadening)?;
    let d = Slq::new(settings.slq_probes, settings.slq_steps)?
        .reorthogonalisation(Reorthogonalisation::Full(settings.precision()))
        .density(op, &mut stream(settings.seed, Stream::SlqProbes), |_| {})?;
    let grid = d.grid(1000, broadening);
    let density = d.evaluate(&grid, broadening);
    let (m1, se) = d.moment(1);
    let (lo, _) = d.node_range();
    Ok(DensitySection {
        probes: settings.slq_probes,
        steps: settings.slq_steps,
        broadening: settings.broadening,
        sigma: d.sigma(broadening),
        grid,
        density,
        nodes: d.rules.iter().map(|r| r.nodes.clone()).collect(),
        weights: d.rules.iter().map(|r| r.weights.clone()).collect(),
        trace: (n as f64 * m1, se.map(|s| n as f64 * s)),
        negative_mass: d.mass_between(lo.min(0.0) - 1.0, -f64::MIN_POSITIVE),
        hvps: d.hvps,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
