package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestComposeFile checks docker-compose.yml against the code, since Docker
// cannot run in CI: every tailsift command line parses with the real flag
// sets, every TAILSIFT_ variable names a configuration key (a misspelt one
// would be silently ignored), each node's configuration validates, and the
// nodes form one cluster: unique IDs, gossip and forward addresses on the
// container's own name, joins aimed at a node's gossip address.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image       string         `yaml:"image"`
			Command     yaml.Node      `yaml:"command"` // a string or a list`
			Environment map[string]any `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, k := range configKeys() {
		known[k.env()] = true
	}
	gossip := map[string]string{} // service → gossip address
	var joins []string
	nodeIDs := map[string]string{}
	gens := 0
	for name, svc := range doc.Services {
		if svc.Image != "tailsift:local" {
			continue
		}
		var command []string // a string would be split by a shell that the image lacks
		if err := svc.Command.Decode(&command); err != nil || len(command) == 0 {
			t.Errorf("%s: want the command as a list of arguments: %v", name, err)
			continue
		}
		env := map[string]string{}
		for k, v := range svc.Environment {
			env[k] = fmt.Sprint(v)
			if strings.HasPrefix(k, "TAILSIFT_") && !known[k] {
				t.Errorf("%s: %s is not a configuration variable", name, k)
			}
		}
		var stderr bytes.Buffer
		switch sub, args := command[0], command[1:]; sub {
		case "run":
			// The key is made at first start in a volume; a key of
			// the same size stands in for it.
			if f := env["TAILSIFT_CLUSTER_SECRET_KEY_FILE"]; f == "" {
				t.Errorf("%s: no cluster key", name)
			} else {
				env["TAILSIFT_CLUSTER_SECRET_KEY_FILE"] = writeFile(t, t.TempDir(), "cluster.key", []byte("0123456789abcdef0123456789abcdef\n"))
			}
			_, _, cfg, err := parseRunArgs(args, func(k string) string { return env[k] }, &stderr)
			if err != nil {
				t.Errorf("%s: tailsift run %q: %v %s", name, args, err, stderr.String())
				continue
			}
			if _, err := validateConfig(cfg); err != nil {
				t.Errorf("%s: configuration: %v", name, err)
			}
			if prev, dup := nodeIDs[cfg.NodeID]; dup {
				t.Errorf("%s and %s share node ID %q", name, prev, cfg.NodeID)
			}
			nodeIDs[cfg.NodeID] = name
			for key, addr := range map[string]string{"gossip": cfg.Cluster.GossipAddr, "forward": cfg.Cluster.ForwardAddr} {
				if host, _, err := net.SplitHostPort(addr); err != nil || host != name {
					t.Errorf("%s: %s address %q is not on the container's own name", name, key, addr)
				}
			}
			gossip[name] = cfg.Cluster.GossipAddr
			joins = append(joins, cfg.Cluster.Join...)
		case "gen":
			gens++
			// gen parses its flags, then produces; with a cancelled
			// context it stops at the first message without dialling.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := cmdGen(ctx, args, io.Discard, &stderr); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: tailsift gen %q: %v %s", name, args, err, stderr.String())
			}
		default:
			t.Errorf("%s: unexpected subcommand %q", name, sub)
		}
	}
	if len(gossip) != 3 || gens != 1 {
		t.Fatalf("want three run nodes and one gen, got %d and %d", len(gossip), gens)
	}
	if len(joins) != 2 {
		t.Errorf("want two nodes joining the first, got joins %v", joins)
	}
	for _, j := range joins {
		found := false
		for _, g := range gossip {
			found = found || g == j
		}
		if !found {
			t.Errorf("join %q is no node's gossip address (%v)", j, gossip)
		}
	}
	t.Logf("nodes %v, gossip %v, joins %v", slices.Sorted(maps.Keys(nodeIDs)), gossip, joins)
}
