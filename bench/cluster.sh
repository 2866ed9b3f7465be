#!/usr/bin/env bash
# The topology of docker-compose.yml as plain processes on 127.0.0.1: an
# embedded Kafka broker (`tailsift broker`), an S3 server (versitygw, if
# installed; otherwise a local directory), three `tailsift run` nodes joined
# by gossip under a random cluster key, and one bounded `tailsift gen`. It waits until the nodes have
# decided and archived everything, prints what each node received, forwarded
# and kept (from /metrics) and what the archive holds (bench/archivestat),
# then stops everything it started.
#
#   bash bench/cluster.sh                 # 50,000 traces
#   TRACES=200000 bash bench/cluster.sh
#   KEEP=1 bash bench/cluster.sh          # keep the work directory (logs, archive)
#
# Environment: TRACES (default 50000), SEED (1), DRAIN_TIMEOUT seconds (300),
# VERSITYGW (path of the binary; default: looked up in PATH and ~/go/bin).
set -euo pipefail

TRACES=${TRACES:-50000}
SEED=${SEED:-1}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tailsift-cluster.XXXXXX")
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${KEEP:-0} == 1 ]]; then
		echo "work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*"; }
die() { log "FAILED: $*"; exit 1; }

freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# waitport PORT SECONDS: until something accepts TCP connections on PORT.
waitport() {
	local deadline=$((SECONDS + $2))
	until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
		((SECONDS < deadline)) || die "nothing listening on 127.0.0.1:$1 after $2s"
		sleep 0.2
	done
}

# metric PORT NAME: the sum of every series of NAME on a node's /metrics.
metric() {
	curl -fsS "http://127.0.0.1:$1/metrics" |
		awk -v m="$2" '($1 == m || index($1, m "{") == 1) { s += $NF } END { printf "%.0f\n", s }'
}

log "building tailsift and archivestat into $work"
go build -o "$work/tailsift" ./cmd/tailsift
go build -o "$work/archivestat" ./bench/archivestat

kport=$(freeport)
"$work/tailsift" broker --addr "127.0.0.1:$kport" --partitions 8 >"$work/broker.log" 2>&1 &
pids+=($!)
waitport "$kport" 30
log "Kafka broker (embedded) on 127.0.0.1:$kport, topic otlp_spans with 8 partitions"

versitygw=${VERSITYGW:-$(command -v versitygw || true)}
[[ -z $versitygw && -x $HOME/go/bin/versitygw ]] && versitygw=$HOME/go/bin/versitygw
node_env=()
if [[ -n $versitygw ]]; then
	s3port=$(freeport)
	mkdir -p "$work/s3root/traces"
	ROOT_ACCESS_KEY=tailsift ROOT_SECRET_KEY=tailsift-secret "$versitygw" --port "127.0.0.1:$s3port" posix "$work/s3root" >"$work/versitygw.log" 2>&1 &
	pids+=($!)
	waitport "$s3port" 30
	archive=s3://traces/tailsift
	node_env=(TAILSIFT_ARCHIVE_S3_ENDPOINT="http://127.0.0.1:$s3port" TAILSIFT_ARCHIVE_S3_REGION=us-east-1
		TAILSIFT_ARCHIVE_S3_PATH_STYLE=true AWS_ACCESS_KEY_ID=tailsift AWS_SECRET_ACCESS_KEY=tailsift-secret)
	stat_args=(-archive "$archive" -s3-endpoint "http://127.0.0.1:$s3port" -s3-path-style)
	log "archive $archive on versitygw at 127.0.0.1:$s3port"
else
	mkdir -p "$work/archive"
	archive=file://$work/archive
	stat_args=(-archive "$archive")
	log "archive $archive (versitygw not installed)"
fi

# The cluster key the nodes share: 24 random bytes, base64 (32 bytes).
(umask 077 && head -c 24 /dev/urandom | base64 >"$work/cluster.key")

declare -a gossip forward http
for i in 1 2 3; do
	gossip[i]=$(freeport) forward[i]=$(freeport) http[i]=$(freeport)
	join=()
	((i > 1)) && join=(--join "127.0.0.1:${gossip[1]}")
	env "${node_env[@]}" TAILSIFT_KAFKA_BROKERS="127.0.0.1:$kport" TAILSIFT_ARCHIVE_URL="$archive" \
		TAILSIFT_ARCHIVE_SPOOL_DIR="$work/spool-$i" \
		"$work/tailsift" run --node-id "tailsift-$i" --group tailsift \
		--gossip-addr "127.0.0.1:${gossip[i]}" --forward-addr "127.0.0.1:${forward[i]}" \
		--cluster-secret-key-file "$work/cluster.key" \
		--http-addr "127.0.0.1:${http[i]}" --archive-roll-age 2s "${join[@]}" >"$work/node-$i.log" 2>&1 &
	pids+=($!)
	waitport "${http[i]}" 30
	log "tailsift-$i: gossip 127.0.0.1:${gossip[i]}, forward 127.0.0.1:${forward[i]}, http 127.0.0.1:${http[i]}"
done

deadline=$((SECONDS + 30))
for i in 1 2 3; do
	until grep 'cluster changed' "$work/node-$i.log" | tail -1 | grep -q 'tailsift-1 tailsift-2 tailsift-3'; do
		((SECONDS < deadline)) || die "tailsift-$i does not see all three nodes (log: $work/node-$i.log)"
		sleep 0.2
	done
done
log "all three nodes see members [tailsift-1 tailsift-2 tailsift-3]"

# The Kafka group settles after gossip: produce once every node reads
# partitions, so the run measures routing rather than a rebalance's re-reads.
deadline=$((SECONDS + 60))
for i in 1 2 3; do
	until grep 'partitions assigned' "$work/node-$i.log" | grep -qv 'partitions=\[\]'; do
		((SECONDS < deadline)) || die "tailsift-$i was given no Kafka partitions (log: $work/node-$i.log)"
		sleep 0.2
	done
done
log "the consumer group gave every node partitions"

start=$SECONDS
"$work/tailsift" gen --brokers "127.0.0.1:$kport" --traces "$TRACES" --seed "$SEED" >"$work/gen.log"
head -1 "$work/gen.log"
read -r messages errors_produced < <(awk 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "messages") m = $(i-1); if ($i == "with") e = substr($(i-1), 2) } print m, e }' "$work/gen.log")

# Drained: every record read, nothing unsettled, buffered, open or spooled.
deadline=$((SECONDS + DRAIN_TIMEOUT))
while :; do
	records=0 busy=0
	for i in 1 2 3; do
		records=$((records + $(metric "${http[i]}" tailsift_router_records_total)))
		for m in tailsift_router_unsettled_records tailsift_sampler_buffered_traces tailsift_archive_open_files tailsift_archive_spool_files; do
			busy=$((busy + $(metric "${http[i]}" $m)))
		done
	done
	((records >= messages && busy == 0)) && break
	if ((SECONDS >= deadline)); then
		for i in 1 2 3; do
			curl -fsS "http://127.0.0.1:${http[i]}/metrics" | grep -E '^tailsift_(router_unsettled|sampler_buffered_traces|archive_open_files|archive_spool_files|router_records_total)' | sed "s/^/tailsift-$i /"
		done
		die "not drained after ${DRAIN_TIMEOUT}s: $records of $messages records read, $busy unsettled/buffered/open/spooled"
	fi
	sleep 1
done
log "drained in $((SECONDS - start))s after gen started"

echo
printf '%-11s %12s %12s %12s %12s %12s %12s %10s\n' node "spans kafka" forwarded "from peers" kept dropped "traces kept" files
tk_total=0
for i in 1 2 3; do
	p=${http[i]}
	tk=$(curl -fsS "http://127.0.0.1:$p/metrics" | awk '/^tailsift_sampler_traces_decided_total\{/ && /decision="keep"/ { s += $NF } END { printf "%.0f\n", s }')
	tk_total=$((tk_total + tk))
	printf '%-11s %12s %12s %12s %12s %12s %12s %10s\n' "tailsift-$i" \
		"$(metric "$p" tailsift_router_spans_received_total)" "$(metric "$p" tailsift_router_forwarded_spans_total)" \
		"$(metric "$p" tailsift_router_peer_spans_received_total)" "$(metric "$p" tailsift_sampler_spans_kept_total)" \
		"$(metric "$p" tailsift_sampler_spans_dropped_total)" "$tk" "$(metric "$p" tailsift_archive_files_written_total)"
done
echo "traces kept by the nodes: $tk_total; error traces produced: $errors_produced"
echo
env "${node_env[@]}" "$work/archivestat" "${stat_args[@]}"

log "stopping the nodes with SIGTERM"
for i in 0 1 2; do kill -TERM "${pids[$((${#pids[@]} - 3 + i))]}"; done
for i in 0 1 2; do
	wait "${pids[$((${#pids[@]} - 3 + i))]}" || die "tailsift-$((i + 1)) exited with status $? after SIGTERM"
done
log "done"
