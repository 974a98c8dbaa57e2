package views

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/opsmigrate/migrate/status"
)

// Reading prints reading n (from 0) of `migrate status`: with --watch on
// a terminal it redraws in place, otherwise a blank line parts readings.
func (v *View) Reading(r status.Report, n int, watch bool) {
	if watch && v.Color {
		fmt.Fprint(v.Out, "\x1b[H\x1b[2J")
	} else if n > 0 {
		fmt.Fprintln(v.Out)
	}
	v.Status(r)
}

// Status prints one reading of `migrate status`.
func (v *View) Status(r status.Report) {
	fmt.Fprintf(v.Out, "%s at %s\n\n", v.paint("1", "migrate status"), r.Time.Local().Format(time.DateTime))
	for _, host := range []string{"old", "new"} {
		if why, down := r.Unreachable[host]; down {
			fmt.Fprintf(v.Out, "%s %s\n", v.paint("31", "Host "+host+" UNREACHABLE:"), why)
		}
	}
	if len(r.Unreachable) > 0 {
		fmt.Fprintln(v.Out)
	}
	if t := r.Tunnel; t != nil {
		state := v.paint("32", "up")
		switch {
		case len(r.Unreachable) > 0 && (t.OldToNew.Target == "" || t.NewToOld.Target == ""):
			state = v.paint("33", "UNKNOWN (a host could not be read)")
		case !t.Up():
			state = v.paint("31", "DOWN")
		}
		fmt.Fprintf(v.Out, "Tunnel %s (%s, %s <-> %s): %s\n", t.Name, t.Type, t.OldEndpoint, t.NewEndpoint, state)
		fmt.Fprintf(v.Out, "  old -> new: %s\n", v.probe(t.OldToNew, t.OldLinkUp, r.Reached("old")))
		fmt.Fprintf(v.Out, "  new -> old: %s\n\n", v.probe(t.NewToOld, t.NewLinkUp, r.Reached("new")))
	}
	if c := r.Conntrack; c != nil {
		line := c.Line()
		if c.Over {
			line = v.paint("33", line)
		}
		fmt.Fprintf(v.Out, "%s\n\n", line)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(v.Out, "Note: %s\n", n)
	}
	tw := tabwriter.NewWriter(v.Out, 0, 0, 2, ' ', 0)
	if len(r.Services) > 0 {
		fmt.Fprintln(tw, "SERVICE\tADDRESS\tPORTS\tSTAGE\tNEW FLOWS TO NEW\tBYTES TO NEW\tON OLD\tVIA TUNNEL\tSTATE")
		for _, s := range r.Services {
			stage := s.LiveStage
			if s.LiveStage == "canary" {
				stage = fmt.Sprintf("canary %d%%", s.CanaryPercent)
			}
			flows := fmt.Sprint(s.NewFlows)
			if s.NewFlowsPerSec >= 0 {
				flows += fmt.Sprintf(" (%.1f/s)", s.NewFlowsPerSec)
			}
			state := s.State
			if s.Drained {
				if !s.DrainedSince.IsZero() {
					state += " (since " + s.DrainedSince.Local().Format(time.TimeOnly) + ")"
				}
				state = v.paint("32", state)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, s.Address, s.Ports, s.Protocol, stage, flows, Bytes(s.Bytes), s.OnOld, s.ViaTunnel, state)
		}
	}
	tw.Flush()
	if len(r.Forwards) > 0 {
		if len(r.Services) > 0 {
			fmt.Fprintln(v.Out)
		}
		tw = tabwriter.NewWriter(v.Out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FORWARD\tON\tADDRESS\tPORTS\tTO\tFORWARDED\tLOCAL\tSTATE")
		for _, f := range r.Forwards {
			state := f.State
			if f.Live {
				state = v.paint("32", state)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\t%d\t%d\t%s\n", f.Name, f.On, f.Address, f.Ports, f.Protocol, f.To, f.Forwarded, f.Local, state)
		}
		tw.Flush()
	}
	fmt.Fprintf(v.Out, "\n%s\n", r.Verdict)
}

func (v *View) probe(p status.Probe, linkUp, reached bool) string {
	if !reached {
		return "unknown: host not read, not probed from here"
	}
	link := "device up"
	if !linkUp {
		link = v.paint("31", "device missing or down")
	}
	switch {
	case p.Target == "":
		return link + ", not probed"
	case p.Error != "":
		return fmt.Sprintf("%s, ping %s %s", link, p.Target, v.paint("31", "failed: "+p.Error))
	}
	return fmt.Sprintf("%s, ping %s rtt %s", link, p.Target, rtt(p.RTT))
}

func rtt(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

// Bytes renders a byte count in binary units.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
