package plan

import (
	"fmt"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// SysctlConfNotes warns where a host's sysctl files set a sysctl that
// migrate sets to another value (Facts.SysctlConf). At boot that does no
// harm: migrate's unit runs after systemd-sysctl. But whatever applies
// the files again while the migration runs (`sysctl --system`, a restart
// of systemd-sysctl, configuration management) puts the file's value
// back, and migrate's data path breaks until the next apply: a hardened
// image's `net.ipv4.ip_forward = 0` stops OLD forwarding every moved
// flow.
func SysctlConfNotes(want map[string]HostDesired, facts map[string]state.Facts) []string {
	var out []string
	for _, host := range []string{New, Old} {
		for _, o := range want[host].Objects {
			s := o.Sysctl
			if s == nil {
				continue
			}
			set, ok := facts[host].SysctlConf[s.Name]
			if !ok || strings.TrimSpace(set.Value) == s.Value {
				continue
			}
			what := "migrate's data path breaks"
			switch {
			case host == Old && (s.Name == "net.ipv4.ip_forward" || s.Name == "net.ipv6.conf.all.forwarding"):
				what = "OLD stops forwarding the moved services' flows (clients of every moved service get no answer)"
			case s.Name == EarlyDemux:
				what = "moved services' clients that reuse a port hang (early demux, see README)"
			case s.Name == state.ConntrackMax:
				what = "OLD's conntrack limit drops back and a full table drops new flows"
			}
			sets := fmt.Sprintf("%s:%d sets %s = %s", set.File, set.Line, s.Name, set.Value)
			if set.Pattern != "" {
				sets = fmt.Sprintf("%s:%d sets %s = %s, which covers %s,", set.File, set.Line, set.Pattern, set.Value, s.Name)
			}
			fix := fmt.Sprintf("Set it to %s in %s for the time of the migration", s.Value, set.File)
			if set.Pattern != "" {
				// Changing the glob would change every interface.
				fix = fmt.Sprintf("Add the line `%s = %s` to a file in /etc/sysctl.d for the time of the migration (a sysctl named outright wins over a glob)", s.Name, s.Value)
			}
			out = append(out, fmt.Sprintf("WARNING host %s: %s and migrate sets %s. At boot migrate's unit runs after systemd-sysctl, and after `systemctl restart systemd-sysctl` migrate's drop-in sets it back within milliseconds (where systemd is PID 1), but anything else that applies the sysctl files again during the migration (`sysctl --system`, configuration management) puts %s back: %s until the next `migrate apply`. %s",
				host, sets, s.Value, set.Value, what, fix))
		}
	}
	return out
}
