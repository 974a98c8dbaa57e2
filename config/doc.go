// Package config reads a migrate plan file (HCL, version 1) into plain
// values.
//
// The plan file has exactly one host "old" and one host "new" block, at
// most one tunnel block, and any number of service and forward blocks. The
// tunnel block is required when there is a service; a plan with only
// forwards needs none, and Config.Tunnel is then nil:
//
//	host "old" {
//	  ssh = "root@198.51.100.10:22"
//	}
//	host "new" {
//	  ssh = "root@203.0.113.20"
//	}
//	tunnel {
//	  type         = "vxlan"           # vxlan | gre (IPv4 endpoints) | ip6gre (IPv6 endpoints) | wireguard | direct
//	  old_endpoint = "198.51.100.10"
//	  new_endpoint = "203.0.113.20"
//	}
//	service "smtp" {
//	  address  = "198.51.100.10"
//	  protocol = "tcp"
//	  ports    = [25, 465, "10000-10100"]
//	  stage    = "new"
//	  # allow_unready = true   # NEW need not listen yet
//	}
//	forward "web-bounce" {
//	  on       = "old"             # the host that receives and forwards
//	  address  = "198.51.100.10"
//	  protocol = "tcp"
//	  ports    = [80, 443]
//	  to       = "203.0.113.20"
//	  # to_port = 8080             # only with a single port
//	}
//
// Parse and Load check everything that can be checked without touching a
// host: unknown blocks and arguments, types, addresses, port ranges, stages,
// overlapping services and forwards (an address, protocol and port belongs
// to one service or one forward), tunnel settings, services that would
// migrate the SSH address migrate uses to reach OLD or the tunnel's own VXLAN
// port, and forwards that would take the SSH or VXLAN port of the host they
// are on. Checks that need live facts (does OLD hold the service address,
// what a DNS name resolves to) belong to plan.
//
// All problems found are returned together as a *Error. Its Error method
// renders one problem per line as
//
//	FILE:LINE:COL: SUMMARY; DETAIL
//
// where DETAIL says what would be right. Its Diagnostics field holds the same
// problems as hcl.Diagnostics, for callers that want to print source
// snippets with hcl.NewDiagnosticTextWriter.
//
// Format formats a valid plan file canonically, keeping its comments (for
// `migrate fmt`). Render and RenderWith write a Config back as a plan file,
// optionally with comments and commented-out services (for `migrate init`);
// parsing Render's output gives the same Config.
//
// A host's ssh argument is [user@]host[:port]; host may be a Host alias of
// the OpenSSH client configuration (~/.ssh/config, or $MIGRATE_SSH_CONFIG),
// which Parse reads: the plan's own values win, then ssh_config's first
// values (HostName, User, Port, IdentityFile, ProxyJump,
// UserKnownHostsFile), then the defaults. Host.SSH, IdentityFiles and
// ProxyJump are set only when ssh_config had something for the host; Match
// blocks are not evaluated (see package remote/sshconfig).
//
// Only the native HCL syntax is read; expressions may not use variables or
// functions. Relative paths (identity_file, known_hosts) are kept as
// written; a leading "~/" is expanded to the user's home directory.
package config
