# Fluxbase. `make run` starts a dev node; `make test` runs everything CI runs.
GO        ?= go
BUILD     := build
BIN       := $(BUILD)/bin
GOBIN_DIR := $(abspath $(BUILD)/gobin)
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

# Pinned tools, installed into $(GOBIN_DIR) on first use.
STATICCHECK_VERSION := v0.8.2
# The S3 server the storage tests run (internal/s3test); keep in step with s3test.Version.
VERSITYGW_VERSION := v1.8.0
# The SMTP server the auth tests run (internal/mailpit); keep in step with mailpit.Version.
MAILPIT_VERSION   := v1.33.1

# How much each fuzz target runs in `make test`: a count of inputs, not a
# duration, so a busy machine fuzzes as much (a -fuzztime duration can end
# in "context deadline exceeded" while workers are still starting).
FUZZTIME ?= 50000x

.PHONY: all run build test test-go fuzz bench lint clean

all: build

run: build
	$(BIN)/fluxbase dev

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/fluxbase ./cmd/fluxbase

test: test-go fuzz

test-go:
	@test -x $(GOBIN_DIR)/versitygw || GOBIN=$(GOBIN_DIR) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)
	@test -x $(GOBIN_DIR)/mailpit || GOBIN=$(GOBIN_DIR) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION)
	$(GO) vet ./...
	$(GO) test -race -timeout 12m ./...

# Short fuzzing runs of the parsers that face the network; each target is
# listed as package:FuzzName.
FUZZ_TARGETS := ./api/realtime:FuzzDecodeFrame ./api/realtime:FuzzJoinPayload ./api/rest:FuzzParseRestQuery ./broker/fanout:FuzzParseFilter ./replication:FuzzDecode ./replication:FuzzAppendValue ./change:FuzzToken
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	done

# A short benchmark suite (under 5 minutes): every fluxbench scenario the
# landed features allow, reports in bench/results/<date>-<scenario>.md.
bench: build
	$(GO) build -o $(BIN)/fluxbench ./cmd/fluxbench
	$(BIN)/fluxbench suite -short -fluxbase-bin $(BIN)/fluxbase

lint:
	$(GO) vet ./...
	@test -x $(GOBIN_DIR)/staticcheck || GOBIN=$(GOBIN_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN_DIR)/staticcheck ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

clean:
	rm -rf $(BUILD)
