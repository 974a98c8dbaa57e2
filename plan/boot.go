package plan

import (
	"fmt"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// bootDesired adds the boot unit and its enable link (state.BootUnitFiles)
// to a host that has something of migrate's to restore and where systemd
// is PID 1: at boot the unit puts back the host's part of the last
// confirmed apply (agent, boot.go). The text is the agent's own
// (Facts.Boot.Unit), which names the agent binary on that host. With them
// go the drop-ins (state.DropInServices), which run the same restore after
// nftables.service flushed the ruleset or systemd-sysctl.service set the
// sysctl files' values (an agent before them reports no drop-in text:
// none is added).
func bootDesired(f state.Facts, h *HostDesired) {
	b := f.Boot
	if len(h.Objects) == 0 || b == nil || !b.Systemd || b.Unit == "" {
		return
	}
	unit, link := state.BootUnitFiles(b.UnitDir)
	h.add(state.Object{File: &state.File{Path: unit, Content: b.Unit}},
		state.Object{File: &state.File{Path: link, Link: unit}})
	for _, svc := range state.DropInServices {
		if t := b.DropIns[svc]; t != "" {
			h.add(state.Object{File: &state.File{Path: state.BootDropInPath(b.UnitDir, svc), Content: t}})
		}
	}
}

// BootNotes say, per host with something of migrate's on it, whether its
// part survives a reboot, and what the last boot restore did.
func BootNotes(want map[string]HostDesired, facts map[string]state.Facts) []string {
	var out []string
	for _, host := range []string{New, Old} {
		b := facts[host].Boot
		if b == nil {
			continue
		}
		if l := BootLine(host, b); l != "" {
			out = append(out, l)
		}
		if l := AfterRestoreLine(host, b); l != "" {
			out = append(out, l)
		}
		if len(want[host].Objects) == 0 {
			continue
		}
		switch {
		case !b.Systemd:
			out = append(out, fmt.Sprintf("host %s: systemd is not PID 1 there, so migrate installs no boot unit: this host's part will not survive a reboot (after one, run `migrate apply`)", host))
		case b.Unit == "":
			out = append(out, fmt.Sprintf("host %s: the agent's path or state directory has characters a systemd unit cannot hold, so migrate installs no boot unit: this host's part will not survive a reboot", host))
		}
	}
	return out
}

// BootLine is what the host's restore at boot did in its current boot, in
// words an operator can act on ("" when no restore ran in this boot, or
// it had nothing to do).
func BootLine(host string, b *state.Boot) string {
	r := b.ThisBoot()
	if r == nil {
		return ""
	}
	name := strings.ToUpper(host)
	at := r.Time.UTC().Format("15:04 UTC")
	var s string
	switch r.Outcome {
	case state.BootRestored:
		s = fmt.Sprintf("%s was restored at boot at %s (%d step(s) in %d ms)", name, at, r.Steps, r.TookMS)
	case state.BootFailed:
		s = fmt.Sprintf("%s's restore at boot failed at %s: %s; %s is as before migrate: run migrate apply", name, at, r.Error, name)
	}
	if len(r.RevertedRuns) > 0 {
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf("%s rebooted inside the confirm window of apply %s: that apply was reverted, not restored", name, strings.Join(r.RevertedRuns, ", "))
	}
	return s
}

// AfterRestoreLine is what a drop-in's last restore did in the host's
// current boot ("" when none put anything back or failed in it).
func AfterRestoreLine(host string, b *state.Boot) string {
	r := b.ThisBootAfter()
	if r == nil {
		return ""
	}
	name := strings.ToUpper(host)
	at := r.Time.UTC().Format("15:04 UTC")
	switch r.Outcome {
	case state.BootRestored:
		what := "removed migrate's part there (a ruleset that begins with `flush ruleset`)"
		if r.Service != state.NftablesService {
			what = "set sysctls migrate had changed back to the values of /etc/sysctl.d (see plan's warning of the file)"
		}
		l := fmt.Sprintf("%s %s on %s at %s %s; migrate's drop-in put it back within %d ms (%d step(s))", r.Service, r.After, name, at, what, r.TookMS, r.Steps)
		if host == Old && r.Service == state.NftablesService {
			l += ". A moved connection that sent a packet in between was reset by OLD's own stack"
		}
		return l
	case state.BootFailed:
		return fmt.Sprintf("WARNING host %s: %s %s at %s: migrate's drop-in could not put back migrate's part: %s. Run migrate apply", host, r.Service, r.After, at, r.Error)
	}
	return ""
}

// BootFailed reports a host whose restore failed in its current boot.
func BootFailed(b *state.Boot) bool {
	r := b.ThisBoot()
	return r != nil && r.Outcome == state.BootFailed
}

// SpaceNote warns of a host whose state directory cannot take an apply
// (agent/reserve): apply refuses to change anything there until there is
// room, and says so again. "" when there is room, or nothing was measured.
func SpaceNote(host string, s *state.StateDirSpace) string {
	if s == nil || !s.Short() {
		return ""
	}
	rb := "Its reserve is gone (the disk filled since it was made): a rollback may stop at its first step until there is room."
	if s.Reserve {
		rb = "Its reserve is there, so a rollback can still record every step."
	}
	return fmt.Sprintf("WARNING host %s: %s: apply refuses until there is room. %s", host, s.Shortfall(), rb)
}
