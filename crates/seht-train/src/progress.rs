//! How a training run shows its progress: hidden, as indicatif bars for a
//! person, or as [`seht_records::ProgressEvent`] lines for a supervising
//! process (`cargo xtask reproduce` draws its own bars from them).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use seht_records::ProgressEvent;

/// How [`crate::train`] reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing.
    #[default]
    Hidden,
    /// A step bar per epoch (rate, ETA) and one summary line per epoch, on
    /// standard error when it is a terminal.
    Bars,
    /// One [`ProgressEvent`] line on standard error when an epoch starts,
    /// about four times a second while it runs and when it ends, plus the
    /// summary line per epoch.
    Lines,
}

/// How often a [`Progress::Lines`] epoch reports its step.
const LINE_INTERVAL: Duration = Duration::from_millis(250);

impl Progress {
    /// True when the per-epoch summary lines are printed.
    pub(crate) fn shows_epochs(self) -> bool {
        self != Progress::Hidden
    }

    /// The bar of one epoch of `steps` training steps; the training loop
    /// advances it by one per step and finishes it at the end of the epoch.
    pub(crate) fn epoch_bar(self, steps: usize, name: &str, epoch: usize, epochs: usize) -> ProgressBar {
        match self {
            Progress::Hidden => ProgressBar::hidden(),
            Progress::Bars => {
                let bar = ProgressBar::new(steps as u64);
                if let Ok(style) =
                    ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} {per_sec} ETA {eta}")
                {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(format!("{name} epoch {epoch}/{epochs}"));
                bar
            }
            Progress::Lines => {
                let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::hidden());
                let weak = bar.downgrade();
                let event = move |step| ProgressEvent { epoch, epochs, step, steps: steps as u64 };
                eprintln!("{}", event(0).to_line());
                // The reporter ends when the epoch's bar is finished or dropped
                // (an error ended the run).
                std::thread::spawn(move || {
                    let mut last = 0;
                    loop {
                        std::thread::sleep(LINE_INTERVAL);
                        let Some(bar) = weak.upgrade() else { return };
                        let (pos, finished) = (bar.position(), bar.is_finished());
                        if pos != last || finished {
                            eprintln!("{}", event(pos).to_line());
                            last = pos;
                        }
                        if finished {
                            return;
                        }
                    }
                });
                bar
            }
        }
    }
}

/// A bar of `len` steps labelled `prefix`, or a hidden one without a prefix
/// (`seht analyze`'s products).
pub(crate) fn progress_bar(prefix: Option<String>, len: usize) -> indicatif::ProgressBar {
    let Some(prefix) = prefix else { return indicatif::ProgressBar::hidden() };
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} {per_sec} ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}
