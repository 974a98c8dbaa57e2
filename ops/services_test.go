package ops

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/opsmigrate/migrate/state"
)

// svc is a service as one line: "name proto addr ports".
func lines(in InitServices) []string {
	var out []string
	for _, s := range in.Services {
		l := s.Name + " " + string(s.Protocol) + " " + s.Address.String() + " " + portsText(s.Ports)
		if _, ok := in.CommentedOut[s.Name]; ok {
			l += " (commented out)"
		}
		out = append(out, l)
	}
	return out
}

func TestGroupListeners(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11")
	v6 := netip.MustParseAddr("2001:db8::10")
	public := []netip.Addr{v4a, v4b, v6}
	l := func(proto state.Proto, addr string, port uint16, proc string) state.Listener {
		return state.Listener{Proto: proto, Addr: addr, Port: port, Process: proc}
	}
	for _, c := range []struct {
		name      string
		listeners []state.Listener
		want      []string
		summary   []string // substrings, in order
	}{
		{name: "nothing", want: nil},
		{
			name:      "one process, ports grouped and sorted",
			listeners: []state.Listener{l("tcp", "198.51.100.10", 443, "nginx"), l("tcp", "198.51.100.10", 80, "nginx")},
			want:      []string{"nginx-tcp tcp 198.51.100.10 80, 443"},
			summary:   []string{`service "nginx-tcp": tcp 198.51.100.10 ports 80, 443 (process nginx)`},
		},
		{
			name:      "an IPv4 wildcard expands to the IPv4 public addresses only",
			listeners: []state.Listener{l("udp", "0.0.0.0", 53, "unbound")},
			want:      []string{"unbound-udp udp 198.51.100.10 53", "unbound-udp-2 udp 198.51.100.11 53"},
		},
		{
			name:      "a dual-stack :: takes both families, a v6only one IPv6 only",
			listeners: []state.Listener{l("tcp", "::", 80, "a"), {Proto: "tcp", Addr: "::", Port: 81, Process: "b", V6Only: true}},
			want:      []string{"a-tcp tcp 198.51.100.10 80", "a-tcp-2 tcp 198.51.100.11 80", "a-tcp-3 tcp 2001:db8::10 80", "b-tcp tcp 2001:db8::10 81"},
		},
		{
			name:      "loopback is left out and said so, link-local skipped, garbage ignored",
			listeners: []state.Listener{l("tcp", "127.0.0.1", 5432, "postgres"), l("tcp", "fe80::1", 22, "sshd"), l("tcp", "nonsense", 1, "x")},
			want:      nil,
			summary:   []string{"left out: tcp 127.0.0.1:5432 (postgres): loopback only"},
		},
		{
			name:      "migrate's own SSH port is a service of its own, commented out",
			listeners: []state.Listener{l("tcp", "0.0.0.0", 22, "sshd"), l("tcp", "198.51.100.10", 2222, "sshd")},
			want:      []string{"sshd-tcp tcp 198.51.100.10 2222", "sshd-ssh tcp 198.51.100.10 22 (commented out)", "sshd-tcp-2 tcp 198.51.100.11 22"},
			summary:   []string{`service "sshd-tcp"`, `service "sshd-ssh": commented out: it is the SSH port migrate uses`},
		},
		{
			name:      "UDP on the SSH port is not SSH",
			listeners: []state.Listener{l("udp", "198.51.100.10", 22, "odd")},
			want:      []string{"odd-udp udp 198.51.100.10 22"},
		},
		{
			name:      "processes order the services; odd names are made valid; unknown process",
			listeners: []state.Listener{l("tcp", "198.51.100.10", 8080, "java app"), l("tcp", "198.51.100.10", 9000, ""), l("tcp", "198.51.100.10", 7000, "1proc")},
			want:      []string{"svc-1proc-tcp tcp 198.51.100.10 7000", "java-app-tcp tcp 198.51.100.10 8080", "unknown-tcp tcp 198.51.100.10 9000"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := GroupListeners(c.listeners, public, v4a, 22)
			if d := cmp.Diff(c.want, lines(got)); d != "" {
				t.Errorf("services (-want +got):\n%s", d)
			}
			for _, s := range got.Services {
				if s.Stage != "old" {
					t.Errorf("%s at stage %q", s.Name, s.Stage)
				}
				_, comment := got.ServiceComments[s.Name]
				_, out := got.CommentedOut[s.Name]
				if comment == out {
					t.Errorf("%s: want exactly one of a comment or commented out", s.Name)
				}
			}
			text := strings.Join(got.Summary, "\n")
			at := 0
			for _, want := range c.summary {
				i := strings.Index(text[at:], want)
				if i < 0 {
					t.Fatalf("summary lacks %q (in order):\n%s", want, text)
				}
				at += i + len(want)
			}
			// Pure: the same input gives the same output.
			if d := cmp.Diff(lines(got), lines(GroupListeners(c.listeners, public, v4a, 22))); d != "" {
				t.Errorf("not deterministic:\n%s", d)
			}
		})
	}
}

func TestPublicAddrs(t *testing.T) {
	f := state.Facts{Addrs: []state.Addr{
		{Dev: "eth0", CIDR: netip.MustParsePrefix("198.51.100.11/24")}, {Dev: "eth0", CIDR: netip.MustParsePrefix("198.51.100.10/24")}, {Dev: "lo", CIDR: netip.MustParsePrefix("203.0.113.5/32")},
		{Dev: "eth0", CIDR: netip.MustParsePrefix("fe80::1/64")}, {Dev: "eth0", CIDR: netip.MustParsePrefix("2001:db8::10/64")}, {Dev: "eth0", CIDR: netip.MustParsePrefix("127.0.0.2/8")},
	}}
	got := PublicAddrs(f)
	want := []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("2001:db8::10")}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
