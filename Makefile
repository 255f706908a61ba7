# tether — build, run and test. See README.md.
SHELL := /bin/bash
VERSION ?= 0.1.0
GO ?= go
LDFLAGS := -X tether/internal/version.Version=$(VERSION)
DATA_DIR ?= /var/lib/tether/server
# Test timeouts: the whole suite must stay well under 30 minutes on 2 cores.
TEST_TIMEOUT ?= 20m

.PHONY: all deps build run test test-unit test-integration test-e2e bench generate vet fmt clean
.PHONY: busybox-image

all: build

deps:
	@hack/install-deps.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/tether ./cmd/tether

# Build the busybox test image (from /usr/bin/busybox, no internet) and
# import it into the image store of `tether server`'s local agent.
busybox-image: deps build
	$(GO) run ./hack/busybox-image -o bin/busybox.tar
	./bin/tether image import --data-dir $(DATA_DIR)/agent bin/busybox.tar

# Start a single-node control plane in the foreground.
run: deps build
	./bin/tether server --data-dir $(DATA_DIR)

# The whole suite: unit, integration and end-to-end tests.
test: deps build
	$(GO) vet ./...
	TETHER_BIN=$(CURDIR)/bin/tether $(GO) test -timeout $(TEST_TIMEOUT) -count=1 ./...

test-unit:
	$(GO) test -short -count=1 ./...

test-integration:
	$(GO) test -count=1 ./test/integration/...

test-e2e: build
	TETHER_BIN=$(CURDIR)/bin/tether $(GO) test -count=1 -v ./test/e2e/...

# Benchmarks print figures and ratios against raw etcd in the same run.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/... ./tunnel/

generate:
	hack/generate-openapi.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
