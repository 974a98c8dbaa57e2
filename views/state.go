package views

import (
	"fmt"
	"time"

	"github.com/opsmigrate/migrate/state"
)

// StateList prints one resource address per line.
func (v *View) StateList(statePath string, rs []state.Resource) {
	for _, r := range rs {
		fmt.Fprintln(v.Out, r.Address)
	}
}

// StateShow prints one resource: what it is now, what rollback restores,
// and the steps that made it so.
func (v *View) StateShow(r state.Resource) {
	value := func(o *state.Object, absent string) string {
		if o == nil {
			return absent
		}
		return o.String()
	}
	fmt.Fprintf(v.Out, "# %s\n", v.paint("1", r.Address))
	fmt.Fprintf(v.Out, "host:     %s\n", r.Host)
	fmt.Fprintf(v.Out, "object:   %s\n", r.Key)
	fmt.Fprintf(v.Out, "now:      %s\n", value(r.Current, "absent (migrate removed it)"))
	fmt.Fprintf(v.Out, "rollback: %s\n", value(r.Restore, "delete it (migrate created it)"))
	if r.Current != nil && r.Current.Nft != nil {
		for _, s := range r.Current.Nft.Spec.Services {
			fmt.Fprintf(v.Out, "  service %s %s %d: %d%% of new flows to NEW\n", s.Addr, s.Proto, s.Port, s.Percent)
		}
		for _, f := range r.Current.Nft.Spec.Forwards {
			fmt.Fprintf(v.Out, "  forward %s %s %d -> %s port %d\n", f.Addr, f.Proto, f.Port, f.To, f.ToPort)
		}
	}
	fmt.Fprintln(v.Out, "history:")
	for _, e := range r.Entries {
		fmt.Fprintf(v.Out, "  %s  run %s step %d  %s %s\n", e.Time.UTC().Format(time.RFC3339), e.Run, e.Seq, v.symbol(e.Step.Action), Describe(e.Step))
	}
}
