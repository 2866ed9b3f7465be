package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailsift/tailsift/archive"
	"gopkg.in/yaml.v3"
)

// Config is the whole node configuration: one YAML file, every key also
// settable by environment variable (TAILSIFT_ + the key path in upper case
// with dots as underscores, e.g. TAILSIFT_KAFKA_BROKERS) and by flag (the
// key path with dots and underscores as dashes, e.g. --kafka-brokers).
// Precedence: flag, then environment, then file, then default.
//
// Each leaf field's help tag documents it: docs/config.md is generated from
// these tags and defaultConfig (TestConfigDocs), and so are the flags.
// Fields tagged secret:"true" are masked when printed and have no flag (a
// command line is visible to every user of the host).
type Config struct {
	NodeID      string        `yaml:"node_id" help:"unique name of this node; names its archive files (default: host name)"`
	GracePeriod time.Duration `yaml:"grace_period" help:"on SIGTERM, exit within this long"`
	HTTP        HTTPConfig    `yaml:"http"`
	Log         LogConfig     `yaml:"log"`
	Kafka       KafkaConfig   `yaml:"kafka"`
	Sampler     SamplerConfig `yaml:"sampler"`
	Archive     ArchiveConfig `yaml:"archive"`
	Cluster     ClusterConfig `yaml:"cluster"`
	Runtime     RuntimeConfig `yaml:"runtime"`

	// Policies, HeadSampling and Budget are the sampling policy document,
	// handed as they are to the sampler's parser.
	Policies     yaml.Node `yaml:"policies"`
	HeadSampling yaml.Node `yaml:"head_sampling"`
	Budget       yaml.Node `yaml:"budget"`

	// brokersDefaulted is set by loadConfig when no file, variable or flag
	// named the brokers: a node would join its group on whatever listens
	// at the default address, so it warns.
	brokersDefaulted bool
}

// RuntimeConfig tunes the Go runtime of a node process (run, demo), at
// start; see packages hugepage and gctune for why.
type RuntimeConfig struct {
	HugePageHeapBytes int64 `yaml:"huge_page_heap_bytes" help:"on Linux with transparent huge pages in madvise mode, the first this many bytes of the heap are backed by 2MiB pages: far fewer page faults as the heap grows, and memory held 2MiB at a time within that range; 0: off"`
	GCMinHeapBytes    int64 `yaml:"gc_min_heap_bytes" help:"the garbage collector lets the heap reach this size before collecting, however little of it is live (Kafka fetch buffers are most of the garbage); once half of it is live, GOGC applies as usual; 0: off"`
}

// HTTPConfig configures the HTTP endpoints.
type HTTPConfig struct {
	Addr  string `yaml:"addr" help:"serves /metrics, /healthz and /readyz; empty: off"`
	PProf bool   `yaml:"pprof" help:"also serve Go's profiler at /debug/pprof/ (keep the address private)"`
}

// LogConfig configures log/slog output.
type LogConfig struct {
	Level            string        `yaml:"level" help:"debug, info, warn or error"`
	Format           string        `yaml:"format" help:"text or json"`
	ProgressInterval time.Duration `yaml:"progress_interval" help:"log a one-line progress summary this often; 0: never"`
}

// KafkaConfig configures the consumer.
type KafkaConfig struct {
	Brokers             []string      `yaml:"brokers" help:"bootstrap brokers, host:port, comma-separated"`
	Topic               string        `yaml:"topic" help:"topic holding OTLP spans"`
	Group               string        `yaml:"group" help:"consumer group shared by the nodes of one cluster"`
	Encoding            string        `yaml:"encoding" help:"message encoding: otlp_proto or otlp_json"`
	MaxMessageBytes     int           `yaml:"max_message_bytes" help:"larger messages are skipped and counted as oversized"`
	FetchMaxBytes       int           `yaml:"fetch_max_bytes" help:"bytes one fetch from a broker asks for, a quarter of it (at least 256KiB) from one partition; larger fetches suit high-latency links, smaller ones use less memory"`
	CommitInterval      time.Duration `yaml:"commit_interval" help:"how often settled offsets are committed"`
	MaxUnsettledRecords int           `yaml:"max_unsettled_records" help:"records read but not yet settled before polling pauses (backpressure)"`
	SessionTimeout      time.Duration `yaml:"session_timeout" help:"the group reassigns a silent member's partitions after this long (at least 6s)"`
	RebalanceTimeout    time.Duration `yaml:"rebalance_timeout" help:"how long a rebalance waits for members to rejoin; a member that dies while the group rebalances holds it this long"`
	DeadLetterTopic     string        `yaml:"dead_letter_topic" help:"copy malformed or oversized records to this existing topic; empty: off"`
	CheckCRCs           bool          `yaml:"check_crcs" help:"verify the CRC-32C of every fetched record batch, a pass over every byte read; off by default, as in librdkafka: TCP checksums transfers and brokers verify batches as they are written"`
	TLS                 TLSConfig     `yaml:"tls"`
	SASL                SASLConfig    `yaml:"sasl"`
}

// TLSConfig enables TLS to the Kafka brokers.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled" help:"connect to the brokers with TLS"`
	CAFile             string `yaml:"ca_file" help:"PEM file of the CAs to trust; empty: the system roots"`
	CertFile           string `yaml:"cert_file" help:"PEM client certificate, for mutual TLS"`
	KeyFile            string `yaml:"key_file" help:"PEM private key of the client certificate"`
	ServerName         string `yaml:"server_name" help:"name to verify the brokers' certificates against; empty: the broker host"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" help:"do not verify the brokers' certificates (tests only)"`
}

// SASLConfig authenticates to the Kafka brokers.
type SASLConfig struct {
	Mechanism    string `yaml:"mechanism" help:"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL"`
	Username     string `yaml:"username" help:"SASL user name"`
	Password     string `yaml:"password" secret:"true" help:"SASL password; prefer password_file or the environment variable"`
	PasswordFile string `yaml:"password_file" help:"file holding the SASL password, read at every login; wins over password"`
}

// ClusterConfig makes the node one of a gossip cluster. Without a gossip
// address the node runs alone.
type ClusterConfig struct {
	GossipAddr    string   `yaml:"gossip_addr" help:"host:port for gossip (TCP and UDP): an IP, this node's resolvable name or 0.0.0.0; empty: run alone"`
	ForwardAddr   string   `yaml:"forward_addr" help:"host:port peers forward spans to; required with gossip_addr"`
	MaxBatchBytes int      `yaml:"max_batch_bytes" help:"largest batch of spans sent to or taken from a peer, uncompressed; larger hand-offs are split"`
	Join          []string `yaml:"join" help:"gossip addresses of running members, comma-separated"`
	SecretKeyFile string   `yaml:"secret_key_file" help:"file with a 16, 24 or 32-byte key shared by all nodes: encrypts gossip, authenticates peers; required for a cluster unless insecure"`
	Insecure      bool     `yaml:"insecure" help:"run a cluster without secret_key_file: anyone who can reach the gossip and forward ports joins the cluster, takes traces and acknowledges batches; for a network where every host is trusted (logs a warning every 5 minutes)"`
}

// SamplerConfig configures trace buffering.
type SamplerConfig struct {
	Shards            int           `yaml:"shards" help:"buffer shards, one goroutine each; 0: one per CPU"`
	QuietPeriod       time.Duration `yaml:"quiet_period" help:"a trace with its root is complete after this long without new spans; set it above the longest SDK export interval plus Collector batch timeouts"`
	MaxWait           time.Duration `yaml:"max_wait" help:"a trace is decided at the latest this long after its first span"`
	MaxSpansPerTrace  int           `yaml:"max_spans_per_trace" help:"a trace is decided when it reaches this many spans"`
	MaxBufferedBytes  int64         `yaml:"max_buffered_bytes" help:"past this many buffered span bytes the oldest traces are decided early"`
	DecisionCacheSize int           `yaml:"decision_cache_size" help:"recent decisions remembered, so late spans follow their trace"`
}

// ArchiveConfig configures where kept traces go.
type ArchiveConfig struct {
	URL       string        `yaml:"url" help:"file:///path or s3://bucket/prefix"`
	RollBytes int64         `yaml:"roll_bytes" help:"close a file once its rows reach about this many uncompressed bytes"`
	RollAge   time.Duration `yaml:"roll_age" help:"close a file this long after it was opened"`
	SpoolDir  string        `yaml:"spool_dir" help:"where finished files wait for upload to S3; empty: $TMPDIR/tailsift-spool-<node_id>"`
	// SpoolMaxBytes caps the spool; at the cap the node stops taking
	// decided traces and Kafka holds the data.
	SpoolMaxBytes int64    `yaml:"spool_max_bytes" help:"cap on the spool; at the cap the node stops taking decided traces and Kafka holds the data"`
	S3            S3Config `yaml:"s3"`
	// Redact rules apply to attributes before anything is written;
	// RedactKeyFile holds the key of the hash action.
	Redact        []archive.RedactRule `yaml:"redact"`
	RedactKeyFile string               `yaml:"redact_key_file" help:"file holding the key of the redaction hash action"`
}

// S3Config configures the S3 store; credentials come from the standard AWS
// chain (environment, shared files, instance roles).
type S3Config struct {
	Region    string `yaml:"region" help:"S3 region; empty: from the AWS environment"`
	Endpoint  string `yaml:"endpoint" help:"endpoint URL of an S3-compatible server (MinIO, versitygw)"`
	PathStyle bool   `yaml:"path_style" help:"address the bucket in the path rather than the host name"`
}

// defaultConfig holds every default. Zero means "see the help" only where
// the default depends on the machine (sampler.shards, archive.spool_dir).
func defaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeID:      host,
		GracePeriod: 30 * time.Second,
		HTTP:        HTTPConfig{Addr: "127.0.0.1:8080"},
		Log:         LogConfig{Level: "info", Format: "text", ProgressInterval: 30 * time.Second},
		Kafka: KafkaConfig{
			Brokers:             []string{"127.0.0.1:9092"},
			Topic:               "otlp_spans",
			Group:               "tailsift",
			Encoding:            "otlp_proto",
			MaxMessageBytes:     64 << 20,
			FetchMaxBytes:       4 << 20,
			CommitInterval:      time.Second,
			MaxUnsettledRecords: 200_000,
			SessionTimeout:      45 * time.Second,
			RebalanceTimeout:    60 * time.Second,
		},
		Sampler: SamplerConfig{
			QuietPeriod:       12 * time.Second,
			MaxWait:           60 * time.Second,
			MaxSpansPerTrace:  10_000,
			MaxBufferedBytes:  1 << 30,
			DecisionCacheSize: 1_000_000,
		},
		Cluster: ClusterConfig{MaxBatchBytes: 64 << 20},
		Runtime: RuntimeConfig{HugePageHeapBytes: 512 << 20, GCMinHeapBytes: 96 << 20},
		Archive: ArchiveConfig{URL: "file://./tailsift-data", RollBytes: 256 << 20, RollAge: 5 * time.Minute, SpoolMaxBytes: 10 << 30},
	}
}

// configKey is one leaf of Config settable by flag and environment.
type configKey struct {
	key    string // YAML key path, e.g. kafka.tls.ca_file
	help   string
	secret bool
	typ    reflect.Type
}

// flag is the key's flag name (no flag for secrets).
func (k configKey) flag() string { return strings.NewReplacer(".", "-", "_", "-").Replace(k.key) }

// env is the key's environment variable.
func (k configKey) env() string {
	return "TAILSIFT_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(k.key))
}

// configKeys lists the leaves of Config in declaration order. Sections that
// are documents (policies, head_sampling, budget, archive.redact) come from
// the file only.
func configKeys() []configKey {
	var keys []configKey
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := prefix + strings.Split(f.Tag.Get("yaml"), ",")[0]
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(yaml.Node{}) && f.Type != reflect.TypeOf(time.Duration(0)):
				walk(f.Type, name+".")
			case f.Tag.Get("help") != "":
				keys = append(keys, configKey{key: name, help: f.Tag.Get("help"), secret: f.Tag.Get("secret") == "true", typ: f.Type})
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return keys
}

// flagAliases are the short flag names documented before every key had a
// flag of its own; they stay, so existing command lines keep working.
var flagAliases = map[string]string{
	"pprof":       "http.pprof",
	"gossip-addr": "cluster.gossip_addr", "forward-addr": "cluster.forward_addr", "join": "cluster.join",
	"insecure-cluster": "cluster.insecure",
	"brokers":          "kafka.brokers", "topic": "kafka.topic", "group": "kafka.group", "encoding": "kafka.encoding",
	"max-message-bytes": "kafka.max_message_bytes", "dead-letter-topic": "kafka.dead_letter_topic",
	"kafka-tls": "kafka.tls.enabled", "kafka-tls-ca": "kafka.tls.ca_file",
	"quiet-period": "sampler.quiet_period", "max-wait": "sampler.max_wait", "max-buffered-bytes": "sampler.max_buffered_bytes",
	"archive": "archive.url", "s3-endpoint": "archive.s3.endpoint", "s3-region": "archive.s3.region", "s3-path-style": "archive.s3.path_style",
}

// registerConfigFlags adds a flag for every settable key, and the aliases.
// The flags hold text; loadConfig parses the ones set.
func registerConfigFlags(fs *flag.FlagSet) {
	isBool := map[string]bool{}
	for _, k := range configKeys() {
		isBool[k.key] = k.typ.Kind() == reflect.Bool
		if !k.secret {
			fs.Var(&textFlag{isBool: isBool[k.key]}, k.flag(), k.help+" ["+k.key+", "+k.env()+"]")
		}
	}
	for _, alias := range slices.Sorted(maps.Keys(flagAliases)) {
		key := flagAliases[alias]
		fs.Var(&textFlag{isBool: isBool[key]}, alias, "same as --"+configKey{key: key}.flag())
	}
	setHelp(fs, func(w io.Writer) { configHelp(w, fs) })
}

// configHelp prints the help of a command taking the configuration flags:
// its own flags, then every key by section in the order of the file, with
// its default, then the short forms.
func configHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, "\nEvery key below is a flag, an environment variable and a key of the --config file;\n"+
		"a flag wins over the environment, which wins over the file. Sizes take kB MB GB TB\n"+
		"(powers of 1000) or KiB MiB GiB TiB (powers of 1024): 4GB, 512MiB. Durations:\n"+
		"500ms, 3s, 1m, 36h, 30d (days of 24h).\n")
	own := false
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(*textFlag); !ok {
			if !own {
				fmt.Fprintln(w, "\ncommand:")
				own = true
			}
			printFlag(w, f.Name, flagValueName(f), f.Usage, f.DefValue)
		}
	})
	def := defaultConfig()
	section := "-"
	for _, k := range configKeys() {
		if k.secret {
			continue
		}
		sec := "general"
		if i := strings.LastIndexByte(k.key, '.'); i > 0 {
			sec = k.key[:i]
		}
		if sec != section {
			fmt.Fprintf(w, "\n%s:\n", sec)
			section = sec
		}
		value, shown := describeValue(k.key, keyValue(&def, k.key))
		if strings.Contains(k.help, "(default") {
			shown = ""
		}
		printFlag(w, k.flag(), value, k.help+" ["+k.key+", "+k.env()+"]", shown)
	}
	fmt.Fprintln(w, "\nshort forms:")
	for _, alias := range slices.Sorted(maps.Keys(flagAliases)) {
		fmt.Fprintf(w, "  --%s = --%s\n", alias, configKey{key: flagAliases[alias]}.flag())
	}
}

// keyValue is the field of cfg at the YAML key path.
func keyValue(cfg *Config, key string) reflect.Value {
	v := reflect.ValueOf(cfg).Elem()
	for _, part := range strings.Split(key, ".") {
		v, _ = fieldByYAML(v, part)
	}
	return v
}

// describeValue names the kind of value a key takes and writes v, its
// default, the way it would be written in a flag ("" for none).
func describeValue(key string, v reflect.Value) (kind, shown string) {
	switch x := v.Interface().(type) {
	case time.Duration:
		return "DURATION", formatDuration(x)
	case bool:
		return "", strconv.FormatBool(x)
	case []string:
		return "LIST", strings.Join(x, ",")
	case string:
		return "TEXT", x
	case int, int64:
		n := v.Int()
		if strings.HasSuffix(key, "_bytes") {
			if n == 0 {
				return "SIZE", "0"
			}
			return "SIZE", formatSize(n)
		}
		return "NUMBER", strconv.FormatInt(n, 10)
	}
	return "VALUE", fmt.Sprint(v.Interface())
}

// joinBoolValues lets boolean flags be followed by their value as a
// separate argument (--s3-path-style true), as every flag of run once was:
// the flag package would take "true" for a positional argument.
func joinBoolValues(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		name := strings.TrimLeft(a, "-")
		if f := fs.Lookup(name); f != nil && name != a && !strings.Contains(a, "=") && i+1 < len(args) {
			if tf, ok := f.Value.(*textFlag); ok && tf.isBool {
				if _, err := strconv.ParseBool(args[i+1]); err == nil {
					out = append(out, a+"="+args[i+1])
					i++
					continue
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// textFlag holds a flag's text for loadConfig to parse. Flags of boolean
// keys may be given bare (--pprof) as well as with a value (--pprof=false).
type textFlag struct {
	s      string
	isBool bool
}

func (f *textFlag) String() string     { return f.s }
func (f *textFlag) Set(s string) error { f.s = s; return nil }
func (f *textFlag) IsBoolFlag() bool   { return f.isBool }

// loadConfig builds the configuration from defaults, the file (if any), the
// environment and the flags set in fs (registered by registerConfigFlags).
func loadConfig(fs *flag.FlagSet, file string, env func(string) string) (Config, error) {
	cfg := defaultConfig()
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		if err := decodeConfig(data, &cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", file, err)
		}
	}
	var errs []error
	keys := configKeys()
	for _, k := range keys {
		if v := env(k.env()); v != "" {
			if err := setKey(&cfg, k.key, v); err != nil {
				errs = append(errs, fmt.Errorf("%s (from %s): %w", k.key, k.env(), err))
			}
		}
	}
	fs.Visit(func(f *flag.Flag) {
		key, ok := flagAliases[f.Name]
		for _, k := range keys {
			if !ok && !k.secret && k.flag() == f.Name {
				key, ok = k.key, true
			}
		}
		if !ok {
			return // not a configuration flag
		}
		if err := setKey(&cfg, key, f.Value.String()); err != nil {
			errs = append(errs, fmt.Errorf("%s (from --%s): %w", key, f.Name, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cfg, oneLine(err)
	}
	cfg.brokersDefaulted = slices.Equal(cfg.Kafka.Brokers, defaultConfig().Kafka.Brokers) && !brokersNamed(fs, file, env)
	return cfg, nil
}

// brokersNamed reports whether a flag, the environment or the file named
// the Kafka brokers, even as the default address.
func brokersNamed(fs *flag.FlagSet, file string, env func(string) string) bool {
	named := env("TAILSIFT_KAFKA_BROKERS") != ""
	fs.Visit(func(f *flag.Flag) { named = named || f.Name == "brokers" || f.Name == "kafka-brokers" })
	if data, err := os.ReadFile(file); err == nil && !named {
		var doc struct {
			Kafka struct {
				Brokers yaml.Node `yaml:"brokers"`
			} `yaml:"kafka"`
		}
		named = yaml.Unmarshal(data, &doc) == nil && doc.Kafka.Brokers.Kind != 0
	}
	return named
}

// decodeConfig decodes a YAML document over cfg. Every error names the key
// path and line: an unknown key, or a value of the wrong type.
func decodeConfig(data []byte, cfg *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	var errs []error
	var walk func(n *yaml.Node, v reflect.Value, path string)
	walk = func(n *yaml.Node, v reflect.Value, path string) {
		if n.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Errorf("line %d: %s: must be a mapping of keys", n.Line, strings.TrimSuffix(path, ".")))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := fieldByYAML(v, k.Value)
			if !ok {
				errs = append(errs, fmt.Errorf("line %d: %s%s: unknown key (known here: %s)", k.Line, path, k.Value, strings.Join(yamlKeys(v.Type()), ", ")))
				continue
			}
			if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(yaml.Node{}) {
				walk(val, f, path+k.Value+".")
				continue
			}
			var err error
			if val.Kind == yaml.ScalarNode && f.Kind() != reflect.Slice && f.Type() != reflect.TypeOf(yaml.Node{}) {
				// Scalars parse as flags and variables do: sizes
				// may carry units (4GiB) in the file too.
				err = setValue(f, val.Value)
			} else if err = val.Decode(f.Addr().Interface()); err != nil {
				if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
					for i, e := range te.Errors {
						te.Errors[i] = lineRE.ReplaceAllString(e, "")
					}
					err = errors.New(strings.Join(te.Errors, "; "))
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %s%s: %w", val.Line, path, k.Value, err))
			}
		}
	}
	walk(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
	return errors.Join(errs...)
}

func fieldByYAML(v reflect.Value, name string) (reflect.Value, bool) {
	for i := 0; i < v.NumField(); i++ {
		if strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0] == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func yamlKeys(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		out = append(out, strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0])
	}
	return out
}

// setKey sets the field at the YAML key path to the text value.
func setKey(cfg *Config, key, value string) error {
	v := reflect.ValueOf(cfg).Elem()
	for _, part := range strings.Split(key, ".") {
		f, ok := fieldByYAML(v, part)
		if !ok {
			return fmt.Errorf("BUG: no config key %q", key)
		}
		v = f
	}
	return setValue(v, value)
}

// lineRE matches the line prefix of yaml.v3's type errors.
var lineRE = regexp.MustCompile(`^line \d+: `)

// setValue parses text into v, a leaf of Config.
func setValue(v reflect.Value, value string) error {
	switch v.Interface().(type) {
	case string:
		v.SetString(value)
	case []string:
		var list []string
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		v.Set(reflect.ValueOf(list))
	case time.Duration:
		d, err := parseDuration(value)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case int, int64:
		n, err := parseSize(value)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", value)
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("BUG: config value of unsupported type %s", v.Type())
	}
	return nil
}
