# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install triton-runtime model-repo demo serve test bench profile wrk clean rollout-demo overload pipelines

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/python -m pip install -q -e '.[features,bench,dev,registry,synthetic,deploy,pipelines]'
	touch $(STAMP)

install: $(STAMP)

# Triton's own runtime venv (numpy < 2, nvidia-pytriton), created once and reused.
triton-runtime: install
	$(BIN)/python -m runtime.triton

model-repo: install
	$(BIN)/python -m runtime.modelgen

demo: triton-runtime
	$(BIN)/python -m runtime.demo

serve: triton-runtime
	$(BIN)/python -m runtime.serve $(ARGS)

test: triton-runtime wrk promtool chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

# Debian's chromium for tests/console (Playwright drives it; no browser download).
.PHONY: chromium
chromium:
	@test -x /usr/lib/chromium/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

.PHONY: promtool deploy-check

# promtool + prometheus (Debian's package) for tests/deploy; the tests start their own
# Prometheus, so the packaged service is stopped and disabled if the package started one.
promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  systemctl disable --now prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true; }

# deploy/: render both overlays, schema + policy, Dockerfiles, promtool, and a real Prometheus
# scraping a real gateway (tests/deploy; also part of `make test`).
deploy-check: triton-runtime promtool
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

bench: triton-runtime wrk
	$(BIN)/python -m bench.harness $(if $(QUICK),--quick,) $(if $(PEERS),--peers,)

# issue 18: honouring callers and a retry storm at c=64..2048 (~6 min; QUICK=1: 1 run of 4 s)
overload: triton-runtime wrk
	$(BIN)/python -m bench.overload $(if $(QUICK),--quick,)

profile: triton-runtime wrk
	$(BIN)/python -m bench.profile

# A trained version registered, deployed at 10 %, ramped to 100 % under wrk (c=64), promoted.
rollout-demo: triton-runtime wrk
	$(BIN)/python -m registry.demo $(ARGS)

# The five Kubeflow pipelines in order, locally (kfp.local) on the embedded defaults: a fresh work
# dir .pipelines/run (Feast repo with a sqlite online store, sqlite MLflow), Redis, and a real
# Triton + gateway for the rollout. `python -m pipelines --help` for one pipeline or the soak.
pipelines: triton-runtime
	rm -rf .pipelines/run
	$(BIN)/python -m pipelines run all --workdir .pipelines/run $(ARGS)

clean:
	rm -rf $(VENV) .triton-venv .pytest_cache
