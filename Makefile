# The two commands: `make run` and `make test`. Everything else is optional.
GO       ?= go
BIN      := bin/lethe
PKGS     := ./...
# -p 2: this project is built and tested on 2 cores.
TESTFLAGS ?= -race -timeout 25m -p 2

SHELL := /bin/bash

.PHONY: run test build vet bench bench-all fuzz deps-run clean

## run: start the whole pipeline on embedded defaults (no cloud account, no Docker)
run: deps-run build
	$(BIN) run

## build: the one binary
build:
	$(GO) build -o $(BIN) ./cmd/lethe

## deps-run: install the offline speech recogniser where we can (Debian, root)
deps-run:
	@scripts/install-deps.sh run

## test: every test, with the gcloud Pub/Sub emulator when it is installed
test:
	@scripts/install-deps.sh test
	$(GO) vet $(PKGS)
	$(GO) build -o bin/testsummary ./scripts/testsummary
	set -o pipefail; scripts/with-emulators.sh $(GO) test $(TESTFLAGS) -json $(PKGS) | bin/testsummary

## bench: one table of the measured figures, each beside its floor from the
## same run and its target (cmd/benchtable; also writes bench/results.json)
bench:
	$(GO) run ./cmd/benchtable -out bench/results.json

## bench-all: every benchmark (never timed assertions in tests)
bench-all:
	$(GO) test -run '^$$' -bench . -benchmem -p 1 $(PKGS)

## fuzz: a short run of every fuzz target (FUZZTIME per target)
FUZZTIME ?= 10s
fuzz:
	scripts/fuzz-all.sh $(FUZZTIME)

clean:
	rm -rf bin
