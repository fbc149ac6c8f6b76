# Mamoru: `make run` starts the whole system, `make test` proves it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := $(VENV)/bin/buf
STAMP := $(VENV)/.installed
GEN := gen
PROTO_FILES := $(shell find protos -name '*.proto' 2>/dev/null)

.PHONY: venv protos lint buf-lint buf-breaking typecheck test run clean bench bench-quick \
	pgbouncer chromium test-through-pgbouncer

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@echo "Setting up $(VENV): pinned dependencies from requirements.txt (first time: about a minute)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# One line per package, so a first install shows it is moving.
	$(PY) -m pip install --progress-bar off --no-color -r requirements.txt
	# The project itself, editable, for the `mamoru` operator command.
	$(PY) -m pip install --quiet --no-deps -e .
	# Generated protobuf modules import each other as top-level `mamoru.*`.
	$(PY) -c 'import site, os; open(os.path.join(site.getsitepackages()[0], "mamoru_gen.pth"), "w").write(os.path.abspath("$(GEN)") + "\n")'
	touch $@

protos: $(GEN)/.stamp

$(GEN)/.stamp: $(STAMP) $(PROTO_FILES)
	@echo "Generating the gRPC code from protos/ into $(GEN)/"
	rm -rf $(GEN)
	mkdir -p $(GEN)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=$(GEN) --grpc_python_out=$(GEN) \
		--mypy_out=$(GEN) --mypy_grpc_out=$(GEN) $(PROTO_FILES)
	find $(GEN)/mamoru $(GEN)/buf -type d -exec touch {}/__init__.py \;
	touch $@

buf-lint: $(STAMP)
	$(BUF) lint
	$(BUF) format --diff --exit-code

# FILE-level breaking-change check against main, once main carries protos.
buf-breaking: $(STAMP)
	@if git cat-file -e main:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#branch=main'; \
	else echo "buf breaking: main has no protos yet, nothing to compare"; fi

lint: protos buf-lint buf-breaking
	$(VENV)/bin/ruff check services tests bench deploy
	$(VENV)/bin/ruff format --check services tests bench deploy
	$(VENV)/bin/mypy
	$(PY) -m services.gateway.api.openapi --check

test: lint pgbouncer chromium
	$(PY) -m pytest $(PYTEST_ARGS)
	@# A chosen subset (PYTEST_ARGS) is not followed by the pooled pass.
	$(if $(PYTEST_ARGS),,$(MAKE) --no-print-directory test-through-pgbouncer)

# Debian's PgBouncer, which the tests put in transaction mode in front of PostgreSQL
# as production's pooler is. Installed once; quiet when already there.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		echo "installing pgbouncer (apt-get)"; \
		$$SUDO apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			pgbouncer >/dev/null; }

# Debian's Chromium, which the browser tests drive through Playwright (no browser
# download), and Japanese fonts so the people's pages render as they will for them.
chromium:
	@test -x /usr/bin/chromium || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		echo "installing chromium (apt-get)"; \
		$$SUDO apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium fonts-noto-cjk >/dev/null; }

# The wallet and identity end-to-end tests and the incident drill again, with every
# service's database traffic through PgBouncer in transaction mode.
PGBOUNCER_TESTS ?= tests/e2e/wallet tests/e2e/identity tests/e2e/drill
test-through-pgbouncer: protos pgbouncer
	MAMORU_PGBOUNCER=1 $(PY) -m pytest -q $(PGBOUNCER_TESTS)

# REPLICAS=2 starts two processes of every service; PGBOUNCER=1 puts PgBouncer
# (transaction mode) between the services and PostgreSQL.
REPLICAS ?= 1
PGBOUNCER ?=
run: protos
	MAMORU_REPLICAS=$(REPLICAS) MAMORU_PGBOUNCER=$(PGBOUNCER) $(PY) -m services.devstack

# Benchmarks of the targets in docs/architecture.md (never timed tests): results in
# bench/results.json, latency over time in bench/latency.png; bench also regenerates
# docs/capacity.md. bench-quick takes about three minutes.
bench: protos
	$(PY) -m bench --size full
	$(PY) -m bench.capacity

bench-quick: protos
	$(PY) -m bench --size quick

# The incident drill at a larger size, on a stack of its own under var/drill:
# prints the timeline and writes var/drill/report.json. DRILL_ARGS="--people 300".
.PHONY: drill
drill: protos
	$(PY) -m tests.e2e.drill $(DRILL_ARGS)

clean:
	rm -rf $(GEN) var .pytest_cache .mypy_cache .ruff_cache
