# A migrate plan with both kinds of move: one service carried through the
# tunnel (NEW sees the real client address), and one forward, an in-kernel
# port bouncer on OLD (no tunnel, the client address is NOT preserved, the
# destination need not be a managed host). Check it with
# `migrate validate -f forward.hcl`.

host "old" {
  ssh = "root@198.51.100.10:22"
}

host "new" {
  ssh = "root@203.0.113.20:22"
}

# Services need the tunnel; a plan with only forward blocks needs none.
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}

# Mail moves to NEW through the tunnel and keeps OLD's public address.
service "smtp" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25, 465, 587]
  stage    = "new"
}

# Web traffic to OLD's public address is bounced to NEW's own public address
# by OLD's kernel (DNAT for new connections only; open ones finish on OLD).
# An address:port is either a service or a forward, never both.
forward "web-bounce" {
  on       = "old"           # "old" | "new": the host that receives and forwards
  address  = "198.51.100.10" # an address of that host
  protocol = "tcp"           # tcp | udp
  ports    = [80, 443]       # as in services: 80 or "8000-8100"
  to       = "203.0.113.20"  # any reachable address of the same family
  # to_port = 8080           # only when ports is a single port
}
