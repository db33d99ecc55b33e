# gameday: every target sets up what it needs, so `make demo` and `make test` work on a fresh
# machine. Tools are called by their .venv/bin paths: nothing depends on an activated venv.
#
#   make help        list the targets
#   make demo        run the default game day on local processes
#   make test        lint, type-check and run the whole test suite (slow tests included)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOXIPROXY := $(BIN)/toxiproxy-server
# Processes started by tests and by the demo find toxiproxy-server and gameday here.
RUN_ENV := PATH="$(CURDIR)/$(BIN):$$PATH"

MYPY_TARGETS := cluster checks chaos workloads

.PHONY: browser help venv dist dist-check toxiproxy fuse docker-engine images k8s-toolchain k8s k8s-down k8s-status test test-fast test-docker test-k8s chaos lint typecheck fmt demo clean

help: ## list the targets with a one-line description
	@echo "usage: make <target>"
	@echo
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN { FS = ":.*## " } { printf "  %-14s %s\n", $$1, $$2 }'

# ---- environment -------------------------------------------------------------------------------

# Internal: the virtualenv with the project installed editable plus its test extras. The install
# re-runs only when pyproject.toml is newer than the stamp.
venv: $(STAMP)
	@:

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The web UI's browser test (tests/chaos/test_webui.py) drives Debian's chromium through its
# chromedriver (selenium, from the test extra); browser downloads are not needed.
browser: ## install chromium + chromium-driver from Debian if missing (root), for the browser test
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }; \
	fi

toxiproxy: $(TOXIPROXY) ## install the Toxiproxy server into .venv/bin (gameday setup toxiproxy; needs Go)
	@:

# The same code an installed gameday uses (chaos/setup_cli.py): one way to get each prerequisite.
$(TOXIPROXY): | $(STAMP)
	$(BIN)/gameday setup toxiproxy --dest $(BIN)

# libfuse3, for the power-loss layer under storage nodes (chaos/backends/lazyfs.py, through
# mfusepy): power_loss faults and their tests need it; root installs it from Debian if missing.
fuse: ## install libfuse3 + fuse3 from Debian if missing (the power_loss faults' layer; root)
	@if ldconfig -p | grep -q 'libfuse3\.so\.3 '; then echo "libfuse3: present"; else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfuse3-3 fuse3; fi

# Docker, for the docker backend: `make test` runs its tests when an engine runs or can be started
# (else skips them, saying why); .ci/run calls this first, so CI always runs them.
docker-engine: venv ## install docker.io + debootstrap from Debian if missing, start dockerd (root)
	$(BIN)/gameday setup docker

images: venv toxiproxy docker-engine ## build the docker backend's images (no registry; cached layers)
	$(RUN_ENV) $(BIN)/gameday images build

# ---- the product -------------------------------------------------------------------------------

dist: venv ## build the wheel and sdist into dist/ (pipx install dist/gameday-*.whl)
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist .
	@ls -l dist

dist-check: ## install the wheel in a fresh venv outside the checkout: doctor, faults, scenarios, a game day
	bash .ci/dist-check

# The local Kubernetes, for the k8s backend. `make test` lints and validates the Helm chart with the
# toolchain's helm and runs the tests marked `k8s` last, on one local Kubernetes for the session:
# the nodes' test and the az-outages game day (an AZ power-off and an AZ partition), then `down`
# must leave nothing. Without the toolchain they skip with the reason (a failure on CI: .ci/run
# builds it first with this target). `make k8s-toolchain` is not a prerequisite of `make test`:
# the first build takes ~15 minutes.
k8s-toolchain: ## Debian packages + build kube-* , kubectl, helm, CoreDNS, pause once (~15 min; cached)
	bash k8s/packages.sh
	bash k8s/toolchain.sh

k8s: venv k8s-toolchain images ## start the local Kubernetes (6 nodes: 3 AZs x 2 racks); kubeconfig .gameday/k8s/kubeconfig
	$(RUN_ENV) $(BIN)/gameday k8s up

k8s-down: venv ## stop the local Kubernetes and remove every trace of it from the host
	$(RUN_ENV) $(BIN)/gameday k8s down

k8s-status: venv ## processes and node readiness of the local Kubernetes
	$(RUN_ENV) $(BIN)/gameday k8s status

# ---- checks ------------------------------------------------------------------------------------

lint: venv ## ruff lint and format check (no changes made)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv ## mypy (strict for cluster/ and checks/, see pyproject.toml)
	$(BIN)/mypy $(MYPY_TARGETS)

test: venv toxiproxy fuse browser lint typecheck ## lint, type-check, then the suite (slow tests, the chaos smoke subset, the k8s game day)
	$(RUN_ENV) $(BIN)/pytest -q -m "not chaos or chaos_smoke"

# The nightly chaos suite: a seeded campaign of every shipped scenario (`gameday campaign`, the
# seed is the date, so a night's failure replays), more runs for the random schedules, then the
# chaos tests that prove the checkers catch broken clusters. Every campaign runs even when one
# fails; the target fails if any did. Campaign directories (index.html, failing runs kept whole)
# land in runs/nightly/.
CAMPAIGN_SEED ?= $(shell date +%Y%m%d)
NIGHTLY_RUNS ?= 3
NIGHTLY_RANDOM_RUNS ?= 10
RANDOM_SCENARIOS := power-loss-campaign random-power-off

chaos: venv toxiproxy fuse ## the nightly chaos suite: a seeded campaign of every shipped scenario, then the checker tests
	@failed=0; for path in scenarios/*.yaml; do name=$$(basename $$path .yaml); \
		runs=$(NIGHTLY_RUNS); case " $(RANDOM_SCENARIOS) " in *" $$name "*) runs=$(NIGHTLY_RANDOM_RUNS);; esac; \
		$(RUN_ENV) $(BIN)/gameday campaign $$path --runs $$runs --seed $(CAMPAIGN_SEED) \
			--out runs/nightly || failed=1; done; \
	$(RUN_ENV) $(BIN)/pytest -q -m chaos -k "not test_shipped_scenario_passes" || failed=1; \
	exit $$failed

test-docker: venv toxiproxy fuse docker-engine ## only the docker backend's tests (images, containers, game days, power loss)
	$(RUN_ENV) $(BIN)/pytest -q -m docker

test-k8s: venv k8s-toolchain ## only the local Kubernetes' tests (nodes, traffic, power cycle, az-outages game day, down)
	$(RUN_ENV) $(BIN)/pytest -q -m k8s

test-fast: venv fuse ## the test suite without tests marked slow
	$(RUN_ENV) $(BIN)/pytest -q -m "not slow"

fmt: venv ## format the code and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# ---- running -----------------------------------------------------------------------------------

demo: venv toxiproxy fuse ## run the default game day on local processes
	$(RUN_ENV) $(BIN)/gameday demo

clean: ## remove caches and build leftovers (keeps .venv and runs/)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 -r rm -rf
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
