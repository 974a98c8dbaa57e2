package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Readiness says whether NEW would accept the flows a service sends it.
type Readiness struct {
	Service      string      `json:"service"`
	Proto        state.Proto `json:"proto"`
	Addr         string      `json:"addr"`
	Unserved     []uint16    `json:"unserved,omitempty"` // ports nothing on NEW accepts
	AllowUnready bool        `json:"allow_unready,omitempty"`
	// NewListens lists what NEW listens on for this protocol, for the
	// hint "listens on ... instead".
	NewListens []string `json:"new_listens,omitempty"`
	// UDPListeners are NEW's sockets that take this UDP service's
	// datagrams: how they are bound says how their answers leave.
	UDPListeners []UDPListener `json:"udp_listeners,omitempty"`
}

// UDPListener is one socket on NEW serving a UDP service.
type UDPListener struct {
	Addr     string `json:"addr"`
	Port     uint16 `json:"port"`
	Process  string `json:"process,omitempty"`
	Wildcard bool   `json:"wildcard"` // bound to 0.0.0.0 or ::
}

// Answers says how the listener's answers reach the client.
func (l UDPListener) Answers(svcAddr string) string {
	d := fmt.Sprintf("%s:%d", bracket(l.Addr), l.Port)
	if l.Process != "" {
		d += " (" + l.Process + ")"
	}
	if l.Wildcard {
		return d + ", a wildcard: migrate sends its answers from " + svcAddr + " back through OLD (also with IP_PKTINFO)"
	}
	return d + ", the service address: its answers leave from it, back through OLD"
}

// Ready reports a service every port of which NEW accepts.
func (r Readiness) Ready() bool { return len(r.Unserved) == 0 }

// CheckReadiness looks, for every service whose stage sends new flows to
// NEW, for a listener on NEW that accepts them: that exact address or a
// wildcard, for that protocol and port.
func CheckReadiness(c *config.Config, newFacts state.Facts) []Readiness {
	var out []Readiness
	for _, s := range c.Services {
		if s.Stage == "old" {
			continue
		}
		r := Readiness{Service: s.Name, Proto: s.Protocol, Addr: s.Address.String(), AllowUnready: s.AllowUnready}
		for _, pr := range s.Ports {
			for p := int(pr.From); p <= int(pr.To); p++ {
				served := false
				for _, l := range newFacts.Listeners {
					if l.Serves(s.Protocol, r.Addr, uint16(p)) {
						served = true
						if s.Protocol == state.UDP {
							r.addUDPListener(l)
						}
					}
				}
				if !served {
					r.Unserved = append(r.Unserved, uint16(p))
				}
			}
		}
		if !r.Ready() {
			seen := map[string]bool{}
			for _, l := range newFacts.Listeners {
				if l.Proto != s.Protocol {
					continue
				}
				d := fmt.Sprintf("%s:%d", bracket(l.Addr), l.Port)
				if l.Process != "" {
					d += " (" + l.Process + ")"
				}
				if !seen[d] {
					seen[d] = true
					r.NewListens = append(r.NewListens, d)
				}
			}
			sort.Strings(r.NewListens)
		}
		out = append(out, r)
	}
	return out
}

func (r *Readiness) addUDPListener(l state.Listener) {
	u := UDPListener{Addr: l.Addr, Port: l.Port, Process: l.Process, Wildcard: l.Addr == "0.0.0.0" || l.Addr == "::"}
	for _, e := range r.UDPListeners {
		if e == u {
			return
		}
	}
	if len(r.UDPListeners) < 10 {
		r.UDPListeners = append(r.UDPListeners, u)
	}
}

func bracket(a string) string {
	if strings.Contains(a, ":") {
		return "[" + a + "]"
	}
	return a
}

// PortList renders ports compactly, at most 10 of them.
func PortList(ports []uint16) string {
	var parts []string
	for i, p := range ports {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("... (%d more)", len(ports)-10))
			break
		}
		parts = append(parts, fmt.Sprint(p))
	}
	return strings.Join(parts, ", ")
}

// UnreadyError refuses to move services NEW does not serve.
func UnreadyError(rs []Readiness) error {
	var msgs []string
	for _, r := range rs {
		if r.Ready() || r.AllowUnready {
			continue
		}
		instead := "nothing for " + string(r.Proto)
		if len(r.NewListens) > 0 {
			instead = strings.Join(r.NewListens, ", ")
		}
		msgs = append(msgs, fmt.Sprintf("service %q: NEW does not serve %s %s port %s; NEW listens on %s instead",
			r.Service, r.Proto, r.Addr, PortList(r.Unserved), instead))
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("refusing to send clients to a NEW that would not serve them:\n  %s\nStart the service on NEW first (a wildcard or that exact address), or set allow_unready = true in the service block for a service that starts on demand", strings.Join(msgs, "\n  "))
}

// ServiceFlows is what OLD holds for one service.
type ServiceFlows struct {
	Service string `json:"service"`
	Total   int    `json:"total"`
	// Established: established conntrack entries (to NEW or not), plus
	// OLD's own connections of the service that conntrack does not hold
	// (SocketsOnly: idle since before conntrack ran, or closing), counted
	// once each, as status counts them.
	Established int `json:"established"`
	SocketsOnly int `json:"sockets_only,omitempty"`
	ToNew       int `json:"to_new"`
}

// Flows sums OLD's conntrack and socket counts per service.
func Flows(c *config.Config, oldFacts state.Facts) []ServiceFlows {
	if oldFacts.Stats == nil || oldFacts.Stats.Flows == nil {
		return nil
	}
	var out []ServiceFlows
	for _, s := range c.Services {
		sf := ServiceFlows{Service: s.Name}
		for _, ns := range expand(s, 0) {
			fc := oldFacts.Stats.Flows[ns.Key()]
			sf.Total += fc.Total
			sf.Established += fc.Established + fc.SocketsOnly
			sf.SocketsOnly += fc.SocketsOnly
			sf.ToNew += fc.ToNew
		}
		out = append(out, sf)
	}
	return out
}
