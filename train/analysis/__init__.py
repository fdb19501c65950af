"""`erudite-edge analyze`: the paper's evidence for a trained run (Table 1, Figures 2-3, gate usage).

features        one pass over the test split: fused feature before G, per-head features, gate weights,
                predictions; cached as npz
cluster_metrics Silhouette / Calinski-Harabasz / Davies-Bouldin per data set (scikit-learn)
mmd             unbiased RBF MMD^2 between data sets with a permutation p-value (numpy)
transfer        per-class accuracy change against a reference run, Positive / Negative counts
plots           Figure 2, Figure 3 (t-SNE), the gate-usage heat map (matplotlib)
report          runs the above and writes analysis.json, analysis.md and the PNGs
"""
