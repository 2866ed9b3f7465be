package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// partSize is the multipart upload part size; files up to it go up in one
// PutObject.
const partSize = 16 << 20

// s3Store puts finished files into a bucket.
type s3Store struct {
	client *s3.Client
	up     *manager.Uploader
	bucket string
	prefix string
}

// newS3Client builds a client from the standard AWS configuration chain
// (environment, shared config and credentials files, SSO, web identity,
// container and instance roles), overridden by c. opts adjust the client
// further (tests count the requests it sends).
func newS3Client(ctx context.Context, c S3Config, opts ...func(*s3.Options)) (*s3.Client, error) {
	var load []func(*config.LoadOptions) error
	if c.Region != "" {
		load = append(load, config.WithRegion(c.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		// Requests are signed for a region; us-east-1 is also the default
		// region of S3-compatible servers (MinIO, versitygw, Ceph RGW).
		awsCfg.Region = "us-east-1"
	}
	return s3.NewFromConfig(awsCfg, append([]func(*s3.Options){func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
		// Checksums only where the API requires them: S3-compatible
		// servers vary in which of the newer ones they accept.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}}, opts...)...), nil
}

func newS3Store(ctx context.Context, loc location, c S3Config, opts ...func(*s3.Options)) (*s3Store, error) {
	client, err := newS3Client(ctx, c, opts...)
	if err != nil {
		return nil, err
	}
	return &s3Store{
		client: client,
		// Files above partSize go up in parts, 4 at a time: a failed part
		// is retried alone, and a 256 MiB file is not one 5-minute PUT.
		up:     manager.NewUploader(client, func(u *manager.Uploader) { u.PartSize = partSize; u.Concurrency = 4 }),
		bucket: loc.bucket,
		prefix: loc.prefix,
	}, nil
}

func (s *s3Store) key(rel string) string {
	return path.Join(s.prefix, filepath.ToSlash(rel))
}

func (s *s3Store) put(ctx context.Context, rel, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = s.up.Upload(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(s.bucket),
		Key:         aws.String(s.key(rel)),
		Body:        f,
		ContentType: aws.String("application/vnd.apache.parquet"),
	})
	return err
}

// uploader moves finished files from the spool to object storage, oldest
// first, retrying with backoff while the store is unreachable. A file leaves
// the spool only after the store acknowledged it, and files left in the
// spool by an earlier run are uploaded when the next one starts.
type uploader struct {
	store *s3Store
	dir   string
	m     *Metrics
	log   *slog.Logger

	mu       sync.Mutex
	queue    []spooled
	bytes    int64 // sum of the queued files' sizes
	finished bool
	wake     chan struct{}
}

// spooled is a finished file waiting for upload.
type spooled struct {
	path string
	size int64
}

// newUploader returns an uploader whose queue holds the files an earlier run
// left in the spool, so they count against the spool's cap from the start.
func newUploader(store *s3Store, dir string, m *Metrics, log *slog.Logger) (*uploader, error) {
	u := &uploader{store: store, dir: dir, m: m, log: log, wake: make(chan struct{}, 1)}
	left, err := filepath.Glob(filepath.Join(dir, "dt=*", "hour=*", "part-*.parquet"))
	if err != nil {
		return nil, err
	}
	if len(left) > 0 {
		log.Info("uploading files spooled by a previous run", "files", len(left))
	}
	for _, f := range left {
		u.enqueue(f)
	}
	return u, nil
}

func (u *uploader) signal() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *uploader) enqueue(file string) {
	var size int64
	if st, err := os.Stat(file); err == nil {
		size = st.Size()
	}
	u.mu.Lock()
	u.queue = append(u.queue, spooled{file, size})
	u.bytes += size
	u.gauges()
	u.mu.Unlock()
	u.signal()
}

// gauges updates the spool metrics; u.mu is held.
func (u *uploader) gauges() {
	u.m.spoolFiles.Set(float64(len(u.queue)))
	u.m.spoolBytes.Set(float64(u.bytes))
}

// spooledBytes is the size of the files waiting for upload.
func (u *uploader) spooledBytes() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes
}

// finish makes run return once the queue is empty.
func (u *uploader) finish() {
	u.mu.Lock()
	u.finished = true
	u.mu.Unlock()
	u.signal()
}

func (u *uploader) next() (file string, ok, done bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.queue) > 0 {
		return u.queue[0].path, true, false
	}
	return "", false, u.finished
}

func (u *uploader) pop() {
	u.mu.Lock()
	u.bytes -= u.queue[0].size
	u.queue = u.queue[1:]
	u.gauges()
	u.mu.Unlock()
}

func (u *uploader) run(ctx context.Context) error {
	backoff := time.Second
	for {
		file, ok, done := u.next()
		if done {
			return nil
		}
		if !ok {
			select {
			case <-u.wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := u.upload(ctx, file); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			u.m.uploadFailures.Inc()
			u.log.Warn("upload failed; the file stays in the spool and is retried", "file", file, "retry_in", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		u.pop()
	}
}

func (u *uploader) upload(ctx context.Context, file string) error {
	rel, err := filepath.Rel(u.dir, file)
	if err != nil {
		return err
	}
	st, err := os.Stat(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil // uploaded and removed by an earlier attempt
	}
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := u.store.put(actx, rel, file); err != nil {
		return err
	}
	u.m.uploads.Inc()
	u.m.uploadedBytes.Add(float64(st.Size()))
	return os.Remove(file)
}
