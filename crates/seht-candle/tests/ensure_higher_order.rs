//! `Penalty::gradients` turns higher-order autodiff on by itself in a
//! single-threaded process. A test binary without the test harness (its
//! `main` is the only thread), run as a child with the variable removed,
//! because this workspace sets it for every test process.

use candle_core::{Device, Var};
use seht_candle::{Gradient, ParamSet, Penalty, Role};
use seht_estimator::{SehtH, probe_rng};

const CHILD: &str = "SEHT_ENSURE_CHILD";

fn main() {
    if std::env::var(CHILD).is_err() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .env_remove(seht_candle::ENV_VAR)
            .env(CHILD, "1")
            .output()
            .expect("run child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.contains("child passed"), "child failed:\n{stderr}");
        println!("ensure_higher_order: the penalty set the variable in a single-threaded process: ok");
        return;
    }
    assert!(!seht_candle::env_enabled(), "the child must start without the variable");
    let w = Var::new(&[1.0f64, 2.0], &Device::Cpu).expect("var");
    let mut params = ParamSet::new();
    params.push("w", w.clone(), Role::Weight);
    let penalty = Penalty::new(SehtH::seht_h(1).expect("cfg"), 1.0, Gradient::Exact).expect("penalty");
    // L = Σ w³: ∇L = 3w², H = diag(6w), σᵀHσ = Σ 6wᵢ for Rademacher σ, ∇(σᵀHσ) = 6.
    let r = penalty
        .gradients(&params, || w.as_tensor().powf(3.0)?.sum_all(), &mut probe_rng(0))
        .expect("single-threaded: the variable is set and the check passes");
    assert!(seht_candle::env_enabled(), "the variable was set");
    let g = r.grads.get(w.as_tensor()).expect("grad").to_vec1::<f64>().expect("host");
    assert_eq!(g, vec![3.0 + 6.0, 12.0 + 6.0], "exact gradient of L + σᵀHσ");
    assert_eq!(r.estimate.mean, 18.0);
    eprintln!("child passed");
}
