package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/views"
)

// stateCmd reads the local state file only: like `terraform state`, it
// shows what migrate recorded, without contacting the hosts (`migrate
// plan` shows whether the hosts still match).
func (c *cli) stateCmd() *cobra.Command {
	var file, stateFlag string
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Show what the state file records as owned by migrate",
		Args:  cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVarP(&file, "file", "f", "migration.hcl", "plan file (its directory holds the state file)")
	cmd.PersistentFlags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	load := func() (string, *state.Journal, error) {
		sp := ops.StatePath(file, stateFlag)
		j, err := ops.LoadState(sp)
		return sp, j, err
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the objects migrate owns on both hosts, one address per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sp, j, err := load()
			if err != nil {
				return err
			}
			var v views.State = c.view()
			v.StateList(sp, j.Resources())
			return nil
		},
	}
	show := &cobra.Command{
		Use:   "show ADDRESS",
		Short: "Show one object: its value now, what rollback restores, and its history",
		Args:  cobra.ExactArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			_, j, err := load()
			if err != nil || len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for _, r := range j.Resources() {
				out = append(out, r.Address)
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			sp, j, err := load()
			if err != nil {
				return err
			}
			r, ok := j.FindResource(args[0])
			if !ok {
				return fmt.Errorf("%s records no object at %q; `migrate state list` shows the addresses", sp, args[0])
			}
			var v views.State = c.view()
			v.StateShow(r)
			return nil
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}
