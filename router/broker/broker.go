// Package broker runs an embedded Kafka broker (franz-go's kfake) for the
// demo, for tests, and for anyone who wants to point an OpenTelemetry
// Collector's kafkaexporter at tailsift without installing Kafka.
//
// Two behaviours of kfake are changed on purpose. With incremental fetch
// sessions kfake serves the partitions a client names first, and clients
// name those that just returned data, so a consumer drains the partitions of
// a backlog one after another. Spans of one trace, spread over partitions,
// would then reach the sampler minutes apart and the trace would be decided
// in pieces. Apache Kafka rotates partitions within a session. The embedded
// broker answers every session-creating fetch as a sessionless one, so
// clients fall back to full fetches, whose partition order they rotate
// themselves. And a consumer-group member that dies while its join waits can
// stay in kfake's group for good, holding partitions nobody reads; the
// broker removes it, as Kafka does once its session times out (see reaper).
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Config configures an embedded broker.
type Config struct {
	// Addr is the listen address, host:port; port 0 picks a free one.
	Addr string
	// Topic is created with Partitions partitions (default 8) unless it
	// already exists in DataDir.
	Topic      string
	Partitions int32
	// DataDir persists records and committed offsets across restarts.
	// Empty keeps everything in memory (about 0.5 GB per million small
	// records), fine for tests and the demo.
	DataDir string
	// MaxMessageBytes is the broker's message.max.bytes; OTLP batches from
	// collectors are often larger than Kafka's 1 MiB default. Default 16 MiB.
	MaxMessageBytes int
	// Retention and RetentionBytes bound the topic (retention.ms and
	// retention.bytes, set on the topic: a broker-level setting alone is not
	// applied by kfake). Zero leaves them unbounded.
	Retention      time.Duration
	RetentionBytes int64
	// SASL, when Mechanism is set, requires clients to authenticate as User
	// with Password. Mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
	SASL SASL
	// TLS, when set, makes the listener speak TLS.
	TLS *tls.Config
}

// SASL is a user the broker accepts.
type SASL struct {
	Mechanism, User, Password string
}

// Broker is a running embedded broker.
type Broker struct {
	c          *kfake.Cluster
	addr       string
	cl         *kgo.Client // the broker's own client: topic creation, reaping
	stopReaper context.CancelFunc
}

// Start starts a broker and creates its topic.
func Start(cfg Config) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:9092"
	}
	if cfg.Topic == "" {
		return nil, errors.New("broker: topic is required")
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	if cfg.Partitions < 0 {
		return nil, fmt.Errorf("broker: partitions must be positive, got %d", cfg.Partitions)
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 16 << 20
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("broker: address %q: %w", cfg.Addr, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake asks for a port on 127.0.0.1; listen where the user asked.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, cfg.Addr) }),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(int(cfg.Partitions)),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(cfg.MaxMessageBytes)}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.TLS != nil {
		opts = append(opts, kfake.TLS(cfg.TLS))
	}
	var clientOpts []kgo.Opt
	if cfg.SASL.Mechanism != "" {
		switch cfg.SASL.Mechanism {
		case "PLAIN":
			clientOpts = append(clientOpts, kgo.SASL(plain.Auth{User: cfg.SASL.User, Pass: cfg.SASL.Password}.AsMechanism()))
		case "SCRAM-SHA-256":
			clientOpts = append(clientOpts, kgo.SASL(scram.Auth{User: cfg.SASL.User, Pass: cfg.SASL.Password}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			clientOpts = append(clientOpts, kgo.SASL(scram.Auth{User: cfg.SASL.User, Pass: cfg.SASL.Password}.AsSha512Mechanism()))
		default:
			return nil, fmt.Errorf("broker: SASL mechanism %q is not allowed (allowed: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", cfg.SASL.Mechanism)
		}
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser(cfg.SASL.Mechanism, cfg.SASL.User, cfg.SASL.Password))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if f, ok := req.(*kmsg.FetchRequest); ok && f.SessionEpoch == 0 {
			f.SessionID, f.SessionEpoch = 0, -1
		}
		return nil, nil, false
	})
	b := &Broker{c: c, addr: c.ListenAddrs()[0]}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		tc.InsecureSkipVerify = true // talking to ourselves over loopback
		clientOpts = append(clientOpts, kgo.DialTLSConfig(tc))
	}
	b.cl, err = kgo.NewClient(append(clientOpts, kgo.SeedBrokers(b.addr))...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	if err := b.createTopic(cfg); err != nil {
		b.cl.Close()
		c.Close()
		return nil, err
	}
	r := &reaper{cl: b.cl, members: map[memberKey]*memberSeen{}}
	r.watch(c)
	ctx, cancel := context.WithCancel(context.Background())
	b.stopReaper = cancel
	go r.run(ctx, time.Second)
	return b, nil
}

func (b *Broker) createTopic(cfg Config) error {
	adm := kadm.NewClient(b.cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	configs := map[string]*string{}
	if cfg.Retention > 0 {
		configs["retention.ms"] = kadm.StringPtr(strconv.FormatInt(cfg.Retention.Milliseconds(), 10))
	}
	if cfg.RetentionBytes > 0 {
		configs["retention.bytes"] = kadm.StringPtr(strconv.FormatInt(cfg.RetentionBytes, 10))
	}
	res, err := adm.CreateTopic(ctx, cfg.Partitions, 1, configs, cfg.Topic)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("broker: creating topic %s: %w", cfg.Topic, err)
	}
	if errors.Is(err, kerr.TopicAlreadyExists) && len(configs) > 0 {
		var alter []kadm.AlterConfig
		for k, v := range configs {
			alter = append(alter, kadm.AlterConfig{Name: k, Value: v})
		}
		if _, err := adm.AlterTopicConfigs(ctx, alter, cfg.Topic); err != nil {
			return fmt.Errorf("broker: setting retention of %s: %w", cfg.Topic, err)
		}
	}
	return nil
}

// Addr is the address clients bootstrap from.
func (b *Broker) Addr() string { return b.addr }

// Cluster is the underlying kfake cluster, for tests that inject faults.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker; with a DataDir, its state is flushed there.
func (b *Broker) Close() {
	b.stopReaper()
	b.cl.Close()
	b.c.Close()
}
