package state

import (
	"encoding/json"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// On the wire, the flows a FactsRequest asks for and the flow counts of
// Stats are written as port runs (nftRun), like a spec's service lists:
// at 10 000 services they were 500 KB and 740 KB of JSON per facts call,
// about 0.1-0.15 s of encoding, decoding and SSH on a loaded lab, on
// the path of every plan and apply. The Go values are unchanged: Flows
// lists every requested triple, Stats.Flows has every requested key.

type plainFactsRequest FactsRequest

type compactFactsRequest struct {
	plainFactsRequest
	// Shadows plainFactsRequest's field of the same JSON name.
	Flows []nftRun `json:"flows,omitempty"`
}

// MarshalJSON writes Flows as port runs.
func (r FactsRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(compactFactsRequest{plainFactsRequest: plainFactsRequest(r), Flows: compactServices(r.Flows)})
}

// UnmarshalJSON reads Flows as runs, or per port.
func (r *FactsRequest) UnmarshalJSON(b []byte) error {
	var c compactFactsRequest
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	out := FactsRequest(c.plainFactsRequest)
	var err error
	if out.Flows, err = expandServices(c.Flows); err != nil {
		return err
	}
	*r = out
	return nil
}

type plainStats Stats

type compactStats struct {
	plainStats
	// Flows are the counts that are not all zero (it shadows
	// plainStats's field of the same JSON name); ZeroFlows the keys
	// whose counts are all zero, as port runs.
	Flows     map[string]FlowCount `json:"flows,omitempty"`
	ZeroFlows []nftRun             `json:"zero_flows,omitempty"`
}

// MarshalJSON writes the keys of all-zero flow counts as port runs.
func (s Stats) MarshalJSON() ([]byte, error) {
	c := compactStats{plainStats: plainStats(s)}
	var zero []NftService
	for k, fc := range s.Flows {
		if fc == (FlowCount{}) {
			if ns, ok := parseServiceKey(k); ok {
				zero = append(zero, ns)
				continue
			}
		}
		if c.Flows == nil {
			c.Flows = make(map[string]FlowCount)
		}
		c.Flows[k] = fc
	}
	sort.Slice(zero, func(i, j int) bool {
		a, b := zero[i], zero[j]
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Port < b.Port
	})
	c.ZeroFlows = compactServices(zero)
	return json.Marshal(c)
}

// UnmarshalJSON reads both forms.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var c compactStats
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	out := Stats(c.plainStats)
	out.Flows = c.Flows
	zero, err := expandServices(c.ZeroFlows)
	if err != nil {
		return err
	}
	if len(zero) > 0 && out.Flows == nil {
		out.Flows = make(map[string]FlowCount, len(zero))
	}
	for _, ns := range zero {
		out.Flows[ns.Key()] = FlowCount{}
	}
	*s = out
	return nil
}

// parseServiceKey reads a key of NftService.Key back when it gives the
// same key again.
func parseServiceKey(k string) (NftService, bool) {
	f := strings.Split(k, " ")
	if len(f) != 3 {
		return NftService{}, false
	}
	p, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return NftService{}, false
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return NftService{}, false
	}
	ns := NftService{Addr: a, Proto: Proto(f[1]), Port: uint16(p)}
	return ns, ns.Key() == k
}
