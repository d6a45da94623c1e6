# gpu-operator. `make demo` shows it working; `make test` is what CI runs.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
BIN := $(CURDIR)/bin
export GOFLAGS ?= -buildvcs=false

.PHONY: all build tools generate verify vet lint test test-unit test-integration fuzz test-demo demo demo-up demo-down bench clean image push

all: build

## build: the operator and the simulator binaries into bin/
# With the flags hack/build-tools.sh uses (CGO_ENABLED=0 -trimpath, no
# DWARF): the Kubernetes libraries, at the same versions in
# hack/tools/kube/go.mod, then come from the build cache the tools filled.
BUILDFLAGS := -trimpath -gcflags=all=-dwarf=false -ldflags=-w
build:
	CGO_ENABLED=0 GOGC=400 $(GO) build $(BUILDFLAGS) -o $(BIN)/gpu-operator ./cmd/gpu-operator
	CGO_ENABLED=0 GOGC=400 $(GO) build $(BUILDFLAGS) -o $(BIN)/cloudsim ./cmd/cloudsim
	CGO_ENABLED=0 GOGC=400 $(GO) build $(BUILDFLAGS) -o $(BIN)/gpu-operator-demo ./hack/demo

## image: the operator's OCI image (linux/amd64 and linux/arm64, no Docker needed) into bin/image/:
## an OCI layout (oci/), one tarball of it (gpu-operator.tar) and a docker-save tarball per architecture.
## IMAGE names it (default: the manifests' image, tagged with pkg/version.Version).
IMAGE ?=
image:
	$(GO) run ./hack/image build -out $(BIN)/image $(if $(IMAGE),-image $(IMAGE))

## push: make image, then push it to IMAGE=registry/name:tag with your docker/podman login credentials
push:
	@test -n "$(IMAGE)" || { echo 'make push needs IMAGE=registry/name:tag' >&2; exit 1; }
	$(MAKE) image IMAGE=$(IMAGE)
	$(GO) run ./hack/image push -from $(BIN)/image/oci -image $(IMAGE)

## tools: etcd, kube-apiserver, kube-controller-manager and kubectl built from Go modules (once per pinned version)
tools:
	hack/build-tools.sh

## generate: Kubernetes clients, deepcopy, CRDs and the providers' HTTP clients
generate:
	hack/update-codegen.sh
	hack/update-provider-clients.sh

## verify: fail when generated files are out of date
verify:
	hack/verify-codegen.sh

vet:
	$(GO) vet ./...

## test: unit and integration tests (a real etcd, kube-apiserver and kube-controller-manager), plus short fuzz runs
test: tools build
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) fuzz FUZZTIME=10s

FUZZTIME ?= 30s
## fuzz: every fuzz target for FUZZTIME each
fuzz:
	hack/fuzz.sh $(FUZZTIME)

## demo: the whole mission on this machine: control plane, simulators, operator, examples, an interruption
demo: tools build
	$(BIN)/gpu-operator-demo run

## demo-up / demo-down: a demo that keeps running in the background
demo-up: tools build
	$(BIN)/gpu-operator-demo up

demo-down:
	$(BIN)/gpu-operator-demo down

## test-demo: the demo flow, headless, with its outcome asserted
test-demo: tools build
	$(GO) test -count=1 -timeout 20m -run TestDemo ./hack/demo/...

## bench: the benchmark harness (writes BENCHMARKS.md) and Go benchmarks
bench: tools build
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/selector/ ./pkg/providers/...
	$(GO) run ./hack/bench -write BENCHMARKS.md

clean:
	rm -rf $(BIN)/gpu-operator $(BIN)/cloudsim $(BIN)/gpu-operator-demo $(BIN)/image .demo

STATICCHECK_VERSION := v0.8.2
## lint: staticcheck (pinned, run with go run) on hand-written code; generated packages are left out
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) \
	  $$($(GO) list ./... | grep -v -e /pkg/generated/ -e /lambdaapi -e /runpodv2 -e /paperspaceapi -e /vastaiapi)
