# scmaskgan — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_DIR ?= demo_results
PYTEST_WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint nf-lint bench-deps bench bench-scale report-png image image-cpu image-sif docs clean

venv: $(STAMP)

# torch first (a CPU build here; `make TORCH_SPEC='torch --index-url ...' ...` for CUDA), then the package.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	$(BIN)/scmaskgan demo-data $(DEMO_DIR)/data
	$(BIN)/scmaskgan run --input $(DEMO_DIR)/data/samplesheet.csv --outdir $(DEMO_DIR) --params-file assets/params_demo.json
	@echo "Demo finished. Report: $$(pwd)/$(DEMO_DIR)/report/report.html"

# test files run in PYTEST_WORKERS processes (pytest-xdist; each file's tests in one worker, so
# module fixtures run once): on 2 cores the suite takes ~6 min instead of ~10
test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile tests

lint: venv
	$(BIN)/ruff check src tests bin benchmarks
	bash tests/nextflow/lint.sh

nf-lint:
	bash tests/nextflow/lint.sh

# The peers (magic-impute) pull scprep, which pins pandas < 2.1 and would downgrade the pandas
# that anndata and scanpy need: keep the installed pandas (magic works with it).
bench-deps: venv
	pandas=$$($(BIN)/python -c 'import pandas; print(pandas.__version__)') && \
	$(BIN)/python -m pip install --quiet -e ".[bench]" && \
	$(BIN)/python -m pip install --quiet "pandas==$$pandas"

bench: bench-deps
	$(BIN)/python benchmarks/bench_peers.py --outdir benchmarks/results
	$(BIN)/python benchmarks/bench_ablation.py --outdir benchmarks/results
	$(BIN)/python benchmarks/bench_quality.py --outdir benchmarks/results
	$(BIN)/python benchmarks/bench_zeros_bound.py --outdir benchmarks/results
	$(BIN)/python benchmarks/bench_null.py --outdir benchmarks/results

bench-scale: bench-deps
	$(BIN)/python benchmarks/bench_scale.py --outdir benchmarks/results

docs: venv
	$(BIN)/python scripts/make_nextflow_schema.py
	$(BIN)/python scripts/schema_to_docs.py

# screenshot of the demo report (Debian's chromium: apt-get install -y chromium)
report-png:
	bash scripts/render_report.sh $(DEMO_DIR)/report/report.html $(DEMO_DIR)/report/report.png

# the names nextflow.config uses (params.container_image, container_tag, container_tag_gpu)
IMAGE ?= ghcr.io/scmaskgan/scmaskgan
TAG ?= 0.1.0
TAG_GPU ?= $(TAG)-cuda
image:
	docker build -f containers/Dockerfile --build-arg VARIANT=cuda -t $(IMAGE):$(TAG_GPU) .
image-cpu:
	docker build -f containers/Dockerfile --build-arg VARIANT=cpu -t $(IMAGE):$(TAG) .
image-sif:
	apptainer build scmaskgan_$(TAG).sif containers/scmaskgan.def

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
