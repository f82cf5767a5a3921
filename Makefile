# Run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Where the tests find the services; `make services` starts them on these addresses.
DATABASE_URL ?= postgres://exactly:exactly@127.0.0.1:5432/exactly?sslmode=disable
KAFKA_BROKERS ?= 127.0.0.1:9092
KAFKA_SASL_BROKERS ?= 127.0.0.1:9094
KAFKA_TLS_BROKERS ?= 127.0.0.1:9095
KAFKA_TLS_CA ?= $(abspath $(or $(EXACTLY_STATE_DIR),.local))/kafka/tls/ca.pem
export DATABASE_URL KAFKA_BROKERS KAFKA_SASL_BROKERS KAFKA_TLS_BROKERS KAFKA_TLS_CA

GO ?= go
# -p 1: some tests restart Postgres or Kafka, so packages must not run at once.
TEST_FLAGS ?= -race -count=1 -p 1 -timeout 25m
# examples/ is a module of its own (examples/go.mod, which replaces the library with ../), so
# that the Prometheus client and the OpenTelemetry SDK it uses stay out of the library's module
# graph. Go commands with ./... cover one module: the targets below run them in both.
EXAMPLES := examples

.PHONY: help services services-down services-status browser test lint bench-inbox bench-outbox bench-consumer bench-retention fuzz demo

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

services: ## Start PostgreSQL and Kafka locally, no Docker (idempotent; deploy/local/README.md)
	deploy/local/services.sh up

services-down: ## Stop local PostgreSQL and Kafka (data is kept)
	deploy/local/services.sh down

services-status: ## Show whether local PostgreSQL and Kafka run
	deploy/local/services.sh status

browser: ## Install Debian's chromium for the console's browser test (idempotent; deploy/local/chromium.sh)
	deploy/local/chromium.sh install

test: services browser ## Start the services, then go vet and all tests with -race (library and examples modules)
	$(GO) vet ./...
	cd $(EXAMPLES) && $(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...
	cd $(EXAMPLES) && $(GO) test $(TEST_FLAGS) ./...

lint: ## gofmt check, go vet and staticcheck (library and examples modules)
	@files="$$(gofmt -l .)"; \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	cd $(EXAMPLES) && $(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	cd $(EXAMPLES) && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench-inbox: services ## Inbox claims/s by batch size, empty vs 5M-token inbox, UUIDv7 vs random tokens
	$(GO) run ./internal/bench/inbox

bench-outbox: services ## Relay msgs/s from a 200k backlog, commit->Kafka latency notify vs polling, writer tx/s with vs without wake-ups
	$(GO) run ./internal/bench/outbox

bench-consumer: services ## Consumer msgs/s from a 200k backlog: inbox (both layouts) vs plain vs per-message vs replay vs batch handler, RSS at 200k vs 1M; then key-level concurrency off vs on
	$(GO) run ./internal/bench/consumer
	$(GO) run ./internal/bench/keyed

bench-retention: services ## Retiring 1M inbox tokens by partition drop vs batched delete; claims/s into a 20M-token inbox with retention on vs off (a few minutes)
	$(GO) run ./internal/bench/retention

fuzz: ## Fuzz the consumer's token sources for 60s (seeds that found bugs live in consumer/testdata/)
	$(GO) test -run '^$$' -fuzz FuzzTokenSources -fuzztime 60s ./consumer/

# How long `make demo` places orders.
DEMO_DURATION ?= 60s

demo: services ## Run the order pipeline example for DEMO_DURATION (60s) while SIGKILLing workers; verify 0 duplicates, 0 lost
	cd $(EXAMPLES) && $(GO) build -o $(CURDIR)/.local/bin/ ./orders/cmd/...
	.local/bin/demo -duration $(DEMO_DURATION) -bin .local/bin
