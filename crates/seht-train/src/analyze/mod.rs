//! `seht analyze`: the Hessian of a trained model — per-layer traces with
//! standard errors, the top eigenvalues with residuals, and the eigenvalue
//! density — written as JSON, a Markdown table and plots.
//!
//! The Hessian is that of the mean training loss over `batches` fixed
//! batches (no augmentation), over the chosen parameters (weights only by
//! default, as the paper's penalty), with the model in the mode the caller
//! chose: [`ModelMode::Eval`] (BatchNorm with its running statistics, no
//! dropout) or [`ModelMode::Train`] (BatchNorm with batch statistics,
//! dropout with fixed masks per batch). Nothing is switched behind the
//! caller's back, and nothing is written back to the model.
//!
//! The methods are those of `seht-estimator`: [`BlockTraces`] (Hutchinson
//! per layer), [`Lanczos`] (top-`k` eigenpairs) and [`Slq`] (stochastic
//! Lanczos quadrature); [`analyze_operator`] runs them on any
//! [`HvpOperator`], so a library user can analyse any loss. Instead of the
//! per-layer Hutchinson traces, a whole-model trace by Hutch++ or XTrace,
//! or by XNysTrace of the Gauss–Newton matrix `G` of the same batches
//! ([`GaussNewtonOperator`]; `--estimator`), and a per-layer summary of the
//! diagonal by Hutchinson's diagonal estimator or XDiag (`--diagonal`): see
//! [`crate::estimators`]. Everything else is of the Hessian.
//!
//! **Randomness.** Every draw derives from the analysis seed through
//! `seht_estimator::streams`: [`Stream::AnalysisTrace`] for the per-layer
//! trace probes, [`Stream::LanczosStart`] for the Lanczos start vector,
//! [`Stream::SlqProbes`] for the SLQ probes, [`Stream::Diagonal`] for the
//! diagonal estimator's (all under `step_key(seed, 0)`; the whole-model
//! trace estimators draw from [`Stream::AnalysisTrace`] too),
//! the data loader's own streams for the order of the training batches, and
//! in train mode the dropout streams of `step_key(seed, b)` for batch `b`.
//!
//! The parts: `settings` (what to compute) and `report` (the schema of
//! `analysis.json`, which the plots of `plot.rs` read too); `model`
//! (the model of a run folder or checkpoint and the Hessian of its batches,
//! [`model_hessian`]); `operator` ([`MeanHessian`], and the progress bar
//! kept outside it); `spectrum` ([`analyze_operator`]); `tables` (the files
//! written, the Markdown tables).

use std::time::Instant;

use seht_candle::GaussNewtonOperator;
use seht_estimator::Stream;
#[cfg(doc)]
use seht_estimator::{BlockTraces, HvpOperator, Lanczos, Slq};

use crate::error::Result;
use crate::estimators::{Curvature, estimate_trace};
use crate::progress::{Progress, progress_bar};
use operator::WithProgress;
use settings::stream;

mod model;
mod operator;
pub(crate) mod report;
pub(crate) mod settings;
mod spectrum;
mod tables;

mod plot;

pub use crate::env::Env;
pub use model::{AnalyzeOptions, ModelHessian, ModelSource, model_hessian};
pub use operator::MeanHessian;
pub use plot::density_comparison;
pub use report::{
    AnalysisReport, BlockSpectraSection, BlockSpectrum, DensitySection, EigenSection, EigenValue, Js0, LayerTrace,
    Spectrum, TraceSection,
};
pub use settings::{AnalysisSettings, BlockSpectraRequest, ModelMode, ParamChoice};
pub use spectrum::analyze_operator;
pub use tables::{Written, comparison_markdown, cost_line, markdown, write_report};

/// Analyses the model of `source` on its training data (`env.data_dir`,
/// `env.device`; a progress bar when `env.progress` is bars).
///
/// # Errors
/// Unreadable run folders, checkpoints or configs (naming the file), a model
/// that does not match its tensors, too few batches, invalid settings, and
/// failures of the products.
pub fn analyze(source: &ModelSource, env: &Env, aopts: &AnalyzeOptions) -> Result<AnalysisReport> {
    aopts.settings.check_hessian_options()?;
    aopts.settings.validate()?;
    let ModelHessian { operator: op, logits, params, config: cfg, label, batch_size } =
        model_hessian(source, env, aopts)?;
    let shown = (env.progress == Progress::Bars).then(|| format!("analyze {}", cfg.name));
    let bar = progress_bar(shown, aopts.settings.budget(params.len()));
    let t0 = Instant::now();
    // XNysTrace needs a positive semi-definite operator: it runs on G of the
    // same batches, everything else on H.
    let on_g = aopts.settings.trace_probes > 0 && aopts.settings.estimator.curvature() == Curvature::GaussNewton;
    let mut on_h = aopts.settings.clone();
    if on_g {
        on_h.trace_probes = 0;
    }
    let mut spectrum = analyze_operator(&WithProgress::new(&op, &bar), &on_h)?;
    if on_g {
        let ops = logits.iter().map(|z| GaussNewtonOperator::new(z, &params)).collect::<seht_candle::Result<_>>()?;
        let g = MeanHessian::new(ops)?;
        spectrum.trace = Some(estimate_trace(
            &WithProgress::new(&g, &bar),
            aopts.settings.estimator,
            Curvature::GaussNewton,
            aopts.settings.trace_probes,
            &mut stream(aopts.settings.seed, Stream::AnalysisTrace),
        )?);
    }
    bar.finish_and_clear();
    let hvps = spectrum.traces.as_ref().map_or(0, |t| t.hvps)
        + spectrum.trace.as_ref().map_or(0, |t| t.hvps)
        + spectrum.diagonal.as_ref().map_or(0, |d| d.hvps)
        + spectrum.eigen.as_ref().map_or(0, |e| e.hvps)
        + spectrum.density.as_ref().map_or(0, |d| d.hvps)
        + spectrum.block_spectra.as_ref().map_or(0, |b| b.hvps);
    Ok(AnalysisReport {
        source: label,
        name: cfg.name.clone(),
        method: cfg.regularizer.label(),
        mode: aopts.mode,
        params: aopts.params,
        batches: aopts.batches,
        batch_size,
        settings: aopts.settings.clone(),
        spectrum,
        hvps,
        batch_hvps: hvps * aopts.batches,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
