package remote

import (
	"fmt"
	"strconv"
	"strings"
)

// Hardened hosts (CIS) mount /tmp, /var/tmp and /dev/shm, sometimes
// /home, with noexec; rarely /var. Two of migrate's execs run files from
// such places: the upload that installs the agent (install) and the
// installed agent in the state directory (start). This file holds what
// explains them: the install script's choice of directory and the
// reading of /proc/self/mountinfo behind the error messages.

// uploadDirs are the directories install tries for its upload, in order,
// as the login user's shell expands them: the first one where the user
// may create a directory and a file there executes is used.
var uploadDirs = []string{`${TMPDIR:-}`, `/tmp`, `/var/tmp`, `/dev/shm`, `${HOME:-}`}

// noexecExit is the install script's exit status when no upload
// directory lets a file execute; its stdout then holds the report that
// parseUploadReport reads.
const noexecExit = 86

// installScript uploads the agent (stdin) as the login user and runs it,
// as root (sudo is "" or "sudo -n "), as `agent-install --sha256 HASH`.
//
// Where: the first of uploadDirs in which mktemp -d works and a file
// executes. Each candidate is tested with a two-line shell script run
// from a fresh mktemp -d there, before the agent is written: the kernel
// refuses to exec any file (a script as well as an ELF binary) on a mount
// with noexec, so the script proves what the agent's exec will meet,
// costs nothing, and leaves stdin (the agent's megabytes, readable once)
// for the directory chosen. Running the agent itself with a harmless
// argument would prove the same but copy megabytes and start a Go binary
// per candidate. It all runs in the one exec install already was: no
// round trip is added. When no candidate works the script prints, for
// each, "tried REASON DIR RESOLVED" separated by tabs (REASON
// "unwritable" or "noexec"), then "mountinfo" and /proc/self/mountinfo,
// and exits noexecExit; the CLI turns that into an error naming the
// mounts (parseUploadReport). The probe runs as the login user, the
// agent-install as root: the same noexec applies to both.
func installScript(hash, sudo string) string {
	return `umask 077; d=; ` +
		`for c in ` + strings.Join(uploadDirs, " ") + `; do ` +
		`[ -n "$c" ] || continue; ` +
		`r=$(readlink -f -- "$c" 2>/dev/null) || r=$c; ` +
		`if t=$(mktemp -d "$c/migrate.XXXXXX" 2>/dev/null) && [ -n "$t" ]; then ` +
		`if printf '#!/bin/sh\nexit 0\n' > "$t/probe" && chmod 0700 "$t/probe" && "$t/probe" 2>/dev/null; then rm -f "$t/probe"; d=$t; break; fi; ` +
		`rm -rf "$t"; printf 'tried\tnoexec\t%s\t%s\n' "$c" "$r"; ` +
		`else printf 'tried\tunwritable\t%s\t%s\n' "$c" "$r"; fi; ` +
		`done; ` +
		`if [ -z "$d" ]; then echo mountinfo; cat /proc/self/mountinfo; exit ` + strconv.Itoa(noexecExit) + `; fi; ` +
		`set -e; trap 'rm -rf "$d"' EXIT; f="$d/migrate-` + hash + `"; cat > "$f"; chmod 0700 "$f"; ` +
		sudo + `"$f" agent-install --sha256 ` + hash
}

// mount is one line of /proc/self/mountinfo: where, and its per-mount
// options (where noexec is).
type mount struct {
	Point, Options string
}

func (m mount) noexec() bool {
	for _, o := range strings.Split(m.Options, ",") {
		if o == "noexec" {
			return true
		}
	}
	return false
}

// parseMountinfo reads the mount points and per-mount options of
// /proc/self/mountinfo ("36 35 98:0 /root /mnt rw,noexec master:1 - ext4
// /dev/sda1 rw"); lines it cannot read are skipped.
func parseMountinfo(text string) []mount {
	var ms []mount
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		ms = append(ms, mount{Point: unescapeMount(f[4]), Options: f[5]})
	}
	return ms
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space) in
// a mountinfo path.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountFor is the mount that holds path (absolute, symbolic links
// resolved): the longest mount point that is path or one of its parents;
// of equal ones the last listed, mounted over the others.
func mountFor(ms []mount, path string) (mount, bool) {
	best, found := mount{}, false
	for _, m := range ms {
		p := m.Point
		if p != "/" && path != p && !strings.HasPrefix(path, p+"/") {
			continue
		}
		if !found || len(p) >= len(best.Point) {
			best, found = m, true
		}
	}
	return best, found
}

// triedDir is one upload directory the install script could not use.
type triedDir struct {
	Dir, Reason, Resolved string
}

// parseUploadReport reads the install script's report when no upload
// directory let a file execute.
func parseUploadReport(out string) (tried []triedDir, ms []mount) {
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if line == "mountinfo" {
			return tried, parseMountinfo(strings.Join(lines[i+1:], "\n"))
		}
		f := strings.Split(line, "\t")
		if len(f) == 4 && f[0] == "tried" {
			tried = append(tried, triedDir{Reason: f[1], Dir: f[2], Resolved: f[3]})
		}
	}
	return tried, nil
}

// uploadDirError explains, for host and user, why no upload directory
// could run the agent, and what to do; installHint is how an
// administrator installs it by hand.
func uploadDirError(host, user, out, installHint string) error {
	tried, ms := parseUploadReport(out)
	var why []string
	for _, d := range tried {
		switch d.Reason {
		case "unwritable":
			why = append(why, d.Dir+": user "+user+" cannot create a directory there")
		default:
			if m, ok := mountFor(ms, d.Resolved); ok && m.noexec() {
				why = append(why, fmt.Sprintf("%s: mounted noexec (mount point %s, options %s)", d.Dir, m.Point, m.Options))
			} else if ok {
				why = append(why, fmt.Sprintf("%s: a file there cannot be executed (mount point %s, options %s)", d.Dir, m.Point, m.Options))
			} else {
				why = append(why, d.Dir+": a file there cannot be executed")
			}
		}
	}
	if len(why) == 0 {
		why = append(why, "none of $TMPDIR, /tmp, /var/tmp, /dev/shm, $HOME is set")
	}
	return fmt.Errorf("host %s: cannot install migrate's agent: it is uploaded as user %s and run once from the upload (agent-install), and no directory tried lets a file execute: %s. Set TMPDIR for the SSH session to a directory of the user's on a file system that allows exec, or %s",
		host, user, strings.Join(why, "; "), installHint)
}

// stateDirScript prints the agent's state directory as the login user's
// shell sees it, the same path with symbolic links resolved, and
// /proc/self/mountinfo: read only after the agent could not be executed
// there (no round trip on a working connection).
const stateDirScript = `d="${MIGRATE_STATE_DIR:-` + DefaultStateDir + `}"; printf '%s\n' "$d"; readlink -f -- "$d" 2>/dev/null || printf '%s\n' "$d"; cat /proc/self/mountinfo`

// stateDirNoexec reads stateDirScript's output: the state directory and
// the mount that holds it, when that mount is noexec.
func stateDirNoexec(out string) (dir string, m mount, noexec bool) {
	lines := strings.SplitN(out, "\n", 3)
	if len(lines) < 3 {
		return "", mount{}, false
	}
	m, ok := mountFor(parseMountinfo(lines[2]), lines[1])
	return lines[0], m, ok && m.noexec()
}

// execDenied says whether the agent's stderr shows its exec refused
// (bash: "Permission denied", "cannot execute"; sudo: "unable to
// execute").
func execDenied(stderr string) bool {
	return strings.Contains(stderr, "Permission denied") || strings.Contains(stderr, "cannot execute") ||
		strings.Contains(stderr, "unable to execute")
}
