package archive

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the archive's Prometheus metrics.
type Metrics struct {
	spans     prometheus.Counter
	files     prometheus.Counter
	bytes     prometheus.Counter
	openFiles prometheus.Gauge
	lastFile  prometheus.Gauge
	errors    *prometheus.CounterVec
	// duplicates are copies of a span written once (see copies).
	duplicates prometheus.Counter

	uploads        prometheus.Counter
	uploadedBytes  prometheus.Counter
	uploadFailures prometheus.Counter
	spoolFiles     prometheus.Gauge
	spoolBytes     prometheus.Gauge
	spoolMaxBytes  prometheus.Gauge
	spoolUsage     prometheus.Gauge
	spoolFull      prometheus.Gauge
	spoolPaused    prometheus.Counter

	invalidUTF8 prometheus.Counter
}

// NewMetrics registers the archive metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		spans: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_spans_written_total",
			Help: "Spans written to closed, durable archive files."}),
		files: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_files_written_total",
			Help: "Parquet files closed durably."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_bytes_written_total",
			Help: "Bytes of Parquet files closed durably."}),
		openFiles: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_open_files",
			Help: "Parquet files being written."}),
		lastFile: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_last_file_timestamp_seconds",
			Help: "When the last archive file was closed durably."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tailsift_archive_errors_total",
			Help: "Archive errors by stage (decode, write)."}, []string{"stage"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_duplicate_spans_dropped_total",
			Help: "Copies of a kept span taken lately (a Kafka record read again after a rebalance or a crash) not written again."}),
		uploads: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_uploads_total",
			Help: "Files uploaded to object storage."}),
		uploadedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_uploaded_bytes_total",
			Help: "Bytes uploaded to object storage."}),
		uploadFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_upload_failures_total",
			Help: "Failed upload attempts; the file stays in the spool and is retried."}),
		spoolFiles: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_spool_files",
			Help: "Finished files waiting in the local spool for upload."}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_spool_bytes",
			Help: "Bytes of finished files waiting in the local spool for upload."}),
		spoolMaxBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_spool_max_bytes",
			Help: "The spool's cap (archive.spool_max_bytes)."}),
		spoolUsage: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_spool_usage_ratio",
			Help: "Spool bytes over the cap: warns from 0.8; at 1 the node stops taking decided traces (Kafka holds the data)."}),
		spoolFull: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tailsift_archive_spool_full",
			Help: "1 while the spool is at its cap and the archive takes no decided traces, else 0."}),
		spoolPaused: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_spool_full_total",
			Help: "Times the spool reached its cap and the archive paused."}),
		invalidUTF8: prometheus.NewCounter(prometheus.CounterOpts{Name: "tailsift_archive_invalid_utf8_total",
			Help: "Strings (names, attribute keys and values, messages) archived with their invalid UTF-8 bytes replaced by U+FFFD, so that every Parquet reader accepts the file."}),
	}
	for _, s := range []string{"decode", "write"} {
		m.errors.WithLabelValues(s)
	}
	if reg != nil {
		reg.MustRegister(m.spans, m.files, m.bytes, m.openFiles, m.lastFile, m.errors, m.duplicates,
			m.uploads, m.uploadedBytes, m.uploadFailures, m.spoolFiles,
			m.spoolBytes, m.spoolMaxBytes, m.spoolUsage, m.spoolFull, m.spoolPaused,
			m.invalidUTF8)
	}
	return m
}
