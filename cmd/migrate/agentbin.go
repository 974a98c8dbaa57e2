package main

import (
	"fmt"

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
			if len(args) == 1 {
				return remote.WriteEmbeddedAgent(args[0], out)
			}
			lines, err := remote.EmbeddedAgentList()
			for _, l := range lines {
				fmt.Fprintln(c.out, l)
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write the agent to")
	return cmd
}
