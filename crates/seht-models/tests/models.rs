//! Sizes, shapes, roles, modes, and third-order exactness of the models.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use seht_candle::{Role, Selection, gradcheck::fd_check};
use seht_models::{Phase, ResNet, ResNetConfig, RnnKind, RnnLm, RnnLmConfig, WideResNet, WideResNetConfig};

const DEV: Device = Device::Cpu;

fn vb(varmap: &VarMap, dtype: DType) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, dtype, &DEV)
}

fn trainable_count(varmap: &VarMap, roles: &seht_models::Roles) -> usize {
    roles.param_set(varmap).expect("param set").num_trainable()
}

/// ResNet-18 (CIFAR) parameter count from the layer shapes: 3×3 convolutions
/// without bias, BatchNorm (γ, β), 1×1 projection shortcuts, linear head.
fn resnet18_expected(in_ch: usize, classes: usize) -> usize {
    let conv = |i: usize, o: usize, k: usize| i * o * k * k;
    let bn = |c: usize| 2 * c;
    let mut n = conv(in_ch, 64, 3) + bn(64);
    let mut c_in = 64;
    for (s, w) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for b in 0..2 {
            n += conv(c_in, w, 3) + bn(w) + conv(w, w, 3) + bn(w);
            if b == 0 && (s > 0 || c_in != w) {
                n += conv(c_in, w, 1) + bn(w);
            }
            c_in = w;
        }
    }
    n + 512 * classes + classes
}

#[test]
fn resnet18_has_11_173_962_parameters() {
    let varmap = VarMap::new();
    let m = ResNet::new(&ResNetConfig::resnet18(3, 10), vb(&varmap, DType::F32)).expect("model");
    let n = trainable_count(&varmap, m.roles());
    assert_eq!(n, resnet18_expected(3, 10));
    // The count published for kuangliu/pytorch-cifar's ResNet18 (10 classes).
    assert_eq!(n, 11_173_962);
    // The same network for CIFAR-100 and for 1-channel inputs.
    let varmap = VarMap::new();
    let m = ResNet::new(&ResNetConfig::resnet18(1, 100), vb(&varmap, DType::F32)).expect("model");
    assert_eq!(trainable_count(&varmap, m.roles()), resnet18_expected(1, 100));
}

/// WRN-d-k from the layer shapes of the reference architecture
/// (Zagoruyko & Komodakis 2016, Table 1 and their code; xternalz/WideResNet-pytorch):
/// stem 3×3 (in→16), three groups of n = (d−4)/6 blocks each holding
/// BN(in), 3×3 conv (in→out), BN(out), 3×3 conv (out→out), and a 1×1
/// shortcut (in→out) in the first block of a group when in ≠ out; final BN
/// and a linear head. The paper lists WRN-28-10 at 36.5M parameters.
fn wrn_expected(depth: usize, k: usize, in_ch: usize, classes: usize) -> usize {
    let n = (depth - 4) / 6;
    let widths = [16, 16 * k, 32 * k, 64 * k];
    let mut total = in_ch * 16 * 9;
    let mut c_in = 16;
    for g in 1..=3 {
        let out = widths[g];
        for b in 0..n {
            total += 2 * c_in + c_in * out * 9 + 2 * out + out * out * 9;
            if b == 0 && c_in != out {
                total += c_in * out;
            }
            c_in = out;
        }
    }
    total + 2 * c_in + c_in * classes + classes
}

#[test]
fn wrn_28_10_parameter_count_matches_the_reference_architecture() {
    let varmap = VarMap::new();
    let m = WideResNet::new(&WideResNetConfig::wrn_28_10(3, 10, 0.3), vb(&varmap, DType::F32)).expect("model");
    let n = trainable_count(&varmap, m.roles());
    assert_eq!(n, wrn_expected(28, 10, 3, 10));
    assert_eq!(n, 36_479_194, "WRN-28-10 on CIFAR-10 (36.5M in the paper)");
    let varmap = VarMap::new();
    let m = WideResNet::new(&WideResNetConfig::wrn_28_10(3, 100, 0.3), vb(&varmap, DType::F32)).expect("model");
    assert_eq!(trainable_count(&varmap, m.roles()), wrn_expected(28, 10, 3, 100));
}

#[test]
fn paper_language_models_have_the_expected_sizes() {
    let vocab = 33_278; // WikiText-2's vocabulary
    for (cfg, gates) in [(RnnLmConfig::paper_lstm(vocab), 4usize), (RnnLmConfig::paper_gru(vocab), 3)] {
        let varmap = VarMap::new();
        let m = RnnLm::new(&cfg, vb(&varmap, DType::F32)).expect("model");
        let (e, h) = (512, 512);
        let layer = |d_in: usize| gates * h * (d_in + h) + 2 * gates * h;
        let expected = vocab * e + layer(e) + layer(h) + vocab * h + vocab;
        assert_eq!(trainable_count(&varmap, m.roles()), expected, "{:?}", cfg.kind);
    }
    let tied = RnnLmConfig { tie_weights: true, ..RnnLmConfig::paper_lstm(100) };
    let varmap = VarMap::new();
    let m = RnnLm::new(&tied, vb(&varmap, DType::F32)).expect("model");
    let layer = 4 * 512 * 1024 + 8 * 512;
    assert_eq!(trainable_count(&varmap, m.roles()), 100 * 512 + 2 * layer + 100, "tied: no decoder weight");
}

#[test]
fn output_shapes() {
    let xs = Tensor::zeros((2, 3, 32, 32), DType::F32, &DEV).expect("xs");
    let varmap = VarMap::new();
    let r = ResNet::new(&ResNetConfig::narrow(3, 7, 4, [1, 1, 1, 1]), vb(&varmap, DType::F32)).expect("model");
    assert_eq!(r.forward_t(&xs, Phase::Train { seed: 0 }).expect("fwd").dims(), [2, 7]);
    assert_eq!(r.forward_t(&xs, Phase::Eval).expect("fwd").dims(), [2, 7]);
    let varmap = VarMap::new();
    let w = WideResNet::new(
        &WideResNetConfig { depth: 10, widen_factor: 1, dropout: 0.3, in_channels: 3, num_classes: 5 },
        vb(&varmap, DType::F32),
    )
    .expect("model");
    assert_eq!(w.forward_t(&xs, Phase::Train { seed: 0 }).expect("fwd").dims(), [2, 5]);
    let gray = Tensor::zeros((2, 1, 28, 28), DType::F32, &DEV).expect("xs");
    let varmap = VarMap::new();
    let r1 = ResNet::new(&ResNetConfig::narrow(1, 10, 4, [1, 1, 1, 1]), vb(&varmap, DType::F32)).expect("model");
    assert_eq!(r1.forward_t(&gray, Phase::Eval).expect("fwd").dims(), [2, 10]);
    for kind in [RnnKind::Lstm, RnnKind::Gru] {
        let cfg = RnnLmConfig {
            kind,
            vocab_size: 13,
            embedding: 6,
            hidden: 5,
            layers: 2,
            dropout: 0.2,
            tie_weights: false,
            init_range: 0.1,
        };
        let varmap = VarMap::new();
        let m = RnnLm::new(&cfg, vb(&varmap, DType::F32)).expect("model");
        let tokens = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], &DEV).expect("tokens");
        let (logits, state) = m.forward_t(&tokens, &m.zero_state(3).expect("state"), Phase::Eval).expect("fwd");
        assert_eq!(logits.dims(), [3, 4, 13]);
        assert!(state.hidden().iter().all(|h| h.dims() == [3, 5]));
    }
}

#[test]
fn roles_select_weights_only_and_reject_foreign_variables() {
    let varmap = VarMap::new();
    let m = ResNet::new(&ResNetConfig::narrow(3, 10, 2, [1, 1, 1, 1]), vb(&varmap, DType::F32)).expect("model");
    let set = m.roles().param_set(&varmap).expect("param set");
    let weights = set.select(&Selection::Weights).expect("weights");
    // stem + 4 blocks × 2 convs + 3 projection shortcuts + linear
    assert_eq!(weights.len(), 1 + 8 + 3 + 1);
    assert!(
        weights.iter().all(|p| p.name.ends_with("weight") && !p.name.contains("bn") && !p.name.ends_with(".1.weight"))
    );
    assert_eq!(set.with_role(Role::Buffer).count(), 2 * (1 + 8 + 3));
    assert_eq!(set.get("linear.bias").expect("bias").role, Role::Bias);
    // A VarMap shared with another model holds variables this one did not make.
    let _other = candle_nn::linear(3, 3, vb(&varmap, DType::F32).pp("extra")).expect("linear");
    assert!(
        matches!(m.roles().param_set(&varmap), Err(seht_models::Error::UndeclaredVariable(n)) if n.starts_with("extra"))
    );
}

#[test]
fn invalid_configs_name_the_field() {
    let bad = WideResNetConfig { depth: 27, ..WideResNetConfig::wrn_28_10(3, 10, 0.3) };
    let e = WideResNet::new(&bad, vb(&VarMap::new(), DType::F32)).expect_err("depth 27");
    assert!(e.to_string().contains("depth = 27"), "{e}");
    let bad = RnnLmConfig { tie_weights: true, hidden: 256, ..RnnLmConfig::paper_lstm(10) };
    let e = RnnLm::new(&bad, vb(&VarMap::new(), DType::F32)).expect_err("tie");
    assert!(e.to_string().contains("tie_weights"), "{e}");
    let bad = RnnLmConfig { dropout: 1.0, ..RnnLmConfig::paper_gru(10) };
    assert!(RnnLm::new(&bad, vb(&VarMap::new(), DType::F32)).expect_err("dropout").to_string().contains("dropout"));
    let bad = ResNetConfig { num_classes: 1, ..ResNetConfig::resnet18(3, 10) };
    assert!(
        ResNet::new(&bad, vb(&VarMap::new(), DType::F32)).expect_err("classes").to_string().contains("num_classes")
    );
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().expect("flat").to_dtype(DType::F32).expect("f32").to_vec1::<f32>().expect("vec")
}

#[test]
fn batch_norm_and_dropout_follow_the_phase() {
    let varmap = VarMap::new();
    let cfg = WideResNetConfig { depth: 10, widen_factor: 1, dropout: 0.5, in_channels: 3, num_classes: 4 };
    let m = WideResNet::new(&cfg, vb(&varmap, DType::F32)).expect("model");
    let xs = Tensor::randn(0f32, 1.0, (4, 3, 8, 8), &DEV).expect("xs");
    let running = || values(varmap.data().lock().expect("lock")["bn1.running_mean"].as_tensor());
    let before = running();
    let e1 = m.forward_t(&xs, Phase::Eval).expect("eval");
    assert_eq!(running(), before, "evaluation must not touch running statistics");
    let e2 = m.forward_t(&xs, Phase::Eval).expect("eval");
    assert_eq!(values(&e1), values(&e2), "evaluation is deterministic (no dropout)");
    let t1 = m.forward_t(&xs, Phase::Train { seed: 7 }).expect("train");
    assert_ne!(running(), before, "training updates running statistics");
    let t2 = m.forward_t(&xs, Phase::Train { seed: 7 }).expect("train");
    let t3 = m.forward_t(&xs, Phase::Train { seed: 8 }).expect("train");
    assert_eq!(values(&t1), values(&t2), "same seed, same dropout masks");
    assert_ne!(values(&t1), values(&t3), "another seed, other masks");
    // The dropout rate itself.
    let ones = Tensor::ones((200, 100), DType::F32, &DEV).expect("ones");
    let d = values(&seht_models::dropout(&ones, 0.3, Phase::Train { seed: 1 }, 0).expect("dropout"));
    let kept = d.iter().filter(|&&x| x != 0.0).count() as f64 / d.len() as f64;
    assert!((kept - 0.7).abs() < 5.0 * (0.21f64 / 20_000.0).sqrt(), "kept fraction {kept}");
    assert!(d.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.7).abs() < 1e-6));
    assert_eq!(values(&seht_models::dropout(&ones, 0.3, Phase::Eval, 0).expect("eval")), vec![1.0; 20_000]);
}

#[test]
fn hidden_state_is_carried_and_detached_between_windows() {
    let cfg = RnnLmConfig {
        kind: RnnKind::Lstm,
        vocab_size: 9,
        embedding: 4,
        hidden: 4,
        layers: 2,
        dropout: 0.0,
        tie_weights: true,
        init_range: 0.1,
    };
    let varmap = VarMap::new();
    let m = RnnLm::new(&cfg, vb(&varmap, DType::F32)).expect("model");
    let a = Tensor::new(&[[1u32, 2, 3]], &DEV).expect("a");
    let b = Tensor::new(&[[4u32, 5, 6]], &DEV).expect("b");
    let s0 = m.zero_state(1).expect("zero");
    let (_, s1) = m.forward_t(&a, &s0, Phase::Eval).expect("fwd");
    assert!(s1.hidden().iter().all(|h| h.track_op()), "the state after a window is on the graph");
    let s1 = s1.detach();
    assert!(s1.hidden().iter().all(|h| !h.track_op()), "detached between windows");
    let (carried, _) = m.forward_t(&b, &s1, Phase::Eval).expect("fwd");
    let (fresh, _) = m.forward_t(&b, &s0, Phase::Eval).expect("fwd");
    assert_ne!(values(&carried), values(&fresh), "the carried state changes the next window");
    // Continuing in two windows equals one window over the concatenation.
    let ab = Tensor::new(&[[1u32, 2, 3, 4, 5, 6]], &DEV).expect("ab");
    let (whole, _) = m.forward_t(&ab, &s0, Phase::Eval).expect("fwd");
    let tail = values(&whole)[3 * 9..].to_vec();
    for (x, y) in tail.iter().zip(values(&carried)) {
        assert!((x - y).abs() < 1e-6);
    }
}

/// Seeded N(0, 1) inputs (candle's own CPU generator cannot be seeded).
fn seeded_randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
    Tensor::from_vec(v, shape, &DEV).expect("tensor")
}

fn assert_model_fd(
    name: &str,
    varmap: &VarMap,
    roles: &seht_models::Roles,
    loss: &dyn Fn() -> candle_core::Result<Tensor>,
) {
    let vars = roles.param_set(varmap).expect("param set").trainable_vars();
    for seed in [1u64, 2] {
        let r = fd_check(&vars, loss, 1e-6, seed).expect("check");
        eprintln!(
            "{name} seed {seed}: HVP rel. error {:.2e}, ∇(σᵀHσ) rel. error {:.2e} (σᵀHσ = {:.4})",
            r.hvp, r.grad_quadratic, r.quadratic
        );
        assert!(
            r.hvp < 1e-6 && r.grad_quadratic < 1e-6,
            "{name} seed {seed}: HVP {:.2e}, ∇(σᵀHσ) {:.2e}",
            r.hvp,
            r.grad_quadratic
        );
        assert!(r.quadratic.abs() > 1e-8);
    }
}

fn labels(n: usize, classes: u32) -> Tensor {
    Tensor::from_vec((0..n as u32).map(|i| (i * 3 + 1) % classes).collect::<Vec<_>>(), n, &DEV).expect("labels")
}

#[test]
fn tiny_resnet_is_exact_to_third_order() {
    let varmap = VarMap::new();
    let m = ResNet::new(
        &ResNetConfig::narrow(2, 3, 2, [1, 1, 1, 1]),
        seht_models::seeded_varbuilder(&varmap, 1, DType::F64, &DEV),
    )
    .expect("model");
    let xs = seeded_randn(&[4, 2, 8, 8], 2);
    let ys = labels(4, 3);
    let loss = || {
        candle_nn::loss::cross_entropy(
            &m.forward_t(&xs, Phase::Train { seed: 0 }).map_err(candle_core::Error::wrap)?,
            &ys,
        )
    };
    assert_model_fd("tiny ResNet", &varmap, m.roles(), &loss);
}

#[test]
fn tiny_wide_resnet_with_dropout_is_exact_to_third_order() {
    let varmap = VarMap::new();
    let cfg = WideResNetConfig { depth: 10, widen_factor: 1, dropout: 0.3, in_channels: 2, num_classes: 3 };
    let m = WideResNet::new(&cfg, seht_models::seeded_varbuilder(&varmap, 3, DType::F64, &DEV)).expect("model");
    let xs = seeded_randn(&[3, 2, 8, 8], 4);
    let ys = labels(3, 3);
    let loss = || {
        candle_nn::loss::cross_entropy(
            &m.forward_t(&xs, Phase::Train { seed: 5 }).map_err(candle_core::Error::wrap)?,
            &ys,
        )
    };
    assert_model_fd("tiny WRN (dropout 0.3, fixed masks)", &varmap, m.roles(), &loss);
}

#[test]
fn tiny_language_models_are_exact_to_third_order() {
    for kind in [RnnKind::Lstm, RnnKind::Gru] {
        let cfg = RnnLmConfig {
            kind,
            vocab_size: 11,
            embedding: 5,
            hidden: 5,
            layers: 2,
            dropout: 0.2,
            tie_weights: true,
            init_range: 0.5,
        };
        let varmap = VarMap::new();
        let m = RnnLm::new(&cfg, seht_models::seeded_varbuilder(&varmap, 5, DType::F64, &DEV)).expect("model");
        let inputs = Tensor::new(&[[1u32, 4, 2, 8], [3, 3, 9, 0]], &DEV).expect("inputs");
        let targets = Tensor::new(&[[4u32, 2, 8, 5], [3, 9, 0, 7]], &DEV).expect("targets");
        let loss = || {
            let s = m.zero_state(2).map_err(candle_core::Error::wrap)?;
            let (logits, _) = m.forward_t(&inputs, &s, Phase::Train { seed: 3 }).map_err(candle_core::Error::wrap)?;
            RnnLm::loss(&logits, &targets).map_err(candle_core::Error::wrap)
        };
        assert_model_fd(&format!("tiny {kind:?} LM (tied, dropout 0.2)"), &varmap, m.roles(), &loss);
    }
}

#[test]
fn drop_block_drops_contiguous_squares_at_the_configured_rate() {
    let ones = Tensor::ones((8, 8, 16, 16), DType::F32, &DEV).expect("ones");
    let out = values(&seht_models::drop_block(&ones, 3, 0.9, Phase::Train { seed: 2 }, 0).expect("dropblock"));
    let dropped = out.iter().filter(|&&v| v == 0.0).count() as f64 / out.len() as f64;
    assert!((0.05..0.15).contains(&dropped), "dropped fraction {dropped}, configured 0.1");
    let kept = out.iter().find(|&&v| v != 0.0).copied().expect("some kept");
    assert!((kept as f64 - 1.0 / (1.0 - dropped)).abs() < 1e-4, "kept units rescaled by count/kept");
    // Every dropped unit lies in some fully dropped 3×3 square.
    for plane in 0..64 {
        let m = &out[plane * 256..(plane + 1) * 256];
        for y in 0..16 {
            for x in 0..16 {
                if m[y * 16 + x] == 0.0 {
                    let in_square = (y.saturating_sub(2)..=y.min(13)).any(|y0| {
                        (x.saturating_sub(2)..=x.min(13))
                            .any(|x0| (y0..y0 + 3).all(|yy| (x0..x0 + 3).all(|xx| m[yy * 16 + xx] == 0.0)))
                    });
                    assert!(in_square, "plane {plane} ({y},{x}) dropped outside a 3×3 block");
                }
            }
        }
    }
    assert_eq!(values(&seht_models::drop_block(&ones, 3, 0.9, Phase::Eval, 0).expect("eval")), vec![1.0; 8 * 8 * 256]);
}

#[test]
fn seeded_initialisation_is_reproducible_and_follows_the_init_rules() {
    let build = |seed: u64| {
        let varmap = VarMap::new();
        let vb = seht_models::seeded_varbuilder(&varmap, seed, DType::F32, &DEV);
        let m = ResNet::new(&ResNetConfig::narrow(3, 10, 8, [1, 1, 1, 1]), vb).expect("model");
        let v = |n: &str| values(varmap.data().lock().expect("lock")[n].as_tensor());
        (v("conv1.weight"), v("bn1.weight"), v("linear.weight"), m)
    };
    let (a, gamma, _, _) = build(1);
    let (b, _, _, _) = build(1);
    let (c, _, _, _) = build(2);
    assert_eq!(a, b, "same seed, same weights");
    assert_ne!(a, c);
    assert!(gamma.iter().all(|&g| g == 1.0), "BatchNorm γ starts at 1");
    // conv1: Kaiming normal, fan-in 3·3·3 = 27, ReLU gain √2: std = √(2/27).
    let std = (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    assert!((std - (2.0f32 / 27.0).sqrt()).abs() < 0.05, "std {std}");
}

/// The language model's recurrent layers (one input projection for the whole
/// window, a contiguous `W_hhᵀ`) against candle_nn's `LSTM::step`/`GRU::step`
/// run step by step on the same variables: logits and every gradient in f64.
#[test]
fn recurrent_layers_match_candle_nn_cells() {
    use candle_core::IndexOp;
    use candle_nn::rnn::{GRUConfig, LSTMConfig, RNN};
    use candle_nn::{Init, Module};
    for kind in [RnnKind::Lstm, RnnKind::Gru] {
        let cfg = RnnLmConfig {
            kind,
            vocab_size: 11,
            embedding: 6,
            hidden: 5,
            layers: 2,
            dropout: 0.0,
            tie_weights: false,
            init_range: 0.5,
        };
        let varmap = VarMap::new();
        let m = RnnLm::new(&cfg, seht_models::seeded_varbuilder(&varmap, 7, DType::F64, &DEV)).expect("model");
        let get = |n: &str| varmap.data().lock().expect("lock")[n].as_tensor().clone();
        // Nonzero biases, so that a dropped or doubled bias shows.
        for n in ["rnn.0.bias_ih_l0", "rnn.0.bias_hh_l0", "rnn.1.bias_ih_l0", "rnn.1.bias_hh_l0"] {
            let b = get(n);
            let v = (seeded_randn(b.dims(), n.len() as u64 + 3) * 0.3).expect("bias");
            varmap.data().lock().expect("lock")[n].set(&v).expect("set");
        }
        let tokens = Tensor::new(&[[1u32, 4, 2, 8, 6], [3, 3, 9, 0, 10]], &DEV).expect("tokens");
        let targets = Tensor::new(&[[4u32, 2, 8, 5, 1], [3, 9, 0, 7, 2]], &DEV).expect("targets");
        // A state that is not zero, carried in as from a previous window.
        let mut s0 = m.zero_state(2).expect("state");
        let (_, warm) = m.forward_t(&targets, &s0, Phase::Eval).expect("warm-up");
        s0 = warm.detach();
        let (logits, s1) = m.forward_t(&tokens, &s0, Phase::Eval).expect("forward");

        // Reference: candle_nn's cells on the same variables, step by step.
        let ref_vb = VarBuilder::from_varmap(&varmap, DType::F64, &DEV);
        let zero = Some(Init::Const(0.0));
        let u = Init::Uniform { lo: -0.5, up: 0.5 };
        let emb = candle_nn::Embedding::new(get("encoder.weight"), 6).forward(&tokens).expect("embedding");
        let mut h = emb;
        let mut ref_state = Vec::new();
        let mut ref_cells = Vec::new();
        for l in 0..2 {
            let d_in = if l == 0 { 6 } else { 5 };
            let vl = ref_vb.pp(format!("rnn.{l}"));
            let mut hs = Vec::new();
            match &s0 {
                seht_models::RnnState::Lstm(ss) => {
                    let c = LSTMConfig {
                        w_ih_init: u,
                        w_hh_init: u,
                        b_ih_init: zero,
                        b_hh_init: zero,
                        ..Default::default()
                    };
                    let cell = candle_nn::lstm(d_in, 5, c, vl).expect("lstm");
                    let mut s = ss[l].clone();
                    for t in 0..5 {
                        s = cell.step(&h.i((.., t, ..)).expect("i").contiguous().expect("c"), &s).expect("step");
                        hs.push(s.h().clone());
                    }
                    ref_state.push(s.h().clone());
                    ref_cells.push(s.c().clone());
                }
                seht_models::RnnState::Gru(ss) => {
                    let c = GRUConfig { w_ih_init: u, w_hh_init: u, b_ih_init: zero, b_hh_init: zero };
                    let cell = candle_nn::gru(d_in, 5, c, vl).expect("gru");
                    let mut s = ss[l].clone();
                    for t in 0..5 {
                        s = cell.step(&h.i((.., t, ..)).expect("i").contiguous().expect("c"), &s).expect("step");
                        hs.push(s.h().clone());
                    }
                    ref_state.push(s.h().clone());
                }
            }
            h = Tensor::stack(&hs, 1).expect("stack");
        }
        let ref_logits = h
            .reshape((10, 5))
            .and_then(|x| x.matmul(&get("decoder.weight").t()?))
            .and_then(|x| x.broadcast_add(&get("decoder.bias")))
            .and_then(|x| x.reshape((2, 5, 11)))
            .expect("decoder");
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let (a, b) = (values64(a), values64(b));
            let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
            let err = a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 1e-12 * scale.max(1.0), "{kind:?} {what}: max error {err:.2e} (scale {scale:.2e})");
        };
        close(&logits, &ref_logits, "logits");
        for (a, b) in s1.hidden().iter().zip(&ref_state) {
            close(a, b, "final hidden state");
        }
        if let seht_models::RnnState::Lstm(ss) = &s1 {
            assert_eq!(ss.len(), ref_cells.len());
            for (a, b) in ss.iter().zip(&ref_cells) {
                close(a.c(), b, "final cell state");
            }
        }
        let loss = RnnLm::loss(&logits, &targets).expect("loss");
        let ref_loss = RnnLm::loss(&ref_logits, &targets).expect("ref loss");
        let (g, rg) = (loss.backward().expect("grad"), ref_loss.backward().expect("ref grad"));
        for (name, var) in varmap.data().lock().expect("lock").iter() {
            let (a, b) = (g.get(var.as_tensor()), rg.get(var.as_tensor()));
            let (a, b) = (a.unwrap_or_else(|| panic!("{name}: no gradient")), b.expect("reference gradient"));
            close(a, b, &format!("∂L/∂{name}"));
        }
    }
}

fn values64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1()).expect("values")
}
