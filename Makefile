# Build, bundle, run and test the Calls server side.
CARGO ?= cargo
PLUGIN_ID := com.mattermost.calls
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
BUNDLE := dist/$(PLUGIN_ID)-$(VERSION).tar.gz
DATA_DIR ?= data
LISTEN ?= 127.0.0.1:8065

.PHONY: build build-run dist run run-cluster test lint clean bench bench-recording fuzz fuzz-ci

build:
	$(CARGO) build --release --bins

# What `make run` needs, and nothing that links a system library (the recorder's
# libopus): a Rust toolchain is enough.
build-run:
	$(CARGO) build --release -p mattermost-calls --no-default-features --bin calls-host --bin calls-plugin

# The plugin bundle a host installs: plugin.json, the server executable and the
# webapp bundle, under one top-level directory named after the plugin id.
dist: build-run
	rm -rf dist/stage && mkdir -p dist/stage/$(PLUGIN_ID)/server/dist dist/stage/$(PLUGIN_ID)/webapp/dist
	sed 's/"version": "[^"]*"/"version": "$(VERSION)"/' plugin.json > dist/stage/$(PLUGIN_ID)/plugin.json
	cp target/release/calls-plugin dist/stage/$(PLUGIN_ID)/server/dist/plugin-linux-amd64
	cp webapp-stub/main.js dist/stage/$(PLUGIN_ID)/webapp/dist/main.js
	tar -C dist/stage -czf $(BUNDLE) $(PLUGIN_ID)
	rm -rf dist/stage
	@echo "bundle: $(BUNDLE)"

# Host + plugin on embedded SQLite, the plugin installed from its bundle.
run: dist
	./target/release/calls-host --listen $(LISTEN) --data-dir $(DATA_DIR) --plugin-bundle $(BUNDLE)

# Three nodes on PostgreSQL (127.0.0.2-4:8065) behind nginx on 127.0.0.1:8080, the
# demo seeded once (scripts/run-cluster.sh; CLUSTER_NODES=2 for two).
run-cluster: dist
	./scripts/run-cluster.sh $(BUNDLE)

test:
	./scripts/test.sh

# The seed's capacity shapes on the integrated SFU and on rtcd (scripts/bench.sh).
bench:
	./scripts/bench.sh

# The recorder's CPU, memory and file size per recorded minute (scripts/recording-cost.sh).
bench-recording:
	./scripts/recording-cost.sh

# Every fuzz target to 10 million executions or 30 minutes (scripts/fuzz.sh; FUZZ_TARGETS,
# FUZZ_RUNS, FUZZ_SECONDS, FUZZ_JOBS), on the stable toolchain (cargo-fuzz, no sanitizer).
fuzz:
	./scripts/fuzz.sh

# CI's short pass: each target for 15 s on its corpus.
fuzz-ci:
	FUZZ_SECONDS=15 ./scripts/fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	python3 scripts/module-cycles.py

clean:
	rm -rf dist target
