//! How a curvature penalty's gradient is formed: a plain setting with no
//! tensor in it, so that a candle-free experiment config can hold it. The
//! backend that forms the gradient is `seht-candle` (`seht_candle::Penalty`).

/// How the penalty's gradient `λ·∇tr̂(·)` is formed.
///
/// | variant | Hessian trace (SEHT) | Gauss–Newton trace |
/// | --- | --- | --- |
/// | `Exact` | one third-order pass over all probes (memory grows K-fold) | one label draw at a time, second order |
/// | `ExactPerProbe` | one third-order pass per probe (one probe's memory) | the same as `Exact` |
/// | `FirstOrder` | central differences of first-order gradients, `1 + 2K` passes | central differences along `∇L̂`, `1 + 2K` passes |
///
/// The two exact variants give the same gradient up to rounding. The
/// first-order path's error is `O(ε_rel²)` truncation plus rounding of
/// `O(u/ε_rel²)` (a second difference, SEHT) or `O(u/ε_rel)` (a first
/// difference, Gauss–Newton), `u` the unit roundoff of the weights' dtype.
///
/// With the `serde` feature: `{ kind = "exact" }`, `{ kind = "exact-per-probe" }`
/// (also read as `{ kind = "double-backprop" }`, the Gauss–Newton penalty's
/// name for it before the two penalties shared one type),
/// `{ kind = "first-order" }` or `{ kind = "first-order", relative_step = 0.02 }`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields))]
#[cfg_attr(feature = "serde", serde(from = "Read"))]
pub enum Gradient {
    /// Differentiate `L + λ·tr̂` in one pass, every probe's graph alive
    /// until it.
    Exact,
    /// The same gradient, differentiating one probe's (or one label draw's)
    /// quadratic form at a time: the memory of one probe. What training uses.
    ExactPerProbe,
    /// Central differences of first-order gradients: no higher-order
    /// autodiff at all.
    FirstOrder {
        /// The relative step `ε_rel` in `(0, 1)`; absent: the backend's
        /// default for the weights' dtype (`u^{1/4}`:
        /// `seht_candle::first_order::default_relative_step`, 2e-2 for f32).
        #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
        relative_step: Option<f64>,
    },
}

/// The form [`Gradient`] is read in: struct variants, so that a stray key
/// beside an exact `kind` (a `relative_step` that would do nothing) is
/// refused rather than ignored, as serde ignores it beside a unit variant.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[serde(
    expecting = "a gradient table: { kind = \"exact\" }, { kind = \"exact-per-probe\" } or { kind = \"first-order\", relative_step = … }"
)]
enum Read {
    Exact {},
    #[serde(alias = "double-backprop")]
    ExactPerProbe {},
    FirstOrder {
        #[serde(default)]
        relative_step: Option<f64>,
    },
}

#[cfg(feature = "serde")]
impl From<Read> for Gradient {
    fn from(r: Read) -> Self {
        match r {
            Read::Exact {} => Gradient::Exact,
            Read::ExactPerProbe {} => Gradient::ExactPerProbe,
            Read::FirstOrder { relative_step } => Gradient::FirstOrder { relative_step },
        }
    }
}

impl Gradient {
    /// Whether this path needs higher-order autodiff.
    pub fn needs_higher_order(&self) -> bool {
        !matches!(self, Gradient::FirstOrder { .. })
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::Gradient;

    #[derive(serde::Deserialize)]
    struct Holder {
        gradient: Gradient,
    }

    fn read(text: &str) -> Result<Gradient, String> {
        toml::from_str::<Holder>(text).map(|h| h.gradient).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_reads_and_the_old_gauss_newton_name_is_exact_per_probe() {
        assert_eq!(read(r#"gradient = { kind = "exact" }"#), Ok(Gradient::Exact));
        assert_eq!(read(r#"gradient = { kind = "exact-per-probe" }"#), Ok(Gradient::ExactPerProbe));
        assert_eq!(read(r#"gradient = { kind = "double-backprop" }"#), Ok(Gradient::ExactPerProbe));
        assert_eq!(
            read(r#"gradient = { kind = "first-order", relative_step = 0.01 }"#),
            Ok(Gradient::FirstOrder { relative_step: Some(0.01) })
        );
        assert!(read(r#"gradient = { kind = "exact", relative_step = 0.01 }"#).is_err());
        assert!(read(r#"gradient = { kind = "second-order" }"#).is_err());
    }
}
