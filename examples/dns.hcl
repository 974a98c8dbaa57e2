# Moving an authoritative DNS server (or a resolver) that must keep OLD's
# address 198.51.100.10: it is the glue record at the parent zone, in
# secondaries' ACLs and in firewall rules you do not control, and changing
# glue takes days.
#
# DNS needs two services: UDP 53 for ordinary queries and TCP 53 for
# truncated answers (TC bit), DNSSEC-sized responses and zone transfers
# (AXFR/IXFR). Move both together: a server reachable on UDP on NEW and TCP
# on OLD would answer the same question from two different copies of the
# zone.
#
# UDP on NEW must answer FROM 198.51.100.10. A UDP server bound to a wildcard
# lets the kernel choose the source of its replies, and it picks NEW's own
# address (203.0.113.20); resolvers drop such replies. So on NEW bind the
# migrated address explicitly (it is a real local address on NEW, on lo,
# once the path is applied), or use a server that answers from the address
# the query came to (IP_PKTINFO):
#
#     BIND:    listen-on { 198.51.100.10; };
#              query-source address 198.51.100.10;
#              notify-source 198.51.100.10; transfer-source 198.51.100.10;
#     NSD:     ip-address: 198.51.100.10
#     Knot:    listen: 198.51.100.10@53
#     Unbound: interface: 198.51.100.10   (or interface-automatic: yes)
#
# The *-source settings matter too: NOTIFYs and transfers NEW starts itself
# must leave from 198.51.100.10, because that is the address the
# secondaries allow. Connections from 198.51.100.10 on NEW go back through
# the tunnel and leave OLD with that source.
#
# Order of operations:
#   1. Apply this file with both stages set to "old": the tunnel is built and
#      198.51.100.10 becomes local on NEW; no query moves yet.
#   2. Start the DNS server on NEW bound to 198.51.100.10, serving the same
#      zones (same serials) as OLD, and check that `migrate plan -f dns.hcl` shows NEW
#      listening on udp/53 and tcp/53. Careful when testing from NEW itself:
#      `dig @198.51.100.10` run ON NEW is answered by OLD (migrate routes
#      NEW's own traffic to the address out of the uplink, as before the
#      migration). To query NEW's server locally, let it also listen on
#      127.0.0.1 and use `dig @127.0.0.1`.
#   3. Set both stages to "new" (as below) and apply. UDP has no connection:
#      every new query flow (conntrack "new") goes to NEW; flows OLD already
#      tracks stay on OLD until conntrack forgets them (30 s for a single
#      query/answer, longer for busy client ports). TCP connections open
#      on OLD (a running AXFR) finish there.
#   4. From outside: `dig @198.51.100.10 example.org SOA` and
#      `dig +tcp @198.51.100.10 example.org SOA` must both answer, and NEW's
#      query log must show those queries with your real client address.
#   5. Stop the DNS server on OLD only after its query log stays quiet.

host "old" {
  ssh = "root@198.51.100.10:22"
}

host "new" {
  ssh = "root@203.0.113.20:22"
}

# VXLAN over IPv4. The tunnel MTU defaults to the underlay MTU less 50 bytes
# (1450 on a 1500 uplink). Keep the EDNS buffer size at 1232 bytes (the
# default of current BIND, Knot, NSD and Unbound): UDP answers then fit into
# the tunnel whole, and bigger ones are retried over TCP, whose MSS migrate
# clamps to the tunnel. (Larger datagrams without DF do get through, as IP
# fragments; the e2e data-path test sends 3000 bytes both ways.)
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}

# Queries over UDP. Every new flow is moved, there being no SYN to tell new
# from old ones: conntrack's "new" state decides.
service "dns-udp" {
  address  = "198.51.100.10"
  protocol = "udp"
  ports    = [53]
  stage    = "new"
}

# Queries over TCP and zone transfers. Only connections whose first packet
# is a bare SYN move; an AXFR in progress finishes on OLD.
service "dns-tcp" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [53]
  stage    = "new"
}
