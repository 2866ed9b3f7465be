// Package s3test runs a real S3-compatible server (versitygw) for tests, on
// 127.0.0.1, with a bucket backed by a temporary directory.
package s3test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Credentials the server accepts; Start exports them as the standard AWS
// environment variables, so code under test finds them the way it would in
// production.
const (
	AccessKey = "tailsift-test"
	SecretKey = "tailsift-test-secret"
)

// Server is a running versitygw.
type Server struct {
	t        *testing.T
	Endpoint string // http://127.0.0.1:port
	Root     string // each directory below is a bucket
	Bucket   string // created by Start
	addr     string
	cmd      *exec.Cmd
}

// Start starts versitygw with one bucket in region us-east-1, the region
// it exports in AWS_REGION. Without the binary it skips the test, except
// under CI=true where the server is required.
func Start(t *testing.T) *Server {
	t.Helper()
	return StartInRegion(t, "us-east-1")
}

// StartInRegion is Start with the server in another region: it rejects
// requests signed for any other, so a test shows that a configured region
// overrides the AWS_REGION the environment still holds.
func StartInRegion(t *testing.T, region string) *Server {
	t.Helper()
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		if p := filepath.Join(os.Getenv("HOME"), "go", "bin", "versitygw"); fileExists(p) {
			bin = p
		} else if os.Getenv("CI") == "true" {
			t.Fatal("versitygw is required in CI (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
		} else {
			t.Skip("versitygw not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0); skipping S3 test")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{t: t, Endpoint: "http://" + addr, Root: t.TempDir(), Bucket: "traces", addr: addr}
	if err := os.Mkdir(filepath.Join(s.Root, s.Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s.cmd = exec.Command(bin, "--port", addr, "--region", region, "posix", s.Root)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server; objects stay in Root.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// Restart starts the server (again) on the same address and waits until it
// accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd.Process != nil {
		old := s.cmd
		s.cmd = exec.Command(old.Path, old.Args[1:]...)
		s.cmd.Env = old.Env
	}
	out, err := os.CreateTemp(s.t.TempDir(), "versitygw-*.log")
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting versitygw: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out.Name())
			s.t.Fatalf("versitygw did not listen on %s: %v\n%s", s.addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Objects lists the object keys under prefix, as paths relative to the
// bucket, by reading the backing directory.
func (s *Server) Objects(prefix string) ([]string, error) {
	var keys []string
	root := filepath.Join(s.Root, s.Bucket)
	err := filepath.Walk(filepath.Join(root, prefix), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() && strings.HasPrefix(info.Name(), ".") {
			return filepath.SkipDir // the server's temporary uploads
		}
		if !info.IsDir() {
			rel, _ := filepath.Rel(root, p)
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil, nil
	}
	return keys, err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// URL is the archive URL for prefix in the test bucket.
func (s *Server) URL(prefix string) string { return fmt.Sprintf("s3://%s/%s", s.Bucket, prefix) }
