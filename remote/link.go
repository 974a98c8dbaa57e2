package remote

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultTimeout is how long a host may stay silent before migrate gives
// up on it: no answer to SSH keepalives, or no answer from the agent to a
// call, for this long.
const DefaultTimeout = 30 * time.Second

// DeadLinkError says a host stopped answering: the connection was closed
// and every later call on it fails with the same error at once.
type DeadLinkError struct {
	Host string
	// After is how long the host was silent when migrate gave up.
	After time.Duration
	// Method is the agent call in flight, "" when the keepalives found
	// the silence between calls.
	Method string
	// AgentOnly: sshd still answered keepalives, only the agent did not
	// answer its call.
	AgentOnly bool
}

func (e *DeadLinkError) Error() string {
	if e.AgentOnly {
		return fmt.Sprintf("host %s: the agent did not answer its %q call within %s, although the host's sshd still answers; migrate closed the connection", e.Host, e.Method, e.After)
	}
	return fmt.Sprintf("host %s stopped answering (no reply for %s)", e.Host, e.After)
}

// keepaliveRequest is OpenSSH's own keepalive (ServerAliveInterval): a
// global request any sshd answers, with a failure for an unknown name.
const keepaliveRequest = "keepalive@openssh.com"

// link watches one SSH connection: it sends a keepalive every interval
// and closes the connection when nothing answered for timeout, so that
// whatever waits on it (a call, a session, an upload) fails instead of
// hanging until TCP gives up, about 15 minutes later.
type link struct {
	host     string
	timeout  time.Duration
	interval time.Duration
	c        *ssh.Client

	mu        sync.Mutex
	lastReply time.Time
	dead      *DeadLinkError
	stop      chan struct{}
	stopOnce  sync.Once
}

// watchLink starts the keepalives on c. timeout <= 0 means DefaultTimeout.
func watchLink(c *ssh.Client, host string, timeout time.Duration) *link {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	l := &link{host: host, timeout: timeout, c: c, lastReply: time.Now(), stop: make(chan struct{})}
	// Three keepalives per timeout, as ServerAliveCountMax=3 does.
	l.interval = timeout / 3
	go l.loop()
	go func() {
		c.Wait()
		l.close()
	}()
	return l
}

func (l *link) close() { l.stopOnce.Do(func() { close(l.stop) }) }

func (l *link) loop() {
	tick := l.interval
	if tick > time.Second {
		tick = time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var lastSent time.Time
	pending := false
	replies := make(chan bool, 1)
	for {
		select {
		case <-l.stop:
			return
		case ok := <-replies:
			pending = false
			if ok {
				l.mu.Lock()
				l.lastReply = time.Now()
				l.mu.Unlock()
			}
		case now := <-t.C:
			if silent := l.silence(); silent >= l.timeout {
				l.kill(&DeadLinkError{Host: l.host, After: l.timeout})
				return
			}
			if !pending && now.Sub(lastSent) >= l.interval {
				pending, lastSent = true, now
				go func() {
					// OpenSSH answers with a failure: still an answer.
					_, _, err := l.c.SendRequest(keepaliveRequest, true, nil)
					replies <- err == nil
				}()
			}
		}
	}
}

// silence is how long since the host last answered a keepalive.
func (l *link) silence() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.lastReply)
}

// kill records why the link is dead (the first reason wins) and closes
// the connection.
func (l *link) kill(e *DeadLinkError) *DeadLinkError {
	l.mu.Lock()
	if l.dead == nil {
		l.dead = e
	}
	e = l.dead
	l.mu.Unlock()
	l.close()
	l.c.Close()
	return e
}

// err is the reason the link was given up, or nil.
func (l *link) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead == nil {
		return nil
	}
	return l.dead
}
