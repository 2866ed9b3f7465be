package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// cmdConfig implements `tailsift config check FILE`: load and validate FILE
// the way `run` would, and print the effective configuration with secrets
// masked.
func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(stdout, "usage: tailsift config check FILE\n\nLoads FILE, the TAILSIFT_* environment and the defaults as run does, validates\nthem, and prints the effective configuration with secrets masked.")
		return nil
	}
	if len(args) != 2 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: tailsift config check FILE")
		return errUsage
	}
	fs := newFlagSet("config check", stderr)
	cfg, err := loadConfig(fs, args[1], os.Getenv)
	if err != nil {
		return err
	}
	if _, err := validateConfig(cfg); err != nil {
		return err
	}
	masked := cfg
	maskSecrets(reflect.ValueOf(&masked).Elem())
	var doc yaml.Node
	if err := doc.Encode(&masked); err != nil {
		return err
	}
	writeUnits(&doc, masked)
	omitUnset(&doc)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# effective configuration of %s (secrets masked)\n%s", args[1], out)
	return nil
}

// maskSecrets replaces every non-empty string field tagged secret:"true".
func maskSecrets(v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch {
		case v.Type().Field(i).Tag.Get("secret") == "true" && f.Kind() == reflect.String && f.String() != "":
			f.SetString("*****")
		case f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(yaml.Node{}):
			maskSecrets(f)
		}
	}
}

// writeUnits rewrites the durations and sizes of doc, cfg marshalled, as
// they are written in a file (5m, 64MiB, 30d) rather than as Go prints them
// (5m0s, 67108864).
func writeUnits(doc *yaml.Node, cfg Config) {
	for _, k := range configKeys() {
		n := doc
		for _, part := range strings.Split(k.key, ".") {
			n = mappingValue(n, part)
		}
		if n == nil {
			continue
		}
		if kind, shown := describeValue(k.key, keyValue(&cfg, k.key)); kind == "DURATION" || kind == "SIZE" {
			n.Value, n.Tag, n.Style = shown, "!!str", 0
		}
	}
}

// mappingValue returns the value of key in the mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// omitUnset leaves out the document sections (policies, head_sampling,
// budget) the configuration does not set: printed as null, they would make
// the output a file that does not load.
func omitUnset(doc *yaml.Node) {
	m := doc
	if m.Kind == yaml.DocumentNode && len(m.Content) == 1 {
		m = m.Content[0]
	}
	var kept []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		if v := m.Content[i+1]; v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue
		}
		kept = append(kept, m.Content[i], m.Content[i+1])
	}
	m.Content = kept
}
