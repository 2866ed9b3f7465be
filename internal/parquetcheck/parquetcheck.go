// Package parquetcheck reads archive files in tests with a second Parquet
// reader, independent of parquet-go, which writes them: hyparquet, a pure
// JavaScript reader run by Node (read.mjs beside this file). What both it
// and DuckDB read the same way, any reader should.
//
// Install it with `npm install --no-audit --no-fund` in this directory
// (.ci/run does).
package parquetcheck

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Row is one row as the reader decodes it: column name to value, with
// 64-bit integers and timestamps as decimal strings, maps as JSON objects
// and lists as arrays; "file" names the file it came from.
type Row = map[string]any

// Read returns the rows of files. It skips the test when Node or the
// package is missing, or fails it when CI=true, and fails it when a file
// does not read, including when a string in it is not valid UTF-8.
func Read(t testing.TB, files ...string) []Row {
	t.Helper()
	node, script := require(t)
	cmd := exec.Command(node, append([]string{script}, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hyparquet could not read the archive: %v\n%s", err, stderr.Bytes())
	}
	var doc struct{ Rows []Row }
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("reading hyparquet's output: %v", err)
	}
	return doc.Rows
}

// require returns node's path and the reader script's.
func require(t testing.TB) (node, script string) {
	t.Helper()
	_, src, _, _ := runtime.Caller(0)
	dir := filepath.Dir(src)
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI", what)
		}
		t.Skipf("%s is missing; skipping the second Parquet reader", what)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node (Node.js 20)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "hyparquet", "package.json")); err != nil {
		missing("hyparquet (npm install --no-audit --no-fund in " + dir + ")")
	}
	return node, filepath.Join(dir, "read.mjs")
}
