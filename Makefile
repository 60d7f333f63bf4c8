# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# glibc allocator tuning for CNN inference on CPU (DESIGN.md: halves fp32 time).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736
export MALLOC_TOP_PAD_ := 1073741824
export GLOG_minloglevel := 2
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: venv demo test bench e2e clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the CPU wheel on local disk; anything unpinned would pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: venv
	ulimit -s 32768; $(PY) -m apps.demo --out demo-out

# tests/system/install.sh: the Debian packages the tests drive (dciodvfy, dcmtk, Orthanc, ...),
# installed when missing (as root), else one line naming them.
test: venv
	tests/system/install.sh test
	ulimit -s 32768; $(PY) -m pytest -q tests

# The results in the real OHIF viewer (tests/e2e/README.md): installs Chromium, Orthanc, the
# OHIF 3.13.2 dist and the Node packages if missing; not part of `make test`.
e2e: venv
	tests/e2e/install.sh
	ulimit -s 32768; $(PY) -m pytest -q -p no:cacheprovider -o python_files='e2e_*.py' tests/e2e

bench: venv
	ulimit -s 32768; $(PY) benchmarks/bench_facial_vitiligo.py
	ulimit -s 32768; $(PY) benchmarks/bench_service.py

clean:
	rm -rf demo-out .pytest_cache
