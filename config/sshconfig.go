package config

import (
	"fmt"
	"net/netip"

	"github.com/hashicorp/hcl/v2"

	"github.com/opsmigrate/migrate/remote/sshconfig"
)

// sshConfig reads the OpenSSH client configuration once per parse.
func (p *parser) sshConfig() (*sshconfig.Config, error) {
	if !p.sshcfgLoaded {
		p.sshcfg, p.sshcfgErr = sshconfig.Load()
		p.sshcfgLoaded = true
	}
	return p.sshcfg, p.sshcfgErr
}

// sshConfigName names the configuration file in messages.
func sshConfigName() string {
	if p := sshconfig.DefaultPath(); p != "" {
		return p
	}
	return "~/.ssh/config"
}

// checkSSHHost accepts an IP address (v4 or v6) or a DNS name, the forms
// a HostName may take.
func checkSSHHost(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.IsUnspecified() || a.IsMulticast() {
			return "not a host address"
		}
		return ""
	}
	return checkHostname(s)
}

// applySSHConfig completes h from the OpenSSH client configuration the way
// ssh does: values in the plan win, then the first value ssh_config gives
// for the name as written, then the defaults. Match blocks in ssh_config
// are not evaluated (see package sshconfig). hasPort and khSet say whether
// the plan gave a port and known_hosts.
func (p *parser) applySSHConfig(h *Host, ctx, arg string, rng hcl.Range, hasPort, khSet bool) {
	bad := func(reason string) {
		p.add(rng, fmt.Sprintf("invalid ssh %q in %s: %s", arg, ctx, reason),
			fmt.Sprintf("fix %s, or write the ssh argument as user@host[:port]", sshConfigName()))
	}
	cfg, err := p.sshConfig()
	if err != nil {
		bad(fmt.Sprintf("cannot read the SSH client configuration: %v", err))
		return
	}
	sc, err := cfg.Lookup(h.Address)
	if err != nil {
		bad(err.Error())
		return
	}
	if h.User == "" {
		if sc.User == "" {
			p.add(rng, fmt.Sprintf("invalid ssh %q in %s: missing user", arg, ctx),
				sshRule+fmt.Sprintf(", or give it a User in a Host block of %s", sshConfigName()))
			return
		}
		h.User = sc.User
	}
	if len(sc.Sources) == 0 {
		return // ssh_config says nothing about this host
	}
	h.SSH = arg
	if sc.HostName != "" {
		if r := checkSSHHost(sc.HostName); r != "" {
			bad(fmt.Sprintf("HostName %q (%s): %s", sc.HostName, sc.Sources["hostname"], r))
			return
		}
		h.Address = sc.HostName
	}
	if !hasPort && sc.Port != 0 {
		h.Port = sc.Port
	}
	for _, f := range sc.IdentityFiles {
		path, err := sshconfig.ExpandPath(f, h.Address, h.User)
		if err != nil {
			bad(fmt.Sprintf("IdentityFile %q (%s): %v", f, sc.Sources["identityfile"], err))
			return
		}
		h.IdentityFiles = append(h.IdentityFiles, path)
	}
	if !khSet && sc.UserKnownHostsFile != "" {
		path, err := sshconfig.ExpandPath(sc.UserKnownHostsFile, h.Address, h.User)
		if err != nil {
			bad(fmt.Sprintf("UserKnownHostsFile %q (%s): %v", sc.UserKnownHostsFile, sc.Sources["userknownhostsfile"], err))
			return
		}
		h.KnownHosts = path
	}
	for _, hop := range sc.ProxyJump {
		j, reason := p.jumpHost(cfg, hop, h)
		if reason != "" {
			bad(fmt.Sprintf("ProxyJump (%s): jump host %s: %s", sc.Sources["proxyjump"], hop, reason))
			return
		}
		h.ProxyJump = append(h.ProxyJump, j)
	}
}

// jumpHost resolves one ProxyJump hop through ssh_config. Where the hop's
// own settings give no identity file or known_hosts file, the target
// host's identity_file and known_hosts are used.
func (p *parser) jumpHost(cfg *sshconfig.Config, hop sshconfig.Hop, target *Host) (*Host, string) {
	sc, err := cfg.Lookup(hop.Host)
	if err != nil {
		return nil, err.Error()
	}
	j := &Host{Name: hop.String(), SSH: hop.String(), User: hop.User, Address: hop.Host, Port: DefaultSSHPort, Range: target.Range}
	if j.User == "" {
		j.User = sc.User
	}
	if j.User == "" {
		return nil, fmt.Sprintf("no user: write it as user@%s in ProxyJump, or give it a User in a Host block", hop.Host)
	}
	if sc.HostName != "" {
		j.Address = sc.HostName
	}
	if r := checkSSHHost(j.Address); r != "" {
		return nil, r
	}
	switch {
	case hop.Port != 0:
		j.Port = hop.Port
	case sc.Port != 0:
		j.Port = sc.Port
	}
	for _, f := range sc.IdentityFiles {
		path, err := sshconfig.ExpandPath(f, j.Address, j.User)
		if err != nil {
			return nil, fmt.Sprintf("IdentityFile %q: %v", f, err)
		}
		j.IdentityFiles = append(j.IdentityFiles, path)
	}
	if len(j.IdentityFiles) == 0 {
		j.IdentityFile, j.IdentityFiles = target.IdentityFile, target.IdentityFiles
	}
	j.KnownHosts = target.KnownHosts
	if sc.UserKnownHostsFile != "" {
		path, err := sshconfig.ExpandPath(sc.UserKnownHostsFile, j.Address, j.User)
		if err != nil {
			return nil, fmt.Sprintf("UserKnownHostsFile %q: %v", sc.UserKnownHostsFile, err)
		}
		j.KnownHosts = path
	}
	return j, ""
}
