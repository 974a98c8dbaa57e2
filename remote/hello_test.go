package remote

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
)

// TestHelloOtherProtocol: an agent that speaks another protocol (here 1,
// before typed state) answers its hello over a real SSH session; the CLI
// refuses it with a message naming both versions, before any other
// request.
func TestHelloOtherProtocol(t *testing.T) {
	if proto.Version == 1 {
		t.Fatal("the old agent of this test speaks the current protocol")
	}
	c, _ := dialThroughHole(t)
	cl := &Client{Target: Target{Name: "new", Timeout: 5 * time.Second}, ssh: c, link: watchLink(c, "new", 5*time.Second)}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if cl.stdin, err = s.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if cl.stdout, err = s.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("old-agent"); err != nil {
		t.Fatal(err)
	}
	cl.sess = s
	defer cl.Close()
	var h proto.Hello
	if err := cl.call(context.Background(), proto.MethodHello, nil, &h); err != nil {
		t.Fatal(err)
	}
	err = checkHello("new", h)
	if err == nil || !strings.Contains(err.Error(), "host new: agent speaks protocol 1, CLI 2") {
		t.Fatalf("hello of a protocol 1 agent: %v", err)
	}
	if err := checkHello("new", proto.Hello{Version: proto.Version, UID: 1000}); err == nil || !strings.Contains(err.Error(), "agent runs as uid 1000") {
		t.Errorf("hello of a non-root agent: %v", err)
	}
	if err := checkHello("new", proto.Hello{Version: proto.Version}); err != nil {
		t.Errorf("hello of this protocol, as root: %v", err)
	}
}
