package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/views"
)

func (c *cli) validateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the plan file without contacting any host",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(file)
			if err != nil {
				return err
			}
			var v views.Validate = c.view()
			v.Valid(file, len(cfg.Services), len(cfg.Forwards))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	return cmd
}

func (c *cli) fmtCmd() *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "fmt [FILE...]",
		Short: "Rewrite plan files in the canonical format (comments kept)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"migration.hcl"}
			}
			unformatted := 0
			if err := config.FormatFiles(args, check, func(f string) { unformatted++; fmt.Fprintln(c.out, f) }); err != nil {
				return err
			}
			if check && unformatted > 0 {
				return exitError{code: 3}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "list files that are not formatted and exit 3, without changing them")
	return cmd
}
