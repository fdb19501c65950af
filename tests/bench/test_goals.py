"""The bench's goals (benchmarks/goals.py) judged from hand-made results: each goal's status at and around its
threshold, and what each line says (values, intervals, details, the note of a run outside the goals' setting)."""

from __future__ import annotations

from benchmarks.goals import evaluate


def _result(lat1=0.5, thr8=2.0, size=0.4, n=2, e2e=0.9, ci=0.01, rounds=10):
    stats = lambda p50, ips: {"p50_ms": p50, "throughput_ips": ips, "rounds": rounds}  # noqa: E731
    rows = [
        {"precision": "fp32", "batch": 1, "erudite": stats(5.0, 200), "zoo": stats(10.0, 100),
         "ratio": {"latency_p50": lat1, "throughput": 2.0}, "backend": {"erudite": "onnxruntime"},
         "ratio_ci95": {"latency_p50": [lat1 - ci, lat1 + ci], "throughput": [2.0 - ci, 2.0 + ci]}},
        {"precision": "fp32", "batch": 8, "erudite": stats(40.0, 200), "zoo": stats(80.0, 100),
         "ratio": {"latency_p50": 0.5, "throughput": thr8}, "backend": {"erudite": "onnxruntime"},
         "ratio_ci95": {"latency_p50": [0.5 - ci, 0.5 + ci], "throughput": [thr8 - ci, thr8 + ci]}},
        {"precision": "int8", "batch": 1, "erudite": stats(3.0, 330), "zoo": stats(12.0, 80)},
        {"precision": "int8", "batch": 8, "erudite": stats(30.0, 270), "zoo": stats(70.0, 110)},
    ]
    # int8/fp32 p50 latency per model and batch, with intervals (bench's precision_ratios)
    pr = lambda m, b, v, w=0.05: {"model": m, "precision": "int8", "batch": b, "latency_p50": v,  # noqa: E731
                                  "ci95": [v - w, v + w], "units": rounds, "paired": True}
    return {
        "settings": {"precisions": ["fp32", "int8"], "batches": [1, 8]},
        "bundles": {"erudite": {"backbone": "resnet50", "input_size": [224, 224], "num_datasets": n}, "zoo": {}},
        "latency": rows, "size_mb": {"fp32": {"erudite": 100.0, "zoo": 100.0 / size, "ratio": size}},
        "end_to_end": [{"precision": "fp32", "batch": 8, "erudite": {"ratio": e2e, "e2e_ips": 90.0, "pure_ips": 100.0,
                                                                    "rounds": 6, "ratio_ci95": [e2e - ci, e2e + ci]}}],
        "precision_ratios": [pr("erudite", 1, 0.6), pr("zoo", 1, 1.2), pr("erudite", 8, 0.75), pr("zoo", 8, 0.875)],
        "agreement": {"on": "--source", "images": 10, "erudite": {"int8_vs_fp32": 0.9}, "zoo": {"int8_vs_fp32": 0.8}},
    }


def test_goals_pass_and_fail_at_their_thresholds():
    status = lambda r: [g.status for g in evaluate(r)]  # noqa: E731
    assert status(_result()) == ["PASS", "PASS", "PASS", "PASS", "PASS", "INFO", "FAIL", "INFO"]  # zoo int8 at batch 1 slower
    assert status(_result(lat1=0.56, thr8=1.79, size=0.46, e2e=0.83))[:4] == ["FAIL"] * 4
    # the goals are the issue's: latency <= 0.52 at batch 1, throughput >= 1.9 at batch 8; judged on the interval
    assert status(_result(lat1=0.505, thr8=1.915))[:2] == ["PASS", "PASS"]
    assert status(_result(lat1=0.515, thr8=1.905))[:2] == ["INCONCLUSIVE", "INCONCLUSIVE"]  # intervals straddle the goals
    assert status(_result(lat1=0.535, thr8=1.885))[:2] == ["FAIL", "FAIL"]
    g = evaluate(_result(lat1=0.515))[0]
    assert g.ci95 == [0.505, 0.525] and "[0.505, 0.525] <= 0.52" in g.line()
    r = _result()
    del r["latency"][0]["ratio_ci95"]  # a point value without interval (one round): the run cannot tell
    assert evaluate(r)[0].status == "INCONCLUSIVE" and "no interval" in evaluate(r)[0].detail
    # an interval over fewer than 6 rounds cannot be a 95 % interval: INCONCLUSIVE however narrow, saying why
    few = evaluate(_result(rounds=5))
    assert [g.status for g in few][:2] == ["INCONCLUSIVE"] * 2 and "5 units" in few[0].detail
    assert evaluate(_result(rounds=6))[0].status == "PASS"
    assert status(_result(size=0.31, n=4))[2] == "FAIL" and status(_result(size=0.29, n=4))[2] == "PASS"
    r = _result()
    r["latency"] = [x for x in r["latency"] if x["batch"] != 8]
    r["end_to_end"] = []
    goals = evaluate(r)
    assert goals[1].status == "N/A" and "add 8 to --batch" in goals[1].detail
    assert goals[3].status == "N/A" and "--source" in goals[3].detail


def test_goals_details_setting_note_memory_end_to_end_and_int8_ratios():
    """What each goal line says, not only its status: the INT8/FP32 latency ratio per batch (int8 over fp32,
    the slowest batch judged), the end-to-end row of the main precision at batch 8, the memory line, the
    size detail, the note of a run outside the goals' setting, and goal_line's layout."""
    from benchmarks.goals import goal_line, setting_note

    r = _result()
    for row in r["latency"]:
        row["backend"] = {"erudite": "onnxruntime", "zoo": "onnxruntime"}
    # rows the end-to-end goal must not take: another precision, another batch
    r["end_to_end"] = [{"precision": "fp16", "batch": 8, "erudite": {"ratio": 0.3, "e2e_ips": 3.0, "pure_ips": 10.0}},
                       {"precision": "int8", "batch": 8, "erudite": {"ratio": 0.1, "e2e_ips": 1.0, "pure_ips": 10.0}},
                       {"precision": "fp32", "batch": 1, "erudite": {"ratio": 0.2, "e2e_ips": 2.0, "pure_ips": 10.0}}] + r["end_to_end"]
    r["memory"] = {"fp32": {"ratio": 0.6, "ratio_ci95": [0.55, 0.65], "repeats": 3, "erudite": {"median_mb": 300.0},
                            "zoo": {"median_mb": 500.0}, "baseline": {"median_mb": 100.0}, "net_ratio": 0.5}}
    goals = {g.name.split(" (")[0]: g for g in evaluate(r)}
    e2e = goals["end-to-end folder throughput at batch 8 / pure inference"]
    assert e2e.value == 0.9 and e2e.detail == "90.0 vs 100.0 images/s, medians of 6 rounds" and e2e.ci95 == [0.89, 0.91]
    mem = goals["peak memory erudite/zoo, fresh processes"]
    assert mem.status == "INFO" and mem.value == 0.6 and mem.ci95 == [0.55, 0.65]
    assert mem.detail == "RSS 300 vs 500 MB, median of 3; without the interpreter's 100 MB: 0.500"
    r["memory"]["fp32"]["net_ratio"] = None
    assert next(g for g in evaluate(r) if g.name.startswith("peak memory")).detail.endswith("100 MB: -")
    # fewer than 10 processes: no interval, the spread of the repetitions, labelled so; never PASS or FAIL
    r["memory"]["fp32"].update(ratio_ci95=None, ratio_spread=[0.58, 0.62])
    mem = next(g for g in evaluate(r) if g.name.startswith("peak memory"))
    assert mem.status == "INFO" and mem.ci95 is None and mem.detail.endswith("spread of 3 0.580-0.620, no interval below 10 processes")
    size = goals["model size erudite/zoo"]
    assert size.detail == "100.0 MB vs 250.0 MB" and size.threshold == "<= 0.45"
    int8 = [g for g in evaluate(r) if g.name.startswith("INT8 faster")]
    # each batch judged on its interval; the value shown is the slowest batch's: erudite 0.75, zoo 1.2
    assert [round(g.value, 4) for g in int8] == [0.75, 1.2] and [g.status for g in int8] == ["PASS", "FAIL"]
    assert int8[0].detail == "batch 1: 0.60 [0.55, 0.65] PASS; batch 8: 0.75 [0.70, 0.80] PASS"
    # the case: a point ratio of 0.80 whose interval reaches past 1 is not "faster"
    r["precision_ratios"][2].update(latency_p50=0.80001, ci95=[0.52, 1.31])
    assert next(g for g in evaluate(r) if g.name.startswith("INT8 faster than FP32 (erudite")).status == "INCONCLUSIVE"
    # the goals' setting: ResNet-50 at 224 px on ONNX Runtime's CPU; anything else says what differs
    assert setting_note(r) == ""
    r["host"] = {"providers": ["CPUExecutionProvider"]}
    assert setting_note(r) == ""
    for change in ({"backbone": "tiny"}, {"input_size": [64, 64]}):
        other = {**r, "bundles": {**r["bundles"], "erudite": {**r["bundles"]["erudite"], **change}}}
        assert setting_note(other).startswith("goals set for ") and "onnxruntime CPUExecutionProvider" in setting_note(other)
    gpu = {**r, "host": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}}
    assert setting_note(gpu).endswith("resnet50 at 224 px on onnxruntime CUDAExecutionProvider")
    assert goal_line({"status": "PASS", "name": "n", "value": 0.5, "ci95": [0.4, 0.6], "threshold": "<= 1", "detail": "d"}) \
        == "PASS: n: 0.500 [0.400, 0.600] <= 1 (d)"
    assert goal_line({"status": "N/A", "name": "n", "value": None, "threshold": ">= 2", "detail": ""}) == "N/A: n: - >= 2"
    # an exact quantity at the limit passes; the measured end-to-end ratio is judged on its interval
    at = _result(size=0.45, e2e=0.85)
    got = {g.name.split(" (")[0]: g.status for g in evaluate(at)}
    assert got["model size erudite/zoo"] == "PASS" and got["end-to-end folder throughput at batch 8 / pure inference"] == "INCONCLUSIVE"
    got = {g.name.split(" (")[0]: g.status for g in evaluate(_result(e2e=0.83))}
    assert got["end-to-end folder throughput at batch 8 / pure inference"] == "FAIL"



REPORT = [
    "PASS: latency erudite/zoo at batch 1 (N=2, fp32): 0.500 [0.490, 0.510] <= 0.52 (p50 latencies, 95 % interval)",
    "PASS: throughput erudite/zoo at batch 8, mixed batch (N=2, fp32): 2.000 [1.990, 2.010] >= 1.9 "
    "(zoo batch split evenly across the data sets, 95 % interval)",
    "PASS: model size erudite/zoo (N=2, fp32): 0.400 <= 0.45 (100.0 MB vs 250.0 MB)",
    "PASS: end-to-end folder throughput at batch 8 / pure inference (erudite, fp32): 0.900 [0.890, 0.910] >= 0.85 "
    "(90.0 vs 100.0 images/s, medians of 6 rounds)",
    "PASS: INT8 faster than FP32 (erudite: int8/fp32 p50 latency, every batch): 0.750 [0.700, 0.800] <= 1 "
    "(batch 1: 0.60 [0.55, 0.65] PASS; batch 8: 0.75 [0.70, 0.80] PASS)",
    "INFO: INT8 vs FP32 top-1 agreement (erudite): 0.900 (reported) (on 10 --source images)",
    "FAIL: INT8 faster than FP32 (zoo: int8/fp32 p50 latency, every batch): 1.200 [1.150, 1.250] <= 1 "
    "(batch 1: 1.20 [1.15, 1.25] FAIL; batch 8: 0.88 [0.82, 0.93] PASS)",
    "INFO: INT8 vs FP32 top-1 agreement (zoo): 0.800 (reported) (on 10 --source images)",
]


def test_goal_lines_of_a_bench_json_in_any_row_order():
    """The goals as `erudite-edge bench` prints them, from a result read back from bench.json (strings decoded
    from JSON, not literals), with the latency rows in either order."""
    import json

    r = _result()
    assert [g.line() for g in evaluate(r)] == REPORT
    back = json.loads(json.dumps(r))
    assert [g.line() for g in evaluate(back)] == REPORT
    back["latency"].reverse()  # int8 before fp32, batch 8 before batch 1
    back["end_to_end"].insert(0, {"precision": "fp32", "batch": 16, "erudite": {"ratio": 0.5, "e2e_ips": 5.0, "pure_ips": 10.0}})
    assert [g.line() for g in evaluate(back)] == REPORT  # the end-to-end goal is judged at batch 8, not 16


def test_goal_lines_when_measurements_are_missing():
    r = _result()
    del r["latency"][0]["ratio_ci95"]  # one round: a value without an interval
    r["size_mb"]["fp32"] = {"ratio": 0.4}  # sizes not recorded, only the ratio
    r["agreement"] = {"erudite": {"int8_vs_fp32": 0.9}}  # no image count, no source
    r["latency"] = [x for x in r["latency"] if (x["precision"], x["batch"]) != ("int8", 8)]  # int8 at batch 1 only
    r["precision_ratios"] = [e for e in r["precision_ratios"] if e["batch"] == 1]
    lines = [g.line() for g in evaluate(r)]
    assert lines[0] == ("INCONCLUSIVE: latency erudite/zoo at batch 1 (N=2, fp32): 0.500 <= 0.52 "
                        "(p50 latencies, 95 % interval; no interval (needs 2 or more rounds))")
    assert lines[2] == "PASS: model size erudite/zoo (N=2, fp32): 0.400 <= 0.45 (0.0 MB vs 0.0 MB)"
    assert lines[4] == ("PASS: INT8 faster than FP32 (erudite: int8/fp32 p50 latency, every batch): 0.600 [0.550, 0.650] <= 1 "
                        "(batch 1: 0.60 [0.55, 0.65] PASS)")
    assert lines[5] == "INFO: INT8 vs FP32 top-1 agreement (erudite): 0.900 (reported) (on 0 images)"
    assert lines[7] == "N/A: INT8 vs FP32 top-1 agreement (zoo): - (reported) (give --source FOLDER or --data SPEC)"
    # N=3: no size goal was set; sizes missing: N/A; no batch at both precisions; a ratio of exactly 1 is not faster
    r = _result(n=3)
    r["precision_ratios"] = [{**r["precision_ratios"][0], "latency_p50": 1.0, "ci95": [0.98, 1.02]}]
    r["settings"]["batches"] = [1, 8]
    lines = [g.line() for g in evaluate(r)]
    assert lines[2] == "INFO: model size erudite/zoo (N=3, fp32): 0.400 (goal set for N=2 and N=4)"
    assert lines[4] == ("INCONCLUSIVE: INT8 faster than FP32 (erudite: int8/fp32 p50 latency, every batch): 1.000 [0.980, 1.020] "
                        "<= 1 (batch 1: 1.00 [0.98, 1.02] INCONCLUSIVE)")
    r = _result()
    r["size_mb"] = {}
    r["latency"] = [x for x in r["latency"] if (x["precision"], x["batch"]) in (("fp32", 8), ("int8", 1))]
    r["precision_ratios"] = []  # no batch timed at both precisions
    lines = [g.line() for g in evaluate(r)]
    assert lines[2] == "N/A: model size erudite/zoo (N=2, fp32): - <= 0.45 (model files missing)"
    assert lines[4] == ("N/A: INT8 faster than FP32 (erudite: int8/fp32 p50 latency, every batch): - <= 1 "
                        "(no batch measured at both precisions with intervals (rerun the bench))")
    assert lines[0] == "N/A: latency erudite/zoo at batch 1 (N=2, fp32): - <= 0.52 (not measured: add 1 to --batch)"


def test_goals_without_int8_or_fp32_name_the_missing_precision_for_each_model():
    r = _result()
    r["settings"]["precisions"] = ["fp32"]
    int8 = [g.line() for g in evaluate(r) if g.name.startswith("INT8")]
    assert int8 == ["N/A: INT8 faster than FP32 (erudite): - < 1 (int8/fp32 p50 latency) (not measured: --precision fp32,int8)",
                    "N/A: INT8 faster than FP32 (zoo): - < 1 (int8/fp32 p50 latency) (not measured: --precision fp32,int8)"]
    # without fp32 the first precision measured is the main one
    r["settings"]["precisions"] = ["fp16", "int8"]
    assert evaluate(r)[0].name == "latency erudite/zoo at batch 1 (N=2, fp16)"
    r["settings"]["precisions"] = []
    assert evaluate(r)[0].name == "latency erudite/zoo at batch 1 (N=2, fp32)"


def test_setting_note_names_what_differs_from_the_goals_setting():
    import json

    from benchmarks.goals import setting_note

    paper = json.loads('{"bundles": {"erudite": {"backbone": "resnet50", "input_size": [224, 224]}}}')  # as bench.json holds it
    assert setting_note(paper) == ""  # no latency rows, no providers: nothing says otherwise
    for backbone, size in (("efficientnet_lite0", 224), ("tiny", 224), ("resnet50", 448), ("resnet50", 64)):
        other = {"bundles": {"erudite": {"backbone": backbone, "input_size": [size, size]}}}
        assert setting_note(other).endswith(f"this run: {backbone} at {size} px on ?"), (backbone, size)
    ort = {**paper, "latency": [{"backend": {"erudite": "onnxruntime"}}]}
    assert setting_note(ort) == ""
    assert setting_note({**ort, "host": json.loads('{"providers": ["CPUExecutionProvider"]}')}) == ""
    acl = {**ort, "host": {"providers": ["ACLExecutionProvider", "CPUExecutionProvider"]}}  # Arm Compute Library first
    assert setting_note(acl).endswith("this run: resnet50 at 224 px on onnxruntime ACLExecutionProvider")
    wide = {"bundles": {"erudite": {"backbone": "resnet50", "input_size": [320, 256]}}}  # not square: the first side
    assert setting_note(wide).endswith("this run: resnet50 at 320 px on ?")
    trt = {**paper, "latency": [{"backend": {"erudite": "tensorrt"}}]}
    assert setting_note(trt) == "goals set for ResNet-50 at 224 px on ONNX Runtime CPU; this run: resnet50 at 224 px on tensorrt"
    both = {**paper, "latency": [{"backend": {"erudite": "tensorrt"}}, {"backend": {"erudite": "onnxruntime"}}, {}]}
    assert setting_note(both).endswith("on onnxruntime/tensorrt")
    tiny = {"bundles": {"erudite": {"backbone": "tiny", "input_size": [224, 224]}}}
    assert setting_note(tiny).endswith("this run: tiny at 224 px on ?")
    assert setting_note({}) == "goals set for ResNet-50 at 224 px on ONNX Runtime CPU; this run: ? at 0 px on ?"
