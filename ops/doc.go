// Package ops holds migrate's operations apart from the command line:
// what init, plan (Prepare), apply, rollback, force-unlock and status do
// with the hosts, given a way to reach them (a Dialer). cmd/migrate keeps
// flags, prompts and views.
//
// A Session is one command's connections, at most one per host; it is
// generic over the connection, so the real one (*remote.Client, SSH and
// the agent) and the tests' fake hosts (applytest) run the same code.
// Operations report through small interfaces (Reporter, ApplyView,
// RollbackView) that the command's views implement; they never print.
//
// The pure parts (GroupListeners, RecordedTargets, PublicAddrs) are plain
// functions tested with tables; the operations are tested whole on two
// fake hosts, without root. The e2e tests run them on real hosts.
package ops
