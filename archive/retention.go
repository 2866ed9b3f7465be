package archive

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Partition is one dt=/hour= partition of the archive.
type Partition struct {
	Prefix string    // "dt=2026-11-23/hour=06/"
	Hour   time.Time // start of the hour, UTC
	Keys   []string
	Bytes  int64
}

// Partitions lists the archive's partitions, oldest first. Objects outside
// the dt=/hour= layout are ignored.
func Partitions(ctx context.Context, st Store) ([]Partition, error) {
	objs, err := st.List(ctx, "")
	if err != nil {
		return nil, err
	}
	byPrefix := map[string]*Partition{}
	for _, o := range objs {
		parts := strings.SplitN(o.Key, "/", 3)
		if len(parts) != 3 {
			continue
		}
		hour, err := time.Parse("dt=2006-01-02/hour=15", parts[0]+"/"+parts[1])
		if err != nil {
			continue
		}
		prefix := parts[0] + "/" + parts[1] + "/"
		p := byPrefix[prefix]
		if p == nil {
			p = &Partition{Prefix: prefix, Hour: hour}
			byPrefix[prefix] = p
		}
		p.Keys = append(p.Keys, o.Key)
		p.Bytes += o.Size
	}
	out := make([]Partition, 0, len(byPrefix))
	for _, p := range byPrefix {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hour.Before(out[j].Hour) })
	return out, nil
}

// RetentionPlan is what retention deletes, and why.
type RetentionPlan struct {
	Delete      []Partition
	DeleteWhy   []string // per Delete entry: "older than 720h0m0s" or "over 500GB"
	Keep        []Partition
	TotalBytes  int64
	KeptBytes   int64
	MaxAge      time.Duration
	MaxBytes    int64
	Now         time.Time
	Unsatisfied bool // the newest partition alone exceeds MaxBytes
}

// PlanRetention chooses whole partitions to delete, oldest first, until
// every remaining partition is younger than maxAge (the partition's hour
// ended less than maxAge ago) and the remaining total is at most maxBytes.
// Zero disables either limit. The partition of the current hour is never
// deleted for size: it is being written.
func PlanRetention(parts []Partition, maxAge time.Duration, maxBytes int64, now time.Time) RetentionPlan {
	plan := RetentionPlan{MaxAge: maxAge, MaxBytes: maxBytes, Now: now}
	for _, p := range parts {
		plan.TotalBytes += p.Bytes
	}
	remaining := plan.TotalBytes
	current := now.UTC().Truncate(time.Hour)
	for i, p := range parts {
		switch {
		case maxAge > 0 && now.Sub(p.Hour.Add(time.Hour)) > maxAge:
			plan.DeleteWhy = append(plan.DeleteWhy, fmt.Sprintf("older than %v", maxAge))
		case maxBytes > 0 && remaining > maxBytes && p.Hour.Before(current):
			plan.DeleteWhy = append(plan.DeleteWhy, fmt.Sprintf("archive over %s", FormatBytes(maxBytes)))
		default:
			plan.Keep = parts[i:]
			plan.KeptBytes = remaining
			plan.Unsatisfied = maxBytes > 0 && remaining > maxBytes
			return plan
		}
		plan.Delete = append(plan.Delete, p)
		remaining -= p.Bytes
	}
	plan.KeptBytes = remaining
	return plan
}

// Apply deletes the planned partitions, oldest first, calling done after
// each.
func (p RetentionPlan) Apply(ctx context.Context, st Store, done func(Partition)) error {
	for _, part := range p.Delete {
		if err := st.Delete(ctx, part.Keys...); err != nil {
			return fmt.Errorf("deleting %s: %w", part.Prefix, err)
		}
		if done != nil {
			done(part)
		}
	}
	return nil
}

// FormatBytes renders n in decimal units, as storage is billed.
func FormatBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%cB", float64(n)/float64(div), "kMGTPE"[exp])
}
