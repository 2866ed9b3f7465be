// Command tailsift consumes OTLP spans from Kafka, keeps whole traces worth
// keeping, and archives them as Parquet. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	useMadvFree()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand: it parses its own flags from args and returns an
// error for the user. errUsage means the flag package already printed why.
type command struct {
	name  string
	short string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var errUsage = errors.New("usage")

func commands() []command {
	return []command{
		{"run", "run one node: consume from Kafka, sample, archive", cmdRun},
		{"demo", "embedded broker + generator + one node, archive in ./tailsift-data", cmdDemo},
		{"broker", "run an embedded Kafka broker (for demos and tests)", cmdBroker},
		{"gen", "produce generated OTLP traces to Kafka", cmdGen},
		{"trace", "trace <trace-id> --archive URL: find one trace in the archive and print it as a tree", cmdTrace},
		{"retention", "delete the oldest archive partitions until age and size limits hold", cmdRetention},
		{"compact", "merge the small files of finished hours into large sorted ones, removing duplicate spans", cmdCompact},
		{"config", "config check FILE: validate a configuration and print it, secrets masked", cmdConfig},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "tailsift %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "tailsift: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tailsift <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w, "\nRun 'tailsift <command> -h' for a command's flags.")
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tailsift "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, mapping flag errors to errUsage (the FlagSet has
// already printed them).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}
