package archive

// Row is one span as archived. The struct is the schema: parquet-go derives
// the Parquet schema from its tags, and readers (FindTrace, compaction,
// tests) read files into Rows. The Writer does not build Rows: it writes
// each column of this schema straight from decoded spans (columns.go),
// which must follow every change made here. Rules, so that DuckDB, Spark
// and Trino read every file without options:
//   - ids are lowercase hex strings (what users paste from UIs and logs);
//   - times are TIMESTAMP(MICROS, UTC) with the exact int64 nanoseconds
//     beside them — no TIMESTAMP(NANOS), which Spark refuses and DuckDB
//     truncates when UTC-adjusted;
//   - no unsigned integers;
//   - every column is zstd-compressed (writer option);
//   - random ids (span_id, link ids) are DELTA_BYTE_ARRAY: their lengths
//     shrink to a few bits and zstd sees only hex digits (8.6 bytes per
//     span instead of 16 as PLAIN, whose 4-byte length before every id
//     breaks zstd's matches). trace_id and parent_span_id stay PLAIN: rows
//     are sorted by trace, so zstd already finds a repeated trace ID whole,
//     and delta made both larger (2.2 to 2.7 and 5.9 to 6.3 bytes per span);
//   - low-cardinality strings, and the keys and values of the attribute
//     maps, which repeat from span to span, are dictionary-encoded (span
//     attributes 7.7 to 3.5 bytes per span); a column whose values do not
//     repeat (URLs with IDs in them) falls back to PLAIN once its
//     dictionary reaches 1 MiB (writer option).
//
// bench/archive measures each column's bytes per span on a sampled
// million-span archive; SCHEMA.md has the numbers.
//
// Trace-level columns repeat on every row of a trace so that most questions
// ("p99 of checkout traces with errors") need no self-join.
type Row struct {
	TraceID      string `parquet:"trace_id"`
	SpanID       string `parquet:"span_id,delta"`
	ParentSpanID string `parquet:"parent_span_id"` // "" for a root span
	TraceState   string `parquet:"trace_state"`
	ServiceName  string `parquet:"service_name,dict"`
	Name         string `parquet:"name,dict"`
	Kind         string `parquet:"kind,dict"` // SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER, UNSPECIFIED

	StartTime         int64 `parquet:"start_time,timestamp(microsecond:utc)"`
	StartTimeUnixNano int64 `parquet:"start_time_unix_nano"`
	EndTimeUnixNano   int64 `parquet:"end_time_unix_nano"`
	DurationNs        int64 `parquet:"duration_ns,delta"`

	StatusCode    string `parquet:"status_code,dict"` // UNSET, OK, ERROR
	StatusMessage string `parquet:"status_message,dict"`
	ScopeName     string `parquet:"scope_name,dict"`
	ScopeVersion  string `parquet:"scope_version,dict"`

	// Promoted attributes (OpenTelemetry semantic conventions), NULL when
	// absent. They are not repeated in Attributes.
	HTTPRequestMethod      *string `parquet:"http_request_method,optional,dict"`
	HTTPRoute              *string `parquet:"http_route,optional,dict"`
	HTTPResponseStatusCode *int64  `parquet:"http_response_status_code,optional"`
	URLPath                *string `parquet:"url_path,optional,dict"`
	DBSystem               *string `parquet:"db_system,optional,dict"`
	RPCService             *string `parquet:"rpc_service,optional,dict"`
	RPCMethod              *string `parquet:"rpc_method,optional,dict"`
	K8sNamespaceName       *string `parquet:"k8s_namespace_name,optional,dict"`
	DeploymentEnvironment  *string `parquet:"deployment_environment,optional,dict"`

	Attributes         map[string]string `parquet:"attributes" parquet-key:",dict" parquet-value:",dict"`
	ResourceAttributes map[string]string `parquet:"resource_attributes" parquet-key:",dict" parquet-value:",dict"`
	Events             []Event           `parquet:"events,list"`
	Links              []Link            `parquet:"links,list"`

	// Trace-level columns, the same on every row of a trace.
	TraceRootService string  `parquet:"trace_root_service,dict"`
	TraceRootName    string  `parquet:"trace_root_name,dict"`
	TraceDurationNs  int64   `parquet:"trace_duration_ns"`
	TraceSpanCount   int64   `parquet:"trace_span_count"`
	TraceHasError    bool    `parquet:"trace_has_error"`
	SampleRate       float64 `parquet:"sample_rate"`
	KeepReason       string  `parquet:"keep_reason,dict"`
	DecidedAt        int64   `parquet:"decided_at,timestamp(microsecond:utc)"`
	// Late is true for spans that arrived after their trace was decided and
	// followed the decision.
	Late bool `parquet:"late"`
}

// Event is a span event (exceptions, logs attached to the span).
type Event struct {
	TimeUnixNano int64             `parquet:"time_unix_nano"`
	Name         string            `parquet:"name"`
	Attributes   map[string]string `parquet:"attributes" parquet-key:",dict"`
}

// Link is a span link to another span, possibly of another trace.
type Link struct {
	TraceID    string            `parquet:"trace_id,delta"`
	SpanID     string            `parquet:"span_id,delta"`
	TraceState string            `parquet:"trace_state"`
	Attributes map[string]string `parquet:"attributes" parquet-key:",dict"`
}

// Promoted string columns: the slots of spanRow.promoted, in schema order.
const (
	promHTTPRequestMethod = iota
	promHTTPRoute
	promURLPath
	promDBSystem
	promRPCService
	promRPCMethod
	promK8sNamespaceName
	promDeploymentEnvironment
	numPromoted
)

// promotedKeys lists the attribute keys each promoted string column stores,
// the current semantic-convention name first, then older ones. Resource
// attributes named here are promoted too (k8s.namespace.name usually is
// one).
var promotedKeys = [numPromoted][]string{
	promHTTPRequestMethod:     {"http.request.method", "http.method"},
	promHTTPRoute:             {"http.route"},
	promURLPath:               {"url.path"},
	promDBSystem:              {"db.system", "db.system.name"},
	promRPCService:            {"rpc.service"},
	promRPCMethod:             {"rpc.method"},
	promK8sNamespaceName:      {"k8s.namespace.name"},
	promDeploymentEnvironment: {"deployment.environment.name", "deployment.environment"},
}

// httpStatusKeys are the span attributes stored in
// http_response_status_code when their value is an integer.
var httpStatusKeys = []string{"http.response.status_code", "http.status_code"}

// promotedSlot maps an attribute key to its promoted string column.
var promotedSlot = func() map[string]uint8 {
	m := map[string]uint8{}
	for slot, keys := range promotedKeys {
		for _, k := range keys {
			m[k] = uint8(slot)
		}
	}
	return m
}()

func isHTTPStatusKey(key []byte) bool {
	return string(key) == httpStatusKeys[0] || string(key) == httpStatusKeys[1]
}

// promoted returns the promoted string columns of r, by slot.
func (r *Row) promoted() [numPromoted]*string {
	return [numPromoted]*string{
		promHTTPRequestMethod:     r.HTTPRequestMethod,
		promHTTPRoute:             r.HTTPRoute,
		promURLPath:               r.URLPath,
		promDBSystem:              r.DBSystem,
		promRPCService:            r.RPCService,
		promRPCMethod:             r.RPCMethod,
		promK8sNamespaceName:      r.K8sNamespaceName,
		promDeploymentEnvironment: r.DeploymentEnvironment,
	}
}

var kindNames = [...]string{"UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"}

var statusNames = [...]string{"UNSET", "OK", "ERROR"}
