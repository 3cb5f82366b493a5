//! The self-check fires when higher-order autodiff is off. Each case runs in a
//! child process of this test binary, with the environment variable removed,
//! because candle reads it once per thread and this workspace sets it for
//! every test process (.cargo/config.toml).

use std::process::Command;

const CHILD: &str = "SEHT_SELF_CHECK_CHILD";

fn run_child(test: &str) -> std::process::Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env_remove(seht_candle::ENV_VAR)
        .env(CHILD, "1")
        .output()
        .expect("run child test")
}

fn assert_child_passed(test: &str) {
    let out = run_child(test);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child {test} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child {test} did not run:\n{stdout}");
    assert!(stderr.contains("child ran"), "child {test} returned early:\n{stderr}");
}

#[test]
fn self_check_fires_without_the_variable() {
    assert_child_passed("child_without_variable");
}

#[test]
fn setting_the_variable_after_a_backward_pass_is_too_late_for_that_thread() {
    assert_child_passed("child_set_too_late");
}

#[test]
fn with_the_variable_the_check_passes() {
    assert!(seht_candle::env_enabled(), "cargo sets {} for this workspace", seht_candle::ENV_VAR);
    seht_candle::check_higher_order().expect("higher-order autodiff is on");
}

/// Child: no variable → the check fails with a message that says what to do,
/// and building an operator fails the same way instead of returning wrong numbers.
#[test]
fn child_without_variable() {
    if std::env::var(CHILD).is_err() {
        return; // only meaningful in the child process started above
    }
    eprintln!("child ran");
    let err = seht_candle::check_higher_order().expect_err("must fire");
    assert!(matches!(err, seht_candle::Error::HigherOrderDisabled { .. }));
    assert!(err.to_string().contains("enable_higher_order"), "{err}");
    let w = candle_core::Var::new(&[1.0f64, 2.0], &candle_core::Device::Cpu).expect("var");
    let loss = w.as_tensor().powf(3.0).expect("cube").sum_all().expect("sum");
    let p = vec![seht_candle::Param { name: "w".into(), var: w, role: seht_candle::Role::Weight }];
    assert!(matches!(
        seht_candle::HessianOperator::new(&loss, &p),
        Err(seht_candle::Error::HigherOrderDisabled { .. })
    ));
}

/// Child: a backward pass fixes the setting for the thread; enabling afterwards
/// fails on that thread and works on a fresh thread.
#[test]
fn child_set_too_late() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    eprintln!("child ran");
    let w = candle_core::Var::new(2.0f64, &candle_core::Device::Cpu).expect("var");
    let _ = w.as_tensor().sqr().expect("sq").backward().expect("first backward fixes the thread's setting");
    // SAFETY: the child runs this single test with --test-threads=1, and
    // candle's CPU thread pools have not been touched by a scalar op.
    let err = unsafe { seht_candle::enable_higher_order() }.expect_err("too late for this thread");
    assert!(matches!(err, seht_candle::Error::HigherOrderDisabled { .. }));
    std::thread::spawn(|| seht_candle::check_higher_order().expect("a new thread reads the variable"))
        .join()
        .expect("thread");
}

#[test]
fn the_penalty_turns_higher_order_on_only_where_that_is_sound() {
    assert_child_passed("child_penalty_without_variable");
}

/// Child: no variable. `Penalty::gradients` sets it when this process has a
/// single thread (then the exact gradient is right), and otherwise refuses
/// with the advice instead of setting it under other threads.
#[test]
fn child_penalty_without_variable() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    eprintln!("child ran");
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    let w = candle_core::Var::new(&[1.0f64, 2.0], &candle_core::Device::Cpu).expect("var");
    let mut params = seht_candle::ParamSet::new();
    params.push("w", w.clone(), seht_candle::Role::Weight);
    let penalty =
        seht_candle::Penalty::new(seht_estimator::SehtH::seht_h(1).expect("cfg"), 1.0, seht_candle::Gradient::Exact)
            .expect("penalty");
    // L = Σ w³: ∇L = 3w², H = diag(6w), σᵀHσ = Σ 6wᵢ for Rademacher σ, ∇(σᵀHσ) = 6.
    let r = penalty.gradients(&params, || w.as_tensor().powf(3.0)?.sum_all(), &mut seht_estimator::probe_rng(0));
    eprintln!("{threads} thread(s)");
    if threads == 1 {
        let r = r.expect("single-threaded: the variable is set and the check passes");
        assert!(seht_candle::env_enabled());
        let g = r.grads.get(w.as_tensor()).expect("grad").to_vec1::<f64>().expect("host");
        assert_eq!(g, vec![3.0 + 6.0, 12.0 + 6.0]);
        assert_eq!(r.estimate.mean, 18.0);
    } else {
        let err = r.expect_err("several threads: nothing is set, the check fires");
        assert!(matches!(err, seht_candle::Error::HigherOrderDisabled { .. }), "{err}");
        assert!(!seht_candle::env_enabled());
    }
}
