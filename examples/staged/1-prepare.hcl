# Staged migration, step 1 of 3: build the path, move nothing.
# See README.md in this directory for the whole sequence. Apart from their
# comments the three files differ only in the service's stage: diff them.
#
# Applying this file builds the tunnel, makes 198.51.100.10 a real local
# address on NEW (on lo, not answering ARP on NEW's uplink) and installs
# migrate's nft table on OLD, with the service listed but not moved:
# every client is still served by OLD. Nothing a client does changes.
#
# Before: read `migrate plan -f 1-prepare.hcl`. On each host it must show
# only what migrate creates ("+": tunnel, rules, routes, its nft table, on
# NEW the address on lo), the sysctls it changes ("~", with the value it
# will restore) and the kernel's pref-0 local rule it moves to pref 1000
# ("-"). A "~" or "-" on anything else means a previous run left state
# behind: look at `migration.state.json` beside this file.
# After: start the web server on NEW (a wildcard listener is fine for TCP)
# and run `migrate plan -f 2-canary.hcl`: its readiness column must show
# NEW listening on tcp/80 and tcp/443.

host "old" {
  ssh = "root@198.51.100.10:22" # port 22 stays on OLD; migrate needs it
}

host "new" {
  ssh = "root@203.0.113.20:22"
}

# VXLAN over IPv4, OLD's endpoint being the service address itself.
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}

service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, 443]
  stage    = "old" # path built, no flow moves
}
