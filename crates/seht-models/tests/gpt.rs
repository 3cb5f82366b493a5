//! The GPT-style language model: shapes, causality, the parameter count
//! against the closed form, roles, config errors, and exactness to third
//! order (HVP and `∇(σᵀHσ)` of its loss against f64 finite differences).

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarMap;
use seht_candle::gradcheck::fd_check;
use seht_candle::{Role, Selection};
use seht_models::{Gpt, GptConfig, Phase, seeded_varbuilder};

const DEV: Device = Device::Cpu;
/// Relative error allowed in the third-order check (see there).
const TOL: f64 = 3e-8;

/// The tiny instance: 2 layers, d = 8, 2 heads, vocabulary 11.
fn tiny(tie_weights: bool, dropout: f64) -> GptConfig {
    GptConfig {
        vocab_size: 11,
        context: 6,
        d_model: 8,
        heads: 2,
        layers: 2,
        dropout,
        tie_weights,
        init_std: 0.3,
        layer_norm_eps: 1e-5,
    }
}

fn build(cfg: &GptConfig, dtype: DType) -> (VarMap, Gpt) {
    let varmap = VarMap::new();
    let m = Gpt::new(cfg, seeded_varbuilder(&varmap, 7, dtype, &DEV)).expect("model");
    (varmap, m)
}

fn tokens() -> Tensor {
    Tensor::new(&[[1u32, 4, 2, 8, 10], [3, 3, 9, 0, 5]], &DEV).expect("tokens")
}

#[test]
fn logits_have_shape_batch_seq_vocab() {
    let (_, m) = build(&tiny(false, 0.1), DType::F32);
    for phase in [Phase::Eval, Phase::Train { seed: 1 }] {
        assert_eq!(m.forward_t(&tokens(), phase).expect("forward").dims(), &[2, 5, 11]);
    }
    // Shorter sequences read the first rows of the position embedding; longer
    // than the context is refused, naming the field.
    let one = Tensor::new(&[[4u32]], &DEV).expect("one");
    assert_eq!(m.forward_t(&one, Phase::Eval).expect("forward").dims(), &[1, 1, 11]);
    let long = Tensor::zeros((1, 7), DType::U32, &DEV).expect("long");
    let err = m.forward_t(&long, Phase::Eval).expect_err("longer than the context").to_string();
    assert!(err.contains("context"), "{err}");
}

/// Changing a later token leaves every earlier position's logits
/// bit-identical (masked attention weights are exactly 0), in evaluation and
/// in training with the same dropout masks.
#[test]
fn earlier_logits_do_not_depend_on_later_tokens() {
    let (_, m) = build(&tiny(true, 0.2), DType::F32);
    let a = tokens();
    for change_at in 1..5 {
        let mut rows = a.to_vec2::<u32>().expect("rows");
        rows[0][change_at] = (rows[0][change_at] + 5) % 11;
        rows[1][change_at] = (rows[1][change_at] + 3) % 11;
        let b = Tensor::new(rows, &DEV).expect("changed");
        for phase in [Phase::Eval, Phase::Train { seed: 9 }] {
            let (la, lb) = (m.forward_t(&a, phase).expect("a"), m.forward_t(&b, phase).expect("b"));
            let before = |l: &Tensor| l.i((.., ..change_at, ..)).and_then(|t| t.flatten_all()?.to_vec1::<f32>());
            let (va, vb) = (before(&la).expect("a"), before(&lb).expect("b"));
            assert!(
                va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
                "token {change_at} changed earlier logits ({phase:?})"
            );
            let at = |l: &Tensor| l.i((.., change_at, ..)).and_then(|t| t.flatten_all()?.to_vec1::<f32>());
            assert_ne!(at(&la).expect("a"), at(&lb).expect("b"), "the changed position itself must change");
        }
    }
}

/// `V·d + T·d + L·(12d² + 13d) + 2d (+ V·d untied)`, against the variables
/// actually created, for a tiny and a GPT-2-small-sized config.
#[test]
fn parameter_count_matches_the_closed_form() {
    for tie in [false, true] {
        let cfg = tiny(tie, 0.0);
        let (varmap, m) = build(&cfg, DType::F32);
        let params = m.roles().param_set(&varmap).expect("param set");
        let n: usize = params.trainable_vars().iter().map(|v| v.elem_count()).sum();
        let (v, t, d, l) = (11, 6, 8, 2);
        let expected = v * d + t * d + l * (12 * d * d + 13 * d) + 2 * d + if tie { 0 } else { v * d };
        assert_eq!(n, expected, "tied {tie}");
        assert_eq!(cfg.parameter_count(), expected);
    }
    // GPT-2 small (tied 50257-token head, context 1024): 124,439,808
    // parameters as published with Hugging Face's `gpt2`; the closed form
    // only, without building it.
    let gpt2 = GptConfig {
        vocab_size: 50257,
        context: 1024,
        d_model: 768,
        heads: 12,
        layers: 12,
        dropout: 0.0,
        tie_weights: true,
        init_std: 0.02,
        layer_norm_eps: 1e-5,
    };
    assert_eq!(gpt2.parameter_count(), 124_439_808);
}

#[test]
fn roles_separate_weights_biases_and_norms() {
    let (varmap, m) = build(&tiny(false, 0.0), DType::F32);
    let roles = m.roles();
    for (name, role) in [
        ("wte.weight", Role::Weight),
        ("wpe.weight", Role::Weight),
        ("h.0.attn.q.weight", Role::Weight),
        ("h.1.attn.proj.bias", Role::Bias),
        ("h.0.ln_1.weight", Role::NormWeight),
        ("h.1.ln_2.bias", Role::NormBias),
        ("h.1.mlp.fc.weight", Role::Weight),
        ("ln_f.weight", Role::NormWeight),
        ("lm_head.weight", Role::Weight),
    ] {
        assert_eq!(roles.role_of(name), Some(role), "{name}");
    }
    let params = roles.param_set(&varmap).expect("param set");
    let weights = params.select(&Selection::Weights).expect("weights");
    // wte, wpe, lm_head, and 6 matrices per block.
    assert_eq!(weights.len(), 3 + 2 * 6);
    let (_, tied) = build(&tiny(true, 0.0), DType::F32);
    assert_eq!(tied.roles().role_of("lm_head.weight"), None, "a tied head has no weight of its own");
}

#[test]
fn invalid_configs_name_the_field() {
    let ok = tiny(false, 0.0);
    for (cfg, field) in [
        (GptConfig { vocab_size: 1, ..ok.clone() }, "vocab_size"),
        (GptConfig { context: 0, ..ok.clone() }, "context"),
        (GptConfig { d_model: 0, ..ok.clone() }, "d_model"),
        (GptConfig { heads: 3, ..ok.clone() }, "heads"),
        (GptConfig { layers: 0, ..ok.clone() }, "layers"),
        (GptConfig { dropout: 1.0, ..ok.clone() }, "dropout"),
        (GptConfig { init_std: 0.0, ..ok.clone() }, "init_std"),
        (GptConfig { layer_norm_eps: f64::NAN, ..ok.clone() }, "layer_norm_eps"),
    ] {
        let err = cfg.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{field}: {err}");
        assert!(Gpt::new(&cfg, seeded_varbuilder(&VarMap::new(), 1, DType::F32, &DEV)).is_err());
    }
}

/// The whole model, f64, in training mode with dropout 0.1 (fixed masks):
/// the HVP and `∇(σᵀHσ)` of its loss over every trainable parameter against
/// central differences (ε = 1e-6), untied and tied.
///
/// Measured errors: HVP 6e-10–1.3e-9, `∇(σᵀHσ)` 2.6e-9–9.6e-9. The
/// tolerance, 3e-8, is tighter than the other models' 1e-6 so that it also
/// catches an approximate derivative: with candle's `gelu_erf` in the MLP
/// the HVP error is 1.2e-7–1.4e-7 (and with candle's fused softmax 0.23).
#[test]
fn tiny_gpt_is_exact_to_third_order() {
    let targets = Tensor::new(&[[4u32, 2, 8, 10, 6], [3, 9, 0, 5, 1]], &DEV).expect("targets");
    for tie in [false, true] {
        let (varmap, m) = build(&tiny(tie, 0.1), DType::F64);
        let vars = m.roles().param_set(&varmap).expect("param set").trainable_vars();
        let loss = || {
            let logits = m.forward_t(&tokens(), Phase::Train { seed: 3 }).map_err(candle_core::Error::wrap)?;
            Gpt::loss(&logits, &targets).map_err(candle_core::Error::wrap)
        };
        for seed in [1u64, 2] {
            let r = fd_check(&vars, &loss, 1e-6, seed).expect("check");
            eprintln!(
                "tiny GPT (tied {tie}) seed {seed}: HVP rel. error {:.2e}, ∇(σᵀHσ) rel. error {:.2e} (σᵀHσ = {:.4})",
                r.hvp, r.grad_quadratic, r.quadratic
            );
            assert!(r.hvp < TOL && r.grad_quadratic < TOL, "HVP {:.2e}, ∇(σᵀHσ) {:.2e}", r.hvp, r.grad_quadratic);
            assert!(r.quadratic.abs() > 1e-8);
        }
    }
}
