package state

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
)

// TestFactsWireForm: a FactsRequest and Stats go through JSON unchanged
// (reflect.DeepEqual, nil and every requested key kept), in the compact
// form, and the per-port form older CLIs and agents wrote still reads.
func TestFactsWireForm(t *testing.T) {
	var many []NftService
	flows := map[string]FlowCount{}
	for i := 0; i < 10000; i++ {
		s := NftService{Addr: netip.MustParseAddr(fmt.Sprintf("198.18.0.%d", 10+i/1000)), Proto: "tcp", Port: uint16(20000 + i%1000)}
		many = append(many, s)
		flows[s.Key()] = FlowCount{}
	}
	flows["198.18.0.10 tcp 20500"] = FlowCount{Total: 3, Established: 2, OnOld: 2}
	flows["2001:db8::1 udp 53"] = FlowCount{}
	flows["2001:db8::1 udp 54"] = FlowCount{}
	flows["not a key"] = FlowCount{}
	flows["198.18.0.1 tcp 080"] = FlowCount{} // does not read back as itself

	reqs := []FactsRequest{
		{},
		{NftTable: "migrate", Flows: many, Mark: 0x20000, Sockets: true, Tables: []int{77}, NoCounters: true},
		{NftTable: "migrate", Flows: []NftService{{Addr: netip.MustParseAddr("2001:db8::1"), Proto: "udp", Port: 53, Percent: 50}, {Addr: netip.MustParseAddr("192.0.2.1"), Proto: "tcp", Port: 65535}}},
	}
	for i, r := range reqs {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got FactsRequest
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("request %d: %s read back as %+v", i, b, got)
		}
		if i == 1 && len(b) > 2000 {
			t.Errorf("10 000 flows in %d bytes of JSON, want runs", len(b))
		}
	}
	stats := []Stats{
		{},
		{UnderlayDropped: Counter{Packets: 1}, Flows: flows, Counters: map[string]Counter{"198.18.0.10 tcp 20000": {Packets: 4}}},
		{Flows: map[string]FlowCount{"192.0.2.1 tcp 80": {}}},
	}
	for i, s := range stats {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got Stats
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("stats %d: %s read back as %+v", i, b, got)
		}
		if i == 1 && len(b) > 2000 {
			t.Errorf("10 000 flow counts in %d bytes of JSON, want runs", len(b))
		}
	}

	// The per-port forms.
	var r FactsRequest
	if err := json.Unmarshal([]byte(`{"nft_table":"migrate","flows":[{"addr":"192.0.2.1","proto":"tcp","port":80},{"addr":"192.0.2.1","proto":"tcp","port":81}]}`), &r); err != nil {
		t.Fatal(err)
	}
	if want := (FactsRequest{NftTable: "migrate", Flows: []NftService{{Addr: netip.MustParseAddr("192.0.2.1"), Proto: "tcp", Port: 80}, {Addr: netip.MustParseAddr("192.0.2.1"), Proto: "tcp", Port: 81}}}); !reflect.DeepEqual(r, want) {
		t.Errorf("per-port request read as %+v", r)
	}
	var s Stats
	if err := json.Unmarshal([]byte(`{"underlay_dropped":{"packets":0,"bytes":0},"flows":{"192.0.2.1 tcp 80":{"total":0,"established":0,"to_new":0,"on_old":0}}}`), &s); err != nil {
		t.Fatal(err)
	}
	if want := (Stats{Flows: map[string]FlowCount{"192.0.2.1 tcp 80": {}}}); !reflect.DeepEqual(s, want) {
		t.Errorf("per-key stats read as %+v", s)
	}
}
