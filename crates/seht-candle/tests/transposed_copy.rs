//! The vendored candle's tiled copy of transposed matrices
//! (vendor/candle-core/PATCH.md, issue 19) against the values read one by
//! one: 2-D and batched transposes, sizes that are not multiples of the
//! tile, views with an offset, and layouts the fast path must leave alone.

use candle_core::{Device, IndexOp, Tensor};

fn matrix(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0f32, n as f32, &Device::Cpu).and_then(|t| t.reshape(shape)).expect("tensor")
}

fn check(view: &Tensor) {
    let got = view.contiguous().expect("contiguous");
    assert!(got.is_contiguous());
    let dims = view.dims().to_vec();
    let flat = got.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
    let (m, n) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let batches: usize = dims[..dims.len() - 2].iter().product();
    for b in 0..batches {
        let mat = if dims.len() == 2 {
            view.clone()
        } else {
            view.reshape((batches, m, n)).and_then(|t| t.i(b)).expect("batch")
        };
        for i in 0..m {
            for j in 0..n {
                let want = mat.i((i, j)).and_then(|t| t.to_scalar::<f32>()).expect("element");
                assert_eq!(flat[(b * m + i) * n + j], want, "{dims:?} batch {b} ({i}, {j})");
            }
        }
    }
}

#[test]
fn transposed_views_copy_exactly() {
    check(&matrix(&[37, 70]).t().expect("t"));
    check(&matrix(&[2, 33, 5]).transpose(1, 2).expect("t"));
    check(&matrix(&[3, 1, 40, 9]).transpose(2, 3).expect("t"));
    // An offset view: columns 3.. of a matrix, transposed (not the fast path's
    // layout: its rows are not contiguous).
    check(&matrix(&[20, 50]).narrow(1, 3, 40).and_then(|t| t.t()).expect("t"));
    // A batch slice with an offset, transposed (the fast path's layout).
    check(&matrix(&[4, 30, 20]).narrow(0, 1, 2).and_then(|t| t.transpose(1, 2)).expect("t"));
    // A permutation that is not a transpose of the last two axes.
    check(&matrix(&[6, 7, 8]).permute((2, 0, 1)).expect("permute"));
}
