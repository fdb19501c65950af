# make test: creates .venv (Python 3.11) when missing, installs the project with the extras the tests need,
# runs the linters (ruff, import-linter's layering contracts), the type check of the runtime package (all of erudite_edge/, TensorRT stubs included), the
# strict build of the documentation site and the whole test suite in two stages: the tests not marked slow, then
# those marked slow (pyproject's [tool.pytest] markers says which). .ci/run calls exactly this.
# make check: the working loop: ruff, import-linter, mypy and the tests not marked slow (a few minutes at most).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: test check test-split demo install typecheck lint docs cycles clean mutation triton-env

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[train,dev,demo,serve,mqtt,docs]'
	# The stubs declare a dependency on tensorrt itself, whose wheels cannot be fetched here: stubs only.
	$(PIP) install -q --no-deps 'tensorrt-stubs==10.13.0.35.1'
	touch $(STAMP)

install: $(STAMP)

# The stubs as installed are invisible to mypy (no py.typed) and do not parse: a repaired copy goes
# on MYPYPATH (tools/prepare_trt_stubs.py says what it repairs).
TRT_STUBS := $(VENV)/trt-stubs

$(TRT_STUBS): $(STAMP) tools/prepare_trt_stubs.py
	$(PY) tools/prepare_trt_stubs.py $(TRT_STUBS)

typecheck: $(STAMP) $(TRT_STUBS)
	MYPYPATH=$(TRT_STUBS) $(VENV)/bin/mypy --follow-imports=silent erudite_edge/

# Debian packages for the real RTSP server the stream tests run on 127.0.0.1 (GStreamer's gst-rtsp-server,
# driven from the system Python's PyGObject). Installed where we are root with apt-get; elsewhere those
# tests skip and say why.
# plugins-bad/-ugly: the H.264 encoders and decoder the `--save rtp/rtsp` tests run (openh264, x264enc);
# gstreamer1.0-rtsp: rtspclientsink. mosquitto (+ -clients: mosquitto_passwd) and openssl: the real MQTT broker
# of the `-o mqtt://` tests (tests/mqtt_broker.py), on a free port of 127.0.0.1 with a throwaway CA.
SYSTEM_DEPS := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-rtsp mosquitto mosquitto-clients openssl
SYSTEM_STAMP := $(VENV)/.system-deps

$(SYSTEM_STAMP): Makefile | $(PY)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  dpkg -s $(SYSTEM_DEPS) >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_DEPS) >/dev/null; } || \
	  echo "warning: could not install $(SYSTEM_DEPS); the RTSP server and MQTT broker tests will skip"; \
	else echo "note: not root or no apt-get: the RTSP server and MQTT broker tests skip unless $(SYSTEM_DEPS) are installed"; fi
	touch $@

# The real Triton server the serving tests start (tests/serve/): its own venv, never the project's.
# nvidia-pytriton ships `tritonserver` (Triton 2.51) with the Python backend and its 3.11 stub; it pins
# numpy < 2 (installed into .venv it would downgrade numpy, OpenCV and protobuf there) and the Python
# backend's stub fails under numpy 2. The project goes in editable with its onnx extra, so the stub's
# interpreter (this venv's bin first on PATH) imports erudite_edge, numpy, OpenCV and ONNX Runtime from here.
# Where it cannot install (no Python 3.11, no x86-64/aarch64 Linux wheel, no network) the tests skip and say why.
TRITON_VENV  ?= .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
PYTRITON     := nvidia-pytriton==0.7.0

$(TRITON_STAMP): pyproject.toml
	@{ $(PYTHON) -m venv $(TRITON_VENV) && \
	  $(TRITON_VENV)/bin/pip install -q --upgrade pip && \
	  $(TRITON_VENV)/bin/pip install -q '$(PYTRITON)' 'numpy<2' -e '.[onnx]' && \
	  touch $@; } || echo "warning: could not make $(TRITON_VENV) ($(PYTRITON)); the Triton server tests will skip"

triton-env: $(TRITON_STAMP)

# ruff (version pinned in pyproject's dev extra, rules in [tool.ruff]) on the whole tree; import-linter's
# contracts ([tool.importlinter]): the runtime's layers, no train/export/benchmarks/torch in the runtime.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The documentation site (mkdocs.yml, docs/) into site/, strict: a broken link, a missing page or a docstring
# mkdocstrings cannot read fails it. docs/hooks.py writes the CLI reference from the Typer app on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The import circles of the whole tree (benchmarks/results/structure.md quotes this).
cycles: $(STAMP)
	$(PY) tools/import_cycles.py

# The two stages of the suite, by the `slow` marker. SLOW_WORKERS: pytest-xdist workers for the slow stage
# (0: no xdist, in one process), each test file on one worker (its module-scoped fixtures, such as the
# `trained` model, are built once); docs/development.md has the timings behind the default.
PYTEST       := $(PY) -m pytest tests
FAST         := not slow
SLOW         := slow
SLOW_WORKERS ?= 2

# Stage 1 + stage 2 collect exactly the tests of one plain run: none left out, none in both.
test-split: $(STAMP)
	$(PY) tools/test_split.py --stage "$(FAST)" --stage "$(SLOW)"

check: lint typecheck
	$(PYTEST) -m "$(FAST)"

test: $(STAMP) $(SYSTEM_STAMP) $(TRITON_STAMP) lint typecheck docs test-split
	$(PYTEST) -m "$(FAST)"
	$(PYTEST) -m "$(SLOW)" $(if $(filter-out 0,$(SLOW_WORKERS)),-n $(SLOW_WORKERS) --dist loadfile)

# Mutation testing (cosmic-ray; not in CI: hours on 2 cores). MODULES= and MAX= narrow it, e.g.
#   make mutation MODULES=train/evaluate.py MAX=30
mutation: $(STAMP)
	$(PIP) install -q -e '.[mutation]'
	$(PY) tools/mutation.py $(MODULES) $(if $(MAX),--max-mutants $(MAX))

demo: $(STAMP)
	$(VENV)/bin/erudite-edge demo --out runs/demo

clean:
	rm -rf $(VENV) $(TRITON_VENV) build site *.egg-info
