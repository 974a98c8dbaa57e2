package plan

import (
	"fmt"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// NetworkdDropin is the drop-in plan advises: migrate never writes
// networkd's configuration itself.
const NetworkdDropin = "/etc/systemd/networkd.conf.d/60-migrate.conf"

// NetworkdFix is the command that writes NetworkdDropin.
const NetworkdFix = `mkdir -p /etc/systemd/networkd.conf.d && printf '[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n' > ` + NetworkdDropin

// NetworkdNotes warns about each host where systemd-networkd runs in the
// agent's network namespace with ManageForeignRoutingPolicyRules= or
// ManageForeignRoutes= yes (the default) and migrate's part there has
// rules or routes: networkd removes rules and routes it did not make when
// it starts (a restart, e.g. a systemd upgrade, too) and when it
// (re)configures a link, and the data path stops without a word.
func NetworkdNotes(want map[string]HostDesired, facts map[string]state.Facts) []string {
	var out []string
	for _, host := range []string{Old, New} {
		n := facts[host].Networkd
		if n == nil || !n.Running {
			continue
		}
		if err := n.Validate(); err != nil {
			out = append(out, fmt.Sprintf("WARNING host %s: the agent's report on systemd-networkd is malformed (%v): check %s's ManageForeignRoutingPolicyRules= and ManageForeignRoutes= by hand", host, err, host))
			continue
		}
		rules, routes := false, false
		for _, o := range want[host].Objects {
			rules = rules || o.Rule != nil
			routes = routes || o.Route != nil
		}
		var lost, set []string
		if n.ForeignRules {
			set = append(set, "ManageForeignRoutingPolicyRules=yes")
			if rules {
				lost = append(lost, "policy rules")
			}
		}
		if n.ForeignRoutes {
			set = append(set, "ManageForeignRoutes=yes")
			if routes {
				lost = append(lost, "routes")
			}
		}
		if len(lost) == 0 {
			continue
		}
		s := fmt.Sprintf("WARNING host %s: systemd-networkd runs there (pid %d) with %s: it removes migrate's %s when it starts or restarts (a systemd upgrade restarts it) and when it reconfigures a link, and the data path stops. Before `migrate apply`, run on %s: `%s` and then `systemctl restart systemd-networkd` (restart it before migrate apply: a restart with the old settings is exactly what removes the rules)",
			host, n.PID, strings.Join(set, " and "), strings.Join(lost, " and "), host, NetworkdFix)
		if len(n.Problems) > 0 {
			s += fmt.Sprintf("; what migrate could not read or parse in networkd.conf (a value not understood counts as yes): %s", strings.Join(n.Problems, "; "))
		}
		out = append(out, s)
	}
	return out
}
