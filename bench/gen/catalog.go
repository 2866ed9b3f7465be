package gen

import (
	"strconv"
	"strings"
)

// The shop the traffic comes from. Names, routes and back ends are fixed so
// that the same Services count always gives the same service names, and so
// that a query over the archive ("checkout /checkout") reads naturally.
var shop = []struct {
	name   string
	routes []string // "METHOD /template"
	db     string   // database system it queries, "" if none
	topic  string   // topic it publishes to, "" if none
}{
	{"frontend", []string{"GET /", "GET /product/{id}", "POST /cart", "GET /cart", "POST /checkout"}, "", ""},
	{"checkout", []string{"POST /checkout", "GET /orders/{id}"}, "postgresql", "orders"},
	{"cart", []string{"GET /cart", "POST /cart/items", "DELETE /cart/items/{id}"}, "redis", ""},
	{"payment", []string{"POST /charge", "POST /refund"}, "postgresql", "payments"},
	{"shipping", []string{"GET /quote", "POST /ship"}, "", "shipments"},
	{"inventory", []string{"GET /stock/{id}", "POST /reserve"}, "postgresql", ""},
	{"auth", []string{"POST /token", "GET /userinfo"}, "redis", ""},
	{"search", []string{"GET /search", "GET /suggest"}, "elasticsearch", ""},
	{"recommendation", []string{"GET /recommendations"}, "", ""},
	{"currency", []string{"GET /convert"}, "", ""},
	{"email", []string{"POST /send"}, "", ""},
	{"ads", []string{"GET /ads"}, "redis", ""},
	{"catalog", []string{"GET /products", "GET /products/{id}"}, "postgresql", ""},
	{"reviews", []string{"GET /reviews/{id}", "POST /reviews"}, "mongodb", "reviews"},
	{"fraud", []string{"POST /score"}, "", ""},
	{"notifications", []string{"POST /notify"}, "", ""},
}

// Entry services: roots are mostly in the first few services, as real
// traffic enters through a front end and a few public APIs.
const entryServices = 3

// instances is the number of hosts (pods) each service runs on; spans of one
// service in one message may come from different hosts, so a message holds
// several resources per service.
const instances = 3

// Scopes: which instrumentation library made a span.
const (
	scopeHTTP = iota
	scopeDB
	scopeMessaging
	scopeApp
	numScopes
)

var scopeNames = [numScopes - 1][2]string{
	scopeHTTP:      {"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.63.0"},
	scopeDB:        {"github.com/XSAM/otelsql", "0.40.0"},
	scopeMessaging: {"github.com/twmb/franz-go/plugin/kotel", "1.6.0"},
}

type route struct {
	method, template string
	name             string   // span name of the SERVER span: "METHOD /template"
	paths            []string // concrete url.path values
	urls             []string // url.full of a call to each path
}

type query struct{ name, text string }

// service is one generated service with all the strings its spans need,
// built once per run so that no span formats a string.
type service struct {
	name, version string
	hosts         [instances]string
	address       string // server.address other services call it at
	routes        []route
	db            string
	queries       []query
	internal      []string // names of INTERNAL spans
	topic         string   // messaging.destination.name of what it publishes
	publish       string   // span names of publishing to and processing from topic
	process       string
	appScope      string
}

// catalog builds the first n services.
func catalog(n int) []service {
	out := make([]service, n)
	for i := range out {
		s := &out[i]
		var routes []string
		if i < len(shop) {
			d := shop[i]
			s.name, routes, s.db, s.topic = d.name, d.routes, d.db, d.topic
		} else {
			s.name = "service" + strconv.Itoa(i+1)
			routes = []string{"GET /api/items", "GET /api/items/{id}", "POST /api/items"}
			if i%3 == 0 {
				s.db = "postgresql"
			}
		}
		s.version = "1." + strconv.Itoa(3+i%5) + "." + strconv.Itoa(i%4)
		for h := range s.hosts {
			s.hosts[h] = s.name + "-" + strconv.FormatUint(uint64(0x5f3a1c+i*7919+h*104729)%0xfffff, 16) + "-" + string(rune('a'+h))
		}
		s.address = s.name + ".shop.svc.cluster.local"
		s.appScope = "github.com/example/shop/" + s.name
		for _, r := range routes {
			method, tmpl, _ := strings.Cut(r, " ")
			rt := route{method: method, template: tmpl, name: r}
			if strings.Contains(tmpl, "{id}") {
				for k := range 4 {
					rt.paths = append(rt.paths, strings.Replace(tmpl, "{id}", strconv.Itoa(1000+(i+1)*37*(k+1)), 1))
				}
			} else {
				rt.paths = []string{tmpl}
			}
			for _, p := range rt.paths {
				rt.urls = append(rt.urls, "http://"+s.address+":8080"+p)
			}
			s.routes = append(s.routes, rt)
		}
		if s.topic == "" {
			s.topic = s.name + ".events"
		}
		s.publish, s.process = "publish "+s.topic, "process "+s.topic
		if s.db != "" {
			table := s.name
			switch s.db {
			case "redis":
				s.queries = []query{{"GET", "GET " + table + ":{key}"}, {"SET", "SET " + table + ":{key} ?"}}
			case "mongodb":
				s.queries = []query{{"find " + table, "find " + table}, {"insert " + table, "insert " + table}}
			case "elasticsearch":
				s.queries = []query{{"search", "GET /" + table + "/_search"}}
			default:
				s.queries = []query{
					{"SELECT " + table, "SELECT * FROM " + table + " WHERE id = $1"},
					{"UPDATE " + table, "UPDATE " + table + " SET updated_at = now() WHERE id = $1"},
					{"INSERT " + table, "INSERT INTO " + table + " (id, data) VALUES ($1, $2)"},
				}
			}
		}
		for _, op := range []string{"validate", "compute", "render", "serialize"} {
			s.internal = append(s.internal, s.name+"."+op)
		}
	}
	return out
}

var errorMessages = []string{
	"connection reset by peer",
	"context deadline exceeded",
	"upstream returned 503 Service Unavailable",
	"runtime error: invalid memory address or nil pointer dereference",
	"insufficient funds",
	"lock wait timeout exceeded; try restarting transaction",
}

var exceptionTypes = []string{"*net.OpError", "context.deadlineExceededError", "*errors.errorString",
	"runtime.Error", "*payment.DeclinedError", "*pgconn.PgError"}
