// Package archive writes kept traces as Parquet files, one row per span,
// under Hive-style partitions (dt=YYYY-MM-DD/hour=H/, the hour unpadded so
// that Hive readers type it as an integer), to a local directory or to
// S3-compatible object storage. Archives of earlier versions hold padded
// hours (hour=06); the tools read both, and compaction moves an hour into the
// unpadded form.
//
// The archive is an open data set: DuckDB, Spark and anything else that reads
// Parquet query it directly, so the schema (schema.go, SCHEMA.md) uses only
// types every reader takes without options.
//
// Durability drives the design. A kept trace's Kafka offsets may be committed
// only once its spans are durable, so the Writer settles a trace's spans
// (sampler.Pending) only after the file holding them is closed, synced and
// renamed into place — and, for object storage, after it sits in the local
// spool from which it is uploaded, even across a restart. Until then a crash
// re-reads the spans from Kafka: at least once, never lost.
package archive
