# migrate's build, fixtures, checks and demo. Every target that needs host packages
# runs scripts/setup.sh first (idempotent, seconds when all is present), so on a
# fresh Debian 12 machine `make test` and `make demo` each do all the set-up.
# Built fixtures and tools live in $(CACHE), never in the repository.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
MIGRATE_CACHE ?= /var/cache/migrate
CACHE := $(MIGRATE_CACHE)
export MIGRATE_CACHE

# Tool versions, pinned. staticcheck 2026.2.2 (module v0.8.2) is a release that
# supports Go 1.26 (2025.1.x predates it); the protoc plugins match go.mod and
# api/generate.sh.
STATICCHECK_VERSION := v0.8.2
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOOLS := $(CACHE)/tools
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)/staticcheck
PROTOC_PLUGINS := $(TOOLS)/protoc-plugins-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)

TEST_TIMEOUT ?= 60m
TEST_FLAGS ?=
BENCHTIME ?= 1s
MOVE_BENCHTIME ?= 3x
PKGS ?= ./...

WORKLOADS := memwriter counter httpcounter
WORKLOAD_DIR := $(CACHE)/workloads
WORKLOAD_BINS := $(addprefix $(WORKLOAD_DIR)/,$(WORKLOADS))
WORKLOAD_SRC := $(shell find test/workloads -name '*.go' ! -name '*_test.go' 2>/dev/null) go.mod
BUSYBOX := $(CACHE)/busybox
BUSYBOX_ROOTFS := $(BUSYBOX)/rootfs
BUSYBOX_BINS := $(addprefix $(BUSYBOX_ROOTFS)/usr/local/bin/,$(WORKLOADS))
DEBIAN_ROOTFS := $(CACHE)/debian/rootfs

# Commands that exist (cmd/migratectl may come later).
CMDS := $(sort $(patsubst cmd/%/,%,$(dir $(wildcard cmd/*/*.go))))
PROTOS := $(shell find api -name '*.proto' 2>/dev/null)
# api/ may own its generation (include paths, file list); empty to use protoc here.
GENERATE_SCRIPT := $(wildcard api/generate.sh)

.PHONY: all setup fixtures workloads build test fmt-check vet staticcheck lint \
	generate bench demo clean clean-fixtures

all: build

## setup: install host packages and CRIU (scripts/setup.sh)
setup:
	@scripts/setup.sh

## fixtures: busybox rootfs and bundle, Debian rootfs, workloads (cached)
fixtures: $(BUSYBOX_BINS) $(BUSYBOX)/config.json $(DEBIAN_ROOTFS)

## workloads: the static test programs of test/workloads
workloads: $(WORKLOAD_BINS)

# Static, so they run in a rootfs without libc; no VCS stamp, which fails in a
# checkout owned by another user and tells a test program nothing.
$(WORKLOAD_DIR)/%: $(WORKLOAD_SRC) | setup
	@mkdir -p $(@D)
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -o $@ ./test/workloads/$*

# Mentioned only through patterns otherwise; never delete them as intermediates.
.SECONDARY: $(WORKLOAD_BINS)

# Fixture directories have no file prerequisites: they are rebuilt only when missing
# (delete one to rebuild it). scripts/fixtures.sh builds each atomically.
$(BUSYBOX_ROOTFS): | setup
	scripts/fixtures.sh busybox $@

$(BUSYBOX_ROOTFS)/usr/local/bin/%: $(WORKLOAD_DIR)/% | $(BUSYBOX_ROOTFS)
	install -m 0755 $< $@

# The runtime's default spec, written by the runc-compatible `oci spec`; remade
# when runtime/spec changes.
$(BUSYBOX)/config.json: $(wildcard runtime/spec/*.go) | $(BUSYBOX_ROOTFS)
	@rm -rf $@.d && mkdir -p $@.d
	$(GO) run ./cmd/migrated oci spec --bundle $@.d
	@mv $@.d/config.json $@ && rmdir $@.d

$(DEBIAN_ROOTFS): | setup
	scripts/fixtures.sh debian $@

## build: bin/migrated and bin/migratectl (whichever exist)
build: | setup
	@mkdir -p bin
	@for c in $(CMDS); do echo "$(GO) build -o bin/$$c ./cmd/$$c"; $(GO) build -o bin/$$c ./cmd/$$c; done

## lint: gofmt, go vet, staticcheck
lint: fmt-check vet staticcheck

# Every Go file of $(PKGS), whatever its build tags.
GOFILES_TMPL := {{$$d := .Dir}}{{range .GoFiles}}{{$$d}}/{{.}} {{end}}{{range .CgoFiles}}{{$$d}}/{{.}} {{end}}$\
	{{range .TestGoFiles}}{{$$d}}/{{.}} {{end}}{{range .XTestGoFiles}}{{$$d}}/{{.}} {{end}}$\
	{{range .IgnoredGoFiles}}{{$$d}}/{{.}} {{end}}

fmt-check:
	@files=$$($(GO) list -e -f '$(GOFILES_TMPL)' $(PKGS)); out=; \
	[ -z "$$files" ] || out=$$(gofmt -l $$files); \
	if [ -n "$$out" ]; then echo "gofmt: these files need 'gofmt -w':"; echo "$$out"; exit 1; fi

vet: | setup
	$(GO) vet $(PKGS)

$(STATICCHECK):
	@mkdir -p $(@D)
	GOBIN=$(@D) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK) | setup
	$(STATICCHECK) $(PKGS)

## test: set-up, fixtures, build, lint, then every Go test (as root)
test: fixtures build lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS)
	@echo "make test: all passed"

## bench: Go benchmarks, then any scripts/bench/*.sh
# The runtime lifecycle benchmark (ours vs runc, alternating) runs a fixed
# number of pairs so its medians have a sample worth quoting. The move benchmark
# (ours vs the naive runc + tar | zstd pipeline, alternating) and the machine's
# limits run MOVE_BENCHTIME each (plus the framework's first run, which the move
# medians count too); docs/performance.md reads them.
bench: fixtures build
	$(GO) test -run '^$$' -bench Lifecycle -benchtime 40x -timeout $(TEST_TIMEOUT) ./test/bench/
	$(GO) test -run '^$$' -bench Snapshot -benchtime 1x -timeout $(TEST_TIMEOUT) ./test/bench/
	$(GO) test -run '^$$' -bench '^Benchmark(Move|Limits)$$' -benchtime $(MOVE_BENCHTIME) -timeout $(TEST_TIMEOUT) ./test/bench/
	$(GO) test -run '^$$' -bench '^BenchmarkPostcopy$$' -benchtime 2x -timeout $(TEST_TIMEOUT) ./test/bench/
	$(GO) test -run '^$$' -bench CheckpointRestore -benchtime 2x -timeout $(TEST_TIMEOUT) ./test/bench/
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout $(TEST_TIMEOUT) $$($(GO) list $(PKGS) | grep -v /test/bench)
	@for s in scripts/bench/*.sh; do [ -x "$$s" ] || continue; echo "== $$s"; "$$s"; done

## generate: Go code from api/**/*.proto with pinned protoc plugins
$(PROTOC_PLUGINS)/protoc-gen-go $(PROTOC_PLUGINS)/protoc-gen-go-grpc &:
	@mkdir -p $(PROTOC_PLUGINS)
	GOBIN=$(PROTOC_PLUGINS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(PROTOC_PLUGINS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

ifeq ($(strip $(PROTOS)),)
generate:
	@echo "generate: no .proto files under api/, nothing to do"
else ifneq ($(GENERATE_SCRIPT),)
# Its script pins the same plugin versions as below.
generate: | setup
	$(GENERATE_SCRIPT)
else
generate: $(PROTOC_PLUGINS)/protoc-gen-go $(PROTOC_PLUGINS)/protoc-gen-go-grpc | setup
	protoc -I api \
		--plugin=protoc-gen-go=$(PROTOC_PLUGINS)/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(PROTOC_PLUGINS)/protoc-gen-go-grpc \
		--go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative \
		$(patsubst api/%,%,$(PROTOS))
endif

## demo: an HTTP counter moved between two netns nodes and back under a client (scripts/demo.sh)
demo: build $(BUSYBOX_BINS) $(BUSYBOX)/config.json
	scripts/demo.sh

clean:
	rm -rf bin

## clean-fixtures: remove built fixtures and tools from the cache (not CRIU)
clean-fixtures:
	rm -rf --one-file-system $(BUSYBOX) $(CACHE)/debian $(WORKLOAD_DIR) $(TOOLS)
