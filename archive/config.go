package archive

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Config configures a Writer.
type Config struct {
	// URL is file:///absolute/dir or s3://bucket/prefix.
	URL string
	// RollBytes closes a file once the rows written to it reach about this
	// many uncompressed bytes (default 256 MiB, about 40 MiB on disk).
	RollBytes int64
	// RollAge closes a file this long after it was opened (default 5m). It
	// bounds how long kept spans wait to become durable, and so how far the
	// committed Kafka offsets lag.
	RollAge time.Duration
	// RowGroupBytes is the uncompressed size of a row group (default 16 MiB).
	// Rows are sorted by trace and start time within a row group, so a row
	// group is held decoded in memory until it is written: this bounds the
	// writer's memory per open file. Compaction rewrites an hour's files
	// with row groups of 128 MiB.
	RowGroupBytes int64
	// NodeID goes into file names so nodes never collide.
	NodeID string
	// SpoolDir holds finished files until they are uploaded (s3:// only).
	// Default: $TMPDIR/tailsift-spool-<node>.
	SpoolDir string
	// SpoolMaxBytes caps the bytes of finished files waiting in the spool
	// (s3:// only; default 10 GiB). Past 80% of it the writer warns; at
	// the cap it stops taking decided traces until uploads make room, so
	// the sampler and then the Kafka poll stop too and the records wait
	// in Kafka, unsettled, instead of filling the disk or being dropped.
	SpoolMaxBytes int64
	// S3 configures the s3:// store.
	S3 S3Config
	// Redact lists attribute redaction rules applied before anything is
	// written; RedactKey keys the hash action.
	Redact    []RedactRule
	RedactKey []byte
	Logger    *slog.Logger
	// Pressure, if set, reports that the node is at its memory bound
	// (sampler.Sampler.Full). Kept traces the writer holds count against
	// that bound (sampler.Kept.Hold) until their row group is written;
	// under pressure the writer writes what it holds at its next tick
	// instead of waiting for a full row group, since input has paused and
	// the row group may never fill.
	Pressure func() bool
}

// DefaultRollAge is RollAge when not set.
const DefaultRollAge = 5 * time.Minute

// S3Config configures object storage. Credentials come from the standard
// AWS chain (environment, shared config, instance role).
type S3Config struct {
	Region    string
	Endpoint  string // override, for S3-compatible servers
	PathStyle bool   // address the bucket in the path (MinIO, versitygw)
}

// location is a parsed archive URL.
type location struct {
	scheme string // "file" or "s3"
	dir    string // file: the directory
	bucket string // s3
	prefix string // s3, without leading or trailing slash
}

func parseURL(raw string) (location, error) {
	if raw != "" && !strings.Contains(raw, "://") {
		raw = "file://" + raw // a plain path
	}
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return location{}, fmt.Errorf("archive.url: %q is not a URL (allowed: file:///path, s3://bucket/prefix)", raw)
	}
	switch u.Scheme {
	case "file":
		// file:///abs, or relative to the working directory: file://./dir,
		// file://dir, or a plain path.
		p := strings.TrimPrefix(raw, "file://")
		if u.Host == "localhost" {
			p = u.Path
		}
		abs, err := filepath.Abs(p)
		if err != nil || p == "" {
			return location{}, fmt.Errorf("archive.url: %q: not a usable path (file:///path)", raw)
		}
		return location{scheme: "file", dir: abs}, nil
	case "s3":
		if u.Host == "" {
			return location{}, fmt.Errorf("archive.url: %q: missing bucket (s3://bucket/prefix)", raw)
		}
		return location{scheme: "s3", bucket: u.Host, prefix: strings.Trim(u.Path, "/")}, nil
	}
	return location{}, fmt.Errorf("archive.url: scheme %q is not allowed (allowed: file:///path, s3://bucket/prefix)", u.Scheme)
}

func (c *Config) setDefaults() {
	if c.RollBytes == 0 {
		c.RollBytes = 256 << 20
	}
	if c.RollAge == 0 {
		c.RollAge = DefaultRollAge
	}
	if c.RowGroupBytes == 0 {
		c.RowGroupBytes = 16 << 20
	}
	if c.RowGroupBytes > c.RollBytes {
		c.RowGroupBytes = c.RollBytes
	}
	if c.NodeID == "" {
		c.NodeID = "node"
	}
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = 10 << 30
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks c, naming each key at fault.
func (c *Config) Validate() error {
	var errs []error
	if _, err := parseURL(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.RollBytes < 0 || (c.RollBytes > 0 && c.RollBytes < 1<<20) {
		errs = append(errs, fmt.Errorf("archive.roll_bytes: must be at least 1MiB, got %d", c.RollBytes))
	}
	if c.RollAge < 0 || (c.RollAge > 0 && c.RollAge < time.Second) {
		errs = append(errs, fmt.Errorf("archive.roll_age: must be at least 1s, got %v", c.RollAge))
	}
	if c.SpoolMaxBytes < 0 || (c.SpoolMaxBytes > 0 && c.SpoolMaxBytes < 1<<20) {
		errs = append(errs, fmt.Errorf("archive.spool_max_bytes: must be at least 1MiB, got %d", c.SpoolMaxBytes))
	}
	if c.RowGroupBytes < 0 {
		errs = append(errs, fmt.Errorf("archive.row_group_bytes: must be positive, got %d", c.RowGroupBytes))
	}
	if _, err := NewRedaction(c.Redact, c.RedactKey); err != nil {
		errs = append(errs, err)
	}
	if strings.ContainsAny(c.NodeID, "/\\ ") {
		errs = append(errs, fmt.Errorf("node_id: %q may not contain slashes or spaces (it names archive files)", c.NodeID))
	}
	return errors.Join(errs...)
}
