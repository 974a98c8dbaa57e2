package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// fakeKernel records the calls that reach it. Each call is validated again:
// anything that reaches the Kernel must have passed validation. Facts
// calls are counted apart (reads): an apply request reads the live state
// for the ownership check (owner.go) before it applies.
type fakeKernel struct {
	t     testing.TB
	calls []string
	reads int
}

func (k *fakeKernel) Facts(req state.FactsRequest) (state.Facts, error) {
	if err := validateFactsRequest(req); err != nil {
		k.t.Errorf("Facts reached the kernel with an invalid request: %v", err)
	}
	k.reads++
	return state.Facts{Hostname: "fake", Sysctls: map[string]string{}}, nil
}

func (k *fakeKernel) Apply(step state.Step) error {
	if err := validateStep(step); err != nil {
		k.t.Errorf("Apply reached the kernel with an invalid step: %v", err)
	}
	if err := checkOwnedStep(step); err != nil {
		k.t.Errorf("Apply reached the kernel with a step that is not migrate's: %v", err)
	}
	k.calls = append(k.calls, proto.MethodApply)
	return nil
}

func (k *fakeKernel) Ping(addr string, count int, timeout time.Duration, size int) (time.Duration, error) {
	p := proto.PingParams{Addr: addr, Count: count, TimeoutMS: int(timeout / time.Millisecond)}
	if err := validatePing(p); err != nil || timeout%time.Millisecond != 0 {
		k.t.Errorf("Ping reached the kernel with invalid params %+v (timeout %v): %v", p, timeout, err)
	}
	k.calls = append(k.calls, proto.MethodPing)
	return time.Millisecond, nil
}

// fuzzHostFiles cannot create anything: its directory is below a device
// file, so the host-file methods fail before they write a file or start a
// revert timer (which would re-execute the test binary).
func fuzzHostFiles() *HostFiles { return &HostFiles{Dir: "/dev/null/migrate"} }

// frame encodes one frame of raw bytes.
func frame(body string) []byte {
	b := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	return append(b, body...)
}

// splitFrames cuts an input stream the way Serve reads it: the complete
// frames, and whether it ends in a broken one (a short header, a length
// above MaxFrame, a short body).
func splitFrames(data []byte) (frames [][]byte, broken bool) {
	for len(data) > 0 {
		if len(data) < 4 {
			return frames, true
		}
		n := binary.BigEndian.Uint32(data)
		if n > proto.MaxFrame || uint64(len(data)-4) < uint64(n) {
			return frames, true
		}
		frames = append(frames, data[4:4+n])
		data = data[4+n:]
	}
	return frames, false
}

func isKernelMethod(m string) bool {
	return m == proto.MethodApply || m == proto.MethodPing
}

// FuzzServe feeds arbitrary byte streams to Serve. It must never panic;
// every complete frame gets exactly one response, with the request's ID
// when the frame is a request object and 0 otherwise; a broken frame gets
// one more error response and ends the session with an error; the kernel
// sees exactly the kernel requests answered without error, and nothing
// that fails validation (fakeKernel checks).
func FuzzServe(f *testing.F) {
	f.Add(frame(`{"id":1,"method":"hello"}`))
	f.Add(frame(`{"id":2,"method":"ping","params":{"addr":"169.254.42.2","count":5,"timeout_ms":5000}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k := &fakeKernel{t: t}
		var out bytes.Buffer
		serveErr := Serve(bytes.NewReader(data), &out, k, fuzzHostFiles())

		frames, broken := splitFrames(data)
		if broken != (serveErr != nil) {
			t.Fatalf("input broken=%v but Serve returned %v", broken, serveErr)
		}
		var resps []proto.Response
		for {
			var r proto.Response
			err := proto.ReadFrame(&out, &r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("response %d does not decode: %v", len(resps), err)
			}
			resps = append(resps, r)
		}
		want := len(frames)
		if broken {
			want++
		}
		if len(resps) != want {
			t.Fatalf("%d responses for %d complete frames (broken tail %v)", len(resps), len(frames), broken)
		}
		if broken && (resps[len(resps)-1].ID != 0 || resps[len(resps)-1].Error == nil) {
			t.Fatalf("a broken frame got %+v, want an error with ID 0", resps[len(resps)-1])
		}
		kernelOK, factsOK := 0, 0
		for i, fr := range frames {
			r := resps[i]
			var req proto.Request
			if err := json.Unmarshal(fr, &req); err != nil {
				if r.ID != 0 || r.Error == nil {
					t.Fatalf("frame %d is not a request (%v) but got %+v", i, err, r)
				}
				continue
			}
			if r.ID != req.ID {
				t.Fatalf("frame %d: request ID %d answered with %d", i, req.ID, r.ID)
			}
			if r.Error == nil && isKernelMethod(req.Method) {
				kernelOK++
			}
			if r.Error == nil && req.Method == proto.MethodFacts {
				factsOK++
			}
			if r.Error != nil && len(r.Error.Message) > 64<<10 {
				t.Fatalf("frame %d: error message of %d bytes", i, len(r.Error.Message))
			}
		}
		if kernelOK != len(k.calls) {
			t.Fatalf("%d kernel requests succeeded but the kernel saw %d calls %v", kernelOK, len(k.calls), k.calls)
		}
		if k.reads < factsOK {
			t.Fatalf("%d facts requests succeeded but the kernel saw %d reads", factsOK, k.reads)
		}
	})
}

// TestServeSeeds keeps the seed corpus meaningful: the valid seeds pass
// validation (they may still fail on the fake host files), and each "bad-"
// seed is refused somewhere.
func TestServeSeeds(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzServe/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no seed corpus: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lit, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "go test fuzz v1\n[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")")
		data, err := strconv.Unquote(lit)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s: not a []byte seed (%v)", file, err)
		}
		var out bytes.Buffer
		serveErr := Serve(strings.NewReader(data), &out, &fakeKernel{t: t}, fuzzHostFiles())
		var refused []string
		for {
			var r proto.Response
			if err := proto.ReadFrame(&out, &r); err != nil {
				break
			}
			if r.Error != nil && (strings.HasPrefix(r.Error.Message, "bad ") || strings.HasPrefix(r.Error.Message, "unknown method")) {
				refused = append(refused, r.Error.Message)
			}
		}
		if bad := strings.HasPrefix(filepath.Base(file), "bad-"); bad != (len(refused) > 0 || serveErr != nil) {
			t.Errorf("%s: refused %q, Serve error %v", file, refused, serveErr)
		}
	}
}
