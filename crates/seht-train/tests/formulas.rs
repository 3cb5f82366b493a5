//! Each method's defining formula on a tiny case computed independently here.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use seht_train::config::ScheduleConfig;
use seht_train::losses::{self, MixupDraw};
use seht_train::optim::{Sgd, clip_grad_norm};
use seht_train::schedule::LrSchedule;

const DEV: Device = Device::Cpu;

fn logits() -> (Tensor, Tensor, Vec<[f64; 3]>, Vec<usize>) {
    let rows = vec![[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]];
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    (Tensor::from_vec(flat, (2, 3), &DEV).expect("t"), Tensor::new(&[1u32, 0], &DEV).expect("y"), rows, vec![1, 0])
}

fn softmax(r: &[f64; 3]) -> [f64; 3] {
    let m = r.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = r.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    [e[0] / s, e[1] / s, e[2] / s]
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().expect("scalar")
}

#[test]
fn label_smoothing_is_cross_entropy_against_smoothed_targets() {
    let (l, y, rows, ys) = logits();
    let eps = 0.2;
    let want: f64 = rows
        .iter()
        .zip(&ys)
        .map(|(r, &t)| {
            let p = softmax(r);
            -(0..3).map(|c| ((if c == t { 1.0 - eps } else { 0.0 }) + eps / 3.0) * p[c].ln()).sum::<f64>()
        })
        .sum::<f64>()
        / 2.0;
    assert!((scalar(&losses::label_smoothing(&l, &y, eps).expect("ls")) - want).abs() < 1e-12);
}

#[test]
fn confidence_penalty_subtracts_beta_times_entropy() {
    let (l, y, rows, ys) = logits();
    let beta = 0.3;
    let want: f64 = rows
        .iter()
        .zip(&ys)
        .map(|(r, &t)| {
            let p = softmax(r);
            let h = -p.iter().map(|q| q * q.ln()).sum::<f64>();
            -p[t].ln() - beta * h
        })
        .sum::<f64>()
        / 2.0;
    assert!((scalar(&losses::confidence_penalty(&l, &y, beta).expect("cp")) - want).abs() < 1e-12);
}

#[test]
fn mixup_mixes_inputs_and_losses_with_the_same_lambda() {
    let (l, y, rows, _) = logits();
    let draw = MixupDraw { lambda: 0.3, perm: vec![1, 0] };
    let xs = Tensor::new(&[[1.0f64, 2.0], [3.0, 5.0]], &DEV).expect("xs");
    let mixed = draw.mix(&xs).expect("mix").to_vec2::<f64>().expect("v");
    let want = [[0.3 + 0.7 * 3.0, 0.6 + 0.7 * 5.0], [0.9 + 0.7, 1.5 + 1.4]];
    for (r, w) in mixed.iter().zip(want) {
        for (a, b) in r.iter().zip(w) {
            assert!((a - b).abs() < 1e-12, "{mixed:?}");
        }
    }
    let ce = |r: &[f64; 3], t: usize| -softmax(r)[t].ln();
    let want = 0.3 * (ce(&rows[0], 1) + ce(&rows[1], 0)) / 2.0 + 0.7 * (ce(&rows[0], 0) + ce(&rows[1], 1)) / 2.0;
    assert!((scalar(&draw.loss(&l, &y).expect("loss")) - want).abs() < 1e-12);
    // λ ~ Beta(α, α): mean 1/2, variance 1/(4(2α+1)).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ls: Vec<f64> = (0..4000).map(|_| MixupDraw::draw(4, 0.4, &mut rng).expect("draw").lambda).collect();
    let m = ls.iter().sum::<f64>() / 4000.0;
    let v = ls.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 3999.0;
    assert!((m - 0.5).abs() < 0.02 && (v - 1.0 / (4.0 * 1.8)).abs() < 0.02, "mean {m}, var {v}");
}

#[test]
fn jacobian_penalty_estimates_the_frobenius_norm_of_the_input_jacobian() {
    // Logits z = x Wᵀ: the Jacobian of each example is W, so ‖J‖_F² = ‖W‖_F².
    let w = Tensor::new(&[[1.0f64, -2.0, 0.5], [0.3, 0.0, 4.0]], &DEV).expect("w");
    let x = Var::from_tensor(&Tensor::new(&[[1.0f64, 1.0, 1.0], [2.0, -1.0, 0.0], [0.5, 0.5, 3.0]], &DEV).expect("x"))
        .expect("var");
    let z = x.as_tensor().matmul(&w.t().expect("t")).expect("z");
    let fro: f64 = 1.0 + 4.0 + 0.25 + 0.09 + 16.0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let est: Vec<f64> =
        (0..2000).map(|_| scalar(&losses::jacobian_frobenius_sq(&z, &x, 1, &mut rng).expect("jr"))).collect();
    let m = est.iter().sum::<f64>() / est.len() as f64;
    let se = (est.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (est.len() as f64 - 1.0) / est.len() as f64).sqrt();
    assert!((m - fro).abs() < 5.0 * se, "estimate {m} ± {se} vs ‖W‖² = {fro}");
    // The estimate is quadratic in W: doubling W quadruples it for the same projections.
    let z2 = x.as_tensor().matmul(&(w.t().expect("t") * 2.0).expect("2w")).expect("z");
    let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (a, b) = (
        scalar(&losses::jacobian_frobenius_sq(&z, &x, 3, &mut r1).expect("a")),
        scalar(&losses::jacobian_frobenius_sq(&z2, &x, 3, &mut r2).expect("b")),
    );
    assert!((b - 4.0 * a).abs() < 1e-9 * b);
}

#[test]
fn top_k_accuracy() {
    let l = Tensor::new(&[[0.1f32, 0.5, 0.2, 0.9], [0.8, 0.1, 0.3, 0.2]], &DEV).expect("l");
    let y = Tensor::new(&[1u32, 2], &DEV).expect("y");
    assert_eq!(losses::top_k_correct(&l, &y, 1).expect("top1"), 0);
    assert_eq!(losses::top_k_correct(&l, &y, 2).expect("top2"), 2);
}

#[test]
fn sgd_with_momentum_and_weight_decay_follows_pytorch() {
    let w = Var::new(&[1.0f64, -2.0], &DEV).expect("w");
    let mut sgd = Sgd::new(vec![w.clone()], 0.9, 0.1);
    let (lr, mut buf, mut wv) = (0.5, [0.0f64; 2], [1.0f64, -2.0]);
    for _ in 0..3 {
        // loss = Σ w³ → grad 3w²
        let loss = w.as_tensor().powf(3.0).expect("cube").sum_all().expect("sum");
        let grads = loss.backward().expect("bw");
        sgd.step(&grads, lr).expect("step");
        for i in 0..2 {
            let g = 3.0 * wv[i] * wv[i] + 0.1 * wv[i];
            buf[i] = 0.9 * buf[i] + g;
            wv[i] -= lr * buf[i];
        }
        let got = w.as_tensor().to_vec1::<f64>().expect("w");
        assert!((got[0] - wv[0]).abs() < 1e-9 && (got[1] - wv[1]).abs() < 1e-9, "{got:?} vs {wv:?}");
    }
}

#[test]
fn gradient_clipping_scales_to_the_max_norm() {
    let a = Var::new(&[3.0f64], &DEV).expect("a");
    let b = Var::new(&[4.0f64], &DEV).expect("b");
    let loss =
        ((a.as_tensor() * 3.0).expect("x") + (b.as_tensor() * 4.0).expect("y")).expect("s").sum_all().expect("sum");
    let mut g = loss.backward().expect("bw");
    let n = clip_grad_norm(&mut g, &[a.clone(), b.clone()], 1.0).expect("clip");
    assert!((n - 5.0).abs() < 1e-12);
    let ga = g.get(a.as_tensor()).expect("ga").to_vec1::<f64>().expect("v")[0];
    let gb = g.get(b.as_tensor()).expect("gb").to_vec1::<f64>().expect("v")[0];
    assert!((ga.hypot(gb) - 1.0).abs() < 1e-5 && (ga / gb - 0.75).abs() < 1e-12);
}

#[test]
fn schedules() {
    let cos = LrSchedule::new(ScheduleConfig::Cosine, 0.1, 200);
    assert!((cos.lr(0) - 0.1).abs() < 1e-15);
    assert!((cos.lr(100) - 0.05).abs() < 1e-12);
    assert!((cos.lr(50) - 0.1 * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-12);
    let ms = LrSchedule::new(ScheduleConfig::MultiStep { milestones: vec![60, 120, 160], gamma: 0.2 }, 0.1, 200);
    for (e, want) in [(0, 0.1), (59, 0.1), (60, 0.02), (119, 0.02), (120, 0.004), (160, 0.0008), (199, 0.0008)] {
        assert!((ms.lr(e) - want).abs() < 1e-12, "epoch {e}: {} vs {want}", ms.lr(e));
    }
    let mut pl = LrSchedule::new(ScheduleConfig::Plateau { factor: 0.25 }, 20.0, 40);
    for (val, want) in [(5.0, 20.0), (4.0, 20.0), (4.5, 5.0), (4.0, 1.25), (3.9, 1.25)] {
        pl.observe(val);
        assert_eq!(pl.lr(0), want, "after validation loss {val}");
    }
}

#[test]
fn step_seeds_differ_and_repeat() {
    assert_eq!(seht_train::step_seed(1, 5), seht_train::step_seed(1, 5));
    assert_ne!(seht_train::step_seed(1, 5), seht_train::step_seed(1, 6));
    assert_ne!(seht_train::step_seed(1, 5), seht_train::step_seed(2, 5));
}
