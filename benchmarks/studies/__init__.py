"""One-off studies: scripts run by hand (`python -m benchmarks.studies.NAME`) whose figures are quoted in
a results file. They are not part of `erudite-edge bench`: they may import the bench's modules
(benchmarks.latency, benchmarks.stats, benchmarks.bench, ...), never the reverse, and nothing in
erudite_edge/, train/ or export/ imports them.

    study                      what it measures                                                  results it backs
    accuracy_seeds.py          demo top-1 of baseline, baseline+, ours, single over seeds        results/accuracy_demo/; README.md
    api_overhead.py            Classifier.predict against the same steps called directly         results/api.{md,json}
    int8_entropy_diagnosis.py  why entropy calibration loses agreement, tensor by tensor         results/int8.md (int8_entropy_diagnosis_base.log)
    int8_layouts.py            FP32 against both INT8 layouts on ONNX Runtime CPU                benchmarks/README.md ("The two INT8 layouts side by side")
    int8_paper_setting.py      INT8 agreement in the paper's setting, both layouts               results/int8.md (int8_paper_setting*.json)
    int8_per_image.py          (FP32 and INT8 per test image, for the three INT8 studies)        -
    int8_quality.py            INT8 quality on a trained bundle, every quantizing way            results/int8.md (int8.json, int8_demo.json, int8_modelopt.json)
    live_frames.py             frame age on a live source, queued against newest frame           results/live_frames.{md,json}; README.md
    meta_bn.py                 theta's meta gradient and top-1 under --meta-bn train|eval|frozen results/meta_bn/; train/recipes/paper.yaml
    meta_features_accuracy.py  stage II on fresh against reused backbone features                results/meta_features_accuracy.{md,json}, results/paper_fidelity.md; README.md
    method_factors.py          ours - baseline by length, theta lr, gate, precise BN             results/method_factors/; docs/benchmarks.md
    multistream.py             N cameras in one process against N processes                      results/multistream_quiet/; docs/benchmarks.md, docs/service.md
    paper_setting.py           random-init ResNet-50 bundles at 224 px, N = 2 and 4              benchmarks/README.md, results/paper_setting_N{2,4}_intervals.*, results/ort_spinning.md
    preprocess_uint8.py        float32 host preprocessing against uint8 graph inputs             results/preprocess_uint8.{md,json}, benchmarks/README.md
    pruning.py                 pruned + fine-tuned against unpruned: size, latency, top-1        results/pruning_seeds/, results/pruning.{md,json}; README.md
    pruning_paper.py           pruned erudite against the zoo pruned alike, ResNet-50 224        results/pruning_paper/; README.md
    pruning_plot.py            (the Pareto plots of pruning.py's results)                        results/pruning_seeds/*.svg; README.md
    replicates.py              one bench result repeated in separate runs: a verdict across them results/replicates/; README.md
    run_memory.py              peak memory of `run` over 1080p JPEGs, by --batch                  results/run_memory.{md,json}; docs/service.md
    step_time.py               training step time of ours / baseline+ / baseline                 results/paper_fidelity.md (step_time_meta_features_*.json), benchmarks/README.md, README.md
    stream_latency.py          result-to-viewer latency of `run --save rtsp://...`               results/stream_latency.{md,json}; README.md
    time_by_module.py          backbone against the erudite modules, ORT's profiler              results/ort_spinning.md (time_by_module_N4.json)

(results/ is benchmarks/results/.) Each timing study writes its raw samples and load records beside its JSON
(benchmarks.raw.write_result) and has a `derive(raw, settings)` that `python -m benchmarks.recompute` runs again
(benchmarks/README.md, "Raw samples and recompute"); the three INT8 quality studies do the same with FP32 and INT8
per test image (int8_per_image.py: the record and the figures derived from it).
"""
