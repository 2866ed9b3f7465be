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
	"strings"
	"syscall"
	"time"
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
		{"version", "print the version and VCS revision of this build", cmdVersion},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, outputs{stderr, stdout})
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
	fmt.Fprintf(stderr, "tailsift: unknown command %q; run 'tailsift --help' for the commands\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tailsift <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w, "\nRun 'tailsift <command> --help' for a command's flags.")
}

// outputs is the error stream main hands to commands, carrying standard
// output along: a FlagSet has one output, and a command's help, asked for,
// belongs on standard output (tailsift run --help | less) while its errors
// belong on standard error.
type outputs struct {
	io.Writer           // standard error
	stdout    io.Writer // where asked-for help goes
}

// flagOutput is a command's FlagSet output: errors go to standard error,
// and it carries what the help needs besides the flags.
type flagOutput struct {
	io.Writer           // standard error
	help      io.Writer // standard output when run from main
	args      string    // positional arguments, for the usage line: "<trace-id>"
	helpFor   func(w io.Writer)
}

// newFlagSet returns a FlagSet that reports errors instead of exiting: a
// flag error is one line and a hint, the help only when asked for.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	return newCommandFlags(name, "", stderr)
}

// newCommandFlags is newFlagSet for a command that takes positional
// arguments, named in args for its help.
func newCommandFlags(name, args string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tailsift "+name, flag.ContinueOnError)
	out := &flagOutput{Writer: stderr, help: stderr, args: args}
	if o, ok := stderr.(outputs); ok {
		out.help = o.stdout
	}
	fs.SetOutput(out)
	fs.Usage = func() {} // parseFlags prints help or a hint
	return fs
}

// setHelp replaces the flag list of fs's help with the output of help.
func setHelp(fs *flag.FlagSet, help func(w io.Writer)) {
	if o, ok := fs.Output().(*flagOutput); ok {
		o.helpFor = help
	}
}

// parseFlags parses args. Asked for help, it prints the help to standard
// output and returns flag.ErrHelp; on a bad flag, the flag package has
// printed one line, and parseFlags adds where to find the flags and
// returns errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		printHint(fs)
		return errUsage
	}
	return nil
}

// parseFlagsOnly is parseFlags for commands that take positional
// arguments: it leaves them in fs.Args().
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		printHelp(fs)
		return err
	default:
		printHint(fs)
		return errUsage
	}
}

func printHint(fs *flag.FlagSet) {
	fmt.Fprintf(fs.Output(), "run '%s --help' for its flags\n", fs.Name())
}

// printHelp prints a command's usage line and flags with their defaults.
func printHelp(fs *flag.FlagSet) {
	out, ok := fs.Output().(*flagOutput)
	if !ok {
		out = &flagOutput{Writer: fs.Output(), help: fs.Output()}
	}
	w := out.help
	if out.args != "" {
		fmt.Fprintf(w, "usage: %s %s [flags]\n", fs.Name(), out.args)
	} else {
		fmt.Fprintf(w, "usage: %s [flags]\n", fs.Name())
	}
	if out.helpFor != nil {
		out.helpFor(w)
		return
	}
	fmt.Fprintln(w, "\nflags:")
	fs.VisitAll(func(fl *flag.Flag) { printFlag(w, fl.Name, flagValueName(fl), fl.Usage, fl.DefValue) })
}

// printFlag prints one flag's help: name, kind of value and default on
// one line, what it does indented below.
func printFlag(w io.Writer, name, value, usage, def string) {
	fmt.Fprintf(w, "  --%s", name)
	if value != "" {
		fmt.Fprintf(w, " %s", value)
	}
	if def != "" && def != "false" {
		fmt.Fprintf(w, "  (default: %s)", def)
	}
	fmt.Fprintf(w, "\n      %s\n", usage)
}

// flagValueName names the kind of value a flag takes, or "" for a switch.
func flagValueName(fl *flag.Flag) string {
	if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return ""
	}
	switch fl.Value.(type) {
	case *parsedFlag[time.Duration]:
		return "DURATION"
	case *parsedFlag[int64]:
		return "SIZE"
	}
	name, _ := flag.UnquoteUsage(fl)
	switch name {
	case "value", "string":
		return "TEXT"
	}
	return strings.ToUpper(name)
}
