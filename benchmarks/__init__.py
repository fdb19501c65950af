"""`erudite-edge bench` and its parts: does one erudite pass really replace the two-stage zoo?

    latency.py      interleaved timing rounds and their statistics (mean, p50, p90, p99, throughput)
    instrument.py   runner wrappers that record what each model saw, and the zoo's forced even routing
    complexity.py   parameters and MACs: from ONNX graphs (onnx-tool) and torch models (fvcore); Table 3
    end_to_end.py   folder throughput (decode + preprocess + inference) against pure inference
    accuracy.py     top-1 per data set for each precision and the zoo; agreement between precisions
    goals.py        the issue's PASS/FAIL goals, computed from a result
    report.py       terminal tables (rich), JSON, Markdown and the PNG plot
    bench.py        the orchestration behind the command
    stats.py        paired bootstrap intervals of the ratios and the verdict of a goal
    scenarios.py    MLPerf's single-stream, offline and mixed-batch scenarios
    memory.py       peak memory of each model in fresh processes (`python -m benchmarks.memory --child`)
    environment.py  the machine the bench ran on (OS, CPU, runtimes, Jetson power mode, power meter)

    studies/        one-off study scripts whose figures benchmarks/results/ quotes (`python -m
                    benchmarks.studies.NAME`); they may import the modules above, never the reverse

Nothing here imports torch at module level: the bench runs on a Jetson without it.
"""
