package sampler

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEPolicyExample parses the policy example in README.md, so the
// documentation cannot drift from what the parser accepts.
func TestREADMEPolicyExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "### Policies and the cost cap")
	if !ok {
		t.Fatal("README.md has no policies section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	doc, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no yaml block in the README's policies section")
	}
	p, err := ParsePolicies([]byte(doc))
	if err != nil {
		t.Fatalf("README policy example: %v", err)
	}
	if _, ok := p.(*Budget); !ok {
		t.Errorf("README example with a budget parsed to %T, want *Budget", p)
	}
}
