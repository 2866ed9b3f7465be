// Package otlpwire reads OTLP trace protobufs at the wire level, without
// building object graphs.
//
// The hot path of tailsift touches every span of every Kafka message but fully
// decodes only the spans it keeps. This package provides the pieces for both:
// Scan walks a TracesData / ExportTraceServiceRequest message and yields each
// span's encoded bytes with the handful of fields routing and sampling need;
// DecodeSpan and the attribute helpers read the rest of a span when (and only
// when) something asks.
//
// Field numbers are those of opentelemetry-proto v1.x,
// opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto; each
// decoder quotes the message it reads. Unknown fields are skipped, as protobuf
// requires, so newer producers keep working.
package otlpwire
