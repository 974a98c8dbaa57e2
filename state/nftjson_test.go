package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func portsSpec(from, to int, percent int) NftSpec {
	s := NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000}
	for p := from; p <= to; p++ {
		s.Services = append(s.Services, NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(p), Percent: percent})
		s.Accounted = append(s.Accounted, NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(p)})
	}
	return s
}

// The digest is stored in the rules of tables already on hosts: it must
// stay the hash of the per-port form, whatever the journal's encoding.
func TestNftDigestIsThePerPortForm(t *testing.T) {
	s := portsSpec(8080, 8081, 100)
	perPort := `{"role":"old","tunnel_dev":"mig0","mark":131072,` +
		`"services":[{"addr":"198.51.100.10","proto":"tcp","port":8080,"percent":100},{"addr":"198.51.100.10","proto":"tcp","port":8081,"percent":100}],` +
		`"accounted":[{"addr":"198.51.100.10","proto":"tcp","port":8080},{"addr":"198.51.100.10","proto":"tcp","port":8081}]` +
		`}`
	h := sha256.Sum256([]byte(perPort))
	if got, want := s.Digest(), hex.EncodeToString(h[:8]); got != want {
		t.Errorf("digest %s, want %s (the per-port form)", got, want)
	}
}

func TestNftSpecJSONIsCompact(t *testing.T) {
	s := portsSpec(1024, 65535, 100)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 400 {
		t.Errorf("64 512 ports encode to %d bytes: %s", len(b), b)
	}
	if !strings.Contains(string(b), `"port":1024,"through":65535`) {
		t.Errorf("no port run in %s", b)
	}
	var back NftSpec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Error("round trip changed the spec")
	}
}

// A state file or host journal written before the compact form.
func TestNftSpecReadsThePerPortForm(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	old := `{"role":"old","tunnel_dev":"mig0","mark":131072,"services":[{"addr":"192.0.2.1","proto":"tcp","port":80,"percent":100},{"addr":"192.0.2.1","proto":"tcp","port":81,"percent":100},{"addr":"192.0.2.1","proto":"udp","port":53,"percent":10}],"udp_services":[{"addr":"192.0.2.1","proto":"udp","port":53}]}`
	var s NftSpec
	if err := json.Unmarshal([]byte(old), &s); err != nil {
		t.Fatal(err)
	}
	want := NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000,
		Services:    []NftService{{a, "tcp", 80, 100}, {a, "tcp", 81, 100}, {a, "udp", 53, 10}},
		UDPServices: []NftService{{a, "udp", 53, 0}}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v", s)
	}
	var bad NftSpec
	if err := json.Unmarshal([]byte(`{"services":[{"addr":"a","proto":"tcp","port":90,"through":80}]}`), &bad); err == nil {
		t.Error("a range that ends before it starts was accepted")
	}
}

// Any list, in any order (sorted or not, duplicates, port 65535 next to
// 0), comes back exactly.
func TestNftSpecRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	protos := []string{"tcp", "udp"}
	for i := 0; i < 500; i++ {
		var list []NftService
		p := r.Intn(65536)
		for n := r.Intn(40); n > 0; n-- {
			switch r.Intn(4) {
			case 0:
				p = r.Intn(65536)
			case 1:
			default:
				p = (p + 1) % 65536
			}
			list = append(list, NftService{Addr: addrs[r.Intn(2)], Proto: Proto(protos[r.Intn(2)]), Port: uint16(p), Percent: []int{0, 10, 100}[r.Intn(3)]})
		}
		s := NftSpec{Role: "new", Services: list, UDPServices: list}
		b, _ := json.Marshal(s)
		var back NftSpec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("%+v\nbecame\n%+v\nvia %s", s, back, b)
		}
	}
}

// Forwards too: a forward of a port range (to the same ports or to one
// port) is one run, and any list comes back exactly.
func TestNftForwardsRoundTrip(t *testing.T) {
	var same, one []NftForward
	for p := 1024; p <= 65535; p++ {
		same = append(same, NftForward{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(p), To: netip.MustParseAddr("203.0.113.20"), ToPort: uint16(p)})
		one = append(one, NftForward{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: uint16(p), To: netip.MustParseAddr("203.0.113.20"), ToPort: 8080})
	}
	s := NftSpec{Role: "old", Forwards: append(same, one...)}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 300 {
		t.Errorf("two forwards of 64 512 ports encode to %d bytes: %s", len(b), b)
	}
	var back NftSpec
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip: %v", err)
	}
	r := rand.New(rand.NewSource(2))
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	for i := 0; i < 500; i++ {
		var list []NftForward
		p, to := r.Intn(65536), r.Intn(65536)
		for n := r.Intn(40); n > 0; n-- {
			switch r.Intn(4) {
			case 0:
				p, to = r.Intn(65536), r.Intn(65536)
			case 1:
				p = (p + 1) % 65536
			default:
				p, to = (p+1)%65536, (to+1)%65536
			}
			list = append(list, NftForward{Addr: addrs[r.Intn(2)], Proto: "tcp", Port: uint16(p), To: addrs[0], ToPort: uint16(to)})
		}
		s := NftSpec{Role: "new", Forwards: list}
		b, _ := json.Marshal(s)
		var back NftSpec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("%+v\nbecame\n%+v\nvia %s", s, back, b)
		}
	}
	var bad NftSpec
	if err := json.Unmarshal([]byte(`{"forwards":[{"addr":"a","proto":"tcp","port":80,"through":81,"to":"c","to_port":80,"to_through":90}]}`), &bad); err == nil {
		t.Error("a forward run whose target range differs in length was accepted")
	}
}
