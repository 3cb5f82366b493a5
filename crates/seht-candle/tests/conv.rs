//! `ops::conv2d` (im2col + gemm kernels, issue 19) against candle's own
//! `conv2d`: output, gradient, Hessian-vector product, the gradient of
//! `‖Hv‖²` and a fourth-order product with respect to the input and the
//! kernel, with and without kept graphs, over strides, paddings, kernel sizes
//! and non-square, non-contiguous inputs (f64 1e-12, f32 1e-4); bad shapes
//! refused with an error naming the op.

mod common;

use candle_core::{DType, Tensor, Var};
use common::DEV;
use seht_candle::ops::conv2d;

/// Seeded N(0, 1) entries (the shared test helper).
fn randn(shape: &[usize], seed: u64) -> Tensor {
    common::randn(shape, 1.0, seed)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f64>()).expect("values")
}

fn sum_dot(terms: &[(Tensor, Tensor)], dtype: DType) -> Tensor {
    let mut s = Tensor::zeros((), dtype, &DEV).expect("zero");
    for (a, b) in terms {
        s = (s + (a * b).expect("mul").sum_all().expect("sum")).expect("add");
    }
    s
}

/// The head after the convolution: `tanh(y)` (smooth), or `relu(y) ⊙ tanh(y)`
/// (a ReLU network's kink, `seht_candle::ops::relu`, with non-zero
/// derivatives of every order away from it).
#[derive(Clone, Copy, Debug)]
enum Head {
    Tanh,
    Relu,
}

/// Derivatives of `L = Σ head(conv(x, w)) ⊙ c` with respect to `(x, w)`,
/// for one of the two convolutions, to fourth order.
#[allow(clippy::too_many_arguments)]
fn derivatives(
    x_shape: &[usize],
    k_shape: &[usize],
    padding: usize,
    stride: usize,
    dtype: DType,
    transpose_input: bool,
    head: Head,
    conv: &dyn Fn(&Tensor, &Tensor, usize, usize) -> Tensor,
) -> Vec<(String, Tensor)> {
    let cast = |t: Tensor| t.to_dtype(dtype).expect("cast");
    let x = if transpose_input {
        // A non-contiguous input: stored as (n, c, w, h), viewed as (n, c, h, w).
        let s = [x_shape[0], x_shape[1], x_shape[3], x_shape[2]];
        Var::from_tensor(&cast(randn(&s, 1))).expect("var")
    } else {
        Var::from_tensor(&cast(randn(x_shape, 1))).expect("var")
    };
    let w = Var::from_tensor(&cast(randn(k_shape, 2).affine(0.4, 0.0).expect("w"))).expect("var");
    let xv = if transpose_input { x.as_tensor().transpose(2, 3).expect("t") } else { x.as_tensor().clone() };
    let inputs = [x.as_tensor().clone(), w.as_tensor().clone()];
    let y = conv(&xv, w.as_tensor(), padding, stride);
    let c = cast(randn(y.dims(), 3));
    let activated = match head {
        Head::Tanh => y.tanh().expect("tanh"),
        Head::Relu => (seht_candle::ops::relu(&y).expect("relu") * y.tanh().expect("tanh")).expect("mul"),
    };
    let loss = (activated * &c).expect("mul").sum_all().expect("sum");
    let g = seht_candle::backward_create_graph(&loss).expect("gradient");
    let dot = sum_dot(
        &inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (g.get(t).expect("g").clone(), cast(randn(t.dims(), 4 + i as u64))))
            .collect::<Vec<_>>(),
        dtype,
    );
    let hv = seht_candle::backward_create_graph(&dot).expect("Hv");
    let norm = sum_dot(
        &inputs.iter().map(|t| (hv.get(t).expect("Hv").clone(), hv.get(t).expect("Hv").clone())).collect::<Vec<_>>(),
        dtype,
    );
    let third = seht_candle::backward_create_graph(&norm).expect("third");
    let last = sum_dot(
        &inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (third.get(t).expect("third").clone(), cast(randn(t.dims(), 8 + i as u64))))
            .collect::<Vec<_>>(),
        dtype,
    );
    let fourth = seht_candle::backward_no_graph(&last).expect("fourth");
    let plain = seht_candle::backward_no_graph(&loss).expect("plain");
    let hv_plain = seht_candle::backward_no_graph(&dot).expect("Hv without graph");
    let third_plain = seht_candle::backward_no_graph(&norm).expect("third without graph");
    let mut out = vec![("output".to_string(), y.detach())];
    for (name, t) in ["x", "w"].iter().zip(&inputs) {
        out.push((format!("gradient {name}"), plain.get(t).expect("g").detach()));
        out.push((format!("Hv {name}"), hv.get(t).expect("Hv").detach()));
        out.push((format!("Hv without graph {name}"), hv_plain.get(t).expect("Hv").detach()));
        out.push((format!("∇‖Hv‖² {name}"), third.get(t).expect("third").detach()));
        out.push((format!("∇‖Hv‖² without graph {name}"), third_plain.get(t).expect("third").detach()));
        out.push((format!("fourth order {name}"), fourth.get(t).expect("fourth").detach()));
    }
    out
}

fn ours(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Tensor {
    conv2d(x, w, padding, stride).expect("ops::conv2d")
}

fn candle(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Tensor {
    x.conv2d(w, padding, stride, 1, 1).expect("candle conv2d")
}

/// (input, kernel, padding, stride): ResNet's 3×3 and 1×1 shortcut cases,
/// stride 2 with odd sizes, a kernel as large as the padded input, batch 1.
/// Every case has `(size + 2·padding − k)` divisible by the stride: otherwise
/// candle's own convolution backward returns an input gradient of the wrong
/// shape (its `conv_transpose2d` has no output padding), and the comparison
/// cannot run; [`adjoint_identities_hold`] covers those cases.
const CASES: [([usize; 4], [usize; 4], usize, usize); 7] = [
    ([2, 3, 5, 6], [4, 3, 3, 3], 1, 1),
    ([3, 2, 7, 5], [3, 2, 3, 3], 1, 2),
    ([2, 4, 6, 6], [5, 4, 1, 1], 0, 1),
    ([2, 4, 7, 5], [3, 4, 1, 1], 0, 2),
    ([1, 2, 4, 5], [2, 2, 3, 2], 0, 1),
    ([2, 1, 3, 3], [2, 1, 5, 5], 1, 1),
    ([2, 3, 5, 8], [2, 3, 3, 3], 2, 3),
];

fn compare(dtype: DType, tolerance: f64, transpose_input: bool, head: Head) {
    for (x, k, p, s) in CASES {
        let a = derivatives(&x, &k, p, s, dtype, transpose_input, head, &ours);
        let b = derivatives(&x, &k, p, s, dtype, transpose_input, head, &candle);
        for ((name, got), (_, want)) in a.iter().zip(&b) {
            assert_eq!(got.dims(), want.dims(), "{x:?} ⋆ {k:?} p{p} s{s}: {name} shape");
            let err = seht_candle::gradcheck::relative_error(&values(got), &values(want));
            assert!(err <= tolerance, "{x:?} ⋆ {k:?} p{p} s{s} {dtype:?} {head:?}: {name} differs by {err:.2e}");
        }
    }
}

#[test]
fn matches_candle_to_fourth_order_in_f64() {
    compare(DType::F64, 1e-12, false, Head::Tanh);
}

/// The same through a ReLU (`ops::relu`'s replayed mask), as in the models.
#[test]
fn matches_candle_to_fourth_order_through_a_relu_in_f64() {
    compare(DType::F64, 1e-12, false, Head::Relu);
}

#[test]
fn matches_candle_on_non_contiguous_inputs() {
    compare(DType::F64, 1e-12, true, Head::Tanh);
}

#[test]
fn matches_candle_in_f32() {
    compare(DType::F32, 1e-4, false, Head::Tanh);
}

/// The dot-product test, independent of candle's convolution backward: for
/// `y = conv(x, w)` and random `c`, `u`, `v`,
/// `⟨∂ₓ⟨c, y⟩, u⟩ = ⟨c, conv(u, w)⟩` and `⟨∂_w⟨c, y⟩, v⟩ = ⟨c, conv(x, v)⟩`
/// (the convolution is bilinear), including the geometries where candle's
/// backward fails (sizes not divisible by the stride), and `conv` itself
/// against a direct sum over the kernel window.
#[test]
fn adjoint_identities_hold() {
    let cases = CASES.iter().copied().chain([
        ([2, 4, 7, 6], [3, 4, 1, 1], 0, 2),
        ([2, 3, 8, 9], [2, 3, 3, 3], 1, 2),
        ([2, 3, 6, 5], [2, 3, 3, 3], 2, 3),
    ]);
    for (xs, ks, p, s) in cases {
        let x = Var::from_tensor(&randn(&xs, 1)).expect("var");
        let w = Var::from_tensor(&randn(&ks, 2)).expect("var");
        let y = conv2d(x.as_tensor(), w.as_tensor(), p, s).expect("conv");
        let c = randn(y.dims(), 3);
        let (u, v) = (randn(&xs, 4), randn(&ks, 5));
        let g = seht_candle::backward_no_graph(&(&y * &c).expect("mul").sum_all().expect("sum")).expect("gradient");
        let dot =
            |a: &Tensor, b: &Tensor| (a * b).expect("mul").sum_all().expect("sum").to_scalar::<f64>().expect("f64");
        let pairs = [
            (dot(g.get(x.as_tensor()).expect("dx"), &u), dot(&c, &conv2d(&u, w.as_tensor(), p, s).expect("conv"))),
            (dot(g.get(w.as_tensor()).expect("dw"), &v), dot(&c, &conv2d(x.as_tensor(), &v, p, s).expect("conv"))),
        ];
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{xs:?} ⋆ {ks:?} p{p} s{s}: adjoint {i}: {a} vs {b}");
        }
        // The output, from the definition.
        let (xv, wv, yv) = (values(x.as_tensor()), values(w.as_tensor()), values(&y));
        let [n, ci, h, wd] = xs;
        let [co, _, kh, kw] = ks;
        let (oh, ow) = (y.dims()[2], y.dims()[3]);
        for b in 0..n {
            for o in 0..co {
                for (yy, xx) in (0..oh).flat_map(|a| (0..ow).map(move |b| (a, b))) {
                    let mut want = 0.0;
                    for (c, i, j) in (0..ci).flat_map(|c| (0..kh).flat_map(move |i| (0..kw).map(move |j| (c, i, j)))) {
                        let (iy, ix) = ((yy * s + i) as isize - p as isize, (xx * s + j) as isize - p as isize);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                            want += xv[((b * ci + c) * h + iy as usize) * wd + ix as usize]
                                * wv[((o * ci + c) * kh + i) * kw + j];
                        }
                    }
                    let got = yv[((b * co + o) * oh + yy) * ow + xx];
                    assert!(
                        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                        "{xs:?} ⋆ {ks:?}: output {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn mixed_dtypes_are_refused() {
    let x = randn(&[2, 3, 5, 5], 1).to_dtype(DType::F32).expect("f32");
    assert!(conv2d(&x, &randn(&[4, 3, 3, 3], 2), 1, 1).is_err());
}

#[test]
fn bad_shapes_are_refused_naming_the_op() {
    let x = randn(&[2, 3, 5, 5], 1);
    for (k, p, s, needle) in [
        (randn(&[4, 2, 3, 3], 2), 1, 1, "input channels"),
        (randn(&[4, 3, 3], 2), 1, 1, "kernel"),
        (randn(&[4, 3, 8, 8], 2), 1, 1, "does not fit"),
        (randn(&[4, 3, 3, 3], 2), 1, 0, "stride"),
        (randn(&[4, 3, 0, 3], 2), 1, 1, "at least 1"),
        (randn(&[4, 3, 3, 3], 2), usize::MAX / 2 + 1, 1, "too large"),
    ] {
        let err = conv2d(&x, &k, p, s).expect_err("refused").to_string();
        assert!(err.contains("conv2d") && err.contains(needle), "{err}");
    }
    let err = conv2d(&randn(&[3, 5, 5], 1), &randn(&[4, 3, 3, 3], 2), 1, 1).expect_err("rank").to_string();
    assert!(err.contains("conv2d") && err.contains("(n, c_in, h, w)"), "{err}");
}

/// Empty batches, channel counts and sizes give candle's results (empty
/// outputs and gradients), not a panic.
#[test]
fn empty_tensors_take_candles_path() {
    for (xs, ks, p) in [
        ([0usize, 3, 5, 5], [4usize, 3, 3, 3], 1usize),
        ([2, 3, 5, 5], [0, 3, 3, 3], 1),
        ([2, 0, 5, 5], [4, 0, 3, 3], 1),
        ([2, 3, 0, 5], [4, 3, 1, 3], 1),
    ] {
        let x = Var::from_tensor(&Tensor::zeros(&xs, DType::F64, &DEV).expect("x")).expect("var");
        let w = Var::from_tensor(&Tensor::zeros(&ks, DType::F64, &DEV).expect("w")).expect("var");
        let y = conv2d(x.as_tensor(), w.as_tensor(), p, 1).expect("an empty convolution");
        let want = x.as_tensor().conv2d(w.as_tensor(), p, 1, 1, 1).expect("candle");
        assert_eq!(y.dims(), want.dims(), "{xs:?} ⋆ {ks:?}");
        let g = seht_candle::backward_no_graph(&y.sum_all().expect("sum"));
        assert_eq!(g.is_ok(), seht_candle::backward_no_graph(&want.sum_all().expect("sum")).is_ok(), "{xs:?} ⋆ {ks:?}");
    }
}
