// Package status turns the live facts of both hosts into a report of how
// far each service's move has got: the stage that is live on OLD, the new
// flows sent to NEW, the established flows still served by OLD, and
// whether the drain is over. It is pure: facts in, a plain value out.
package status

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Report is one reading of both hosts.
type Report struct {
	Time     time.Time `json:"time"`
	Tunnel   *Tunnel   `json:"tunnel,omitempty"`
	Services []Service `json:"services"`
	// Forwards are the plan's forward blocks (in-kernel port bouncers).
	Forwards []Forward `json:"forwards,omitempty"`
	// Verdict says, in one sentence, what OLD is still needed for.
	Verdict string   `json:"verdict"`
	Notes   []string `json:"notes,omitempty"`
	// Unreachable names the hosts this reading could not read (host name
	// -> why). What depends on them is unknown, not zero.
	Unreachable map[string]string `json:"unreachable,omitempty"`
	// Conntrack is how full OLD's conntrack table is (nil when OLD was
	// not read or did not report it).
	Conntrack *Conntrack `json:"conntrack,omitempty"`
	// PathBroken says why flows sent to NEW would not be served ("" when
	// the path is whole or nothing was applied): NEW lost its part (a
	// reboot), a tunnel device is gone or down, or the tunnel does not
	// pass pings. No service is then called on NEW or drained.
	PathBroken string `json:"path_broken,omitempty"`
}

// Conntrack is how full OLD's conntrack table is. When it is full the
// kernel drops the first packet of every new flow on OLD.
type Conntrack struct {
	Loaded  bool    `json:"loaded"` // false: no conntrack on OLD yet
	Count   int64   `json:"count"`
	Max     int64   `json:"max"` // nf_conntrack_max; 0: no limit
	Percent float64 `json:"percent"`
	// Over: Count is above plan.ConntrackWarnPercent of Max.
	Over bool `json:"over"`
}

// Line is the status line for humans.
func (c Conntrack) Line() string {
	switch {
	case !c.Loaded:
		return "Conntrack on OLD: not loaded (nothing tracked yet)"
	case c.Max <= 0:
		return fmt.Sprintf("Conntrack on OLD: %d entries, no limit", c.Count)
	}
	l := fmt.Sprintf("Conntrack on OLD: %d of %d entries (%.1f%% full)", c.Count, c.Max, c.Percent)
	if c.Over {
		l += fmt.Sprintf(", over %d%%: when it is full the kernel drops new flows of every service on OLD; raise %s", plan.ConntrackWarnPercent, state.ConntrackMax)
	}
	return l
}

// Reached reports whether host was read.
func (r Report) Reached(host string) bool { _, down := r.Unreachable[host]; return !down }

// Tunnel is the tunnel's state as both ends see it.
type Tunnel struct {
	Name        string           `json:"name"`
	Type        state.TunnelType `json:"type"`
	OldEndpoint string           `json:"old_endpoint"`
	NewEndpoint string           `json:"new_endpoint"`
	// OldLinkUp and NewLinkUp: the device exists on the host and is up.
	OldLinkUp bool `json:"old_link_up"`
	NewLinkUp bool `json:"new_link_up"`
	// Probe is a ping through the tunnel from each end to the other's
	// inner address.
	OldToNew Probe `json:"old_to_new"`
	NewToOld Probe `json:"new_to_old"`
}

// Up is true when both devices are up and pings pass both ways.
func (t Tunnel) Up() bool {
	return t.OldLinkUp && t.NewLinkUp && t.OldToNew.OK() && t.NewToOld.OK()
}

// Probe is one ping's outcome; the zero value is "not measured".
type Probe struct {
	Target string        `json:"target"`
	RTT    time.Duration `json:"rtt_ns,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// OK is true when the ping was sent and answered.
func (p Probe) OK() bool { return p.Target != "" && p.Error == "" }

// Stage values of Service.LiveStage besides the plan's own.
const (
	StageMixed  = "mixed"
	StageAbsent = "old (nothing applied)"
	// StageRemoved: migrate's table on OLD was removed by something else.
	StageRemoved = "old (table removed)"
	// StageUnknown: OLD could not be read.
	StageUnknown = "unknown"
	// StageChanged: OLD's table is not what migrate last wrote (a hand
	// edit, or a saved copy of an earlier stage loaded by
	// nftables.service): the agent's record no longer says where new
	// flows go, so the service is neither called moved nor drained.
	StageChanged = "unknown (table changed outside migrate)"
)

// Service is one service block's progress.
type Service struct {
	Name     string      `json:"name"`
	Address  string      `json:"address"`
	Protocol state.Proto `json:"protocol"`
	Ports    string      `json:"ports"`
	// PlanStage is the stage the plan file asks for; LiveStage what OLD's
	// nft table does now ("old", "canary", "new", or StageMixed).
	PlanStage     string `json:"plan_stage"`
	LiveStage     string `json:"live_stage"`
	CanaryPercent int    `json:"canary_percent,omitempty"`
	// NewFlows, Packets, Bytes: sent to NEW through the tunnel since the
	// service was first applied (migrate's nft counters on OLD).
	NewFlows uint64 `json:"new_flows"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	// NewFlowsPerSec is the rate since the previous reading (--watch),
	// -1 when there is none.
	NewFlowsPerSec float64 `json:"new_flows_per_sec"`
	// OnOld are the connections OLD itself still serves, each counted
	// once: OLD's own TCP sockets of the service that can still carry
	// data (sock_diag: established, including idle ones and ones opened
	// before the first apply), its connected UDP sockets, and the
	// established conntrack entries not sent to NEW (UDP: answered
	// flows; also flows OLD hands to a container by DNAT, whose sockets
	// are in another namespace). OnOldSocketsOnly are those of OnOld
	// that conntrack does not hold: idle since before migrate's table
	// started conntrack, or closing. ViaTunnel: the conntrack entries on
	// OLD going to NEW.
	OnOld            int `json:"on_old"`
	OnOldSocketsOnly int `json:"on_old_sockets_only"`
	ViaTunnel        int `json:"via_tunnel"`
	// Drained: the live stage is "new" and OLD serves no connection of
	// the service any more (for UDP: none that can be known, see
	// UDPNote). DrainedSince is when a --watch first saw it drained
	// (zero when unknown).
	Drained      bool      `json:"drained"`
	DrainedSince time.Time `json:"drained_since,omitempty"`
	// NewUnserved are the ports of a service whose new flows go to NEW
	// (live stage new, canary or mixed) that nothing on NEW listens on:
	// NEW refuses those clients (plan.CheckReadiness on NEW's listeners).
	NewUnserved []uint16 `json:"new_unserved,omitempty"`
	// AllowUnready: the plan lets NEW be unready for it (allow_unready).
	AllowUnready bool `json:"allow_unready,omitempty"`
	// OldUnserved are the ports of a service whose new flows stay on OLD,
	// all of them or the share a canary leaves there (live stage old,
	// canary or mixed: a port below 100% in OLD's migrate table), that
	// nothing on OLD listens on: OLD refuses those clients (its daemon
	// was stopped too early, or crashed). Empty when OLD was not read,
	// has no migrate table, or its table keeps destinations (keep_dest:
	// another table DNATs there, and the listener may be a container's,
	// which OLD's namespace does not show).
	OldUnserved []uint16 `json:"old_unserved,omitempty"`
	// State is the one-line reading for humans.
	State string `json:"state"`
}

// Forward is one forward block as its host runs it.
type Forward struct {
	Name     string      `json:"name"`
	On       state.Role  `json:"on"` // "old" | "new"
	Address  string      `json:"address"`
	Protocol state.Proto `json:"protocol"`
	Ports    string      `json:"ports"`
	To       string      `json:"to"`
	// Live: every port of the block is in its host's migrate table now,
	// to the plan's destination. Unknown (false) when the host could not
	// be read.
	Live bool `json:"live"`
	// Forwarded: established flows (TCP established, UDP assured) going
	// through the forward; Local: established flows to the same address
	// and ports that the host serves itself (opened before the forward:
	// they drain there); Flows: every conntrack entry to them.
	Forwarded int `json:"forwarded"`
	Local     int `json:"local"`
	Flows     int `json:"flows"`
	// NewUnserved are the ports of a service whose new flows go to NEW
	// (live stage new, canary or mixed) that nothing on NEW listens on:
	// NEW refuses those clients (plan.CheckReadiness on NEW's listeners).
	NewUnserved []uint16 `json:"new_unserved,omitempty"`
	// AllowUnready: the plan lets NEW be unready for it (allow_unready).
	AllowUnready bool `json:"allow_unready,omitempty"`
	// State is the one-line reading for humans.
	State string `json:"state"`
}

// Input is what Build reads.
type Input struct {
	Config   *config.Config
	Old, New state.Facts
	// OldToNew and NewToOld are the tunnel pings (ignored without tunnel).
	OldToNew, NewToOld Probe
	Time               time.Time
	// Previous is the last reading (--watch), for rates and drain times.
	Previous *Report
	// Unreachable: hosts whose facts could not be read (name -> why);
	// their Facts are empty and mean nothing.
	Unreachable map[string]string
}

// Build makes the report.
func Build(in Input) Report {
	r := Report{Time: in.Time}
	if len(in.Unreachable) > 0 {
		r.Unreachable = in.Unreachable
	}
	oldDown := !r.Reached(plan.Old)
	if ct := in.Old.Conntrack; ct != nil && !oldDown {
		r.Conntrack = &Conntrack{Loaded: ct.Loaded, Count: ct.Count, Max: ct.Max}
		if ct.Loaded && ct.Max > 0 {
			r.Conntrack.Percent = float64(ct.Count) * 100 / float64(ct.Max)
			r.Conntrack.Over = ct.Count*100 > ct.Max*plan.ConntrackWarnPercent
		}
	}
	c := in.Config
	if c.Tunnel != nil {
		t := c.Tunnel
		oldDev, newDev := tunnelDevs(c, in)
		name := t.Name
		if plan.Direct(c) {
			name = oldDev + "/" + newDev // the segment's interface on each host
		}
		r.Tunnel = &Tunnel{Name: name, Type: t.Type, OldEndpoint: t.OldEndpoint.String(), NewEndpoint: t.NewEndpoint.String(),
			OldLinkUp: linkUp(in.Old, oldDev), NewLinkUp: linkUp(in.New, newDev), OldToNew: in.OldToNew, NewToOld: in.NewToOld}
	}
	r.PathBroken = pathBroken(c, in, r)
	// What each host's restore at boot did in its current boot.
	for _, h := range []struct {
		name string
		f    state.Facts
	}{{plan.New, in.New}, {plan.Old, in.Old}} {
		if l := plan.BootLine(h.name, h.f.Boot); l != "" && r.Reached(h.name) {
			r.Notes = append(r.Notes, l+".")
		}
		if l := plan.AfterRestoreLine(h.name, h.f.Boot); l != "" && r.Reached(h.name) {
			r.Notes = append(r.Notes, l+".")
		}
		// A saved copy of migrate's table in nftables.service's file bites
		// weeks later (a reboot, a restart, after rollback): say it where
		// the operator looks every day, not only in plan.
		if n := plan.NftConfNote(h.name, h.f.NftConf); n != "" && r.Reached(h.name) {
			r.Notes = append(r.Notes, n)
		}
		if n := plan.SpaceNote(h.name, h.f.StateDir); n != "" && r.Reached(h.name) {
			r.Notes = append(r.Notes, n)
		}
	}
	live := map[string]int{} // service key -> percent live on OLD
	switch {
	case oldDown:
	case in.Old.Nft != nil:
		for _, s := range in.Old.Nft.Spec.Services {
			live[s.Key()] = s.Percent
		}
	case in.Old.NftRemoved:
		r.Notes = append(r.Notes, plan.NftRemovedNote("OLD")+" Connections moved to NEW were cut, and new ones stay on OLD until then.")
	default:
		r.Notes = append(r.Notes, "OLD has no migrate nft table: nothing moves yet (run migrate apply).")
	}
	if in.New.NftRemoved && r.Reached(plan.New) {
		r.Notes = append(r.Notes, plan.NftRemovedNote("NEW"))
	}
	if in.Old.NftDrift != "" {
		r.Notes = append(r.Notes, "On OLD, "+in.Old.NftDrift+". Where the services' new flows go is not known until `migrate apply` writes the table again.")
	}
	prev := map[string]Service{}
	if in.Previous != nil {
		for _, s := range in.Previous.Services {
			prev[s.Name] = s
		}
	}
	var stats state.Stats
	if in.Old.Stats != nil {
		stats = *in.Old.Stats
	}
	// What NEW listens on, for the services whose flows go there: a
	// daemon that died on NEW is refused clients, however drained OLD is.
	ready := map[string]plan.Readiness{}
	unservedNotes := 0
	if r.Reached(plan.New) {
		for _, rd := range plan.CheckReadiness(c, in.New) {
			ready[rd.Service] = rd
		}
	}
	// What OLD listens on, for the new flows that stay there: a daemon
	// stopped on OLD before its service moved whole (stage old, canary,
	// mixed) gets those clients refused. Only with migrate's table on
	// OLD, which says where each port's new flows go. Not where that
	// table keeps destinations (keep_dest: another table, Docker's,
	// DNATs on OLD): the flows may go to a container, whose listener is
	// in its own namespace, so a port nothing on OLD listens on is no
	// sign of a refusal there (with Docker's default userland proxy,
	// docker-proxy listens on OLD anyway). NEW's side has no such
	// exception: plan's readiness check reads NEW's listeners alone too,
	// and docker-proxy or allow_unready answer it.
	var oldListens *listenerIndex
	var oldNotes []string
	oldUnservedNotes := 0
	if !oldDown && in.Old.Nft != nil && !in.Old.Nft.Spec.KeepDest {
		oldListens = indexListeners(in.Old.Listeners)
	}
	for _, s := range c.Services {
		sv := Service{Name: s.Name, Address: s.Address.String(), Protocol: s.Protocol, Ports: portList(s.Ports),
			PlanStage: s.Stage, NewFlowsPerSec: -1, AllowUnready: s.AllowUnready}
		percents := map[int]bool{}
		for _, k := range plan.ServiceKeys(s) {
			key := k.Key()
			percents[live[key]] = true
			cnt := stats.Counters[key]
			sv.NewFlows += cnt.NewFlows
			sv.Packets += cnt.Packets
			sv.Bytes += cnt.Bytes
			fc := stats.Flows[key]
			sv.OnOld += fc.Serving()
			sv.OnOldSocketsOnly += fc.SocketsOnly
			sv.ViaTunnel += fc.ToNew
		}
		sv.LiveStage = liveStage(percents, in.Old.Nft != nil)
		if sv.LiveStage == StageAbsent && in.Old.NftRemoved {
			sv.LiveStage = StageRemoved
		}
		if in.Old.Nft != nil && in.Old.NftDrift != "" {
			sv.LiveStage = StageChanged
		}
		if oldDown {
			sv.LiveStage = StageUnknown
		}
		if sv.LiveStage == "canary" {
			for p := range percents {
				sv.CanaryPercent = p
			}
		}
		p, hadPrev := prev[s.Name]
		// A reading that could not see OLD knows no counters: no rate
		// from it, nor to it.
		hadPrev = hadPrev && !oldDown && p.LiveStage != StageUnknown
		if hadPrev && in.Time.After(in.Previous.Time) && sv.NewFlows >= p.NewFlows {
			sv.NewFlowsPerSec = float64(sv.NewFlows-p.NewFlows) / in.Time.Sub(in.Previous.Time).Seconds()
		}
		sv.Drained = sv.LiveStage == "new" && sv.OnOld == 0 && r.PathBroken == ""
		if sv.Drained {
			switch {
			case hadPrev && p.Drained && !p.DrainedSince.IsZero():
				sv.DrainedSince = p.DrainedSince
			case hadPrev && !p.Drained:
				sv.DrainedSince = in.Time
			}
		}
		toNew := sv.LiveStage == "new" || sv.LiveStage == "canary" || sv.LiveStage == StageMixed
		if rd, ok := ready[s.Name]; ok && toNew && r.PathBroken == "" && !rd.Ready() {
			sv.NewUnserved = rd.Unserved
		}
		if oldListens != nil {
			for _, k := range plan.ServiceKeys(s) {
				if live[k.Key()] < 100 && !oldListens.serves(s.Protocol, k.Addr.String(), k.Port) {
					sv.OldUnserved = append(sv.OldUnserved, k.Port)
				}
			}
		}
		sv.State = describe(sv)
		if r.PathBroken != "" && toNew {
			sv.State = "BROKEN: its new flows are sent to NEW and not served there: " + r.PathBroken
		}
		if len(sv.NewUnserved) > 0 && !sv.AllowUnready {
			if unservedNotes++; unservedNotes <= maxUnservedNotes {
				r.Notes = append(r.Notes, unservedNote(sv, ready[s.Name]))
			}
		}
		// allow_unready does not silence OLD: it lets NEW be unready
		// (apply moves the service before NEW listens), and says
		// nothing about OLD, which served the service before the move
		// and refuses the clients it still takes once nothing listens.
		if len(sv.OldUnserved) > 0 {
			if oldUnservedNotes++; oldUnservedNotes <= maxUnservedNotes {
				oldNotes = append(oldNotes, oldUnservedNote(sv, oldListens))
			}
		}
		r.Services = append(r.Services, sv)
	}
	if n := unservedNotes - maxUnservedNotes; n > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("WARNING: and %d more service(s) that nothing on NEW listens on (their STATE says NOT SERVED ON NEW).", n))
	}
	if n := oldUnservedNotes - maxUnservedNotes; n > 0 {
		oldNotes = append(oldNotes, fmt.Sprintf("WARNING: and %d more service(s) whose new flows stay on OLD, where nothing listens on their port (their STATE says NOT SERVED ON OLD).", n))
	}
	r.Notes = append(r.Notes, oldNotes...)
	for _, s := range c.Services {
		if s.Protocol == state.UDP && !oldDown {
			r.Notes = append(r.Notes, UDPNote)
			break
		}
	}
	for _, f := range c.Forwards {
		r.Forwards = append(r.Forwards, buildForward(f, in, r))
	}
	r.Verdict = verdict(r)
	return r
}

func buildForward(f *config.Forward, in Input, r Report) Forward {
	fw := Forward{Name: f.Name, On: f.On, Address: f.Address.String(), Protocol: f.Protocol, Ports: portList(f.Ports), To: f.To.String()}
	if f.ToPort != 0 {
		fw.To = fmt.Sprintf("%s:%d", f.To, f.ToPort)
	}
	if !r.Reached(string(f.On)) {
		fw.State = "unknown: " + strings.ToUpper(string(f.On)) + " could not be read"
		return fw
	}
	facts := in.Old
	if f.On == state.RoleNew {
		facts = in.New
	}
	have := map[state.NftForward]bool{}
	if facts.Nft != nil {
		for _, e := range facts.Nft.Spec.Forwards {
			have[e] = true
		}
	}
	entries := plan.ForwardEntries(f)
	present := 0
	for _, e := range entries {
		if have[e] {
			present++
		}
		if facts.Stats != nil {
			fc := facts.Stats.Flows[state.NftService{Addr: e.Addr, Proto: e.Proto, Port: e.Port}.Key()]
			// The flow request carries the forward mark: ToNew-style
			// counting means "marked", here "forwarded".
			fw.Forwarded += fc.Established - fc.OnOld
			fw.Local += fc.OnOld
			fw.Flows += fc.Total
		}
	}
	fw.Live = present == len(entries)
	switch {
	case fw.Live:
		fw.State = fmt.Sprintf("forwarding on %s: %d established flow(s) through it", strings.ToUpper(string(f.On)), fw.Forwarded)
		if fw.Local > 0 {
			fw.State += fmt.Sprintf(", %d served by %s itself", fw.Local, strings.ToUpper(string(f.On)))
		}
	case present > 0:
		fw.State = fmt.Sprintf("partly applied (%d of %d ports): run migrate apply", present, len(entries))
	default:
		fw.State = "not applied: run migrate apply"
	}
	return fw
}

func portList(rs []config.PortRange) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return strings.Join(out, ",")
}

func linkUp(f state.Facts, name string) bool {
	l, ok := f.Link(name)
	return ok && l.Up
}

func liveStage(percents map[int]bool, haveTable bool) string {
	if !haveTable {
		return StageAbsent
	}
	if len(percents) != 1 {
		return StageMixed
	}
	for p := range percents {
		switch {
		case p == 0:
			return "old"
		case p >= 100:
			return "new"
		}
	}
	return "canary"
}

// UDPNote says what the drain count of a UDP service can and cannot see.
const UDPNote = "UDP has no connections. For a udp service, ON OLD counts OLD's connected UDP sockets of it and the UDP flows conntrack holds on OLD that were answered and not sent to NEW (such a flow lapses 2 minutes after its last datagram). A daemon on an unconnected UDP socket keeps no state the kernel can show: whether it still holds sessions of clients that went quiet cannot be known from OLD (their next datagram after the flow lapsed goes to NEW)."

func describe(s Service) string {
	if s.LiveStage == StageUnknown {
		return "unknown: OLD could not be read"
	}
	if s.LiveStage == StageChanged {
		return fmt.Sprintf("unknown: OLD's migrate table was changed outside migrate (the plan says %s: run migrate apply)", s.PlanStage)
	}
	pending := ""
	if s.LiveStage != s.PlanStage && !(s.LiveStage == StageAbsent && s.PlanStage == "old") {
		pending = fmt.Sprintf(" (the plan says %s: run migrate apply)", s.PlanStage)
	}
	if len(s.NewUnserved) > 0 {
		what := "its new flows go to NEW"
		if s.LiveStage == "canary" {
			what = fmt.Sprintf("%d%% of its new flows go to NEW", s.CanaryPercent)
		}
		allow := ""
		if s.AllowUnready {
			allow = " (allow_unready)"
		}
		if len(s.OldUnserved) > 0 {
			return fmt.Sprintf("NOT SERVED ON NEW%s NOR ON OLD: %s, where nothing listens on port %s, and %s, where nothing listens on port %s: those clients are refused",
				allow, what, plan.PortList(s.NewUnserved), oldShare(s, "its"), plan.PortList(s.OldUnserved))
		}
		return fmt.Sprintf("NOT SERVED ON NEW%s: %s, where nothing listens on port %s: those clients are refused", allow, what, plan.PortList(s.NewUnserved))
	}
	if len(s.OldUnserved) > 0 {
		return fmt.Sprintf("NOT SERVED ON OLD: %s, where nothing listens on port %s: those clients are refused", oldShare(s, "its"), plan.PortList(s.OldUnserved)) + pending
	}
	switch s.LiveStage {
	case "new":
		if s.Drained && s.Protocol == state.UDP {
			return "drained: OLD serves no UDP flow of it that conntrack or a connected socket shows (see the UDP note)" + pending
		}
		if s.Drained {
			return "drained: OLD serves no established flow of it" + pending
		}
		return fmt.Sprintf("draining: %d established flow(s) still served by OLD", s.OnOld) + pending
	case "canary":
		return fmt.Sprintf("canary: %d%% of new flows go to NEW, OLD serves the rest", s.CanaryPercent) + pending
	case StageMixed:
		return "mixed: its ports are at different stages" + pending
	}
	if s.ViaTunnel > 0 {
		return fmt.Sprintf("on OLD; %d flow(s) still draining on NEW", s.ViaTunnel) + pending
	}
	return "on OLD" + pending
}

// maxUnservedNotes: past this many, status counts the other services NEW
// does not serve in one line.
const maxUnservedNotes = 5

// unservedNote says which service NEW does not serve, and what NEW
// listens on instead.
func unservedNote(s Service, rd plan.Readiness) string {
	instead := "nothing for " + string(s.Protocol)
	if len(rd.NewListens) > 0 {
		instead = strings.Join(rd.NewListens, ", ")
	}
	return fmt.Sprintf("WARNING: nothing on NEW listens on %s %s port %s of service %q, whose new flows OLD sends to NEW: NEW refuses those clients (NEW listens on %s). Start the service on NEW again, or set stage = \"old\" and apply to send its new flows back to OLD.",
		s.Protocol, s.Address, plan.PortList(s.NewUnserved), s.Name, instead)
}

// oldShare says which of a service's new flows stay on OLD; its is the
// possessive ("its", "whose").
func oldShare(s Service, its string) string {
	switch s.LiveStage {
	case "canary":
		return fmt.Sprintf("%d%% of %s new flows stay on OLD", 100-s.CanaryPercent, its)
	case StageMixed:
		return fmt.Sprintf("part of %s new flows stay on OLD (its ports are at different stages)", its)
	}
	return its + " new flows stay on OLD"
}

// oldUnservedNote says which service OLD does not serve although OLD
// still takes its new flows, and what OLD listens on at those ports
// instead (another address: a daemon started again on the wrong one).
func oldUnservedNote(s Service, idx *listenerIndex) string {
	var instead []string
	seen := map[string]bool{}
	for _, p := range s.OldUnserved {
		for _, l := range idx.byPort[listenerKey{s.Protocol, p}] {
			d := l.Addr + ":" + fmt.Sprint(l.Port)
			if a, err := netip.ParseAddr(l.Addr); err == nil {
				d = netip.AddrPortFrom(a, l.Port).String()
			}
			if !seen[d] && len(instead) < 5 {
				seen[d] = true
				instead = append(instead, d)
			}
		}
	}
	also := ""
	if len(instead) > 0 {
		also = " (OLD listens on that port only at " + strings.Join(instead, ", ") + ")"
	}
	return fmt.Sprintf("WARNING: nothing on OLD listens on %s %s port %s of service %q, %s: OLD refuses those clients%s. Start the service on OLD again, or, once NEW serves it, set stage = \"new\" and apply to send its new flows to NEW.",
		s.Protocol, s.Address, plan.PortList(s.OldUnserved), s.Name, oldShare(s, "whose"), also)
}

// listenerIndex is a host's listeners by protocol and port: status looks
// up every port of every service at each --watch reading.
type listenerIndex struct {
	byPort map[listenerKey][]state.Listener
}

type listenerKey struct {
	proto state.Proto
	port  uint16
}

func indexListeners(ls []state.Listener) *listenerIndex {
	idx := &listenerIndex{byPort: map[listenerKey][]state.Listener{}}
	for _, l := range ls {
		k := listenerKey{l.Proto, l.Port}
		idx.byPort[k] = append(idx.byPort[k], l)
	}
	return idx
}

// serves reports whether a listener accepts proto traffic to addr:port
// (state.Listener.Serves: that address or a wildcard).
func (idx *listenerIndex) serves(proto state.Proto, addr string, port uint16) bool {
	for _, l := range idx.byPort[listenerKey{proto, port}] {
		if l.Serves(proto, addr, port) {
			return true
		}
	}
	return false
}

// verdict answers the operator's question: may OLD be switched off?
func verdict(r Report) string {
	if len(r.Services) == 0 && len(r.Forwards) == 0 {
		return "The plan has no services."
	}
	if !r.Reached(plan.Old) {
		return "OLD could not be read: how far each service has got is unknown. Keep OLD until it answers again (the ping from NEW through the tunnel says whether OLD itself is alive)."
	}
	if r.PathBroken != "" {
		return "The path to NEW is broken: " + r.PathBroken + ". The moved services' clients are not served by NEW (no answer, stalled transfers, or OLD's own daemon, as the reason says). Run migrate apply to put back what migrate made (what it did not make, as the reason says), or set the services to stage \"old\" and apply; OLD is still needed."
	}
	newDown := ""
	if !r.Reached(plan.New) {
		newDown = "NEW could not be read (its side of the tunnel is unknown): "
	}
	notMoved, draining, relaying, oldForwards := 0, 0, 0, 0
	for _, f := range r.Forwards {
		if f.On == state.RoleOld { // live or still to apply: the plan keeps OLD
			oldForwards++
		}
	}
	arriving := false
	unserved, oldUnserved := 0, 0
	for _, s := range r.Services {
		switch {
		case s.LiveStage != "new":
			notMoved++
		case !s.Drained:
			draining++
		}
		if len(s.NewUnserved) > 0 && !s.AllowUnready {
			unserved++
		}
		if len(s.OldUnserved) > 0 {
			oldUnserved++
		}
		relaying += s.ViaTunnel
		arriving = arriving || s.NewFlowsPerSec > 0
	}
	switch {
	case len(r.Services) == 0 && oldForwards == 0:
		return "The plan moves no service and runs no forward on OLD: it does not need OLD."
	case unserved > 0 || oldUnserved > 0:
		var says []string
		if unserved > 0 {
			says = append(says, fmt.Sprintf("NEW does not serve %d service(s) whose new flows go to it (see the warning above): their clients are refused. Start them on NEW again, or send them back to OLD (stage = \"old\"); do not move the address or DNS to NEW meanwhile.", unserved))
		}
		if oldUnserved > 0 {
			says = append(says, fmt.Sprintf("OLD does not serve %d service(s) whose new flows still go to it (see the warning above): OLD refuses their clients. Start them on OLD again, or, once NEW serves them, set stage = \"new\" and apply.", oldUnserved))
		}
		return newDown + strings.Join(says, " ")
	case newDown != "" && notMoved == 0 && draining == 0:
		return newDown + "every service is on NEW and drained as OLD sees it, but do not switch OLD off before NEW answers."
	case newDown != "":
		return newDown + fmt.Sprintf("OLD is still needed: %d service(s) not fully on NEW, %d draining.", notMoved, draining)
	case notMoved > 0:
		return fmt.Sprintf("OLD is still needed: %d service(s) are not fully on NEW.", notMoved)
	case draining > 0:
		return fmt.Sprintf("OLD is still needed: %d service(s) are draining; wait until every service says drained.", draining)
	case oldForwards > 0:
		return fmt.Sprintf("OLD is still needed: the plan has %d forward(s) on OLD (on = \"old\"); move them to NEW or remove them first.", oldForwards)
	case relaying > 0 || arriving:
		return fmt.Sprintf("Every service is on NEW and drained, but OLD still relays %d flow(s) through the tunnel (conntrack entries; closed TCP flows linger up to 2 minutes): clients still reach OLD's address. Move the address (provider) or DNS to NEW first.", relaying)
	}
	return "Every service is on NEW and drained, and no flow goes through OLD now. Once the address or DNS points at NEW, OLD may be switched off (run migrate rollback --all first to remove the tunnel)."
}

// pathBroken explains what keeps NEW from serving the flows OLD sends it,
// once something is applied, or "". NEW without its tunnel device, its
// nft table and the services' addresses has lost migrate's configuration:
// runtime kernel state that a reboot does not keep.
func pathBroken(c *config.Config, in Input, r Report) string {
	if c.Tunnel == nil || r.Tunnel == nil || !r.Reached(plan.Old) || !r.Reached(plan.New) || in.Old.Nft == nil {
		return ""
	}
	oldDev, newDev := tunnelDevs(c, in)
	var lost, why []string
	switch {
	case plan.Direct(c) && newDev == "":
		why = append(why, "NEW no longer holds its endpoint "+c.Tunnel.NewEndpoint.String())
	case !in.New.HasLink(newDev):
		lost = append(lost, "its tunnel device "+newDev)
	case !r.Tunnel.NewLinkUp:
		why = append(why, "NEW's tunnel device "+newDev+" is down")
	}
	if in.New.Nft == nil {
		lost = append(lost, "its migrate nft table")
	}
	for _, a := range plan.ActiveAddrs(c) {
		if !in.New.HasAddr(a) {
			lost = append(lost, "the address "+a.String())
		}
	}
	switch {
	case plan.Direct(c) && oldDev == "":
		why = append(why, "OLD no longer holds its endpoint "+c.Tunnel.OldEndpoint.String())
	case !in.Old.HasLink(oldDev):
		why = append(why, "OLD has no tunnel device "+oldDev)
	case !r.Tunnel.OldLinkUp:
		why = append(why, "OLD's tunnel device "+oldDev+" is down")
	}
	if w := localRuleAhead(in.Old); w != "" {
		why = append(why, w)
	}
	why = append(why, sysctlsUndone(c, in)...)
	why = append(why, rulesGone(c, in)...)
	if w := plan.ForwardDropBroken(c, map[string]state.Facts{plan.Old: in.Old, plan.New: in.New}); w != "" {
		why = append(why, w)
	}
	if w := plan.NewInputBroken(c, map[string]state.Facts{plan.Old: in.Old, plan.New: in.New}); w != "" {
		why = append(why, w)
	}
	pingFailed := true
	if p := r.Tunnel.OldToNew; p.Target != "" && p.Error != "" {
		why = append(why, "OLD cannot ping NEW through the tunnel ("+p.Error+")")
	} else if p := r.Tunnel.NewToOld; p.Target != "" && p.Error != "" {
		why = append(why, "NEW cannot ping OLD through the tunnel ("+p.Error+")")
	} else {
		pingFailed = false
	}
	if pingFailed {
		if h := plan.TunnelFirewallHint(c, map[string]state.Facts{plan.Old: in.Old, plan.New: in.New}); h != "" {
			why = append(why, h)
		}
	}
	if len(lost) > 0 {
		what := "NEW lost migrate's configuration (rebooted?): " + strings.Join(lost, ", ") + " missing"
		if len(lost) < 3 {
			what = "NEW lacks " + strings.Join(lost, ", ")
		}
		if plan.BootFailed(in.New.Boot) {
			what = "NEW's restore at boot failed and left NEW as before migrate (" + strings.Join(lost, ", ") + " missing): run migrate apply"
		}
		why = append([]string{what}, why...)
	}
	return strings.Join(why, "; ")
}

// localRuleAhead says when OLD has a rule that looks up the local table
// for every packet ahead of migrate's fwmark rule (the default `pref 0
// lookup local`, put back by hand: `ip rule add pref 0 lookup local`).
// Then OLD's own stack takes the moved services' packets: new clients get
// OLD's daemon, moved connections a reset. Nothing else in the report
// shows it: the tunnel, the table and NEW are all fine.
func localRuleAhead(old state.Facts) string {
	for _, fw := range old.Rules {
		if fw.Protocol != plan.RouteProto || fw.Mask == 0 {
			continue
		}
		for _, r := range old.Rules {
			if r.Family == fw.Family && r.Table == state.TableLocal && r.Priority < fw.Priority && r.Bare() {
				return fmt.Sprintf("OLD has a rule `pref %d lookup local` (IPv%d) again, ahead of migrate's rule for moved flows (pref %d; added by hand?): OLD's own stack takes their packets, so new clients reach OLD's daemon and moved connections are reset. Run migrate apply to move it again", r.Priority, r.Family, fw.Priority)
			}
		}
	}
	return ""
}

// Sysctls are the sysctls status reads on host: those on OLD without
// which the moved services' packets do not get through (forwarding; on
// the tunnel device, the reverse-path check and accept_local).
// Something that applies the sysctl files again (`sysctl --system`, a
// package upgrade running it, configuration management) can put any of
// them back while the migration runs.
func Sysctls(c *config.Config, host string) []string {
	var out []string
	if host == plan.Old {
		out = append(out, "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
	}
	if host == plan.Old && c.Tunnel != nil && !plan.Direct(c) {
		dev := plan.SysctlDev(c.Tunnel.Name)
		out = append(out, "net.ipv4.conf.all.rp_filter", "net.ipv4.conf."+dev+".rp_filter", "net.ipv4.conf."+dev+".accept_local")
	}
	return out
}

// sysctlsUndone says which of Sysctls no longer have migrate's values.
func sysctlsUndone(c *config.Config, in Input) []string {
	var v4, v6 bool
	for _, s := range c.Services {
		v4, v6 = v4 || s.Address.Is4(), v6 || s.Address.Is6()
	}
	var out []string
	was := func(host string, f state.Facts, name, want string) {
		if v, ok := f.Sysctls[name]; ok && strings.TrimSpace(v) != want {
			out = append(out, fmt.Sprintf("%s has %s = %s again, not %s (sysctl --system or configuration management?)", strings.ToUpper(host), name, strings.TrimSpace(v), want))
		}
	}
	if v4 {
		was(plan.Old, in.Old, "net.ipv4.ip_forward", "1")
	}
	if v6 {
		was(plan.Old, in.Old, "net.ipv6.conf.all.forwarding", "1")
	}
	if c.Tunnel == nil || plan.Direct(c) {
		return out
	}
	// OLD checks with max(all, device): strict (1) drops NEW's answers,
	// which come through the tunnel from OLD's own address (its route is
	// local, not the tunnel). NEW's strict check passes in the plain case
	// (its rule `from ADDR` routes the reverse path into the tunnel), so
	// it is not reported.
	dev := plan.SysctlDev(c.Tunnel.Name)
	all, okAll := in.Old.Sysctls["net.ipv4.conf.all.rp_filter"]
	d, okDev := in.Old.Sysctls["net.ipv4.conf."+dev+".rp_filter"]
	if okAll && okDev && max(strings.TrimSpace(all), strings.TrimSpace(d)) == "1" {
		out = append(out, fmt.Sprintf("OLD checks the reverse path strictly on %s (rp_filter: all %s, %s %s; migrate sets %s to 2)", c.Tunnel.Name, strings.TrimSpace(all), c.Tunnel.Name, strings.TrimSpace(d), c.Tunnel.Name))
	}
	was(plan.Old, in.Old, "net.ipv4.conf."+dev+".accept_local", "1")
	return out
}

// rulesGone names migrate's policy rules that are missing while the rest
// is there: removed by hand, or by systemd-networkd, which removes rules
// it did not make when it (re)starts with its defaults (README). OLD
// without its fwmark rule hands the moved flows to its own stack; NEW
// without its `from ADDR` rule sends its answers out of its own uplink,
// from OLD's address, where they are dropped or reach the client as
// strangers. A direct tunnel is left out.
func rulesGone(c *config.Config, in Input) []string {
	if plan.Direct(c) {
		return nil
	}
	t := c.Tunnel
	has := func(f state.Facts, want func(state.Rule) bool) bool {
		for _, r := range f.Rules {
			if r.Protocol == plan.RouteProto && want(r) {
				return true
			}
		}
		return false
	}
	var out []string
	fams := map[int]bool{}
	for _, a := range plan.ActiveAddrs(c) {
		f := 4
		if a.Is6() {
			f = 6
		}
		fams[f] = true
		if in.New.Nft == nil {
			continue // NEW lost everything: said above
		}
		src := netip.PrefixFrom(a, a.BitLen())
		if !has(in.New, func(r state.Rule) bool { return r.Src == src && r.Table == t.Table }) {
			out = append(out, fmt.Sprintf("NEW lacks migrate's rule `from %s lookup %d` (removed by hand, or by systemd-networkd at a restart?): its answers leave by its own uplink, not the tunnel", src, t.Table))
		}
	}
	for _, f := range []int{4, 6} {
		if fams[f] && !has(in.Old, func(r state.Rule) bool {
			return r.Family == f && r.Mark == t.Mark && r.Mask == t.Mark && r.Table == t.Table
		}) {
			out = append(out, fmt.Sprintf("OLD lacks migrate's rule `fwmark %#x/%#x lookup %d` (IPv%d; removed by hand, or by systemd-networkd at a restart?): OLD's own stack takes the moved flows", t.Mark, t.Mark, t.Table, f))
		}
	}
	return out
}

// tunnelDevs are the tunnel's device on OLD and on NEW: the tunnel's
// name, or for a direct tunnel each host's interface on the segment.
func tunnelDevs(c *config.Config, in Input) (string, string) {
	if devs := plan.SegmentDevs(c, map[string]state.Facts{plan.Old: in.Old, plan.New: in.New}); devs != nil {
		return devs[plan.Old], devs[plan.New]
	}
	return c.Tunnel.Name, c.Tunnel.Name
}
