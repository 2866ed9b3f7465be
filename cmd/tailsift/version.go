package main

import (
	"context"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tailsift/tailsift/internal/buildinfo"
)

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, buildinfo.Get())
	return nil
}

// buildInfoMetric is tailsift_build_info: 1, labelled with the build, so a
// dashboard can show which nodes run which code during a rollout.
func buildInfoMetric() prometheus.Collector {
	b := buildinfo.Get()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tailsift_build_info",
		Help: "Always 1; its labels name the build: module version, VCS revision, Go version."},
		[]string{"version", "revision", "goversion"})
	g.WithLabelValues(b.Version, b.ShortRevision(), b.GoVersion).Set(1)
	return g
}
