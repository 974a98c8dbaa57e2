package ops

import (
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
)

// TargetOf is how to reach the host a plan file names; timeout is how
// long it may stay silent (--host-timeout).
func TargetOf(name string, h *config.Host, timeout time.Duration) remote.Target {
	t := remote.Target{Name: name, User: h.User, Address: h.Address, Port: h.Port,
		IdentityFile: h.IdentityFile, IdentityFiles: h.IdentityFiles, KnownHosts: h.KnownHosts, Sudo: h.Sudo, Timeout: timeout}
	for _, j := range h.ProxyJump {
		t.Jumps = append(t.Jumps, TargetOf(j.Name, j, timeout))
	}
	return t
}

// StateTarget is what the state file records of a target, so that
// rollback reaches the hosts apply changed even without the plan file.
func StateTarget(t remote.Target) state.Target {
	st := state.Target{User: t.User, Address: t.Address, Port: t.Port, IdentityFile: t.IdentityFile, IdentityFiles: t.IdentityFiles, KnownHosts: t.KnownHosts, Sudo: t.Sudo}
	for _, j := range t.Jumps {
		sj := StateTarget(j)
		sj.Name = j.Name
		st.Jumps = append(st.Jumps, sj)
	}
	return st
}

// FromStateTarget is the inverse of StateTarget.
func FromStateTarget(name string, t state.Target, timeout time.Duration) remote.Target {
	rt := remote.Target{Name: name, User: t.User, Address: t.Address, Port: t.Port, IdentityFile: t.IdentityFile, IdentityFiles: t.IdentityFiles, KnownHosts: t.KnownHosts, Sudo: t.Sudo, Timeout: timeout}
	for _, j := range t.Jumps {
		rt.Jumps = append(rt.Jumps, FromStateTarget(j.Name, j, timeout))
	}
	return rt
}

// ConfigTargets are the hosts of a plan file, by name.
func ConfigTargets(hosts map[string]*config.Host, timeout time.Duration) map[string]remote.Target {
	out := map[string]remote.Target{}
	for name, h := range hosts {
		out[name] = TargetOf(name, h, timeout)
	}
	return out
}

// RecordedTargets are the hosts to undo or unlock: those the journal
// records (apply writes how it reached them, so these are the hosts it
// changed), else, when it does not record both, those the plan file
// names. j may be nil (no readable state file). The error is the plan
// file's, when it was needed and cannot be read; the targets found so far
// come with it.
func RecordedTargets(j *state.Journal, planFile string, timeout time.Duration) (map[string]remote.Target, error) {
	targets := map[string]remote.Target{}
	if j != nil {
		for name, t := range j.Targets {
			targets[name] = FromStateTarget(name, t, timeout)
		}
	}
	if len(targets) >= 2 {
		return targets, nil
	}
	cfg, err := config.Load(planFile)
	if err != nil {
		return targets, err
	}
	for name, t := range ConfigTargets(cfg.Hosts, timeout) {
		targets[name] = t
	}
	return targets, nil
}
