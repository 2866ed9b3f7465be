package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"reflect"

	"gopkg.in/yaml.v3"
)

// cmdConfig implements `tailsift config check FILE`: load and validate FILE
// the way `run` would, and print the effective configuration with secrets
// masked.
func cmdConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	out, err := yaml.Marshal(&masked)
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
