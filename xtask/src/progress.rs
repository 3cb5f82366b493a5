//! Progress of a reproduction, like a training tool's: one overall bar across
//! the runs (runs done, elapsed, time left from the runs' measured rates) and,
//! beneath it, each running run's epoch/step bar, fed by the
//! [`ProgressEvent`] lines of `seht train --progress lines`. Without a
//! terminal (CI, logs) the bars are hidden and one line per finished run is
//! printed instead.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use seht_records::ProgressEvent;

use seht_protocol::preset::Cell;

/// What is known of one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    /// Running: fraction of its epochs done, from its progress lines.
    Running {
        started: Instant,
        fraction: f64,
    },
    /// Finished (or skipped as already done) in this many seconds.
    Done {
        seconds: f64,
        trained: bool,
    },
    Failed,
}

/// Expected seconds of `cells[i]` from what has been measured so far: the
/// mean time of finished runs of the same method, else the extrapolated
/// time of a running run of that method, else the mean of all finished runs
/// scaled by nothing (`None` before anything has been measured).
fn estimate(cells: &[Cell], states: &[State], i: usize) -> Option<f64> {
    let same = |j: usize| cells[j].table == cells[i].table && cells[j].method == cells[i].method;
    let mean = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let trained = |j: usize| match states[j] {
        State::Done { seconds, trained: true } => Some(seconds),
        _ => None,
    };
    mean((0..cells.len()).filter(|&j| same(j)).filter_map(trained).collect())
        .or_else(|| {
            mean(
                (0..cells.len())
                    .filter(|&j| same(j))
                    .filter_map(|j| match states[j] {
                        State::Running { started, fraction } if fraction >= 0.05 => {
                            Some(started.elapsed().as_secs_f64() / fraction)
                        }
                        _ => None,
                    })
                    .collect(),
            )
        })
        .or_else(|| mean((0..cells.len()).filter_map(trained).collect()))
}

/// Seconds left for all cells, run `jobs` at a time; `None` while no rate
/// has been measured.
fn time_left(cells: &[Cell], states: &[State], jobs: usize) -> Option<f64> {
    let mut left = 0.0;
    for (i, s) in states.iter().enumerate() {
        left += match *s {
            State::Pending => estimate(cells, states, i)?,
            State::Running { started, fraction } => {
                let total = estimate(cells, states, i)?;
                (total * (1.0 - fraction)).max(total - started.elapsed().as_secs_f64()).max(0.0)
            }
            State::Done { .. } | State::Failed => 0.0,
        };
    }
    Some(left / jobs.max(1) as f64)
}

fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, (s % 3600) / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// The bars of one `reproduce` invocation.
pub struct Board {
    multi: MultiProgress,
    overall: ProgressBar,
    cells: Vec<Cell>,
    states: Mutex<Vec<State>>,
    /// Step bars of the running cells, by cell index.
    steps: Mutex<BTreeMap<usize, ProgressBar>>,
    jobs: usize,
}

impl Board {
    /// Bars for `cells`, run `jobs` at a time.
    pub fn new(cells: &[Cell], jobs: usize) -> Board {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(cells.len() as u64));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} runs, {elapsed_precise} elapsed, {msg}",
        ) {
            overall.set_style(style.progress_chars("=> "));
        }
        overall.set_prefix("reproduce");
        overall.set_message("time left: measuring");
        overall.enable_steady_tick(Duration::from_millis(500));
        Board {
            multi,
            overall,
            cells: cells.to_vec(),
            states: Mutex::new(vec![State::Pending; cells.len()]),
            steps: Mutex::new(BTreeMap::new()),
            jobs,
        }
    }

    /// True when the bars are drawn (standard error is a terminal).
    pub fn is_drawn(&self) -> bool {
        !self.multi.is_hidden()
    }

    fn refresh(&self, states: &[State]) {
        let done = states.iter().filter(|s| matches!(s, State::Done { .. } | State::Failed)).count();
        self.overall.set_position(done as u64);
        let left = time_left(&self.cells, states, self.jobs);
        self.overall.set_message(match left {
            Some(s) => format!("about {} left", format_secs(s)),
            None => "time left: measuring the first run".into(),
        });
    }

    /// Prints a line above the bars (or plainly without a terminal).
    pub fn println(&self, line: &str) {
        if self.is_drawn() {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Cell `i` starts.
    pub fn start(&self, i: usize) {
        let bar = self.multi.add(ProgressBar::new(0));
        if let Ok(style) =
            ProgressStyle::with_template("  {prefix} [{bar:25}] {pos}/{len} steps, {per_sec}, epoch ETA {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{}: starting", self.cells[i].name));
        if let Ok(mut s) = self.steps.lock() {
            s.insert(i, bar);
        }
        if let Ok(mut st) = self.states.lock() {
            st[i] = State::Running { started: Instant::now(), fraction: 0.0 };
            self.refresh(&st);
        }
    }

    /// A progress line of cell `i`'s run.
    pub fn event(&self, i: usize, e: ProgressEvent) {
        if let Some(bar) = self.steps.lock().ok().and_then(|s| s.get(&i).cloned()) {
            let prefix = format!("{} epoch {}/{}", self.cells[i].name, e.epoch, e.epochs);
            if e.step == 0 || bar.length() != Some(e.steps) {
                bar.reset();
                bar.set_length(e.steps);
            }
            bar.set_prefix(prefix);
            bar.set_position(e.step);
        }
        let fraction =
            (e.epoch.saturating_sub(1) as f64 + e.step as f64 / e.steps.max(1) as f64) / e.epochs.max(1) as f64;
        if let Ok(mut st) = self.states.lock()
            && let State::Running { started, .. } = st[i]
        {
            st[i] = State::Running { started, fraction };
            self.refresh(&st);
        }
    }

    /// Cell `i` ended: `Ok((seconds, trained))` or failed.
    pub fn finish(&self, i: usize, result: Result<(f64, bool), ()>) {
        if let Some(bar) = self.steps.lock().ok().and_then(|mut s| s.remove(&i)) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        if let Ok(mut st) = self.states.lock() {
            st[i] = match result {
                Ok((seconds, trained)) => State::Done { seconds, trained },
                Err(()) => State::Failed,
            };
            self.refresh(&st);
        }
    }

    /// Removes the bars.
    pub fn close(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(method: &str, seed: u64) -> Cell {
        Cell {
            table: "demo".into(),
            method: method.into(),
            seed,
            name: format!("demo-{method}-s{seed}"),
            config: Default::default(),
            grid_lambda: None,
            zero_for: Vec::new(),
            largest_stable: false,
            selected: false,
        }
    }

    #[test]
    fn time_left_uses_each_methods_measured_time() {
        let cells = [cell("baseline", 0), cell("seht-h", 0), cell("baseline", 1), cell("seht-h", 1)];
        let mut states = vec![State::Pending; 4];
        assert_eq!(time_left(&cells, &states, 1), None, "nothing measured yet");
        states[0] = State::Done { seconds: 10.0, trained: true };
        // seht-h unmeasured: the mean of all finished runs stands in for it.
        assert_eq!(time_left(&cells, &states, 1), Some(30.0));
        states[1] = State::Done { seconds: 70.0, trained: true };
        assert_eq!(time_left(&cells, &states, 1), Some(80.0));
        assert_eq!(time_left(&cells, &states, 2), Some(40.0));
        // A run skipped as already done says nothing about the rate.
        let mut skipped = vec![State::Pending; 4];
        skipped[0] = State::Done { seconds: 0.1, trained: false };
        assert_eq!(time_left(&cells, &skipped, 1), None);
    }

    #[test]
    fn a_running_run_extrapolates_its_rate() {
        let cells = [cell("seht-h", 0), cell("seht-h", 1)];
        let started = Instant::now() - Duration::from_secs(20);
        let states = vec![State::Running { started, fraction: 0.5 }, State::Pending];
        let left = time_left(&cells, &states, 1).expect("rate from the running run");
        // 20 s for half a run: 40 s a run; 20 s left of this one, 40 s of the next.
        assert!((left - 60.0).abs() < 1.0, "{left}");
    }
}
