# Staged migration, step 2 of 3: a canary. About 10 % of NEW connections go
# to NEW; the other 90 %, and every connection already open, stay on OLD.
# See README.md in this directory for the whole sequence.
#
# Why a canary: a broken NEW (a missing certificate, a config difference, a
# firewall on NEW dropping the tunnel's traffic) then hurts one client
# connection in ten, for the few minutes you watch, instead of all of them.
# The choice is made per new connection (random), not per client: a browser
# opening six connections may be served by both hosts, so both must serve
# the same content.
#
# Before: NEW serves tcp/80 and tcp/443 (`migrate plan -f 2-canary.hcl`
# shows it; apply refuses to move a service NEW does not serve).
# After: watch both hosts' access logs: NEW's must show real client
# addresses, about one request in ten, and no errors. `migrate status`
# shows the flows and bytes going to NEW. Something wrong: `migrate rollback
# -f 2-canary.hcl` (back to step 1), or apply 1-prepare.hcl.

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
  address        = "198.51.100.10"
  protocol       = "tcp"
  ports          = [80, 443]
  stage          = "canary"
  canary_percent = 10 # of new connections; 1..99
}
