# Moving a mail server: SMTP (25), submission (587) and IMAPS (993), and the
# server's OUTBOUND mail, all keeping OLD's address 198.51.100.10.
#
# Why keep the address: the MX record, the PTR (reverse DNS) of
# 198.51.100.10, the SPF record ("ip4:198.51.100.10") and years of sending
# reputation are all tied to it, and OLD's provider will not move it on your
# schedule. With migrate, remote MTAs and your users keep talking to
# 198.51.100.10; new connections are carried to NEW through the tunnel and
# Postfix/Dovecot on NEW see the real client addresses (so postscreen, RBL
# checks, fail2ban and SASL rate limits keep working).
#
# Outbound mail: NEW's connections FROM 198.51.100.10 are routed back through
# the tunnel (NEW: `from 198.51.100.10 lookup 4242`, default route into the
# tunnel) and leave OLD's uplink with source 198.51.100.10, unchanged (no NAT).
# Replies come back to OLD, whose conntrack mark sends them into the tunnel.
# So the receiving MX sees the same IP, PTR and SPF result as before.
# Only connections whose SOURCE is 198.51.100.10 take that path: Postfix on
# NEW must choose it. In NEW's /etc/postfix/main.cf:
#
#     smtp_bind_address = 198.51.100.10
#     # IPv6 too, if you add the v6 service below:
#     # smtp_bind_address6 = 2001:db8:100::10
#     inet_interfaces = all        # or list 198.51.100.10 explicitly
#
# Without smtp_bind_address, Postfix sends from NEW's own address
# (203.0.113.20): that mail leaves NEW's uplink directly, with the wrong PTR
# and an SPF fail.
#
# Order of operations:
#   1. `migrate validate -f mail.hcl`, then apply this file once with every
#      stage set to "old": that builds the tunnel and makes 198.51.100.10 a
#      real local address on NEW (on lo) without moving any traffic. Postfix
#      and Dovecot on NEW can now bind it and connect out from it.
#   2. Start Postfix and Dovecot on NEW. `migrate plan -f mail.hcl` shows,
#      per service, whether NEW listens on the port (apply refuses to move a
#      service NEW does not serve).
#   3. Check outbound from NEW before moving anything, e.g. on NEW:
#        swaks --server mx.example.net --from you@example.org \
#              --to someone@example.net --local-interface 198.51.100.10
#      and read the Received: header / SPF result at the receiving side: it
#      must show 198.51.100.10.
#   4. Sync the mailboxes (dsync) while IMAPS is still served by OLD, set the
#      stages to "new" as below, apply. Open IMAP sessions and SMTP
#      transactions stay on OLD until they end; only new connections move.
#      IMAP clients keep IDLE sessions open for hours: end them on OLD with
#      `doveadm kick '*'` and they reconnect, to NEW. `migrate plan -f
#      mail.hcl` shows the established flows OLD still holds per service.
#   5. OLD's Postfix finishes the SMTP sessions it had: that mail lands in
#      OLD's mailboxes or queue. Flush the queue (`postqueue -f`, then
#      `postqueue -p` until it is empty), do a last dsync, then stop Postfix
#      and Dovecot on OLD.
#
# Back out at any time: `migrate rollback -f mail.hcl` (the last apply) or
# `migrate rollback --all -f mail.hcl` (everything migrate did on both hosts).

host "old" {
  # Reach OLD on its SSH port 22. That port is never migrated: migrate
  # refuses a plan that would move its own SSH connection.
  ssh = "root@198.51.100.10:22"
  # identity_file = "~/.ssh/id_ed25519"
}

host "new" {
  ssh = "root@203.0.113.20:22"
}

# VXLAN: works wherever UDP passes between the two providers (GRE, IP
# protocol 47, is often filtered). OLD's endpoint is the mail address itself:
# the common case of a server with one public address. VXLAN neither
# authenticates nor encrypts (migrate drops VXLAN packets from anyone but
# NEW's endpoint): SMTP between MTAs is often plain text, so if the path
# between the two providers is not trusted use type = "wireguard".
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}

# Inbound SMTP from other MTAs. Its reputation is the reason for all this.
service "smtp" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25]
  stage    = "new"
}

# Submission from your users' mail clients (STARTTLS + SASL). Add 465
# (implicit TLS) here too if you offer it: ports = [465, 587].
service "submission" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [587]
  stage    = "new"
}

# IMAPS. Move it only once the mailboxes are on NEW (step 4 above): an IMAP
# client reconnecting to NEW sees NEW's mail store. A separate block so it can
# go back to "old" without touching SMTP.
service "imaps" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [993]
  stage    = "new"
}

# If the MX also has an AAAA record, move the IPv6 address the same way (and
# set smtp_bind_address6 on NEW). The tunnel above carries IPv6 too:
# service "smtp6" {
#   address  = "2001:db8:100::10"
#   protocol = "tcp"
#   ports    = [25, 587, 993]
#   stage    = "new"
# }
