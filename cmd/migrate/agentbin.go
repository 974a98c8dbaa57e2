package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/remote"
)

// agentBinaryCmd lists or writes out the linux agents a release CLI carries
// (to check a release, or to install an agent by hand).
func (c *cli) agentBinaryCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:    "agent-binary [linux/ARCH -o FILE]",
		Short:  "List the embedded agents, or write one to a file",
		Hidden: true,
		Args:   cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			agents, err := remote.EmbeddedAgents()
			if err != nil {
				return err
			}
			if len(agents) == 0 {
				return errors.New("this migrate carries no agents (a dev build); a release build (make release) does")
			}
			if len(args) == 0 {
				var archs []string
				for a := range agents {
					archs = append(archs, a)
				}
				sort.Strings(archs)
				for _, a := range archs {
					h, _ := agents[a].Hash()
					fmt.Fprintf(c.out, "linux/%s %s\n", a, h)
				}
				return nil
			}
			b := agents[strings.TrimPrefix(args[0], "linux/")]
			if b == nil || !strings.HasPrefix(args[0], "linux/") {
				return fmt.Errorf("no embedded agent for %s", args[0])
			}
			if out == "" {
				return errors.New("-o FILE is required")
			}
			data, err := b.Data()
			if err != nil {
				return err
			}
			return os.WriteFile(out, data, 0o755)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write the agent to")
	return cmd
}
