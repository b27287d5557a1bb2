# One command per task, the same locally and in CI.
#   make run    virtualenv + install + serve on http://127.0.0.1:8000 (migrations at start;
#               embedded PostgreSQL and Redis unless SANKOFA_DATABASE_URL / SANKOFA_REDIS_URL)
#   make test   the whole suite against real PostgreSQL and Redis
#   make bench  benchmark kernels (pytest-benchmark)
#   make lint   ruff + mypy
#   make token  an access token in one step: make token ROLE="scorer analyst" [TTL=900]
#               (signed with SANKOFA_JWT_SECRET; docs/security.md)
#   make cluster  nginx, 4 instances, PostgreSQL primary + replica and a Redis Cluster as native
#               processes on loopback (deploy/local/sankofa_cluster.py), until Ctrl-C

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint venv clean cluster token

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,load,train]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/sankofa serve

ROLE ?= scorer
token: $(STAMP)
	@$(BIN)/sankofa token $(foreach r,$(ROLE),--role $(r)) $(if $(TTL),--ttl $(TTL))

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,max,rounds -p no:randomly

cluster: $(STAMP)
	$(BIN)/python deploy/local/sankofa_cluster.py up $(CLUSTER_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info src/*.egg-info
