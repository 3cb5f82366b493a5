//! The run records written to `log.jsonl` and `metrics.json`: defined in the
//! candle-free crate `seht-records`, so that `cargo xtask` reads them typed
//! without compiling candle.

pub use seht_records::{
    DIVERGED_EXIT_CODE, Divergence, EpochRecord, EvalMetrics, LayerRecord, LogLine, Measured, Metrics, RunStatus,
    TraceReport,
};
