# Strato: the two commands are `make demo` and `make test` (run as root).
# Everything else is a building block of those two or an operator's helper.

SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug
PREFIX ?= demo
REGION ?= examples/region.toml
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all bootstrap build demo down test test-unit test-program test-e2e test-bench bench clean lint

all: build

bootstrap:
	@./scripts/bootstrap

# One debug build serves the demo, the tests and the benchmarks: the eBPF
# object is always optimised (aya-build builds it in release), and nothing
# measured runs in user-space code.
build: bootstrap
	@echo "==> building the workspace (first build takes a few minutes on 2 cores)"
	$(CARGO) build --bins

demo: build
	@PREFIX=$(PREFIX) REGION=$(REGION) KEEP=$(KEEP) ./scripts/demo

down:
	@PREFIX=$(PREFIX) ./scripts/demo-down

test: bootstrap
	@./scripts/test

test-unit test-program test-e2e test-bench: bootstrap
	@./scripts/test $(patsubst test-%,%,$@)

bench: bootstrap
	@./scripts/bench

lint:
	@./scripts/test lint

clean:
	$(CARGO) clean
