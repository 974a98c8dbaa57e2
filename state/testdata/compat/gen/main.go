// Writes state/testdata/compat: a state file and a host journal, with
// their logs, and an agent nft record, written by migrate's main at
// d265444 (before typed state), plus what that code made of them.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/state"
)

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func objects() (old, nw []state.Object) {
	svcs := []state.NftService{}
	for p := 8000; p < 8010; p++ {
		svcs = append(svcs, state.NftService{Addr: "198.51.100.10", Proto: "tcp", Port: uint16(p), Percent: 100})
	}
	svcs = append(svcs, state.NftService{Addr: "2001:db8::10", Proto: "udp", Port: 53, Percent: 10})
	var acct []state.NftService
	for _, s := range svcs {
		s.Percent = 0
		acct = append(acct, s)
	}
	oldNft := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
		Role: "old", TunnelDev: "mig0", Mark: 0x20000, Services: svcs, Accounted: acct,
		Underlay:    &state.NftUnderlay{Proto: "udp", Port: 4789, Local: "198.51.100.1", Peer: "203.0.113.2"},
		Forwards:    []state.NftForward{{Addr: "198.51.100.11", Proto: "tcp", Port: 443, To: "203.0.113.20", ToPort: 8443}, {Addr: "2001:db8::11", Proto: "udp", Port: 500, To: "2001:db8:1::20", ToPort: 500}},
		ForwardMark: 0x40000, Guard4: true, Guard6: true, KeepDest: true,
	}}
	newNft := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
		Role: "new", TunnelDev: "mig0", Mark: 0x20000,
		Underlay:    &state.NftUnderlay{Proto: "udp", Port: 4789, Local: "203.0.113.2", Peer: "198.51.100.1"},
		NoARP:       []string{"198.51.100.10", "198.51.100.11"},
		UDPServices: []state.NftService{{Addr: "2001:db8::10", Proto: "udp", Port: 53}},
		DNATReplies: true,
	}}
	directOld := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
		Role: "old", TunnelDev: "eth1", Mark: 0x20000, PeerSrc: []string{"198.51.100.10", "2001:db8::10"},
		Services: []state.NftService{{Addr: "198.51.100.10", Proto: "tcp", Port: 25, Percent: 100}},
	}}
	wgNft := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{
		Role: "new", TunnelDev: "mig0", Mark: 0x20000,
		Underlay: &state.NftUnderlay{Proto: "gre", Local: "2001:db8:2::2", Peer: "2001:db8:2::1"},
	}}
	unit, link := state.BootUnitFiles("/etc/systemd/system")
	old = []state.Object{
		{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}},
		{Link: &state.Link{Name: "mig0", Type: "vxlan", Local: "198.51.100.1", Remote: "203.0.113.2", VNI: 4242, Port: 4789, MAC: "02:6d:67:fe:2a:01", MTU: 1450, Up: true}},
		{Addr: &state.Addr{Dev: "mig0", CIDR: "169.254.42.1/30"}},
		{Rule: &state.Rule{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 77}},
		{Rule: &state.Rule{Family: 6, Priority: 901, Src: "2001:db8::10/128", IifName: "lo", Table: 4242, Protocol: 77}},
		{Route: &state.Route{Family: 4, Table: 4242, Type: "unicast", Dst: "0.0.0.0/0", Dev: "mig0", Gw: "169.254.42.2", Protocol: 77}},
		{Route: &state.Route{Family: 6, Table: 4242, Type: "throw", Dst: "2001:db8:2::/48", Protocol: 77}},
		{Nft: &oldNft},
		{File: &state.File{Path: unit, Content: "[Unit]\nDescription=migrate\n"}},
		{File: &state.File{Path: link, Link: unit}},
	}
	nw = []state.Object{
		{Link: &state.Link{Name: "mig1", Type: "gre", Local: "203.0.113.2", Remote: "198.51.100.1", Key: 42, MTU: 1472, Up: true}},
		{Link: &state.Link{Name: "mig2", Type: "ip6gre", Local: "2001:db8:2::2", Remote: "2001:db8:2::1", MTU: 1448}},
		{Link: &state.Link{Name: "wg0", Type: "wireguard", Remote: "198.51.100.1", Port: 51820, PeerKey: "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU=", PublicKey: "T0xEb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2Q=", MTU: 1420, Up: true}},
		{Rule: &state.Rule{Family: 4, Priority: 500, Dst: "198.51.100.10/32", IifName: "lo", Table: 254, Protocol: 77}},
		{Rule: &state.Rule{Family: 4, Priority: 0, Table: 255, Protocol: 2}},
		{Addr: &state.Addr{Dev: "lo", CIDR: "198.51.100.10/32"}},
		{Addr: &state.Addr{Dev: "lo", CIDR: "2001:db8::10/128", NoDAD: true, NoPrefixRoute: true}},
		{Route: &state.Route{Family: 6, Table: 4242, Type: "unicast", Dst: "::/0", Dev: "mig0", Gw: "fe80::1", Protocol: 77}},
		{Nft: &newNft},
		{Nft: &wgNft},
		{Nft: &directOld},
	}
	return old, nw
}

func main() {
	dir := os.Args[1]
	must(os.MkdirAll(dir, 0o755))
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	old, nw := objects()

	// The CLI's state file: targets, a run, steps on both hosts (one
	// rolled back, one update), half in the snapshot, half in the log.
	path := filepath.Join(dir, "migrate.state")
	j := &state.Journal{Version: state.JournalVersion, Lineage: "0123456789abcdef",
		Targets: map[string]state.Target{
			"old": {User: "root", Address: "198.51.100.1", Port: 22, KnownHosts: "/root/.ssh/known_hosts"},
			"new": {User: "admin", Address: "2001:db8:2::2", Port: 2222, KnownHosts: "/root/.ssh/known_hosts", Sudo: true,
				Jumps: []state.Target{{User: "j", Address: "192.0.2.7", Port: 22, Name: "jump"}}},
		}}
	must(j.Save(path))
	run := "3f2a9c01d4e5b6a7"
	recs := []state.LogRecord{{Op: state.OpRun, Run: run, Time: t0, Intent: "intent-digest"}}
	seq := 0
	step := func(host string, s state.Step) {
		seq++
		s.Host = host
		recs = append(recs, state.LogRecord{Op: state.OpStep, Run: run, Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Step: &s})
	}
	for i := range old {
		step("old", state.Step{Action: state.Create, After: &old[i]})
	}
	must(j.Commit(path, recs...))
	must(j.Save(path)) // these are in the snapshot now
	recs = nil
	for i := range nw {
		step("new", state.Step{Action: state.Create, After: &nw[i]})
	}
	before := state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}
	after := state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}}
	step("new", state.Step{Action: state.Update, Before: &before, After: &after})
	recs = append(recs, state.LogRecord{Op: state.OpUndo, Run: run, Seq: seq, Time: t0.Add(time.Hour)})
	must(j.Commit(path, recs...))

	// The agent's host journal on NEW: write-ahead (pending, then done),
	// appended with CommitTo; the last step stays pending (agent died).
	hpath := filepath.Join(dir, "journal.json")
	h := &state.Journal{Version: state.JournalVersion, Lineage: "fedcba9876543210"}
	must(h.Save(hpath))
	for i := range nw {
		s := state.Step{Host: "new", Action: state.Create, After: &nw[i]}
		r := state.LogRecord{Op: state.OpStep, Run: run, Seq: i + 1, Time: t0.Add(time.Duration(i) * time.Second), Step: &s, Pending: true}
		must(state.CommitTo(hpath, r))
		if i < len(nw)-1 {
			must(state.CommitTo(hpath, state.LogRecord{Op: state.OpDone, Run: run, Seq: i + 1, Time: r.Time}))
		}
	}

	// The agent's record of its nft table (agent/kernel/nft.go saveNft).
	b, err := json.MarshalIndent(*old[7].Nft, "", "  ")
	must(err)
	must(os.WriteFile(filepath.Join(dir, "nft-migrate.json"), append(b, '\n'), 0o644))

	// What this code made of them: each journal loaded and written again
	// (the wire form of every object), and every object's key, text and,
	// for nft, digest.
	var want strings.Builder
	for _, p := range []string{path, hpath} {
		l, err := state.LoadJournal(p)
		must(err)
		b, err := json.Marshal(l)
		must(err)
		must(os.WriteFile(p+".want", append(b, '\n'), 0o644))
		for _, e := range l.Entries {
			o := e.Step.Object()
			fmt.Fprintf(&want, "%s %d %s\n\tkey %s\n\ttext %s\n", filepath.Base(p), e.Seq, e.Step.Action, o.Key(), o.String())
			if o.Nft != nil {
				fmt.Fprintf(&want, "\tdigest %s\n", o.Nft.Spec.Digest())
			}
		}
	}
	must(os.WriteFile(filepath.Join(dir, "objects.want"), []byte(want.String()), 0o644))
}
