package archive

import (
	"fmt"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// rowSchema is the archive's Parquet schema, derived from Row's tags.
var rowSchema = parquet.SchemaOf(new(Row))

// A columnWriter appends the values of column col for rows, with the
// repetition and definition levels the Row schema gives them.
type columnWriter func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value

// rowColumns writes each leaf column of rowSchema, in schema order.
var rowColumns = bindColumns([]struct {
	path  string
	write columnWriter
}{
	{"trace_id", spanString(func(r *spanRow) ref { return r.traceID })},
	{"span_id", spanString(func(r *spanRow) ref { return r.spanID })},
	{"parent_span_id", spanString(func(r *spanRow) ref { return r.parentID })},
	{"trace_state", spanString(func(r *spanRow) ref { return r.traceState })},
	{"service_name", scopeString(func(s *scopeRow) []byte { return s.service })},
	{"name", spanString(func(r *spanRow) ref { return r.name })},
	{"kind", spanString(func(r *spanRow) ref { return r.kind })},
	{"start_time", spanInt64(func(r *spanRow) int64 { return r.startMicros })},
	{"start_time_unix_nano", spanInt64(func(r *spanRow) int64 { return r.start })},
	{"end_time_unix_nano", spanInt64(func(r *spanRow) int64 { return r.end })},
	{"duration_ns", spanInt64(func(r *spanRow) int64 { return r.duration })},
	{"status_code", spanString(func(r *spanRow) ref { return r.status })},
	{"status_message", spanString(func(r *spanRow) ref { return r.statusMessage })},
	{"scope_name", scopeString(func(s *scopeRow) []byte { return s.scopeName })},
	{"scope_version", scopeString(func(s *scopeRow) []byte { return s.scopeVersion })},
	{"http_request_method", promotedColumn(promHTTPRequestMethod)},
	{"http_route", promotedColumn(promHTTPRoute)},
	{"http_response_status_code", httpStatusColumn},
	{"url_path", promotedColumn(promURLPath)},
	{"db_system", promotedColumn(promDBSystem)},
	{"rpc_service", promotedColumn(promRPCService)},
	{"rpc_method", promotedColumn(promRPCMethod)},
	{"k8s_namespace_name", promotedColumn(promK8sNamespaceName)},
	{"deployment_environment", promotedColumn(promDeploymentEnvironment)},
	{"attributes.key_value.key", attrColumn(true)},
	{"attributes.key_value.value", attrColumn(false)},
	{"resource_attributes.key_value.key", resourceColumn(true)},
	{"resource_attributes.key_value.value", resourceColumn(false)},
	{"events.list.element.time_unix_nano", eventColumn(func(b *rowBatch, e *eventRow) parquet.Value { return parquet.Int64Value(e.time) })},
	{"events.list.element.name", eventColumn(func(b *rowBatch, e *eventRow) parquet.Value { return parquet.ByteArrayValue(b.str(e.name)) })},
	{"events.list.element.attributes.key_value.key", eventAttrColumn(true)},
	{"events.list.element.attributes.key_value.value", eventAttrColumn(false)},
	{"links.list.element.trace_id", linkColumn(func(l *linkRow) ref { return l.traceID })},
	{"links.list.element.span_id", linkColumn(func(l *linkRow) ref { return l.spanID })},
	{"links.list.element.trace_state", linkColumn(func(l *linkRow) ref { return l.traceState })},
	{"links.list.element.attributes.key_value.key", linkAttrColumn(true)},
	{"links.list.element.attributes.key_value.value", linkAttrColumn(false)},
	{"trace_root_service", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.ByteArrayValue(b.str(t.rootService)) })},
	{"trace_root_name", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.ByteArrayValue(b.str(t.rootName)) })},
	{"trace_duration_ns", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.Int64Value(t.durationNs) })},
	{"trace_span_count", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.Int64Value(t.spanCount) })},
	{"trace_has_error", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.BooleanValue(t.hasError) })},
	{"sample_rate", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.DoubleValue(t.sampleRate) })},
	{"keep_reason", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.ByteArrayValue(b.str(t.reason)) })},
	{"decided_at", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.Int64Value(t.decidedAt) })},
	{"late", traceColumn(func(b *rowBatch, t *traceRow) parquet.Value { return parquet.BooleanValue(t.late) })},
})

// bindColumns checks that columns name rowSchema's leaf columns in order,
// and binds each writer to its column index.
func bindColumns(columns []struct {
	path  string
	write columnWriter
}) []func(b *rowBatch, rows []int32, vals []parquet.Value) []parquet.Value {
	leaves := rowSchema.Columns()
	if len(leaves) != len(columns) {
		panic(fmt.Sprintf("BUG: Row has %d columns, the row writer %d", len(leaves), len(columns)))
	}
	out := make([]func(*rowBatch, []int32, []parquet.Value) []parquet.Value, len(columns))
	for i, c := range columns {
		if p := strings.Join(leaves[i], "."); p != c.path {
			panic(fmt.Sprintf("BUG: column %d of Row is %s, the row writer writes %s there", i, p, c.path))
		}
		col, write := i, c.write
		out[i] = func(b *rowBatch, rows []int32, vals []parquet.Value) []parquet.Value {
			return write(b, rows, col, vals)
		}
	}
	return out
}

// Levels, from rowSchema: top-level columns are required (0, 0) or
// optional (0, 0 or 1); a map's entries or a list's elements are repeated
// once (up to 1, 1), and the maps of events and links twice (up to 2, 2).
// Values of required top-level columns are left as made: their levels are
// zero, and the column buffers they go to read nothing else but the value
// (setting levels and column index on each was a tenth of the writer's
// time).

func spanString(get func(*spanRow) ref) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		for _, i := range rows {
			vals = append(vals, parquet.ByteArrayValue(b.str(get(&b.spans[i]))))
		}
		return vals
	}
}

func spanInt64(get func(*spanRow) int64) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		for _, i := range rows {
			vals = append(vals, parquet.Int64Value(get(&b.spans[i])))
		}
		return vals
	}
}

func scopeString(get func(*scopeRow) []byte) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		for _, i := range rows {
			vals = append(vals, parquet.ByteArrayValue(get(b.spans[i].scope)))
		}
		return vals
	}
}

func traceColumn(get func(*rowBatch, *traceRow) parquet.Value) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		for _, i := range rows {
			vals = append(vals, get(b, &b.traces[b.spans[i].trace]))
		}
		return vals
	}
}

func promotedColumn(slot int) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		null := parquet.NullValue().Level(0, 0, col)
		for _, i := range rows {
			r := &b.spans[i]
			if r.has&(1<<slot) == 0 {
				vals = append(vals, null)
			} else {
				vals = append(vals, parquet.ByteArrayValue(b.str(r.promoted[slot])).Level(0, 1, col))
			}
		}
		return vals
	}
}

func httpStatusColumn(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
	null := parquet.NullValue().Level(0, 0, col)
	for _, i := range rows {
		r := &b.spans[i]
		if r.has&hasHTTPStatus == 0 {
			vals = append(vals, null)
		} else {
			vals = append(vals, parquet.Int64Value(r.httpStatus).Level(0, 1, col))
		}
	}
	return vals
}

// appendMap appends the keys (or values) of one map: its first entry at
// repetition level rep, the others at the map's own level, which is also
// its entries' definition level; an empty map is one null, defined up to
// the level above.
func (b *rowBatch) appendMap(vals []parquet.Value, s span32, rep, level, col int, key bool) []parquet.Value {
	if s.lo == s.hi {
		return append(vals, parquet.NullValue().Level(rep, level-1, col))
	}
	for _, a := range b.kvs[s.lo:s.hi] {
		v := a.val
		if key {
			v = a.key
		}
		vals = append(vals, parquet.ByteArrayValue(b.str(v)).Level(rep, level, col))
		rep = level
	}
	return vals
}

func attrColumn(key bool) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		for _, i := range rows {
			vals = b.appendMap(vals, b.spans[i].attrs, 0, 1, col, key)
		}
		return vals
	}
}

// resourceColumn writes the resource attributes, which are the same for
// every span of a scope: each scope's values are made once.
func resourceColumn(key bool) columnWriter {
	k := 0
	if key {
		k = 1
	}
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		for _, i := range rows {
			sc := b.spans[i].scope
			if sc.resVals[k] == nil {
				sc.resVals[k] = sc.resourceValues(key, col)
			}
			vals = append(vals, sc.resVals[k]...)
		}
		return vals
	}
}

func (sc *scopeRow) resourceValues(key bool, col int) []parquet.Value {
	if len(sc.res) == 0 {
		return []parquet.Value{parquet.NullValue().Level(0, 0, col)}
	}
	vals := make([]parquet.Value, len(sc.res))
	for j, a := range sc.res {
		v := a.val
		if key {
			v = a.key
		}
		vals[j] = parquet.ByteArrayValue(v).Level(min(j, 1), 1, col)
	}
	return vals
}

// listColumn writes a leaf of the events or links lists: elements gives a
// row's elements, and elem appends element j's values, its first at
// repetition level rep; a row without elements is one null.
func listColumn(elements func(*spanRow) span32, elem func(b *rowBatch, j uint32, rep, col int, vals []parquet.Value) []parquet.Value) columnWriter {
	return func(b *rowBatch, rows []int32, col int, vals []parquet.Value) []parquet.Value {
		null := parquet.NullValue().Level(0, 0, col)
		for _, i := range rows {
			s := elements(&b.spans[i])
			if s.lo == s.hi {
				vals = append(vals, null)
				continue
			}
			for j := s.lo; j < s.hi; j++ {
				vals = elem(b, j, min(int(j-s.lo), 1), col, vals)
			}
		}
		return vals
	}
}

func events(r *spanRow) span32 { return r.events }
func links(r *spanRow) span32  { return r.links }

func eventColumn(get func(*rowBatch, *eventRow) parquet.Value) columnWriter {
	return listColumn(events, func(b *rowBatch, j uint32, rep, col int, vals []parquet.Value) []parquet.Value {
		return append(vals, get(b, &b.events[j]).Level(rep, 1, col))
	})
}

func eventAttrColumn(key bool) columnWriter {
	return listColumn(events, func(b *rowBatch, j uint32, rep, col int, vals []parquet.Value) []parquet.Value {
		return b.appendMap(vals, b.events[j].attrs, rep, 2, col, key)
	})
}

func linkColumn(get func(*linkRow) ref) columnWriter {
	return listColumn(links, func(b *rowBatch, j uint32, rep, col int, vals []parquet.Value) []parquet.Value {
		return append(vals, parquet.ByteArrayValue(b.str(get(&b.links[j]))).Level(rep, 1, col))
	})
}

func linkAttrColumn(key bool) columnWriter {
	return listColumn(links, func(b *rowBatch, j uint32, rep, col int, vals []parquet.Value) []parquet.Value {
		return b.appendMap(vals, b.links[j].attrs, rep, 2, col, key)
	})
}
