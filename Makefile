# Tollgate — common tasks. `make test` is what CI runs.
SWIFT ?= swift

.PHONY: deps build test run check bench-core bench-redis

deps:  ## Debian packages the build and the tests need (openssl: the TLS tests' certificates)
	@command -v redis-server >/dev/null && command -v openssl >/dev/null && [ -f /usr/include/hiredis/hiredis.h ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhiredis-dev redis-server redis-tools openssl)

build: deps
	$(SWIFT) build

test: deps
	$(SWIFT) test --parallel

check: build
	$(SWIFT) run tollgate check Config/tollgate.yaml

run: deps  ## the sidecar on the embedded store, demo keys and the built-in stand-in upstream
	$(SWIFT) run tollgate serve --config Config/tollgate.yaml

bench-redis:
	bash Benchmarks/redis-compare.sh

bench-core:
	bash Benchmarks/compare-core.sh
