// Package sampler buffers whole traces and decides, once per trace, whether to
// keep it.
//
// Spans arrive as sampler.Item values (the encoded span plus its trace ID) from
// the router. Sampler.Add hashes the trace ID to one of N shards; each shard is
// one goroutine that owns its trace table, completion queues and decision
// cache, so nothing on the hot path takes a lock. A trace is complete when its
// root span has arrived and no span has followed for the quiet period, or
// when it has waited the maximum time, or reached the span limit, or when the
// shard must free memory (oldest first). Completed traces go through the
// Policy (usually a Chain), and kept ones leave on the output channel as
// *Kept for the archive. Dropped traces settle their spans at once.
//
// Spans that arrive after their trace was decided follow the decision: the
// shard remembers recent decisions (a bounded FIFO of trace IDs), archives
// late spans of kept traces with the same sample rate, and settles late spans
// of dropped traces. A trace dropped at the span limit is the exception: its
// later spans are buffered and decided again, a piece at a time, since they
// may hold what keeps it (overlimit.go). Kept traces count against the memory
// bound until the archive has written them (Kept.Hold).
//
// Goroutines: Run starts one per shard and returns when all have stopped,
// after closing the output channel. Channels between the router and the
// shards, and from the shards to the archive, are bounded: a slow archive
// slows the shards, which slows Add, which slows the Kafka poll loop.
package sampler
