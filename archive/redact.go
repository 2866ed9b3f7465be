package archive

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
)

// RedactRule says what to do with attributes whose key matches, before
// anything is written. Rules apply in order; the first that matches a key
// wins.
type RedactRule struct {
	Keys       []string `yaml:"keys"`        // exact attribute keys
	KeyPattern string   `yaml:"key_pattern"` // or a regular expression over keys
	Action     string   `yaml:"action"`      // drop, hash or mask
	// Pattern, for mask: the parts of the value to replace with "****"
	// (default: the whole value).
	Pattern string `yaml:"pattern"`
}

// Redaction is a compiled rule set.
type Redaction struct {
	rules []compiledRule
	key   []byte
}

type compiledRule struct {
	keys    map[string]bool
	keyRe   *regexp.Regexp
	action  string
	pattern *regexp.Regexp
}

// NewRedaction compiles rules. hashKey keys the hash action (HMAC-SHA256),
// so equal values hash equally — joins and GROUP BY still work — while a
// dictionary attack needs the key.
func NewRedaction(rules []RedactRule, hashKey []byte) (*Redaction, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	r := &Redaction{key: hashKey}
	for i, rule := range rules {
		c := compiledRule{action: rule.Action, keys: map[string]bool{}}
		for _, k := range rule.Keys {
			c.keys[k] = true
		}
		var err error
		if rule.KeyPattern != "" {
			if c.keyRe, err = regexp.Compile(rule.KeyPattern); err != nil {
				return nil, fmt.Errorf("archive.redact[%d].key_pattern: %w", i, err)
			}
		}
		if len(c.keys) == 0 && c.keyRe == nil {
			return nil, fmt.Errorf("archive.redact[%d]: give keys or key_pattern", i)
		}
		switch rule.Action {
		case "drop":
		case "hash":
			if len(hashKey) < 16 {
				return nil, fmt.Errorf("archive.redact[%d]: action hash needs archive.redact_key_file with at least 16 bytes", i)
			}
		case "mask":
			p := rule.Pattern
			if p == "" {
				p = "(?s).+"
			}
			if c.pattern, err = regexp.Compile(p); err != nil {
				return nil, fmt.Errorf("archive.redact[%d].pattern: %w", i, err)
			}
		default:
			return nil, fmt.Errorf("archive.redact[%d].action: %q is not allowed (allowed: drop, hash, mask)", i, rule.Action)
		}
		r.rules = append(r.rules, c)
	}
	return r, nil
}

func (r *Redaction) rule(key string) *compiledRule {
	for i := range r.rules {
		c := &r.rules[i]
		if c.keys[key] || c.keyRe != nil && c.keyRe.MatchString(key) {
			return c
		}
	}
	return nil
}

// value returns the redacted value and whether to keep the attribute.
func (r *Redaction) value(key, v string) (string, bool) {
	c := r.rule(key)
	if c == nil {
		return v, true
	}
	switch c.action {
	case "drop":
		return "", false
	case "hash":
		m := hmac.New(sha256.New, r.key)
		m.Write([]byte(v))
		return "hmac:" + hex.EncodeToString(m.Sum(nil)[:16]), true
	default:
		return c.pattern.ReplaceAllString(v, "****"), true
	}
}

// apply redacts a map in place.
func (r *Redaction) apply(m map[string]string) {
	if r == nil {
		return
	}
	for k, v := range m {
		if nv, keep := r.value(k, v); !keep {
			delete(m, k)
		} else if nv != v {
			m[k] = nv
		}
	}
}

// applyRow redacts every attribute of a row: span, event and link maps and
// the promoted columns (resource attributes are redacted once per scope).
func (r *Redaction) applyRow(row *Row) {
	if r == nil {
		return
	}
	r.apply(row.Attributes)
	for i := range row.Events {
		r.apply(row.Events[i].Attributes)
	}
	for i := range row.Links {
		r.apply(row.Links[i].Attributes)
	}
	for key, field := range promotedString {
		p := field(row)
		if *p == nil {
			continue
		}
		if nv, keep := r.value(key, **p); !keep {
			*p = nil
		} else if nv != **p {
			*p = &nv
		}
	}
	for key, field := range promotedInt {
		if p := field(row); *p != nil && r.rule(key) != nil {
			*p = nil // a number cannot hold a hash or a mask
		}
	}
}
