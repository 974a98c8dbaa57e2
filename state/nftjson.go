package state

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// The journal stores every nft spec it records twice (Before and After),
// and a service of 64 512 ports is 64 512 NftService elements per list.
// On disk and on the wire a spec's service lists are therefore written as
// runs (and its forwards likewise: nftFwdRun): consecutive elements with the same address, protocol and percent
// whose ports follow each other become one element with "through", the
// last port. The encoding keeps the list's order exactly, so it is
// lossless, and an element without "through" is the old per-port form:
// state files and host journals written before read as they were.
//
// Digest does not use it: it hashes the plain per-port form, so the
// digests stored in the rules of tables already on hosts stay valid.

// nftRun is one element of a compact service list.
type nftRun struct {
	Addr    netip.Addr `json:"addr"`
	Proto   Proto      `json:"proto"`
	Port    uint16     `json:"port"`
	Through uint16     `json:"through,omitempty"`
	Percent int        `json:"percent,omitempty"`
}

// plainSpec is NftSpec without its JSON methods: the per-port form.
type plainSpec NftSpec

type compactSpec struct {
	plainSpec
	// These shadow plainSpec's fields of the same JSON names.
	Services    []nftRun    `json:"services,omitempty"`
	Accounted   []nftRun    `json:"accounted,omitempty"`
	UDPServices []nftRun    `json:"udp_services,omitempty"`
	Forwards    []nftFwdRun `json:"forwards,omitempty"`
}

// nftFwdRun is one element of a compact forward list: ports Port through
// Through (one port when 0), each forwarded to ToPort, or, when ToThrough
// is set, to ToPort through ToThrough in step (a forward without to_port
// keeps the port).
type nftFwdRun struct {
	Addr      netip.Addr `json:"addr"`
	Proto     Proto      `json:"proto"`
	Port      uint16     `json:"port"`
	Through   uint16     `json:"through,omitempty"`
	To        netip.Addr `json:"to"`
	ToPort    uint16     `json:"to_port"`
	ToThrough uint16     `json:"to_through,omitempty"`
}

func compactForwards(list []NftForward) []nftFwdRun {
	var out []nftFwdRun
	for _, f := range list {
		if n := len(out); n > 0 {
			r := &out[n-1]
			last := r.Port
			if r.Through != 0 {
				last = r.Through
			}
			if r.Addr == f.Addr && r.Proto == f.Proto && r.To == f.To && last < 65535 && f.Port == last+1 {
				switch {
				case r.Through == 0 && f.ToPort == r.ToPort:
					r.Through = f.Port // to one port
					continue
				case r.Through == 0 && r.ToPort < 65535 && f.ToPort == r.ToPort+1:
					r.Through, r.ToThrough = f.Port, f.ToPort // port for port
					continue
				case r.Through != 0 && r.ToThrough == 0 && f.ToPort == r.ToPort:
					r.Through = f.Port
					continue
				case r.ToThrough != 0 && r.ToThrough < 65535 && f.ToPort == r.ToThrough+1:
					r.Through, r.ToThrough = f.Port, f.ToPort
					continue
				}
			}
		}
		out = append(out, nftFwdRun{Addr: f.Addr, Proto: f.Proto, Port: f.Port, To: f.To, ToPort: f.ToPort})
	}
	return out
}

func expandForwards(runs []nftFwdRun) ([]NftForward, error) {
	if runs == nil {
		return nil, nil
	}
	var out []NftForward
	for _, r := range runs {
		last := int(r.Port)
		if r.Through != 0 {
			last = int(r.Through)
		}
		if last < int(r.Port) {
			return nil, fmt.Errorf("nft forward %s %s: port range %d-%d ends before it starts", r.Addr, r.Proto, r.Port, r.Through)
		}
		if r.ToThrough != 0 && int(r.ToThrough)-int(r.ToPort) != last-int(r.Port) {
			return nil, fmt.Errorf("nft forward %s %s: ports %d-%d and target ports %d-%d differ in length", r.Addr, r.Proto, r.Port, last, r.ToPort, r.ToThrough)
		}
		for p := int(r.Port); p <= last; p++ {
			to := r.ToPort
			if r.ToThrough != 0 {
				to = uint16(int(r.ToPort) + p - int(r.Port))
			}
			out = append(out, NftForward{Addr: r.Addr, Proto: r.Proto, Port: uint16(p), To: r.To, ToPort: to})
		}
	}
	return out, nil
}

func compactServices(list []NftService) []nftRun {
	var out []nftRun
	for _, s := range list {
		if n := len(out); n > 0 {
			r := &out[n-1]
			last := r.Port
			if r.Through != 0 {
				last = r.Through
			}
			if r.Addr == s.Addr && r.Proto == s.Proto && r.Percent == s.Percent && last < 65535 && s.Port == last+1 {
				r.Through = s.Port
				continue
			}
		}
		out = append(out, nftRun{Addr: s.Addr, Proto: s.Proto, Port: s.Port, Percent: s.Percent})
	}
	return out
}

func expandServices(runs []nftRun) ([]NftService, error) {
	if runs == nil {
		return nil, nil
	}
	n := 0
	for _, r := range runs {
		if r.Through != 0 && r.Through < r.Port {
			return nil, fmt.Errorf("nft service %s %s: port range %d-%d ends before it starts", r.Addr, r.Proto, r.Port, r.Through)
		}
		n++
		if r.Through != 0 {
			n += int(r.Through) - int(r.Port)
		}
	}
	out := make([]NftService, 0, n)
	for _, r := range runs {
		last := int(r.Port)
		if r.Through != 0 {
			last = int(r.Through)
		}
		for p := int(r.Port); p <= last; p++ {
			out = append(out, NftService{Addr: r.Addr, Proto: r.Proto, Port: uint16(p), Percent: r.Percent})
		}
	}
	return out, nil
}

// MarshalJSON writes the spec with its service lists as port runs.
func (s NftSpec) MarshalJSON() ([]byte, error) {
	return json.Marshal(compactSpec{
		plainSpec:   plainSpec(s),
		Services:    compactServices(s.Services),
		Accounted:   compactServices(s.Accounted),
		UDPServices: compactServices(s.UDPServices),
		Forwards:    compactForwards(s.Forwards),
	})
}

// UnmarshalJSON reads both the compact and the old per-port form.
func (s *NftSpec) UnmarshalJSON(b []byte) error {
	var c compactSpec
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("nft spec: %w", err) // an address that does not parse says only ParseAddr("x")
	}
	out := NftSpec(c.plainSpec)
	var err error
	if out.Services, err = expandServices(c.Services); err != nil {
		return err
	}
	if out.Accounted, err = expandServices(c.Accounted); err != nil {
		return err
	}
	if out.UDPServices, err = expandServices(c.UDPServices); err != nil {
		return err
	}
	if out.Forwards, err = expandForwards(c.Forwards); err != nil {
		return err
	}
	*s = out
	return nil
}
