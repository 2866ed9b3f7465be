package gen

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// schemaURL is the semantic-conventions version the attributes follow.
const schemaURL = "https://opentelemetry.io/schemas/1.26.0"

// encoder turns a message's spans into pdata, grouping them by resource
// (service and host) and scope as an SDK's batch exporter and the
// Collector's batch processor would. Its lookup tables are indexed by
// resource and scope number and marked with the message number, so
// grouping needs neither maps nor clearing between messages.
type encoder struct {
	svcs    []service
	msg     uint32
	resSeen []uint32 // message that last used each resource
	res     []ptrace.ResourceSpans
	scSeen  []uint32 // message that last used each (resource, scope)
	sc      []ptrace.SpanSlice
}

func newEncoder(svcs []service) *encoder {
	n := len(svcs) * instances
	return &encoder{
		svcs:    svcs,
		resSeen: make([]uint32, n),
		res:     make([]ptrace.ResourceSpans, n),
		scSeen:  make([]uint32, n*numScopes),
		sc:      make([]ptrace.SpanSlice, n*numScopes),
	}
}

// encode builds the request for one message. Resources and scopes appear in
// the order of their first span, so the output is deterministic.
func (e *encoder) encode(msg []span) ptrace.Traces {
	e.msg++
	td := ptrace.NewTraces()
	rss := td.ResourceSpans()
	for i := range msg {
		s := &msg[i]
		svc := &e.svcs[s.svc]
		ri := int(s.svc)*instances + int(s.inst)
		if e.resSeen[ri] != e.msg {
			e.resSeen[ri] = e.msg
			rs := rss.AppendEmpty()
			rs.SetSchemaUrl(schemaURL)
			a := rs.Resource().Attributes()
			a.EnsureCapacity(6)
			a.PutStr("service.name", svc.name)
			a.PutStr("service.version", svc.version)
			a.PutStr("service.namespace", "shop")
			a.PutStr("host.name", svc.hosts[s.inst])
			a.PutStr("deployment.environment.name", "production")
			a.PutStr("telemetry.sdk.language", "go")
			e.res[ri] = rs
		}
		si := ri*numScopes + int(opScope[s.op])
		if e.scSeen[si] != e.msg {
			e.scSeen[si] = e.msg
			ss := e.res[ri].ScopeSpans().AppendEmpty()
			sc := opScope[s.op]
			if sc == scopeApp {
				ss.Scope().SetName(svc.appScope)
				ss.Scope().SetVersion(svc.version)
			} else {
				ss.Scope().SetName(scopeNames[sc][0])
				ss.Scope().SetVersion(scopeNames[sc][1])
			}
			e.sc[si] = ss.Spans()
		}
		e.span(e.sc[si].AppendEmpty(), s)
	}
	return td
}

// span fills sp from s with the attributes instrumentation of its kind sets
// (OpenTelemetry semantic conventions 1.26).
func (e *encoder) span(sp ptrace.Span, s *span) {
	svc := &e.svcs[s.svc]
	sp.SetTraceID(s.traceID)
	sp.SetSpanID(s.id)
	sp.SetParentSpanID(s.parent)
	sp.SetKind(opKind[s.op])
	sp.SetStartTimestamp(pcommon.Timestamp(s.start))
	sp.SetEndTimestamp(pcommon.Timestamp(s.end))
	a := sp.Attributes()
	switch s.op {
	case opServer:
		rt := &svc.routes[s.detail]
		sp.SetName(rt.name)
		a.EnsureCapacity(8)
		a.PutStr("http.request.method", rt.method)
		a.PutStr("http.route", rt.template)
		a.PutStr("url.path", rt.paths[s.path])
		a.PutStr("url.scheme", "http")
		a.PutStr("server.address", svc.address)
		a.PutInt("server.port", 8080)
		a.PutStr("network.protocol.version", "1.1")
		a.PutInt("http.response.status_code", int64(s.status))
	case opClient:
		callee := &e.svcs[s.peer]
		rt := &callee.routes[s.detail]
		sp.SetName(rt.method)
		a.EnsureCapacity(6)
		a.PutStr("http.request.method", rt.method)
		a.PutStr("server.address", callee.address)
		a.PutInt("server.port", 8080)
		a.PutStr("url.full", rt.urls[s.path])
		a.PutStr("url.path", rt.paths[s.path])
		a.PutInt("http.response.status_code", int64(s.status))
	case opDB:
		q := &svc.queries[s.detail]
		sp.SetName(q.name)
		a.EnsureCapacity(3)
		a.PutStr("db.system", svc.db)
		a.PutStr("db.namespace", svc.name)
		a.PutStr("db.query.text", q.text)
	case opInternal:
		sp.SetName(svc.internal[s.detail])
	case opProduce, opConsume:
		owner := &e.svcs[s.peer]
		a.EnsureCapacity(4)
		a.PutStr("messaging.system", "kafka")
		a.PutStr("messaging.destination.name", owner.topic)
		if s.op == opProduce {
			sp.SetName(owner.publish)
			a.PutStr("messaging.operation.type", "publish")
		} else {
			sp.SetName(owner.process)
			a.PutStr("messaging.operation.type", "process")
			a.PutStr("messaging.consumer.group.name", svc.name)
		}
	}
	if s.errMsg >= 0 {
		msg := errorMessages[s.errMsg]
		sp.Status().SetCode(ptrace.StatusCodeError)
		sp.Status().SetMessage(msg)
		if s.op != opServer && s.op != opClient {
			a.PutStr("error.type", exceptionTypes[s.errMsg])
		} else {
			a.PutStr("error.type", "500")
		}
		if s.exception {
			ev := sp.Events().AppendEmpty()
			ev.SetName("exception")
			ev.SetTimestamp(pcommon.Timestamp(s.end))
			ea := ev.Attributes()
			ea.EnsureCapacity(2)
			ea.PutStr("exception.type", exceptionTypes[s.errMsg])
			ea.PutStr("exception.message", msg)
		}
	}
}
