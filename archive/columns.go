package archive

import (
	"fmt"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// rowSchema is the archive's Parquet schema, derived from Row's tags.
var rowSchema = parquet.SchemaOf(new(Row))

// The leaf columns of rowSchema, in schema order (checked by init).
const (
	colTraceID = iota
	colSpanID
	colParentSpanID
	colTraceState
	colServiceName
	colName
	colKind
	colStartTime
	colStartTimeUnixNano
	colEndTimeUnixNano
	colDurationNs
	colStatusCode
	colStatusMessage
	colScopeName
	colScopeVersion
	colHTTPRequestMethod
	colHTTPRoute
	colHTTPResponseStatusCode
	colURLPath
	colDBSystem
	colRPCService
	colRPCMethod
	colK8sNamespaceName
	colDeploymentEnvironment
	colAttrKey
	colAttrValue
	colResourceKey
	colResourceValue
	colEventTime
	colEventName
	colEventAttrKey
	colEventAttrValue
	colLinkTraceID
	colLinkSpanID
	colLinkTraceState
	colLinkAttrKey
	colLinkAttrValue
	colTraceRootService
	colTraceRootName
	colTraceDurationNs
	colTraceSpanCount
	colTraceHasError
	colSampleRate
	colKeepReason
	colDecidedAt
	colLate
	numColumns
)

var columnPaths = [numColumns]string{
	colTraceID:                "trace_id",
	colSpanID:                 "span_id",
	colParentSpanID:           "parent_span_id",
	colTraceState:             "trace_state",
	colServiceName:            "service_name",
	colName:                   "name",
	colKind:                   "kind",
	colStartTime:              "start_time",
	colStartTimeUnixNano:      "start_time_unix_nano",
	colEndTimeUnixNano:        "end_time_unix_nano",
	colDurationNs:             "duration_ns",
	colStatusCode:             "status_code",
	colStatusMessage:          "status_message",
	colScopeName:              "scope_name",
	colScopeVersion:           "scope_version",
	colHTTPRequestMethod:      "http_request_method",
	colHTTPRoute:              "http_route",
	colHTTPResponseStatusCode: "http_response_status_code",
	colURLPath:                "url_path",
	colDBSystem:               "db_system",
	colRPCService:             "rpc_service",
	colRPCMethod:              "rpc_method",
	colK8sNamespaceName:       "k8s_namespace_name",
	colDeploymentEnvironment:  "deployment_environment",
	colAttrKey:                "attributes.key_value.key",
	colAttrValue:              "attributes.key_value.value",
	colResourceKey:            "resource_attributes.key_value.key",
	colResourceValue:          "resource_attributes.key_value.value",
	colEventTime:              "events.list.element.time_unix_nano",
	colEventName:              "events.list.element.name",
	colEventAttrKey:           "events.list.element.attributes.key_value.key",
	colEventAttrValue:         "events.list.element.attributes.key_value.value",
	colLinkTraceID:            "links.list.element.trace_id",
	colLinkSpanID:             "links.list.element.span_id",
	colLinkTraceState:         "links.list.element.trace_state",
	colLinkAttrKey:            "links.list.element.attributes.key_value.key",
	colLinkAttrValue:          "links.list.element.attributes.key_value.value",
	colTraceRootService:       "trace_root_service",
	colTraceRootName:          "trace_root_name",
	colTraceDurationNs:        "trace_duration_ns",
	colTraceSpanCount:         "trace_span_count",
	colTraceHasError:          "trace_has_error",
	colSampleRate:             "sample_rate",
	colKeepReason:             "keep_reason",
	colDecidedAt:              "decided_at",
	colLate:                   "late",
}

// promotedColumns are the columns of spanRow.promoted, by slot.
var promotedColumns = [numPromoted]int{
	promHTTPRequestMethod:     colHTTPRequestMethod,
	promHTTPRoute:             colHTTPRoute,
	promURLPath:               colURLPath,
	promDBSystem:              colDBSystem,
	promRPCService:            colRPCService,
	promRPCMethod:             colRPCMethod,
	promK8sNamespaceName:      colK8sNamespaceName,
	promDeploymentEnvironment: colDeploymentEnvironment,
}

// nulls holds each column's null at the top level: an absent optional
// value, or an empty map or list.
var nulls [numColumns]parquet.Value

func init() {
	leaves := rowSchema.Columns()
	if len(leaves) != numColumns {
		panic(fmt.Sprintf("BUG: Row has %d columns, the row writer %d", len(leaves), numColumns))
	}
	for i, leaf := range leaves {
		if p := strings.Join(leaf, "."); p != columnPaths[i] {
			panic(fmt.Sprintf("BUG: column %d of Row is %s, the row writer writes %s there", i, p, columnPaths[i]))
		}
		nulls[i] = parquet.NullValue().Level(0, 0, i)
	}
}

// Levels, from rowSchema: top-level columns are required (0, 0) or
// optional (0, 0 or 1); a map's entries or a list's elements are repeated
// once (up to 1, 1), and the maps of events and links twice (up to 2, 2).
// Values of required top-level columns are left as made: their levels are
// zero, and the column buffers they go to read nothing else but the value
// (setting levels and column index on each was a tenth of the writer's
// time).

func (b *rowBatch) value(s ref) parquet.Value { return parquet.ByteArrayValue(b.str(s)) }

// appendValues appends row i's values to each column of cols.
func (b *rowBatch) appendValues(cols *[numColumns][]parquet.Value, i int32) {
	r := &b.spans[i]
	sc, t := r.scope, &b.traces[r.trace]
	cols[colTraceID] = append(cols[colTraceID], b.value(r.traceID))
	cols[colSpanID] = append(cols[colSpanID], b.value(r.spanID))
	cols[colParentSpanID] = append(cols[colParentSpanID], b.value(r.parentID))
	cols[colTraceState] = append(cols[colTraceState], b.value(r.traceState))
	cols[colServiceName] = append(cols[colServiceName], parquet.ByteArrayValue(sc.service))
	cols[colName] = append(cols[colName], b.value(r.name))
	cols[colKind] = append(cols[colKind], b.value(r.kind))
	cols[colStartTime] = append(cols[colStartTime], parquet.Int64Value(r.startMicros))
	cols[colStartTimeUnixNano] = append(cols[colStartTimeUnixNano], parquet.Int64Value(r.start))
	cols[colEndTimeUnixNano] = append(cols[colEndTimeUnixNano], parquet.Int64Value(r.end))
	cols[colDurationNs] = append(cols[colDurationNs], parquet.Int64Value(r.duration))
	cols[colStatusCode] = append(cols[colStatusCode], b.value(r.status))
	cols[colStatusMessage] = append(cols[colStatusMessage], b.value(r.statusMessage))
	cols[colScopeName] = append(cols[colScopeName], parquet.ByteArrayValue(sc.scopeName))
	cols[colScopeVersion] = append(cols[colScopeVersion], parquet.ByteArrayValue(sc.scopeVersion))
	for slot, c := range promotedColumns {
		if r.has&(1<<slot) == 0 {
			cols[c] = append(cols[c], nulls[c])
		} else {
			cols[c] = append(cols[c], b.value(r.promoted[slot]).Level(0, 1, c))
		}
	}
	if c := colHTTPResponseStatusCode; r.has&hasHTTPStatus == 0 {
		cols[c] = append(cols[c], nulls[c])
	} else {
		cols[c] = append(cols[c], parquet.Int64Value(r.httpStatus).Level(0, 1, c))
	}
	b.appendMap(cols, colAttrKey, r.attrs, 0, 1)
	if sc.resValues == nil {
		sc.resValues = sc.resourceValues()
	}
	cols[colResourceKey] = append(cols[colResourceKey], sc.resValues[0]...)
	cols[colResourceValue] = append(cols[colResourceValue], sc.resValues[1]...)
	b.appendEvents(cols, r.events)
	b.appendLinks(cols, r.links)
	cols[colTraceRootService] = append(cols[colTraceRootService], b.value(t.rootService))
	cols[colTraceRootName] = append(cols[colTraceRootName], b.value(t.rootName))
	cols[colTraceDurationNs] = append(cols[colTraceDurationNs], parquet.Int64Value(t.durationNs))
	cols[colTraceSpanCount] = append(cols[colTraceSpanCount], parquet.Int64Value(t.spanCount))
	cols[colTraceHasError] = append(cols[colTraceHasError], parquet.BooleanValue(t.hasError))
	cols[colSampleRate] = append(cols[colSampleRate], parquet.DoubleValue(t.sampleRate))
	cols[colKeepReason] = append(cols[colKeepReason], b.value(t.reason))
	cols[colDecidedAt] = append(cols[colDecidedAt], parquet.Int64Value(t.decidedAt))
	cols[colLate] = append(cols[colLate], parquet.BooleanValue(t.late))
}

// appendMap appends the keys and values of one map to columns kc and
// kc+1: its first entry at repetition level rep, the others at the map's
// own level, which is also its entries' definition level; an empty map is
// one null, defined up to the level above.
func (b *rowBatch) appendMap(cols *[numColumns][]parquet.Value, kc int, s span32, rep, level int) {
	if s.lo == s.hi {
		cols[kc] = append(cols[kc], parquet.NullValue().Level(rep, level-1, kc))
		cols[kc+1] = append(cols[kc+1], parquet.NullValue().Level(rep, level-1, kc+1))
		return
	}
	keys, vals := cols[kc], cols[kc+1]
	for _, a := range b.kvs[s.lo:s.hi] {
		keys = append(keys, b.value(a.key).Level(rep, level, kc))
		vals = append(vals, b.value(a.val).Level(rep, level, kc+1))
		rep = level
	}
	cols[kc], cols[kc+1] = keys, vals
}

func (b *rowBatch) appendEvents(cols *[numColumns][]parquet.Value, s span32) {
	if s.lo == s.hi {
		for c := colEventTime; c <= colEventAttrValue; c++ {
			cols[c] = append(cols[c], nulls[c])
		}
		return
	}
	for j, e := range b.events[s.lo:s.hi] {
		rep := min(j, 1)
		cols[colEventTime] = append(cols[colEventTime], parquet.Int64Value(e.time).Level(rep, 1, colEventTime))
		cols[colEventName] = append(cols[colEventName], b.value(e.name).Level(rep, 1, colEventName))
		b.appendMap(cols, colEventAttrKey, e.attrs, rep, 2)
	}
}

func (b *rowBatch) appendLinks(cols *[numColumns][]parquet.Value, s span32) {
	if s.lo == s.hi {
		for c := colLinkTraceID; c <= colLinkAttrValue; c++ {
			cols[c] = append(cols[c], nulls[c])
		}
		return
	}
	for j, l := range b.links[s.lo:s.hi] {
		rep := min(j, 1)
		cols[colLinkTraceID] = append(cols[colLinkTraceID], b.value(l.traceID).Level(rep, 1, colLinkTraceID))
		cols[colLinkSpanID] = append(cols[colLinkSpanID], b.value(l.spanID).Level(rep, 1, colLinkSpanID))
		cols[colLinkTraceState] = append(cols[colLinkTraceState], b.value(l.traceState).Level(rep, 1, colLinkTraceState))
		b.appendMap(cols, colLinkAttrKey, l.attrs, rep, 2)
	}
}

// resourceValues makes the values of the resource_attributes columns
// (keys, values), the same for every span of the scope.
func (sc *scopeRow) resourceValues() *[2][]parquet.Value {
	if len(sc.res) == 0 {
		return &[2][]parquet.Value{{nulls[colResourceKey]}, {nulls[colResourceValue]}}
	}
	var v [2][]parquet.Value
	for j, a := range sc.res {
		v[0] = append(v[0], parquet.ByteArrayValue(a.key).Level(min(j, 1), 1, colResourceKey))
		v[1] = append(v[1], parquet.ByteArrayValue(a.val).Level(min(j, 1), 1, colResourceValue))
	}
	return &v
}
