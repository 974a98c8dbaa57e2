// Command demo shows migrate end to end on a throwaway namespace lab: it
// builds the lab (client, router, OLD, NEW, admin; real sshd on OLD and
// NEW), runs plan and apply from the admin namespace, shows the client
// served by NEW with its real address visible, follows a connection that
// was open before the move as it drains on OLD (migrate status), rolls back
// and tears the lab down. Run it as root: sudo ./demo.sh
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

func main() {
	typ := flag.String("tunnel", "vxlan", "tunnel type (vxlan; gre needs a kernel with GRE)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it creates network namespaces); run: sudo ./demo.sh")
		os.Exit(1)
	}
	if err := run(*typ); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	if fi, err := os.Stdout.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == "" {
		fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
		return
	}
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(typ string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel2()

	step("Building the namespace lab (client, router, old, new, admin; sshd on old and new)")
	l, err := lab.New(ctx, lab.Options{Prefix: "demo"})
	if err != nil {
		return err
	}
	defer func() {
		step("Tearing the lab down")
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
		}
	}()
	fmt.Printf("client %s, old %s, new %s, admin %s\n", l.ClientIP, l.OldIP, l.NewIP, l.AdminIP)
	s, err := scenario.Setup(ctx, l)
	if err != nil {
		return err
	}
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: typ, Stage: "new"}); err != nil {
		return err
	}
	step("The plan file (%s)", s.PlanFile)
	fmt.Print(s.PlanText(scenario.PlanOptions{TunnelType: typ, Stage: "new"}))

	dial := func(what string) error {
		out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
		if err != nil {
			return fmt.Errorf("%s: %w: %s", what, err, out)
		}
		fmt.Printf("client %s -> %s:%d: %s\n", l.ClientIP, l.OldIP, scenario.MigratedPort, out)
		return nil
	}
	step("Before: the client connects to OLD's address")
	if err := dial("before"); err != nil {
		return err
	}
	migrate := func(args ...string) error {
		fmt.Printf("admin$ migrate %s\n", strings.Join(args, " "))
		r, err := s.Migrate(ctx, args...)
		fmt.Print(r.Stdout)
		fmt.Fprint(os.Stderr, r.Stderr)
		if err != nil {
			return err
		}
		if r.Code != 0 {
			return fmt.Errorf("migrate %s: exit %d", args[0], r.Code)
		}
		return nil
	}
	step("A long-lived connection opened before the move (it must stay on OLD)")
	holder, err := l.Start(lab.RoleClient, s.LabtoolBin, "hold", "-every", "500ms", "-count", "0", "-timeout", "5s", fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort))
	if err != nil {
		return err
	}
	stopHolder := func() {
		if holder != nil {
			_ = holder.Process.Kill()
			_ = holder.Wait()
			holder = nil
		}
	}
	defer stopHolder()
	time.Sleep(time.Second)
	fmt.Printf("client %s holds a connection to %s:%d, answered by: %s\n", l.ClientIP, l.OldIP, scenario.MigratedPort, firstWord(l.LogPath(holder)))
	step("migrate plan")
	if err := migrate("plan", "-f", s.PlanFile); err != nil {
		return err
	}
	step("migrate apply")
	if err := migrate("apply", "-f", s.PlanFile, "--auto-approve"); err != nil {
		return err
	}
	step("After apply: the same connection is served by NEW, which sees the client's real address")
	if err := dial("after apply"); err != nil {
		return err
	}
	out, err := s.Dial(ctx, lab.RoleNew, "-bind", l.OldIP.String(), fmt.Sprintf("%s:%d", l.ClientIP, scenario.ClientPort))
	if err != nil {
		return fmt.Errorf("outbound from NEW: %w: %s", err, out)
	}
	fmt.Printf("NEW connects out from %s to the client's listener, which reports: %s\n", l.OldIP, out)
	step("migrate status: new flows go to NEW, the connection opened before the move drains on OLD")
	if err := migrate("status", "-f", s.PlanFile); err != nil {
		return err
	}
	step("The long-lived connection ends: the service is drained")
	stopHolder()
	// The close takes a moment to reach OLD on a busy machine: wait
	// (quietly, 15 s at most) until status says drained, as an operator
	// watching status would.
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		r, err := s.Migrate(ctx, "status", "-f", s.PlanFile, "--json")
		if err == nil && strings.Contains(r.Stdout, `"drained":true`) {
			break
		}
	}
	if err := migrate("status", "-f", s.PlanFile); err != nil {
		return err
	}
	step("migrate state list: what migrate owns on both hosts (from the state file)")
	if err := migrate("state", "list", "-f", s.PlanFile); err != nil {
		return err
	}
	if err := migrate("state", "show", "-f", s.PlanFile, "old.sysctl.net.ipv4.ip_forward"); err != nil {
		return err
	}
	step("migrate plan again: nothing to do")
	if err := migrate("plan", "-f", s.PlanFile); err != nil {
		return err
	}
	step("migrate rollback")
	if err := migrate("rollback", "-f", s.PlanFile, "--auto-approve"); err != nil {
		return err
	}
	step("After rollback: OLD serves again")
	return dial("after rollback")
}

// firstWord is the first word the holder logged: "served-by=old".
func firstWord(path string) string {
	b, _ := os.ReadFile(path)
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "(nothing yet)"
	}
	return f[0]
}
