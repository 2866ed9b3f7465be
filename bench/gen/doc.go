// Package gen generates realistic, deterministic OTLP trace traffic for the
// demo, the end-to-end tests and the benchmarks, and remembers what it
// generated (Truth) so a test can check the archive against it.
//
// Each message value is exactly what the OpenTelemetry Collector's
// kafkaexporter writes: a serialized ExportTraceServiceRequest (otlp_proto)
// or its OTLP/JSON form (otlp_json), built with pdata so the bytes are the
// Collector's own. The traffic is shaped to be hard on a tail sampler in the
// ways real traffic is: a message mixes spans of many traces, grouped by
// resource and scope; the spans of one trace are spread over several
// messages (and so partitions), in random order, children often before
// their root.
//
// Deliver shapes the same traces in time instead, as SDKs export them on
// their own timers and a gateway Collector batches them (see Delivery);
// ProduceDelivery writes that to Kafka in real time.
//
// Everything except timestamps is a pure function of Config.Seed: the same
// seed gives the same trace IDs, trees, attributes and Truth, and with a
// fixed Config.Start the same bytes. Generate runs on the caller's
// goroutine and starts none; Produce hands records to the caller's kgo
// client and waits for their acknowledgements.
package gen
