#!/usr/bin/env bash
# generate.sh regenerates the Go code of api/ from its .proto files with pinned plugin
# versions, so the committed code is reproducible. Needs protoc (Debian's
# protobuf-compiler) and Go; plugins are built into $MIGRATE_CACHE/bin.
set -euo pipefail

PROTOC_GEN_GO=v1.36.12     # google.golang.org/protobuf, same as go.mod
PROTOC_GEN_GO_GRPC=v1.6.2  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

cd "$(dirname "$0")"
bin=${MIGRATE_CACHE:-/var/cache/migrate}/bin/protoc-plugins
mkdir -p "$bin"
want="$PROTOC_GEN_GO $PROTOC_GEN_GO_GRPC"
if [ "$(cat "$bin/versions" 2>/dev/null)" != "$want" ]; then
	GOBIN=$bin GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
	GOBIN=$bin GOFLAGS=-mod=mod go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
	echo "$want" >"$bin/versions"
fi

protos=(migrate/v1/types.proto migrate/v1/control.proto migrate/v1/peer.proto migrate/v1/snapshot.proto shim/v1/shim.proto transfer/v1/transfer.proto)
PATH=$bin:$PATH protoc -I . -I /usr/include \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	"${protos[@]}"
