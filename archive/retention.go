package archive

import (
	"context"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"
)

// Partition is one hour of the archive. Its files are under
// dt=YYYY-MM-DD/hour=H/, the hour unpadded so that Hive readers type the
// column as an integer (DuckDB reads hour=06 as the string '06'), and, in
// archives written before that, under the zero-padded hour=HH/. Tools read
// both; compaction moves an hour's files into the unpadded form.
type Partition struct {
	Prefix   string    // "dt=2026-11-23/hour=6/": where new and compacted files go
	Prefixes []string  // the prefixes its files are under, sorted: Prefix, "dt=2026-11-23/hour=06/", or both
	Hour     time.Time // start of the hour, UTC
	Keys     []string
	Bytes    int64
}

// String names the directories the partition's files are in.
func (p Partition) String() string {
	if len(p.Prefixes) == 0 {
		return p.Prefix
	}
	return strings.Join(p.Prefixes, " + ")
}

// Compacted reports whether the partition is one compacted file in the
// current layout, which compaction has nothing to do for.
func (p Partition) Compacted() bool {
	var data []string
	for _, k := range p.Keys {
		if strings.HasSuffix(k, ".parquet") {
			data = append(data, k)
		}
	}
	return isCompact(p.Prefix, data)
}

// isCompact reports whether keys, the Parquet files of the partition
// whose prefix is prefix, are one compacted file under that prefix.
func isCompact(prefix string, keys []string) bool {
	return len(keys) == 1 && strings.HasPrefix(keys[0], prefix) && strings.HasPrefix(path.Base(keys[0]), "part-compact-")
}

// partitionDir is the partition of hour, without the trailing slash.
func partitionDir(hour time.Time) string {
	return fmt.Sprintf("dt=%s/hour=%d", hour.Format("2006-01-02"), hour.Hour())
}

// paddedDir is the partition of hour in the zero-padded form of older
// archives; for hours 10 to 23 it is the same as partitionDir.
func paddedDir(hour time.Time) string {
	return fmt.Sprintf("dt=%s/hour=%02d", hour.Format("2006-01-02"), hour.Hour())
}

// parsePartitionDir returns the hour of a partition directory in either
// form ("dt=2026-11-23/hour=6" or "dt=2026-11-23/hour=06").
func parsePartitionDir(dir string) (time.Time, bool) {
	hour, err := time.Parse("dt=2006-01-02/hour=15", dir)
	if err != nil || dir != partitionDir(hour) && dir != paddedDir(hour) {
		return time.Time{}, false
	}
	return hour, true
}

// Partitions lists the archive's partitions, oldest first, each hour once
// whichever of its two forms its files are under. Objects outside the
// dt=/hour= layout are ignored.
func Partitions(ctx context.Context, st Store) ([]Partition, error) {
	objs, err := st.List(ctx, "")
	if err != nil {
		return nil, err
	}
	byHour := map[time.Time]*Partition{}
	for _, o := range objs {
		parts := strings.SplitN(o.Key, "/", 3)
		if len(parts) != 3 {
			continue
		}
		dir := parts[0] + "/" + parts[1]
		hour, ok := parsePartitionDir(dir)
		if !ok {
			continue
		}
		p := byHour[hour]
		if p == nil {
			p = &Partition{Prefix: partitionDir(hour) + "/", Hour: hour}
			byHour[hour] = p
		}
		if !slices.Contains(p.Prefixes, dir+"/") {
			p.Prefixes = append(p.Prefixes, dir+"/")
			slices.Sort(p.Prefixes)
		}
		p.Keys = append(p.Keys, o.Key)
		p.Bytes += o.Size
	}
	out := make([]Partition, 0, len(byHour))
	for _, p := range byHour {
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
			return fmt.Errorf("deleting %s: %w", part, err)
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
