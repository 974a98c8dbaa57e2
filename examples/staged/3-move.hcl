# Staged migration, step 3 of 3: every new connection goes to NEW.
# See README.md in this directory for the whole sequence, and for the
# cut-over that follows (moving the IP or DNS, then `migrate rollback --all`).
#
# Connections already open on OLD (long downloads, websockets, keep-alive)
# finish there: OLD serves them until they end. Watch them drain with
# `migrate status` (or `migrate plan -f 3-move.hcl`, which shows the
# established flows OLD still holds per service) before stopping the web
# server on OLD.
#
# After: NEW's access log shows every new request with the real client
# address; OLD's shows only the draining connections, then nothing.

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
  stage    = "new" # every new connection
}
