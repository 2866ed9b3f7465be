// Package router takes OTLP spans from Kafka and hands each to the shard that
// owns its trace, on this node or (through the cluster transport) another.
//
// The hot path works on bytes: Consumer polls records with franz-go, the
// scanner (internal/otlpwire) finds every span's trace ID, times, status and
// root flag without decoding the rest, and the spans go on as subslices of the
// record. Nothing is copied per span.
//
// Offsets: every record gets a sampler.Pending counting its spans still in
// flight. A span is settled when its trace is dropped, or kept and durable in
// the archive. The offset tracker commits, per partition, only up to the
// first record with an unsettled span, so a crash re-reads from Kafka every
// span that was not safe; nothing is lost and duplicates are bounded by what
// was in flight. A partition that leaves in a rebalance or a lost session
// and comes back before anyone commits past what was read here resumes
// where it was: the records read before are still in flight here, and are
// not read a second time.
//
// Two guards keep bad input from costing spans. A wall of records that do
// not scan (wall.go: the topic is not in the configured encoding) stops its
// partition, uncommitted, until the setting is fixed; a record that crashed
// the node twice (guard.go, with a state file in the spool directory) is
// skipped instead of crashing it forever.
//
// Goroutines: Consumer.Run is the poll loop and the only goroutine that
// touches the tracker, apart from franz-go's rebalance callbacks, which take
// the tracker's mutex.
package router
