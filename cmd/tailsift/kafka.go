package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kafkaSecurityOpts turns the TLS and SASL settings into franz-go options.
func kafkaSecurityOpts(c KafkaConfig) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if c.TLS.Enabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka.tls.ca_file: %s holds no PEM certificate", c.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.cert_file/key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.Dialer((&tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: tc}).DialContext))
	}
	if c.SASL.Mechanism == "" {
		return opts, nil
	}
	if c.SASL.Username == "" {
		return nil, errors.New("kafka.sasl.username: required when kafka.sasl.mechanism is set")
	}
	// The password is read at every authentication, so a password file
	// rotated in place (a mounted secret) takes effect without a restart.
	password := func() (string, error) { return c.SASL.Password, nil }
	if f := c.SASL.PasswordFile; f != "" {
		password = func() (string, error) {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", fmt.Errorf("kafka.sasl.password_file: %w", err)
			}
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		if _, err := password(); err != nil {
			return nil, err
		}
	}
	user := c.SASL.Username
	scramAuth := func(context.Context) (scram.Auth, error) {
		p, err := password()
		return scram.Auth{User: user, Pass: p}, err
	}
	switch strings.ToUpper(c.SASL.Mechanism) {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Plain(func(context.Context) (plain.Auth, error) {
			p, err := password()
			return plain.Auth{User: user, Pass: p}, err
		})))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Sha256(scramAuth)))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Sha512(scramAuth)))
	default:
		return nil, fmt.Errorf("kafka.sasl.mechanism: %q is not allowed (allowed: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", c.SASL.Mechanism)
	}
	return opts, nil
}

// warnDefaultBrokers warns when the configuration left the brokers at the
// default: the node then joins its consumer group on whatever broker listens
// there, which is right for a demo broker and surprising anywhere else.
func warnDefaultBrokers(cfg Config, log *slog.Logger) {
	if cfg.brokersDefaulted {
		log.Warn("no Kafka brokers configured; using the default "+strings.Join(cfg.Kafka.Brokers, ",")+
			": set --brokers, TAILSIFT_KAFKA_BROKERS or kafka.brokers", "group", cfg.Kafka.Group, "topic", cfg.Kafka.Topic)
	}
}

// explainKafkaErr returns advice naming the settings to check for errors
// that a retry will not fix by itself, or "" for the others.
func explainKafkaErr(c KafkaConfig) func(error) string {
	return func(err error) string {
		var unknownCA x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		var recordHeader tls.RecordHeaderError
		switch {
		case errors.Is(err, kerr.SaslAuthenticationFailed):
			return fmt.Sprintf("Kafka rejected the credentials of SASL user %q: check kafka.sasl.username and kafka.sasl.password_file", c.SASL.Username)
		case errors.Is(err, kerr.UnsupportedSaslMechanism):
			return fmt.Sprintf("the brokers do not offer %s: check kafka.sasl.mechanism", c.SASL.Mechanism)
		case errors.As(err, &unknownCA):
			return "the brokers' certificate is signed by an unknown authority: check kafka.tls.ca_file"
		case errors.As(err, &hostErr):
			return "the brokers' certificate is for another name: check kafka.brokers or kafka.tls.server_name"
		case errors.As(err, &recordHeader):
			return "the brokers do not speak TLS: check kafka.tls.enabled and the port in kafka.brokers"
		case errors.Is(err, syscall.ECONNREFUSED):
			return "nothing listens at that address: check kafka.brokers"
		case (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && c.SASL.Mechanism != "":
			// Some brokers close the connection instead of answering a
			// failed authentication.
			return fmt.Sprintf("the broker closed the connection, which with SASL most often means it rejected the credentials of user %q: check kafka.sasl.username and kafka.sasl.password_file", c.SASL.Username)
		case (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && !c.TLS.Enabled:
			return "the broker closed the connection: if it requires TLS, set kafka.tls.enabled"
		}
		return ""
	}
}
