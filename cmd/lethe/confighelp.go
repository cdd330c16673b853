package main

import (
	"io"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

func printUsage(w io.Writer, c *Config) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	err := envconfig.Usagef("", c, tw, "  {{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}")
	if err != nil {
		return err
	}
	return tw.Flush()
}
