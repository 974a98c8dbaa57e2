# A minimal migrate plan: move one TCP service from OLD to NEW while it
# keeps OLD's public address. Check it with `migrate validate -f basic.hcl`.

# How migrate reaches each host. The user must be root, or set sudo = true.
host "old" {
  ssh = "root@198.51.100.10:22" # user@host[:port]
  # identity_file = "~/.ssh/id_ed25519"  # else ssh-agent, then ~/.ssh defaults
  # known_hosts   = "~/.ssh/known_hosts" # the default; host keys are always verified
}

host "new" {
  ssh = "root@203.0.113.20"
}

# The tunnel that carries migrated traffic between the two hosts.
tunnel {
  type         = "vxlan"         # vxlan | gre | ip6gre | wireguard
  old_endpoint = "198.51.100.10" # outer addresses of OLD and NEW
  new_endpoint = "203.0.113.20"
  # Optional, shown with their defaults:
  # name      = "mig0"
  # vni       = 4242
  # port      = 4789              # VXLAN UDP port
  # mtu       = 1450              # unset: derived from the underlay MTU
  # old_inner = "169.254.42.1/30"
  # new_inner = "169.254.42.2/30"
  # mark      = "0x20000"
  # table     = 4242
}

# Clients keep connecting to 198.51.100.10:8080; new connections are handed
# to NEW through the tunnel, established ones drain on OLD.
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [8080]
  stage    = "new" # old | canary | new
  # allow_unready = true   # move it even if NEW does not listen on 8080 yet
}
