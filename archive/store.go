package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Object is a file in the archive. Key is relative to the archive root,
// with forward slashes: "dt=2026-11-23/hour=6/part-….parquet".
type Object struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Store is an archive location, for the tools that read and maintain it
// (trace, retention, compact). The Writer writes through the local
// filesystem and, for object storage, uploads through the same store.
type Store interface {
	// List returns the objects whose keys start with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Open returns a reader for random access to an object of the given size.
	Open(ctx context.Context, key string) (io.ReaderAt, io.Closer, error)
	// Put stores the local file at key, replacing any object there.
	Put(ctx context.Context, key, localPath string) error
	// Delete removes objects; missing ones are not an error.
	Delete(ctx context.Context, keys ...string) error
	// String names the location for messages.
	String() string
}

// OpenStore returns the store for an archive URL.
func OpenStore(ctx context.Context, rawURL string, c S3Config) (Store, error) {
	loc, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if loc.scheme == "file" {
		if _, err := os.Stat(loc.dir); err != nil {
			return nil, fmt.Errorf("archive.url: %w", err)
		}
		return &dirStore{dir: loc.dir}, nil
	}
	return newS3Store(ctx, loc, c)
}

// dirStore is an archive in a local directory.
type dirStore struct{ dir string }

func (d *dirStore) String() string { return "file://" + d.dir }

func (d *dirStore) List(_ context.Context, prefix string) ([]Object, error) {
	// Walk from the deepest directory the prefix names.
	root := d.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		root = filepath.Join(d.dir, filepath.FromSlash(prefix[:i]))
	}
	var out []Object
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if strings.HasPrefix(e.Name(), ".") {
			if e.IsDir() && p != root {
				return filepath.SkipDir
			}
			return nil // files being written, probes
		}
		if e.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(d.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, err
}

func (d *dirStore) Open(_ context.Context, key string) (io.ReaderAt, io.Closer, error) {
	f, err := os.Open(filepath.Join(d.dir, filepath.FromSlash(key)))
	if err != nil {
		return nil, nil, err
	}
	return f, f, nil
}

// Put moves a finished local file into place atomically (rename within the
// filesystem; copy to a hidden name and rename across filesystems).
func (d *dirStore) Put(_ context.Context, key, localPath string) error {
	dst := filepath.Join(d.dir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Rename(localPath, dst); err == nil {
		return syncDir(filepath.Dir(dst))
	}
	src, err := os.Open(localPath)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, src)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	os.Remove(localPath)
	return syncDir(filepath.Dir(dst))
}

// Delete removes files and then any partition directories left empty.
func (d *dirStore) Delete(_ context.Context, keys ...string) error {
	dirs := map[string]bool{}
	for _, k := range keys {
		p := filepath.Join(d.dir, filepath.FromSlash(k))
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for dir := filepath.Dir(p); dir != d.dir && strings.HasPrefix(dir, d.dir); dir = filepath.Dir(dir) {
			dirs[dir] = true
		}
	}
	// Deepest first; Remove fails harmlessly on directories not empty.
	list := make([]string, 0, len(dirs))
	for dir := range dirs {
		list = append(list, dir)
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i]) > len(list[j]) })
	for _, dir := range list {
		os.Remove(dir)
	}
	return nil
}

func (s *s3Store) String() string { return "s3://" + path.Join(s.bucket, s.prefix) }

func (s *s3Store) List(ctx context.Context, prefix string) ([]Object, error) {
	full := s.key(prefix)
	if prefix == "" || strings.HasSuffix(prefix, "/") {
		full += "/"
	}
	if full == "/" {
		full = ""
	}
	var out []Object
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(full)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			key = strings.TrimPrefix(key, "/")
			out = append(out, Object{Key: key, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
		}
	}
	return out, nil
}

func (s *s3Store) Open(ctx context.Context, key string) (io.ReaderAt, io.Closer, error) {
	return &s3ReaderAt{ctx: ctx, s: s, key: s.key(key)}, io.NopCloser(nil), nil
}

func (s *s3Store) Put(ctx context.Context, key, localPath string) error {
	return s.put(ctx, key, localPath)
}

func (s *s3Store) Delete(ctx context.Context, keys ...string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000) // the API's limit per request
		ids := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(s.key(k))}
		}
		out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(s.bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return err
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("deleting %s: %s", aws.ToString(e.Key), aws.ToString(e.Message))
		}
		keys = keys[n:]
	}
	return nil
}

// s3ReaderAt reads an object with ranged GETs: Parquet readers read the
// footer, then only the column chunks they need.
type s3ReaderAt struct {
	ctx context.Context
	s   *s3Store
	key string
}

func (r *s3ReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	out, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{
		Bucket: aws.String(r.s.bucket), Key: aws.String(r.key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1)),
	})
	if err != nil {
		return 0, err
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}
