package plan

import (
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/config"
)

func TestMTUNote(t *testing.T) {
	c := &config.Config{Tunnel: &config.Tunnel{}}
	if n := MTUNote(c, &Verify{OldSize: 1450, NewSize: 8951}); !strings.Contains(n, "1450 on OLD, 8951 on NEW") || !strings.Contains(n, "set `mtu = 1450`") {
		t.Errorf("different MTUs: %q", n)
	}
	for _, v := range []*Verify{nil, {OldSize: 1450, NewSize: 1450}, {OldSize: 0, NewSize: 1450}} {
		if n := MTUNote(c, v); n != "" {
			t.Errorf("%+v: %q", v, n)
		}
	}
	c.Tunnel.MTU = 1400 // set in the plan: both hosts use it
	if n := MTUNote(c, &Verify{OldSize: 1450, NewSize: 8951}); n != "" {
		t.Errorf("mtu set: %q", n)
	}
}
