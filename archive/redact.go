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

// rule returns the first rule that matches key, or nil.
func (r *Redaction) rule(key []byte) *compiledRule {
	for i := range r.rules {
		c := &r.rules[i]
		if c.keys[string(key)] || c.keyRe != nil && c.keyRe.Match(key) {
			return c
		}
	}
	return nil
}

// value returns the redacted value and whether to keep the attribute.
func (c *compiledRule) value(hashKey []byte, v string) (string, bool) {
	switch c.action {
	case "drop":
		return "", false
	case "hash":
		m := hmac.New(sha256.New, hashKey)
		m.Write([]byte(v))
		return "hmac:" + hex.EncodeToString(m.Sum(nil)[:16]), true
	default:
		return c.pattern.ReplaceAllString(v, "****"), true
	}
}

// kvs redacts the attribute list s, the last in b.kvs, and returns what is
// left of it.
func (r *Redaction) kvs(b *rowBatch, s span32) span32 {
	if r == nil {
		return s
	}
	n := s.lo
	for _, a := range b.kvs[s.lo:s.hi] {
		if c := r.rule(b.str(a.key)); c != nil {
			v, keep := c.value(r.key, string(b.str(a.val)))
			if !keep {
				continue
			}
			a.val = b.addString(v)
		}
		b.kvs[n] = a
		n++
	}
	b.kvs = b.kvs[:n]
	return span32{s.lo, n}
}

// resource redacts resource attributes in place.
func (r *Redaction) resource(res []kvBytes) []kvBytes {
	if r == nil {
		return res
	}
	out := res[:0]
	for _, a := range res {
		if c := r.rule(a.key); c != nil {
			v, keep := c.value(r.key, string(a.val))
			if !keep {
				continue
			}
			a.val = []byte(v)
		}
		out = append(out, a)
	}
	return out
}

// promoted redacts a row's promoted columns, by each key they store in
// turn (resource attributes are redacted once per scope, but a promoted
// copy of one is redacted here).
func (r *Redaction) promoted(b *rowBatch, row *spanRow) {
	if r == nil {
		return
	}
	for slot, keys := range promotedKeys {
		for _, key := range keys {
			if row.has&(1<<slot) == 0 {
				break
			}
			c := r.rule([]byte(key))
			if c == nil {
				continue
			}
			if v, keep := c.value(r.key, string(b.str(row.promoted[slot]))); !keep {
				row.has &^= 1 << slot
			} else {
				row.promoted[slot] = b.addString(v)
			}
		}
	}
	for _, key := range httpStatusKeys {
		if r.rule([]byte(key)) != nil {
			row.has &^= hasHTTPStatus // a number cannot hold a hash or a mask
		}
	}
}
