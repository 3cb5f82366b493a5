//! 2-D convolution with im2col + gemm CPU kernels for the forward pass and
//! both gradients, differentiable to every order (issue 19).
//!
//! candle 0.11's CPU convolution computes the input gradient with
//! `conv_transpose2d`, a direct loop of dot products over `c_in`, and the
//! kernel gradient as a `conv2d` of transposed copies whose "kernel" is the
//! whole output gradient (an im2col with `N·H·W` rows per column). Profiled on
//! a plain full-width ResNet-18 step (batch 32, 2 threads) these two took
//! about 60 % of the step, the gemm microkernels 18 %.
//!
//! Here the three linear maps of a convolution `y = conv(x, w)` (stride `s`,
//! zero padding `p`, no dilation, no groups) are three ops, each one im2col or
//! col2im and one gemm per image:
//!
//! - `Forward(x, w) = y`: `Y_b = W · cols(x_b)`, `W` the kernel as a
//!   `(c_out, c_in·kh·kw)` matrix;
//! - `InputGrad(g, w) = Jₓᵀ g`: `col2im(Wᵀ · G_b)` (the transposed
//!   convolution);
//! - `KernelGrad(x, g) = J_wᵀ g`: `Σ_b G_b · cols(x_b)ᵀ`.
//!
//! The family is closed under differentiation, which is what makes every
//! order exact and lean: `⟨InputGrad(g, w), u⟩ = ⟨g, Forward(u, w)⟩` and
//! `⟨KernelGrad(x, g), v⟩ = ⟨g, Forward(x, v)⟩`, so
//!
//! | op | ∂ w.r.t. first argument (cotangent `c`) | ∂ w.r.t. second |
//! | --- | --- | --- |
//! | `Forward(x, w)` | `InputGrad(c, w)` | `KernelGrad(x, c)` |
//! | `InputGrad(g, w)` | `Forward(c, w)` | `KernelGrad(c, g)` |
//! | `KernelGrad(x, g)` | `InputGrad(g, c)` | `Forward(x, c)` |
//!
//! Every backward rule is built from these ops applied to tracked tensors
//! when the pass keeps its graph, so second, third and higher derivatives
//! are those of the convolution (checked against candle's own convolution to
//! fourth order in `tests/conv.rs`, and by the models' finite-difference
//! tests). Each graph node holds its two arguments only, as candle's does.
//! Gradients of arguments that lead to no variable (the input image) are not
//! computed.
//!
//! The kernels run on contiguous f32/f64 CPU tensors, parallel over images
//! (rayon, candle's pool) with one gemm each (the `gemm` crate, which
//! candle's own matmul uses); other dtypes and devices use candle's
//! `conv2d`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu_op::{same_dtype, slice};
use crate::error::{Error, Result};

fn invalid(message: String) -> Error {
    Error::InvalidOp { op: "conv2d", message }
}

/// Shapes of one convolution: input `(n, c_in, h, w)`, kernel
/// `(c_out, c_in, kh, kw)`, output `(n, c_out, oh, ow)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: &[usize], k: &[usize], padding: usize, stride: usize) -> Result<Self> {
        let &[n, c_in, h, w] = x else {
            return Err(invalid(format!("expected an (n, c_in, h, w) input, got {x:?}")));
        };
        let &[c_out, k_in, kh, kw] = k else {
            return Err(invalid(format!("expected a (c_out, c_in, kh, kw) kernel, got {k:?}")));
        };
        if k_in != c_in {
            return Err(invalid(format!("kernel {k:?} has {k_in} input channels, input {x:?} has {c_in}")));
        }
        if stride == 0 {
            return Err(invalid("stride must be at least 1".into()));
        }
        if kh == 0 || kw == 0 {
            return Err(invalid(format!("kernel {k:?} has an empty window {kh}×{kw}: its size must be at least 1")));
        }
        let padded = |size: usize| padding.checked_mul(2).and_then(|p| p.checked_add(size));
        let (Some(ph), Some(pw)) = (padded(h), padded(w)) else {
            return Err(invalid(format!("padding {padding} is too large")));
        };
        if ph < kh || pw < kw {
            return Err(invalid(format!("kernel {kh}×{kw} does not fit input {h}×{w} with padding {padding}")));
        }
        let (oh, ow) = ((ph - kh) / stride + 1, (pw - kw) / stride + 1);
        Ok(Self { n, c_in, h, w, c_out, kh, kw, stride, padding, oh, ow })
    }

    /// Rows of the im2col matrix, `c_in·kh·kw`.
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per image, `oh·ow`.
    fn s(&self) -> usize {
        self.oh * self.ow
    }

    fn input_shape(&self) -> Shape {
        Shape::from((self.n, self.c_in, self.h, self.w))
    }

    fn output_shape(&self) -> Shape {
        Shape::from((self.n, self.c_out, self.oh, self.ow))
    }

    fn kernel_shape(&self) -> Shape {
        Shape::from((self.c_out, self.c_in, self.kh, self.kw))
    }

    /// The valid output columns `[lo, hi)` of kernel column `j` (those that
    /// read an input column inside the image), for stride 1.
    fn valid_columns(&self, j: usize) -> (usize, usize) {
        let shift = j as isize - self.padding as isize; // input column = output column + shift
        let lo = (-shift).clamp(0, self.ow as isize) as usize;
        let hi = (self.w as isize - shift).clamp(0, self.ow as isize) as usize;
        (lo, hi.max(lo))
    }

    /// Writes the im2col block of one image `x` (`c_in × h × w`) into
    /// `cols`, a `k × ld` row-major matrix: row `(c·kh + i)·kw + j`, columns
    /// `offset .. offset + s`.
    fn im2col<T: WithDType>(&self, x: &[T], cols: &mut [T], ld: usize, offset: usize) {
        let (s, p) = (self.s(), self.padding as isize);
        for c in 0..self.c_in {
            let plane = &x[c * self.h * self.w..(c + 1) * self.h * self.w];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = &mut cols[((c * self.kh + i) * self.kw + j) * ld + offset..][..s];
                    let (lo, hi) = self.valid_columns(j);
                    for y in 0..self.oh {
                        let out = &mut row[y * self.ow..(y + 1) * self.ow];
                        let iy = (y * self.stride + i) as isize - p;
                        if iy < 0 || iy >= self.h as isize {
                            out.fill(T::zero());
                            continue;
                        }
                        let src = &plane[iy as usize * self.w..(iy as usize + 1) * self.w];
                        if self.stride == 1 {
                            out[..lo].fill(T::zero());
                            out[hi..].fill(T::zero());
                            let start = (lo + j) as isize - p;
                            out[lo..hi].copy_from_slice(&src[start as usize..start as usize + (hi - lo)]);
                        } else {
                            for (xo, o) in out.iter_mut().enumerate() {
                                let ix = (xo * self.stride + j) as isize - p;
                                *o = if ix >= 0 && ix < self.w as isize { src[ix as usize] } else { T::zero() };
                            }
                        }
                    }
                }
            }
        }
    }

    /// `x += col2im(cols)`, the adjoint of [`im2col`](Self::im2col) (same
    /// `ld`, `offset`).
    fn col2im_add<T: WithDType>(&self, cols: &[T], ld: usize, offset: usize, x: &mut [T]) {
        let (s, p) = (self.s(), self.padding as isize);
        for c in 0..self.c_in {
            let plane = &mut x[c * self.h * self.w..(c + 1) * self.h * self.w];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = &cols[((c * self.kh + i) * self.kw + j) * ld + offset..][..s];
                    let (lo, hi) = self.valid_columns(j);
                    for y in 0..self.oh {
                        let iy = (y * self.stride + i) as isize - p;
                        if iy < 0 || iy >= self.h as isize {
                            continue;
                        }
                        let src = &row[y * self.ow..(y + 1) * self.ow];
                        let dst = &mut plane[iy as usize * self.w..(iy as usize + 1) * self.w];
                        if self.stride == 1 {
                            let start = ((lo + j) as isize - p) as usize;
                            for (d, v) in dst[start..start + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                                *d += *v;
                            }
                        } else {
                            for (xo, v) in src.iter().enumerate() {
                                let ix = (xo * self.stride + j) as isize - p;
                                if ix >= 0 && ix < self.w as isize {
                                    dst[ix as usize] += *v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Images per parallel task: enough that one gemm has about
    /// [`COLUMNS`] columns (the deep layers of a CIFAR ResNet have 16 output
    /// pixels per image: one gemm per image would be 16 columns wide), at
    /// most an equal share of the batch per thread.
    fn images_per_task(&self) -> usize {
        let share = self.n.div_ceil(rayon::current_num_threads().max(1));
        (COLUMNS / self.s()).clamp(1, share.max(1))
    }

    /// `dst (c_out × b·s) = grad` of images `first..first + b`, gathered.
    fn gather_grad<T: WithDType>(&self, grad: &[T], first: usize, b: usize, dst: &mut [T]) {
        let s = self.s();
        for j in 0..b {
            let img = &grad[(first + j) * self.c_out * s..(first + j + 1) * self.c_out * s];
            for o in 0..self.c_out {
                dst[o * b * s + j * s..][..s].copy_from_slice(&img[o * s..(o + 1) * s]);
            }
        }
    }
}

/// Target gemm width in columns (output pixels) per task; the im2col buffer
/// is `c_in·kh·kw × COLUMNS` elements (9.4 MB in f32 for 64 channels, 3×3).
const COLUMNS: usize = 4096;

/// Row-major matrix operand for [`gemm`]: pointer, row stride, column stride.
type Mat<T> = (*const T, isize, isize);

/// `dst (m × n, row-major) = [dst +] a (m × k) · b (k × n)`.
///
/// # Safety
///
/// The pointers and strides must describe valid matrices of those sizes; `dst`
/// must not alias `a` or `b`.
unsafe fn gemm<T: WithDType>(m: usize, n: usize, k: usize, dst: &mut [T], accumulate: bool, a: Mat<T>, b: Mat<T>) {
    debug_assert!(dst.len() >= m * n);
    let par = gemm::Parallelism::None;
    // SAFETY: forwarded from the caller; dst is m × n row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.0,
            a.2,
            a.1,
            b.0,
            b.2,
            b.1,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// A vector of `len` zeros, reused: `buf` grows to the largest task's size.
fn scratch<T: WithDType>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    &mut buf[..len]
}

fn forward_kernel<T: WithDType>(g: &Geometry, x: &[T], k: &[T]) -> Vec<T> {
    let (kk, s, per) = (g.k(), g.s(), g.images_per_task());
    let img = g.c_in * g.h * g.w;
    let mut y = vec![T::zero(); g.n * g.c_out * s];
    y.par_chunks_mut(per * g.c_out * s).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, tmp), (task, out)| {
            let (first, b) = (task * per, out.len() / (g.c_out * s));
            let ld = b * s;
            let cols = scratch(cols, kk * ld);
            for j in 0..b {
                g.im2col(&x[(first + j) * img..(first + j + 1) * img], cols, ld, j * s);
            }
            let tmp = scratch(tmp, g.c_out * ld);
            // SAFETY: k is c_out × kk, cols kk × ld, tmp c_out × ld, all row-major.
            unsafe { gemm(g.c_out, ld, kk, tmp, false, (k.as_ptr(), kk as isize, 1), (cols.as_ptr(), ld as isize, 1)) };
            for j in 0..b {
                for o in 0..g.c_out {
                    out[(j * g.c_out + o) * s..][..s].copy_from_slice(&tmp[o * ld + j * s..][..s]);
                }
            }
        },
    );
    y
}

fn input_grad_kernel<T: WithDType>(g: &Geometry, grad: &[T], k: &[T]) -> Vec<T> {
    let (kk, s, per) = (g.k(), g.s(), g.images_per_task());
    let img = g.c_in * g.h * g.w;
    let mut dx = vec![T::zero(); g.n * img];
    dx.par_chunks_mut(per * img).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(gt, cols), (task, out)| {
            let (first, b) = (task * per, out.len() / img);
            let ld = b * s;
            let gt = scratch(gt, g.c_out * ld);
            g.gather_grad(grad, first, b, gt);
            let cols = scratch(cols, kk * ld);
            // SAFETY: kᵀ is kk × c_out, gt c_out × ld, cols kk × ld.
            unsafe { gemm(kk, ld, g.c_out, cols, false, (k.as_ptr(), 1, kk as isize), (gt.as_ptr(), ld as isize, 1)) };
            for j in 0..b {
                g.col2im_add(cols, ld, j * s, &mut out[j * img..(j + 1) * img]);
            }
        },
    );
    dx
}

fn kernel_grad_kernel<T: WithDType>(g: &Geometry, x: &[T], grad: &[T]) -> Vec<T> {
    let (kk, s, per) = (g.k(), g.s(), g.images_per_task());
    let img = g.c_in * g.h * g.w;
    let threads = rayon::current_num_threads().max(1);
    let tasks = g.n.div_ceil(per);
    // One accumulator per thread's share of tasks (not per task): the kernel
    // gradient of a 512-channel 3×3 layer is 9.4 MB.
    let shares = threads.min(tasks).max(1);
    let partial = (0..shares)
        .into_par_iter()
        .map(|share| {
            let mut dk = vec![T::zero(); g.c_out * kk];
            let (mut gt, mut cols) = (Vec::new(), Vec::new());
            for (i, task) in (share..tasks).step_by(shares).enumerate() {
                let (first, b) = (task * per, per.min(g.n - task * per));
                let ld = b * s;
                let gt = scratch(&mut gt, g.c_out * ld);
                g.gather_grad(grad, first, b, gt);
                let cols = scratch(&mut cols, kk * ld);
                for j in 0..b {
                    g.im2col(&x[(first + j) * img..(first + j + 1) * img], cols, ld, j * s);
                }
                // SAFETY: gt is c_out × ld, colsᵀ ld × kk, dk c_out × kk.
                unsafe {
                    gemm(
                        g.c_out,
                        kk,
                        ld,
                        &mut dk,
                        i > 0,
                        (gt.as_ptr(), ld as isize, 1),
                        (cols.as_ptr(), 1, ld as isize),
                    )
                };
            }
            dk
        })
        .collect::<Vec<_>>();
    let mut partial = partial.into_iter();
    let mut dk = partial.next().unwrap_or_else(|| vec![T::zero(); g.c_out * kk]);
    for p in partial {
        dk.iter_mut().zip(&p).for_each(|(a, b)| *a += *b);
    }
    dk
}

fn check(op: &str, l: &Layout, want: &Shape, what: &str) -> candle_core::Result<()> {
    if l.shape() != want {
        candle_core::bail!("{op}: {what} has shape {:?}, expected {:?}", l.dims(), want.dims());
    }
    Ok(())
}

/// Which of the three linear maps (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    Forward,
    InputGrad,
    KernelGrad,
}

#[derive(Debug, Clone, Copy)]
struct ConvOp {
    map: Map,
    geometry: Geometry,
}

impl ConvOp {
    /// `map(a, b)`, recorded on the graph when the pass keeps it (or outside
    /// backward passes) and either argument is tracked.
    fn apply(self, map: Map, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let op = ConvOp { map, geometry: self.geometry };
        if candle_core::backprop::do_not_detach() {
            a.contiguous()?.apply_op2(&b.contiguous()?, op)
        } else {
            a.detach().contiguous()?.apply_op2_no_bwd(&b.detach().contiguous()?, &op)
        }
    }

    fn run<T: WithDType>(&self, a: &[T], b: &[T]) -> Vec<T> {
        let g = &self.geometry;
        match self.map {
            Map::Forward => forward_kernel(g, a, b),
            Map::InputGrad => input_grad_kernel(g, a, b),
            Map::KernelGrad => kernel_grad_kernel(g, a, b),
        }
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        match self.map {
            Map::Forward => "seht-conv2d",
            Map::InputGrad => "seht-conv2d-input-grad",
            Map::KernelGrad => "seht-conv2d-kernel-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (shape1, shape2, out) = match self.map {
            Map::Forward => (g.input_shape(), g.kernel_shape(), g.output_shape()),
            Map::InputGrad => (g.output_shape(), g.kernel_shape(), g.input_shape()),
            Map::KernelGrad => (g.input_shape(), g.output_shape(), g.kernel_shape()),
        };
        let name = self.name();
        check(name, l1, &shape1, "the first argument")?;
        check(name, l2, &shape2, "the second argument")?;
        let storage =
            match same_dtype(name, &[s1.dtype(), s2.dtype()])? {
                DType::F32 => CpuStorage::F32(self.run(
                    slice::<f32>(s1, l1, name, "the first argument")?,
                    slice(s2, l2, name, "the second argument")?,
                )),
                _ => CpuStorage::F64(self.run(
                    slice::<f64>(s1, l1, name, "the first argument")?,
                    slice(s2, l2, name, "the second argument")?,
                )),
            };
        Ok((storage, out))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        c: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // (∂ first argument, ∂ second argument), the table in the module docs.
        let (first, second) = match self.map {
            Map::Forward => ((Map::InputGrad, c, b), (Map::KernelGrad, a, c)),
            Map::InputGrad => ((Map::Forward, c, b), (Map::KernelGrad, c, a)),
            Map::KernelGrad => ((Map::InputGrad, b, c), (Map::Forward, a, c)),
        };
        // Only the gradients the running pass keeps (the vendored candle's `grad_wanted`: in
        // SEHT-D's restricted pass, not the kernels of layers the draw left out).
        let wanted = candle_core::backprop::grad_wanted;
        let da = if wanted(a) { Some(self.apply(first.0, first.1, first.2)?) } else { None };
        let db = if wanted(b) { Some(self.apply(second.0, second.1, second.2)?) } else { None };
        Ok((da, db))
    }
}

/// 2-D convolution `(n, c_in, h, w)` ⋆ `(c_out, c_in, kh, kw)` →
/// `(n, c_out, oh, ow)` with zero padding `padding` on every side and stride
/// `stride` (`oh = (h + 2·padding − kh)/stride + 1`), no dilation, no groups,
/// no bias: PyTorch's `conv2d` (a cross-correlation).
///
/// Contiguous or not, f32 and f64 CPU inputs use this module's kernels and
/// backward rules (module docs), differentiable to every order. Other dtypes
/// and devices, and empty inputs or kernels, use candle's `conv2d`, with
/// candle's limits: its backward returns an input gradient of the wrong
/// shape when `h + 2·padding − kh` and `w + 2·padding − kw` leave different
/// remainders modulo the stride (an error, not a wrong value), and its CPU
/// convolution has no bf16.
///
/// # Errors
///
/// [`Error::InvalidOp`] naming `conv2d` for inputs not of rank 4, channel
/// counts that differ, a zero stride, an empty kernel window, a padding so
/// large that the padded size overflows, or a kernel larger than the padded
/// input; candle's errors otherwise.
pub fn conv2d(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let geometry = Geometry::new(x.dims(), kernel.dims(), padding, stride)?;
    // Empty tensors (a zero batch, channel count or size) go to candle,
    // which handles them; the kernels assume non-empty images.
    let empty = [geometry.n, geometry.c_in, geometry.c_out, geometry.h, geometry.w].contains(&0);
    let fast =
        !empty && x.device().is_cpu() && x.dtype() == kernel.dtype() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fast {
        return Ok(x.conv2d(kernel, padding, stride, 1, 1)?);
    }
    let op = ConvOp { map: Map::Forward, geometry };
    Ok(x.contiguous()?.apply_op2(&kernel.contiguous()?, op)?)
}

/// A convolution layer without bias over [`conv2d`]: the models' convolution
/// (the kernel is the `weight` variable of a `candle_nn::VarBuilder`, shape
/// `(c_out, c_in, k, k)`, as `candle_nn::conv2d_no_bias` creates it).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    /// A layer applying `weight` with `padding` and `stride`.
    pub fn new(weight: Tensor, padding: usize, stride: usize) -> Self {
        Self { weight, padding, stride }
    }

    /// The kernel, `(c_out, c_in, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        conv2d(xs, &self.weight, self.padding, self.stride).map_err(candle_core::Error::wrap)
    }
}
