//! The paper's reported numbers (Tables 1–4), to print beside ours.

/// One row of a paper table: method key (the config file stem, or a quoted
/// reference), label, and the reported values (mean, ± as printed).
pub struct PaperRow {
    /// The method's config file stem (or a quoted reference).
    pub key: &'static str,
    /// The row's label in the paper.
    pub label: &'static str,
    /// The reported values, one `(mean, ±)` per column.
    pub values: &'static [(f64, f64)],
    /// Quoted from another paper, not run by the authors nor by us.
    pub quoted: bool,
}

/// One of the paper's tables.
pub struct PaperTable {
    /// The config folder it is reproduced from (`table1` …).
    pub id: &'static str,
    /// Its title, with the model, data and metric.
    pub title: &'static str,
    /// Column names of `values`.
    pub columns: &'static [&'static str],
    /// Its rows, in the paper's order.
    pub rows: &'static [PaperRow],
}

const fn run(key: &'static str, label: &'static str, values: &'static [(f64, f64)]) -> PaperRow {
    PaperRow { key, label, values, quoted: false }
}

const fn quoted(key: &'static str, label: &'static str, values: &'static [(f64, f64)]) -> PaperRow {
    PaperRow { key, label, values, quoted: true }
}

/// Tables 1–4 of the paper, as printed.
pub const TABLES: [PaperTable; 4] = [
    PaperTable {
        id: "table1",
        title: "Table 1: ResNet-18 on CIFAR-10 (test top-1 accuracy, %)",
        columns: &["test top-1 (%)"],
        rows: &[
            run("baseline", "Baseline with weight decay", &[(94.00, 0.24)]),
            run("jacobian", "Jacobian (Hoffman et al. 2019)", &[(89.23, 0.52)]),
            run("dropblock", "DropBlock (Ghiasi et al. 2018)", &[(89.23, 0.22)]),
            run("confidence-penalty", "Confidence Penalty (Pereyra et al. 2017)", &[(94.40, 0.02)]),
            run("label-smoothing", "Label Smoothing (Szegedy et al. 2016)", &[(94.40, 0.07)]),
            run("cutout", "Cutout (DeVries & Taylor 2017)", &[(94.02, 0.22)]),
            run("mixup", "Mixup (Zhang et al. 2018)", &[(95.39, 0.13)]),
            quoted("vanilla", "Vanilla (Bungert et al. 2022)", &[(93.6, f64::NAN)]),
            quoted("middle-network", "Middle Network Method (Sankar et al. 2021)", &[(88.13, 0.12)]),
            quoted("mm-frl", "MM + FRL (Zheng et al. 2020)", &[(95.33, 0.12)]),
            quoted("lookahead", "Lookahead (Zhang et al. 2019)", &[(95.23, 0.19)]),
            run("seht-d-k1-p0.01", "SEHT-D (maxIter=1, p=0.01)", &[(95.37, 0.09)]),
            run("seht-d-k10-p0.01", "SEHT-D (maxIter=10, p=0.01)", &[(95.42, 0.11)]),
            run("seht-d-k10-p0.05", "SEHT-D (maxIter=10, p=0.05)", &[(95.49, 0.06)]),
            run("seht-h-k5", "SEHT-H (maxIter=5)", &[(95.59, 0.06)]),
        ],
    },
    PaperTable {
        id: "table2",
        title: "Table 2: WRN-28-10 on CIFAR-100 (test accuracy, %)",
        columns: &["test top-1 (%)", "test top-5 (%)"],
        rows: &[
            run("baseline", "Baseline", &[(74.61, 0.52), (92.48, 0.40)]),
            run("confidence-penalty", "Confidence Penalty", &[(77.15, 1.54), (93.97, 0.66)]),
            run("label-smoothing", "Label Smoothing", &[(79.38, 0.26), (94.39, 0.33)]),
            run("cutout", "Cutout", &[(76.70, 0.79), (93.72, 0.40)]),
            run("mixup", "Mixup", &[(78.38, 0.31), (94.37, 0.31)]),
            run("seht-d-k1-p0.01", "SEHT-D (maxIter=1, p=0.01)", &[(79.53, 0.72), (95.00, 0.24)]),
            run("seht-d-k1-p0.05", "SEHT-D (maxIter=1, p=0.05)", &[(80.31, 0.33), (94.96, 0.05)]),
        ],
    },
    PaperTable {
        id: "table3",
        title: "Table 3: 2-layer LSTM on WikiText-2 (perplexity, lower is better)",
        columns: &["valid ppl", "test ppl"],
        rows: &[
            run("baseline", "Baseline", &[(101.82, 0.16), (95.65, 0.10)]),
            run("confidence-penalty", "Confidence Penalty", &[(101.39, 0.16), (95.57, 0.06)]),
            run("label-smoothing", "Label Smoothing", &[(99.58, 0.06), (95.03, 0.30)]),
            run("seht-d-k1-p0.05", "SEHT-D (maxIter=1, p=0.05)", &[(100.69, 0.27), (94.86, 0.26)]),
        ],
    },
    PaperTable {
        id: "table4",
        title: "Table 4: 2-layer GRU on WikiText-2 (perplexity, lower is better)",
        columns: &["valid ppl", "test ppl"],
        rows: &[
            run("baseline", "Baseline", &[(119.04, 2.38), (111.64, 1.87)]),
            run("confidence-penalty", "Confidence Penalty", &[(116.40, 0.08), (109.27, 0.03)]),
            run("label-smoothing", "Label Smoothing", &[(117.47, 0.24), (110.46, 0.45)]),
            run("seht-d-k1-p0.01", "SEHT-D (maxIter=1, p=0.01)", &[(116.21, 0.31), (109.03, 0.15)]),
        ],
    },
];
