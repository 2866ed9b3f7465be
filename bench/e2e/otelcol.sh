#!/usr/bin/env bash
# otelcol.sh builds the OpenTelemetry Collector that bench/e2e drains the same
# Kafka backlog with: kafkareceiver -> tail_sampling -> nop exporter, nothing
# else, so the side-by-side numbers compare the two tail samplers and not a
# distribution's extra components.
#
# Everything (the builder, the generated sources, the binary) goes into a
# directory outside the repository, by default
# ${XDG_CACHE_HOME:-$HOME/.cache}/tailsift-bench/otelcol-v0.158.0 (OTELCOL_DIR
# overrides it), so the repository never carries the Collector's module graph
# and the binary survives between runs. A second run with the binary present
# only prints its path. The last line of stdout is the
# binary's path; progress goes to stderr.
#
# Versions are pinned: v0.158.0 (core v1.64.0) is the newest release whose
# whole module graph resolves through the module proxy on these machines.
set -euo pipefail

OTELCOL_VERSION=v0.158.0 # collector builder, contrib and unstable core modules
CORE_VERSION=v1.64.0     # stable core modules (confmap providers)
DIR=${OTELCOL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tailsift-bench/otelcol-$OTELCOL_VERSION}
BIN=$DIR/dist/otelcol-tailsift-bench

if [[ -x $BIN && -f $DIR/built-$OTELCOL_VERSION ]]; then
	echo "$BIN"
	exit 0
fi

repo=$(cd "$(dirname "$0")/../.." && pwd -P)
mkdir -p "$DIR"
case $(cd "$DIR" && pwd -P)/ in
"$repo"/*)
	echo "otelcol.sh: $DIR is inside the repository; set OTELCOL_DIR elsewhere" >&2
	exit 1
	;;
esac

contrib=github.com/open-telemetry/opentelemetry-collector-contrib
modules=(
	"$contrib/receiver/kafkareceiver@$OTELCOL_VERSION"
	"$contrib/processor/tailsamplingprocessor@$OTELCOL_VERSION"
	"go.opentelemetry.io/collector/exporter/nopexporter@$OTELCOL_VERSION"
	"go.opentelemetry.io/collector/confmap/provider/envprovider@$CORE_VERSION"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider@$CORE_VERSION"
)

# Fail early, with the module's name, if the proxy does not serve a pinned
# version, instead of deep inside the builder's `go mod tidy`.
echo "otelcol.sh: checking modules resolve through $(go env GOPROXY)" >&2
for m in "${modules[@]}"; do
	if ! (cd "$DIR" && GOFLAGS=-mod=mod go list -m -f '{{.Path}} {{.Version}}' "$m" >&2); then
		echo "otelcol.sh: $m does not resolve through the module proxy" >&2
		exit 1
	fi
done

echo "otelcol.sh: installing the collector builder $OTELCOL_VERSION" >&2
GOBIN=$DIR/bin go install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"

cat >"$DIR/manifest.yaml" <<EOF
dist:
  name: otelcol-tailsift-bench
  description: OpenTelemetry Collector for tailsift's side-by-side benchmark
  module: example.com/otelcol-tailsift-bench
  output_path: $DIR/dist
receivers:
  - gomod: $contrib/receiver/kafkareceiver $OTELCOL_VERSION
processors:
  - gomod: $contrib/processor/tailsamplingprocessor $OTELCOL_VERSION
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/nopexporter $OTELCOL_VERSION
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $CORE_VERSION
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $CORE_VERSION
EOF

echo "otelcol.sh: building the collector (several minutes on 2 cores)" >&2
"$DIR/bin/builder" --config "$DIR/manifest.yaml" >&2
touch "$DIR/built-$OTELCOL_VERSION"
echo "$BIN"
