"""`erudite-edge bench` and its parts: does one erudite pass really replace the two-stage zoo?

    latency.py      interleaved timing rounds and their statistics (mean, p50, p90, p99, throughput)
    instrument.py   runner wrappers that record what each model saw, and the zoo's forced even routing
    complexity.py   parameters and MACs: from ONNX graphs (onnx-tool) and torch models (fvcore); Table 3
    end_to_end.py   folder throughput (decode + preprocess + inference) against pure inference
    accuracy.py     top-1 per data set for each precision and the zoo; agreement between precisions
    goals.py        the issue's PASS/FAIL goals, computed from a result
    report.py       terminal tables (rich), JSON, Markdown and the PNG plot
    bench.py        the orchestration behind the command
    step_time.py    training step time of ours / baseline+ / baseline (`python -m benchmarks.step_time`)
    paper_setting.py  random-init ResNet-50 bundles at 224 px, N = 2 and 4, exported and benched

Nothing here imports torch at module level: the bench runs on a Jetson without it.
"""
