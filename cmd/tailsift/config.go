package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"github.com/tailsift/tailsift/archive"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole node configuration: one YAML file, every key also
// settable by flag and by environment variable (TAILSIFT_ + the key path in
// upper case with dots as underscores, e.g. TAILSIFT_KAFKA_BROKERS).
// Precedence: flag, then environment, then file, then default.
type Config struct {
	NodeID      string        `yaml:"node_id"`      // unique per node; default: host name
	HTTPAddr    string        `yaml:"http_addr"`    // serves /metrics, /healthz, /readyz
	GracePeriod time.Duration `yaml:"grace_period"` // SIGTERM to exit, at most
	Log         LogConfig     `yaml:"log"`
	Kafka       KafkaConfig   `yaml:"kafka"`
	Sampler     SamplerConfig `yaml:"sampler"`
	Archive     ArchiveConfig `yaml:"archive"`
	Cluster     ClusterConfig `yaml:"cluster"`

	// Policies, HeadSampling and Budget are the sampling policy document,
	// handed as they are to the sampler's parser.
	Policies     yaml.Node `yaml:"policies"`
	HeadSampling yaml.Node `yaml:"head_sampling"`
	Budget       yaml.Node `yaml:"budget"`
}

// LogConfig configures log/slog output.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// KafkaConfig configures the consumer.
type KafkaConfig struct {
	Brokers             []string      `yaml:"brokers"`
	Topic               string        `yaml:"topic"`
	Group               string        `yaml:"group"`
	Encoding            string        `yaml:"encoding"` // otlp_proto or otlp_json
	MaxMessageBytes     int           `yaml:"max_message_bytes"`
	CommitInterval      time.Duration `yaml:"commit_interval"`
	MaxUnsettledRecords int           `yaml:"max_unsettled_records"`
	SessionTimeout      time.Duration `yaml:"session_timeout"`
	DeadLetterTopic     string        `yaml:"dead_letter_topic"`
	TLS                 TLSConfig     `yaml:"tls"`
	SASL                SASLConfig    `yaml:"sasl"`
}

// TLSConfig enables TLS to the Kafka brokers.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`   // PEM bundle; default: system roots
	CertFile           string `yaml:"cert_file"` // client certificate (mutual TLS)
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASLConfig authenticates to the Kafka brokers.
type SASLConfig struct {
	Mechanism    string `yaml:"mechanism"` // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: off
	Username     string `yaml:"username"`
	Password     string `yaml:"password" secret:"true"`
	PasswordFile string `yaml:"password_file"` // read at start; wins over password
}

// ClusterConfig makes the node one of a gossip cluster. Without a gossip
// address the node runs alone.
type ClusterConfig struct {
	GossipAddr    string   `yaml:"gossip_addr"`     // IP:port for memberlist (TCP and UDP)
	ForwardAddr   string   `yaml:"forward_addr"`    // host:port peers forward spans to
	Join          []string `yaml:"join"`            // gossip addresses of running members
	SecretKeyFile string   `yaml:"secret_key_file"` // 16, 24 or 32 bytes shared by all nodes
}

// SamplerConfig configures trace buffering.
type SamplerConfig struct {
	Shards            int           `yaml:"shards"`
	QuietPeriod       time.Duration `yaml:"quiet_period"`
	MaxWait           time.Duration `yaml:"max_wait"`
	MaxSpansPerTrace  int           `yaml:"max_spans_per_trace"`
	MaxBufferedBytes  int64         `yaml:"max_buffered_bytes"`
	DecisionCacheSize int           `yaml:"decision_cache_size"`
}

// ArchiveConfig configures where kept traces go.
type ArchiveConfig struct {
	URL       string        `yaml:"url"` // file:///path or s3://bucket/prefix
	RollBytes int64         `yaml:"roll_bytes"`
	RollAge   time.Duration `yaml:"roll_age"`
	SpoolDir  string        `yaml:"spool_dir"`
	// SpoolMaxBytes caps the spool; at the cap the node stops taking
	// decided traces and Kafka holds the data (default 10GiB).
	SpoolMaxBytes int64    `yaml:"spool_max_bytes"`
	S3            S3Config `yaml:"s3"`
	// Redact rules apply to attributes before anything is written;
	// RedactKeyFile holds the key of the hash action.
	Redact        []archive.RedactRule `yaml:"redact"`
	RedactKeyFile string               `yaml:"redact_key_file"`
}

// S3Config configures the S3 store; credentials come from the standard AWS
// chain (environment, shared files, instance roles).
type S3Config struct {
	Region    string `yaml:"region"`
	Endpoint  string `yaml:"endpoint"`   // for S3-compatible servers
	PathStyle bool   `yaml:"path_style"` // bucket in the path, not the host name
}

func defaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeID:      host,
		HTTPAddr:    "127.0.0.1:8080",
		GracePeriod: 30 * time.Second,
		Log:         LogConfig{Level: "info", Format: "text"},
		Kafka: KafkaConfig{
			Brokers:  []string{"127.0.0.1:9092"},
			Topic:    "otlp_spans",
			Group:    "tailsift",
			Encoding: "otlp_proto",
		},
		Archive: ArchiveConfig{URL: "file://./tailsift-data"},
	}
}

// flagBinding ties a flag to a key of Config.
type flagBinding struct {
	name  string // flag name
	key   string // YAML key path, e.g. kafka.brokers
	usage string
}

var runFlags = []flagBinding{
	{"node-id", "node_id", "unique name of this node (default: host name)"},
	{"http-addr", "http_addr", "address for /metrics, /healthz and /readyz (empty: off)"},
	{"grace-period", "grace_period", "on SIGTERM, exit within this long"},
	{"gossip-addr", "cluster.gossip_addr", "join a cluster: IP:port for gossip (empty: run alone)"},
	{"forward-addr", "cluster.forward_addr", "host:port peers forward spans to"},
	{"join", "cluster.join", "comma-separated gossip addresses of running members"},
	{"cluster-secret-key-file", "cluster.secret_key_file", "file with the key (16, 24 or 32 bytes) that encrypts gossip and authenticates peers"},
	{"log-level", "log.level", "debug, info, warn or error"},
	{"log-format", "log.format", "text or json"},
	{"brokers", "kafka.brokers", "comma-separated Kafka bootstrap brokers"},
	{"topic", "kafka.topic", "Kafka topic holding OTLP spans"},
	{"group", "kafka.group", "Kafka consumer group"},
	{"encoding", "kafka.encoding", "message encoding: otlp_proto or otlp_json"},
	{"max-message-bytes", "kafka.max_message_bytes", "skip (and count) larger messages"},
	{"dead-letter-topic", "kafka.dead_letter_topic", "copy malformed or oversized records to this topic"},
	{"archive-spool-dir", "archive.spool_dir", "where finished files wait for upload to object storage"},
	{"archive-spool-max-bytes", "archive.spool_max_bytes", "cap on the spool; at the cap the node pauses and Kafka holds the data (e.g. 10GiB)"},
	{"kafka-session-timeout", "kafka.session_timeout", "reassign a silent member's partitions after this long"},
	{"kafka-tls", "kafka.tls.enabled", "connect to Kafka with TLS"},
	{"kafka-tls-ca", "kafka.tls.ca_file", "PEM file of CAs to trust for Kafka"},
	{"kafka-sasl-mechanism", "kafka.sasl.mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"},
	{"kafka-sasl-username", "kafka.sasl.username", "SASL user name"},
	{"kafka-sasl-password-file", "kafka.sasl.password_file", "file holding the SASL password"},
	{"quiet-period", "sampler.quiet_period", "a trace with its root is complete after this long without spans"},
	{"max-wait", "sampler.max_wait", "decide a trace at the latest this long after its first span"},
	{"max-buffered-bytes", "sampler.max_buffered_bytes", "bytes of spans buffered before the oldest traces are decided early"},
	{"archive", "archive.url", "archive location: file:///path or s3://bucket/prefix"},
	{"archive-roll-age", "archive.roll_age", "close an archive file this long after it was opened"},
	{"s3-endpoint", "archive.s3.endpoint", "S3 endpoint override, for S3-compatible servers"},
	{"s3-region", "archive.s3.region", "S3 region"},
	{"s3-path-style", "archive.s3.path_style", "address the bucket in the path (MinIO, versitygw)"},
}

// loadConfig builds the configuration from defaults, the file named by
// --config, the environment and the flags set in fs.
func loadConfig(fs *flag.FlagSet, file string, env func(string) string) (Config, error) {
	cfg := defaultConfig()
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config %s: %s", file, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}
	for _, b := range runFlags {
		envName := "TAILSIFT_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(b.key))
		if v := env(envName); v != "" {
			if err := setKey(&cfg, b.key, v); err != nil {
				return cfg, fmt.Errorf("%s (from %s): %w", b.key, envName, err)
			}
		}
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		for _, b := range runFlags {
			if b.name == f.Name && err == nil {
				if e := setKey(&cfg, b.key, f.Value.String()); e != nil {
					err = fmt.Errorf("%s (from --%s): %w", b.key, b.name, e)
				}
			}
		}
	})
	return cfg, err
}

// setKey sets the field at the YAML key path to the text value.
func setKey(cfg *Config, key, value string) error {
	v := reflect.ValueOf(cfg).Elem()
	for _, part := range strings.Split(key, ".") {
		found := false
		for i := 0; i < v.NumField(); i++ {
			if strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0] == part {
				v = v.Field(i)
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("BUG: no config key %q", key)
		}
	}
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
		d, err := time.ParseDuration(value)
		if err != nil {
			return fmt.Errorf("must be a duration like 500ms, 3s or 1m, got %q", value)
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
		return fmt.Errorf("BUG: config key %q has unsupported type %s", key, v.Type())
	}
	return nil
}

// parseSize reads an integer with an optional binary unit (KiB, MiB, GiB).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number (optionally with KiB, MiB, GiB), got %q", s)
	}
	return n * mult, nil
}
