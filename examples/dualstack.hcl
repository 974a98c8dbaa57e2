# Moving a dual-stack web server: HTTP (80) and HTTPS (443) on OLD's IPv4
# address 198.51.100.10 AND its IPv6 address 2001:db8:100::10, through one
# tunnel whose outer packets are IPv4.
#
# One tunnel carries both families: VXLAN is an Ethernet tunnel, so IPv6
# packets ride in it as they would on a LAN. migrate gives each end, besides
# the IPv4 inner address, a fixed IPv6 link-local one (OLD fe80::42:1, NEW
# fe80::42:2) as the IPv6 gateway, and builds every rule and route once per
# family. You do not need IPv6 between the two hosts' uplinks for this.
#
# What migrate builds on NEW, per address (check with `migrate plan`):
#   - 198.51.100.10/32 and 2001:db8:100::10/128 (nodad) on lo, so nginx or
#     Apache can bind them and answer from them;
#   - `from ADDR lookup 4242` for each family: replies go back through the
#     tunnel, and leave OLD with OLD's addresses;
#   - no ARP answers for 198.51.100.10 on NEW's uplink (migrate's arp
#     table), nor neighbour advertisements for the IPv6 one (Linux answers
#     neighbour solicitations only for addresses of the receiving
#     interface, and this one is on lo): the provider keeps sending both
#     addresses to OLD.
#
# On NEW the web server can listen on wildcards (`listen 80; listen [::]:80;`
# in nginx): for TCP the kernel answers from the address the client
# connected to. Clients see no change at all: same A and AAAA records, same
# certificates (copy them, or let NEW renew: ACME HTTP-01 requests arrive at
# 198.51.100.10:80 and are carried to NEW like any other request, once port
# 80 has moved).
#
# Caveat (see README, Limitations): a process ON NEW that connects to
# 2001:db8:100::10 without choosing its source address picks that same
# address and the connection fails. That concerns NEW talking to itself by
# OLD's IPv6 address (a health check, a PHP app calling its own URL): point
# such checks at 127.0.0.1 / ::1 or NEW's own address. IPv4 is not affected.
#
# HTTP/3 (QUIC) runs over UDP 443, which the services below do not move. If
# you serve it, add a udp service for port 443 on each address, and make
# sure NEW's server answers from the migrated addresses (see dns.hcl for the
# UDP binding caveat). Without them QUIC keeps reaching OLD's server; once
# that stops, browsers fall back to TCP, after a delay.
#
# Order of operations:
#   1. Apply with both stages "old": the path for both families is built,
#      nothing moves. Start the web server on NEW.
#   2. `migrate plan -f dualstack.hcl`: NEW must be shown listening on
#      tcp/80 and tcp/443 for both addresses.
#   3. Set the stages to "new" (as below), apply. Check from outside:
#        curl -4 -v https://www.example.org/   (connects to 198.51.100.10)
#        curl -6 -v https://www.example.org/   (connects to 2001:db8:100::10)
#      NEW's access log must show the real client addresses of both
#      families. Keep-alive connections and long downloads open on OLD
#      finish there.
#   4. Stop the web server on OLD once its access log stays quiet.
# You could move IPv6 first (stage "new" for web6 only) to try the path with
# the smaller share of your traffic.

host "old" {
  ssh = "root@198.51.100.10:22"
}

host "new" {
  ssh = "root@203.0.113.20:22"
}

# IPv4 underlay. For an IPv6-only path between the providers use the IPv6
# endpoints instead (old_endpoint = "2001:db8:100::10", new_endpoint =
# "2001:db8:200::20"): VXLAN over IPv6 costs 20 bytes more of MTU.
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}

service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, 443]
  stage    = "new"
}

service "web6" {
  address  = "2001:db8:100::10"
  protocol = "tcp"
  ports    = [80, 443]
  stage    = "new"
}
