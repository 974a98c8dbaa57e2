package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	sc := &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}
	in := []Request{
		{ID: 1, Method: MethodHello},
		{ID: 2, Method: MethodApply, Params: json.RawMessage(`{"step":{"host":"old","action":"create","after":{"sysctl":{"name":"net.ipv4.ip_forward","value":"1"}}}}`)},
	}
	for _, r := range in {
		if err := WriteFrame(&buf, r); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range in {
		var got Request
		if err := ReadFrame(&buf, &got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.ID != want.ID || got.Method != want.Method || !bytes.Equal(got.Params, want.Params) {
			t.Errorf("frame %d: got %+v, want %+v", i, got, want)
		}
	}
	if i := in[1]; i.Params != nil {
		var p ApplyParams
		if err := json.Unmarshal(i.Params, &p); err != nil || *p.Step.After.Sysctl != *sc {
			t.Errorf("apply params: %+v, %v", p, err)
		}
	}
	var r Request
	if err := ReadFrame(&buf, &r); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

func hdr(n uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, n)
	return b
}

func TestReadFrameBroken(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want string // substring; "EOF" cases checked with errors.Is
		eof  error
	}{
		{"empty", nil, "", io.EOF},
		{"short header", []byte{0, 0}, "", io.ErrUnexpectedEOF},
		{"short body", append(hdr(10), `{"id":1}`...), "", io.ErrUnexpectedEOF},
		{"header only", hdr(5), "", io.ErrUnexpectedEOF},
		{"too long", append(hdr(MaxFrame+1), '{', '}'), "exceeds", nil},
		{"max uint32", hdr(1<<32 - 1), "exceeds", nil},
		{"not json", append(hdr(3), "abc"...), "invalid character", nil},
		{"empty body", hdr(0), "unexpected end of JSON input", nil},
		{"truncated json", append(hdr(8), `{"id":-1`...), "unexpected end of JSON input", nil},
		{"negative id", append(hdr(9), `{"id":-1}`...), "cannot unmarshal", nil},
	}
	for _, c := range cases {
		var r Request
		err := ReadFrame(bytes.NewReader(c.in), &r)
		switch {
		case c.eof != nil && !errors.Is(err, c.eof):
			t.Errorf("%s: %v, want %v", c.name, err, c.eof)
		case c.eof == nil && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
