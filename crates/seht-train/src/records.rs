//! The run records written to `log.jsonl` and `metrics.json`: defined in the
//! candle-free crate `seht-records`, so that `cargo xtask` reads them typed
//! without compiling candle.

pub use seht_records::{EpochRecord, EvalMetrics, Metrics, TraceReport};
